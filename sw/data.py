"""A user's data set: ``DATA.npz`` with training, validation and optional test splits, checked before use.

The file holds ``x_train``, ``y_train``, ``x_val``, ``y_val`` and optionally
``x_test``, ``y_test`` (both or neither): x real inputs (float, or integer
values used as reals) of shape [N, *input_shape], y integer class labels [N].
:func:`load_data` refuses anything else with one line naming the file, the
array and what is wrong (:class:`sparrow.SparrowError`); nothing is trained
or written before it has passed.  :func:`input_exp_for` chooses the
power-of-two input grid from the training inputs.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparrow import SparrowError
from sparrow.arrays import read_numpy
from sparrow.sw.quant import pow2_exp_for

__all__ = ["Data", "load_data", "check_data", "input_exp_for"]

REQUIRED = ("x_train", "y_train", "x_val", "y_val")
OPTIONAL = ("x_test", "y_test")


@dataclass(frozen=True)
class Data:
    """Checked splits: x float32 [N, *input_shape], y int64 [N]; the test split may be None."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = "data"

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def eval_split(self):
        """(name, x, y) of the split accuracy is reported on: test, or val when there is no test."""
        if self.x_test is not None:
            return "test", self.x_test, self.y_test
        return "val", self.x_val, self.y_val


def _x(where, name, x):
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise SparrowError(f"{where}: {name} has dtype {getattr(x, 'dtype', type(x).__name__)}, expected float "
                           "(or integer) input values")
    if x.ndim < 2 or x.shape[0] < 1:
        raise SparrowError(f"{where}: {name} has shape {list(x.shape)}, expected [N, *input shape] with N >= 1")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        row = int(np.argwhere(~np.isfinite(x).reshape(len(x), -1))[0][0])
        raise SparrowError(f"{where}: {name} holds NaN or infinite values (first in sample {row})")
    return x.astype(np.float32)


def _y(where, name, y, n):
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu":
        raise SparrowError(f"{where}: {name} has dtype {getattr(y, 'dtype', type(y).__name__)}, expected integer "
                           "class labels")
    if y.shape != (n,):
        raise SparrowError(f"{where}: {name} has shape {list(y.shape)}, expected [{n}] (one label per sample of "
                           f"x_{name[2:]})")
    return y.astype(np.int64)


def check_data(arrays, where="data", input_shape=None, classes=None):
    """A :class:`Data` of a mapping {key: array}; SparrowError (one line) for anything wrong.

    ``input_shape`` (the model's) and ``classes`` (its output count) are checked
    when given: every x must be [N, *input_shape], every label in [0, classes).
    """
    keys = set(arrays)
    missing = [k for k in REQUIRED if k not in keys]
    if missing:
        raise SparrowError(f"{where}: missing array {missing[0]!r} (needs {', '.join(REQUIRED)}; "
                           f"optional {', '.join(OPTIONAL)})")
    unknown = sorted(keys - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise SparrowError(f"{where}: unknown array {unknown[0]!r} (known: {', '.join(REQUIRED + OPTIONAL)})")
    if ("x_test" in keys) != ("y_test" in keys):
        have, need = ("x_test", "y_test") if "x_test" in keys else ("y_test", "x_test")
        raise SparrowError(f"{where}: {have} without {need}")
    out = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in keys:
            continue
        x = _x(where, f"x_{split}", arrays[f"x_{split}"])
        out[f"x_{split}"] = x
        out[f"y_{split}"] = _y(where, f"y_{split}", arrays[f"y_{split}"], len(x))
    shape = tuple(input_shape) if input_shape is not None else out["x_train"].shape[1:]
    for split in ("train", "val", "test"):
        x = out.get(f"x_{split}")
        if x is not None and x.shape[1:] != shape:
            what = "the model's input shape" if input_shape is not None else "x_train's"
            raise SparrowError(f"{where}: x_{split} has samples of shape {list(x.shape[1:])}, expected "
                               f"{list(shape)} ({what})")
    for split in ("train", "val", "test"):
        y = out.get(f"y_{split}")
        if y is None:
            continue
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (classes is not None and hi >= classes):
            bad = lo if lo < 0 else hi
            limit = f"[0, {classes})" if classes is not None else ">= 0"
            extra = f" (the model has {classes} outputs)" if classes is not None else ""
            raise SparrowError(f"{where}: y_{split} has label {bad} outside {limit}{extra}")
    return Data(source=str(where), **out)


def load_data(path, input_shape=None, classes=None):
    """The :class:`Data` of ``DATA.npz`` (see :func:`check_data`)."""
    path = Path(path)
    z = read_numpy(path, "data file", ".npz archive")
    if isinstance(z, np.ndarray):
        raise SparrowError(f"{path}: expected an .npz archive of arrays, got one .npy array")
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise SparrowError(f"{path}: not a readable .npz archive ({msg})")
    return check_data(arrays, path, input_shape, classes)


def input_exp_for(x_train):
    """The input grid: the smallest e with max |x_train| <= 127 * 2**e (docs/format.md "Inputs")."""
    return pow2_exp_for(float(np.abs(np.asarray(x_train, dtype=np.float64)).max()))
