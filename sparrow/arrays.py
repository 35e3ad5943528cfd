"""Array I/O shared by every command: input files in (int8 codes or real values), atomic .npy files out.

An input file holds either int8 codes (used as they are) or real values
(float16/32/64), which are quantised with the model's own input scale
(:func:`quantize_real`, docs/format.md "Inputs").  A user mistake (missing
file, not an array, wrong dtype or shape, NaN) raises
:class:`sparrow.SparrowError` with one line naming the file and what is wrong.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from sparrow import SparrowError

__all__ = ["load_model_inputs", "quantize_real", "save_npy_atomic", "replace_directory", "read_numpy"]


def quantize_real(x, scale_exp):
    """int8 codes of real inputs ``x`` on the grid 2**scale_exp.

    code = clamp(floor(x / 2**scale_exp + 1/2), -128, 127), computed in float64
    (round half up, as the format's ``rshift``; the division by a power of two is
    exact).  ``x`` must be finite.
    """
    v = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("inputs hold NaN or infinite values")
    codes = np.floor(np.ldexp(v, -int(scale_exp)) + 0.5)
    return np.clip(codes, -128, 127).astype(np.int8)


def read_numpy(path, what, readable):
    """``np.load(path)`` without pickles; one-line SparrowError when it is missing or unreadable.

    ``what`` names the file in the first message ("inputs file does not
    exist"), ``readable`` what it should hold in the second ("not a readable
    .npy array (numpy's reason)").
    """
    path = Path(path)
    if not path.is_file():
        raise SparrowError(f"{path}: {what} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SparrowError(f"{path}: not a readable {readable} ({str(exc).splitlines()[0] if str(exc) else exc!r})")


def _read(path):
    path = Path(path)
    x = read_numpy(path, "inputs file", ".npy array")
    if not isinstance(x, np.ndarray):
        raise SparrowError(f"{path}: expected one .npy array, got an .npz archive")
    return x


def load_model_inputs(model, path):
    """The int8 inputs of ``path`` as [N, input size] for ``model`` (N >= 1).

    The file may hold [N, *input_shape] or [N, input size], as int8 codes or as
    real values (float16, float32, float64) that are quantised with the model's
    ``input.scale_exp`` (:func:`quantize_real`); any other dtype or shape, and
    NaN or infinite values, are refused with one line.
    """
    path = Path(path)
    x = _read(path)
    if x.dtype != np.int8 and x.dtype.kind != "f":
        raise SparrowError(f"{path}: inputs have dtype {x.dtype}, expected int8 codes or float real values")
    shape = tuple(model.input_shape)
    size = int(np.prod(shape))
    if not (x.ndim >= 2 and x.shape[0] >= 1 and (x.shape[1:] == shape or x.shape[1:] == (size,))):
        raise SparrowError(f"{path}: inputs have shape {list(x.shape)}, expected [N, {size}] or "
                           f"[N, {', '.join(map(str, shape))}] with N >= 1 for model {model.name!r}")
    x = x.reshape(x.shape[0], size)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            bad = int(np.argwhere(~np.isfinite(x))[0][0])
            raise SparrowError(f"{path}: inputs hold NaN or infinite values (first in row {bad})")
        x = quantize_real(x, model.input_scale_exp)
    return x


def save_npy_atomic(path, array):
    """Write ``array`` to ``path`` (.npy) through a temporary file and a rename."""
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


def replace_directory(tmp, dest, check_replaceable=None):
    """Move the finished folder ``tmp`` to ``dest``, replacing what was there as one step.

    ``tmp`` must sit beside ``dest`` (same file system).  An existing ``dest``
    is first passed to ``check_replaceable(dest)``, which raises SparrowError
    when it is not ours to replace; it is renamed aside, ``tmp`` renamed into
    place, and the old folder removed, so a reader sees the old directory or
    the new one, never half of either.
    """
    tmp, dest = Path(tmp), Path(dest)
    old = None
    if dest.exists():
        if check_replaceable is not None:
            check_replaceable(dest)
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / "d")
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

