"""``sparrow golden DIR --inputs X.npy --out Y.npy``: run a model directory on the integer golden model.

X is int8 of shape [N, *input_shape] (or [N, prod(input_shape)]), one row per
sample; Y is int8 [N, output size], written atomically.
"""

from pathlib import Path


def configure(parser):
    parser.add_argument("model", metavar="DIR", help="model directory (manifest.json + .npz files)")
    parser.add_argument("--inputs", required=True, metavar="X.npy", help="int8 inputs, one row per sample")
    parser.add_argument("--out", required=True, metavar="Y.npy", help="where to write the int8 outputs")


def load_inputs(path):
    """Read an .npy of int8 inputs, raising SparrowError (one line) when it cannot."""
    import numpy as np
    from .. import SparrowError
    path = Path(path)
    if not path.is_file():
        raise SparrowError(f"{path}: inputs file does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SparrowError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0] if str(exc) else exc!r})")
    if not isinstance(x, np.ndarray):
        raise SparrowError(f"{path}: expected one .npy array, got an .npz archive")
    if x.dtype != np.int8:
        raise SparrowError(f"{path}: inputs have dtype {x.dtype}, expected int8")
    return x


def save_npy_atomic(path, array):
    """Write ``array`` to ``path`` (.npy) through a temporary file and a rename."""
    import os
    import tempfile
    import numpy as np
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args):
    from .. import SparrowError
    from ..modeldir import load_model
    from .golden import run_model
    model = load_model(args.model)
    x = load_inputs(args.inputs)
    try:
        y = run_model(model, x)
    except SparrowError as exc:
        raise SparrowError(f"{args.inputs}: {exc}")
    save_npy_atomic(args.out, y)
    print(f"golden: {model.name}: {y.shape[0]} samples -> {args.out} (int8 {list(y.shape)})")
    return 0
