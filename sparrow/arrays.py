"""Array I/O shared by every command: int8 input files in, atomic .npy files out.

A user mistake (missing file, not an array, wrong dtype or shape) raises
:class:`sparrow.SparrowError` with one line naming the file and what is wrong.
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from sparrow import SparrowError

__all__ = ["load_inputs", "load_model_inputs", "save_npy_atomic"]


def load_inputs(path):
    """The int8 array of the ``.npy`` file ``path``."""
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


def load_model_inputs(model, path):
    """The int8 inputs of ``path`` as [N, input size] for ``model`` (N >= 1).

    The file may hold [N, *input_shape] or [N, input size]; any other shape is
    refused with one line giving the shapes the model takes.
    """
    x = load_inputs(path)
    shape = tuple(model.input_shape)
    size = int(np.prod(shape))
    if x.ndim >= 2 and x.shape[0] >= 1 and (x.shape[1:] == shape or x.shape[1:] == (size,)):
        return x.reshape(x.shape[0], size)
    raise SparrowError(f"{path}: inputs have shape {list(x.shape)}, expected [N, {size}] or "
                       f"[N, {', '.join(map(str, shape))}] with N >= 1 for model {model.name!r}")


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
