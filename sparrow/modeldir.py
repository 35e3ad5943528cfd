"""The model directory (format version 1): load, validate and save.

A model directory holds ``manifest.json`` and one ``.npz`` of parameters per
layer that has parameters.  ``docs/format.md`` documents every field; this
module is its reader and writer.  Every reader error is a
:class:`sparrow.SparrowError` whose message is one line naming the file, the
layer and the field, e.g.::

    model/fc1.npz: layer 'fc1' (sd_linear): coef_exp has value 9 outside [0, 7]

:func:`load_model` returns a :class:`Model` whose layers carry their input and
output activation shapes (``in_shape``/``out_shape``), derived from the
manifest's input shape.  :func:`save_model` validates first, then writes into a
temporary directory beside the target and renames it into place, so a reader
never sees a half-written directory.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparrow import SparrowError
from sparrow.arrays import replace_directory
from sparrow.fixedfft import max_ws_shift

__all__ = [
    "FORMAT", "VERSION", "KINDS", "LINEAR_KINDS", "CONV_KINDS", "PARAM_KINDS",
    "Layer", "Model", "load_model", "save_model", "validate_model",
]

FORMAT = "sparrow-model"
VERSION = 1

LINEAR_KINDS = ("dense_linear", "sd_linear", "bc_linear")
CONV_KINDS = ("dense_conv2d", "sd_conv2d", "bc_conv2d")
PARAM_KINDS = LINEAR_KINDS + CONV_KINDS
KINDS = PARAM_KINDS + ("maxpool2d", "flatten")

SHIFT_RANGE = (0, 31)
SCALE_EXP_RANGE = (-32, 32)
Z_BITS_RANGE = (8, 16)
COEF_EXP_RANGE = (0, 7)
SD_K_RANGE = (1, 64)
BC_K_VALUES = (4, 8, 16, 32, 64)
MAX_DIM = 1 << 20

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\.npz$")

# Manifest attributes per kind: name -> type ("int", "bool").  ``in``/``out``
# are required for linear kinds; for convolutions they are derived
# (in = in_ch*kh*kw, out = out_ch) and, when present, must agree.
_COMMON_LIN = {"out_shift": "int", "relu": "bool"}
_CONV = {"in_ch": "int", "out_ch": "int", "kh": "int", "kw": "int", "stride": "int", "padding": "int"}
_REQUIRED = {
    "dense_linear": {"in": "int", "out": "int", **_COMMON_LIN},
    "sd_linear": {"in": "int", "out": "int", "k": "int", "basis_shift": "int", **_COMMON_LIN},
    "bc_linear": {"in": "int", "out": "int", "k": "int", **_COMMON_LIN},
    "dense_conv2d": {**_CONV, **_COMMON_LIN},
    "sd_conv2d": {**_CONV, "k": "int", "basis_shift": "int", **_COMMON_LIN},
    "bc_conv2d": {**_CONV, "k": "int", **_COMMON_LIN},
    "maxpool2d": {"kernel": "int", "stride": "int"},
    "flatten": {},
}
FFT_FRAC_RANGE = (0, 16)
_OPTIONAL = {
    "dense_linear": {}, "bc_linear": {"fft_frac": "int", "ws_shift": "int"}, "dense_conv2d": {}, "bc_conv2d": {},
    "sd_linear": {"z_bits": "int"},
    "sd_conv2d": {"z_bits": "int", "in": "int", "out": "int"},
    "maxpool2d": {}, "flatten": {},
}
_OPTIONAL["dense_conv2d"] = {"in": "int", "out": "int"}
_OPTIONAL["bc_conv2d"] = {"in": "int", "out": "int", "fft_frac": "int", "ws_shift": "int"}
_LAYER_KEYS = {"name", "kind", "params"}


@dataclass
class Layer:
    """One layer of a model directory.

    Attributes
    ----------
    name : str
        Unique layer name (``[A-Za-z_][A-Za-z0-9_.-]*``).
    kind : str
        One of :data:`KINDS`.
    attrs : dict
        The manifest attributes (``in``, ``out``, ``k``, ``basis_shift``,
        ``out_shift``, ``relu``, ``z_bits``, conv and pool attributes).  After
        validation every linear and conv kind has ``in`` and ``out`` (for a
        convolution the im2col sizes in_ch*kh*kw and out_ch) and sd kinds have
        ``z_bits`` (default 8).
    params : dict
        name -> numpy array, exactly as in the layer's ``.npz``.
    in_shape, out_shape : tuple
        Activation shapes (without the batch dimension), set by validation.
    params_file : str or None
        The ``.npz`` file name inside the directory (default ``<name>.npz``).
    """

    name: str
    kind: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    in_shape: tuple | None = None
    out_shape: tuple | None = None
    params_file: str | None = None

    @property
    def in_size(self):
        """Number of int8 values in this layer's input activation."""
        return int(np.prod(self.in_shape))

    @property
    def out_size(self):
        """Number of int8 values in this layer's output activation."""
        return int(np.prod(self.out_shape))

    @property
    def is_conv(self):
        return self.kind in CONV_KINDS

    @property
    def has_params(self):
        return self.kind in PARAM_KINDS

    def manifest_entry(self):
        """The layer's manifest dictionary (as written by :func:`save_model`)."""
        entry = {"name": self.name, "kind": self.kind}
        entry.update(self.attrs)
        if self.has_params:
            entry["params"] = self.params_file or f"{self.name}.npz"
        return entry


@dataclass
class Model:
    """A whole model directory.

    ``input_shape`` is the int8 input activation shape (``(in,)`` or
    ``(C, H, W)``); real input value = int8 * 2**input_scale_exp, real output
    value = int8 * 2**output_scale_exp.  ``meta`` is free-form JSON kept
    verbatim (training details, accuracies); readers ignore it.
    """

    name: str
    input_shape: tuple
    input_scale_exp: int
    output_scale_exp: int
    layers: list
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def output_shape(self):
        return self.layers[-1].out_shape if self.layers else tuple(self.input_shape)

    @property
    def output_size(self):
        return int(np.prod(self.output_shape))

    def layer(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def manifest(self):
        """The ``manifest.json`` dictionary of this model."""
        doc = {"format": FORMAT, "version": VERSION, "name": self.name,
               "input": {"shape": [int(d) for d in self.input_shape], "scale_exp": int(self.input_scale_exp)},
               "layers": [layer.manifest_entry() for layer in self.layers],
               "output": {"scale_exp": int(self.output_scale_exp)}}
        if self.meta:
            doc["meta"] = self.meta
        return doc


# --------------------------------------------------------------------------- helpers

class _Where:
    """Builds the 'file: layer 'x' (kind): ' prefix of error messages."""

    def __init__(self, file, layer=None, kind=None):
        self.file, self.layer, self.kind = file, layer, kind

    def error(self, msg):
        prefix = f"{self.file}: "
        if self.layer is not None:
            prefix += f"layer {self.layer!r}"
            if self.kind is not None:
                prefix += f" ({self.kind})"
            prefix += ": "
        return SparrowError(prefix + msg)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_int(where, name, v, lo, hi):
    if not _is_int(v):
        raise where.error(f"field '{name}' must be an integer, not {v!r}")
    if not lo <= int(v) <= hi:
        raise where.error(f"field '{name}' has value {int(v)} outside [{lo}, {hi}]")
    return int(v)


def _check_attrs(where, kind, attrs):
    """Type- and range-check the manifest attributes of one layer; returns a normalised copy."""
    req, opt = _REQUIRED[kind], _OPTIONAL[kind]
    for key in attrs:
        if key not in req and key not in opt:
            raise where.error(f"unknown field '{key}'")
    for key in req:
        if key not in attrs:
            raise where.error(f"missing field '{key}'")
    out = {}
    for key, value in attrs.items():
        typ = req.get(key) or opt.get(key)
        if typ == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise where.error(f"field '{key}' must be true or false, not {value!r}")
            out[key] = bool(value)
        else:
            if not _is_int(value):
                raise where.error(f"field '{key}' must be an integer, not {value!r}")
            out[key] = int(value)

    def rng(key, lo, hi):
        if key in out:
            _check_int(where, key, out[key], lo, hi)

    for key in ("in", "out", "in_ch", "out_ch", "kh", "kw", "stride", "kernel"):
        rng(key, 1, MAX_DIM)
    rng("padding", 0, 64)
    rng("out_shift", *SHIFT_RANGE)
    rng("basis_shift", *SHIFT_RANGE)
    rng("z_bits", *Z_BITS_RANGE)
    rng("fft_frac", *FFT_FRAC_RANGE)

    if kind in CONV_KINDS:
        n_in, n_out = out["in_ch"] * out["kh"] * out["kw"], out["out_ch"]
        for key, val, how in (("in", n_in, "in_ch*kh*kw"), ("out", n_out, "out_ch")):
            if key in out and out[key] != val:
                raise where.error(f"field '{key}' is {out[key]} but {how} is {val}")
        out["in"], out["out"] = n_in, n_out
    if kind in ("sd_linear", "sd_conv2d"):
        _check_int(where, "k", out["k"], *SD_K_RANGE)
        if out["in"] % out["k"]:
            raise where.error(f"field 'k' ({out['k']}) does not divide in ({out['in']})")
        out.setdefault("z_bits", 8)
    if kind in ("bc_linear", "bc_conv2d"):
        if out["k"] not in BC_K_VALUES:
            raise where.error(f"field 'k' has value {out['k']}, not a power of two in [4, 64]")
        for key in ("in", "out"):
            if out[key] % out["k"]:
                raise where.error(f"field 'k' ({out['k']}) does not divide {key} ({out[key]})")
        if "ws_shift" in out:       # R <= 8 - L keeps the MAC shift s1 >= 2 (docs/format.md)
            _check_int(where, "ws_shift", out["ws_shift"], 0, max_ws_shift(out["k"]))
    return out


def _param_specs(kind, attrs, params):
    """name -> (dtype, shape) of the arrays a layer must hold."""
    n_in, n_out = attrs["in"], attrs["out"]
    if kind in ("dense_linear", "dense_conv2d"):
        return {"weight": ("int8", (n_out, n_in)), "bias": ("int32", (n_out,))}
    if kind in ("sd_linear", "sd_conv2d"):
        k = attrs["k"]
        basis = params.get("basis")
        t = basis.shape[0] if isinstance(basis, np.ndarray) and basis.ndim == 4 else 1
        return {"basis": ("int8", (t, n_in // k, k, k)), "coef_sign": ("int8", (n_out, n_in)),
                "coef_exp": ("uint8", (n_out, n_in)), "bias": ("int32", (n_out,))}
    if kind in ("bc_linear", "bc_conv2d"):
        k = attrs["k"]
        return {"w": ("int8", (n_out // k, n_in // k, k)), "bias": ("int32", (n_out,))}
    return {}


def _check_params(where, kind, attrs, params):
    specs = _param_specs(kind, attrs, params)
    for key in specs:
        if key not in params:
            raise where.error(f"missing array '{key}'")
    for key in params:
        if key not in specs:
            raise where.error(f"unknown array '{key}'")
    for key, (dtype, shape) in specs.items():
        arr = params[key]
        if not isinstance(arr, np.ndarray):
            raise where.error(f"{key} must be a numpy array, not {type(arr).__name__}")
        if arr.dtype != np.dtype(dtype):
            raise where.error(f"{key} has dtype {arr.dtype}, expected {dtype}")
        if arr.shape != shape:
            raise where.error(f"{key} has shape {list(arr.shape)}, expected {list(shape)}")
    if kind in ("sd_linear", "sd_conv2d"):
        t = params["basis"].shape[0]
        if t < 1 or attrs["out"] % t:
            raise where.error(f"basis has {t} tiles, which does not divide out ({attrs['out']})")
        sign = params["coef_sign"]
        bad = sign[(sign < -1) | (sign > 1)]
        if bad.size:
            raise where.error(f"coef_sign has value {int(bad[0])} outside [-1, 1]")
        exp = params["coef_exp"]
        bad = exp[exp > COEF_EXP_RANGE[1]]
        if bad.size:
            raise where.error(f"coef_exp has value {int(bad[0])} outside [0, 7]")


def _propagate(where, layer, shape):
    """Check ``shape`` fits the layer and return its output shape."""
    a, kind = layer.attrs, layer.kind
    if kind in LINEAR_KINDS:
        if len(shape) != 1 or shape[0] != a["in"]:
            raise where.error(f"field 'in' is {a['in']} but the layer's input has shape {list(shape)}"
                              + (" (add a flatten layer)" if len(shape) != 1 else ""))
        return (a["out"],)
    if kind == "flatten":
        return (int(np.prod(shape)),)
    if len(shape) != 3:
        raise where.error(f"needs a [C, H, W] input, got shape {list(shape)}")
    c, h, w = shape
    if kind in CONV_KINDS:
        if c != a["in_ch"]:
            raise where.error(f"field 'in_ch' is {a['in_ch']} but the input has {c} channels")
        oh = (h + 2 * a["padding"] - a["kh"]) // a["stride"] + 1
        ow = (w + 2 * a["padding"] - a["kw"]) // a["stride"] + 1
        if oh < 1 or ow < 1:
            raise where.error(f"kernel {a['kh']}x{a['kw']} does not fit the padded input {h}x{w}")
        return (a["out_ch"], oh, ow)
    # maxpool2d
    if a["kernel"] > h or a["kernel"] > w:
        raise where.error(f"field 'kernel' ({a['kernel']}) is larger than the input {h}x{w}")
    return (c, (h - a["kernel"]) // a["stride"] + 1, (w - a["kernel"]) // a["stride"] + 1)


def _check_shape(where, shape):
    if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3):
        raise where.error(f"field 'input.shape' must be a list [in] or [C, H, W], not {shape!r}")
    return tuple(_check_int(where, "input.shape", d, 1, MAX_DIM) for d in shape)


def validate_model(model, path=None):
    """Validate an in-memory :class:`Model`; set each layer's ``in_shape``/``out_shape``.

    ``path`` (default ``model.path``) only names files in error messages.
    Raises :class:`sparrow.SparrowError` on the first problem.
    """
    base = Path(path) if path is not None else (Path(model.path) if model.path else Path("<model>"))
    mf = _Where(base / "manifest.json")
    if not isinstance(model.name, str) or not model.name:
        raise mf.error(f"field 'name' must be a non-empty string, not {model.name!r}")
    shape = _check_shape(mf, model.input_shape)
    model.input_shape = shape
    model.input_scale_exp = _check_int(mf, "input.scale_exp", model.input_scale_exp, *SCALE_EXP_RANGE)
    model.output_scale_exp = _check_int(mf, "output.scale_exp", model.output_scale_exp, *SCALE_EXP_RANGE)
    if not model.layers:
        raise mf.error("field 'layers' is empty")
    seen, files = set(), set()
    for i, layer in enumerate(model.layers):
        if not isinstance(layer.name, str) or not _NAME_RE.match(layer.name):
            raise mf.error(f"layer {i}: field 'name' {layer.name!r} is not a valid layer name")
        if layer.name in seen:
            raise mf.error(f"layer {i}: field 'name' {layer.name!r} is used twice")
        seen.add(layer.name)
        if layer.kind not in KINDS:
            raise _Where(mf.file, layer.name).error(
                f"field 'kind' has unknown value {layer.kind!r} (known: {', '.join(KINDS)})")
        where = _Where(mf.file, layer.name, layer.kind)
        layer.attrs = _check_attrs(where, layer.kind, dict(layer.attrs))
        layer.in_shape = shape
        shape = layer.out_shape = _propagate(where, layer, shape)
        if layer.has_params:
            pf = layer.params_file or f"{layer.name}.npz"
            if not isinstance(pf, str) or not _FILE_RE.match(pf):
                raise where.error(f"field 'params' {pf!r} must be a plain file name ending in .npz")
            if pf in files:
                raise where.error(f"field 'params' {pf!r} is used by two layers")
            files.add(pf)
            _check_params(_Where(base / pf, layer.name, layer.kind), layer.kind, layer.attrs, layer.params)
        elif layer.params:
            raise where.error("has parameters but this kind takes none")
    return model


# --------------------------------------------------------------------------- load

def _load_npz(where, file):
    if not file.is_file():
        raise where.error(f"parameter file is missing (field 'params')")
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise where.error(f"cannot read parameters: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def load_model(path):
    """Read and fully validate the model directory at ``path``; returns a :class:`Model`."""
    path = Path(path)
    mfile = path / "manifest.json"
    mf = _Where(mfile)
    if not path.is_dir():
        raise SparrowError(f"{path}: model directory does not exist")
    if not mfile.is_file():
        raise mf.error("file is missing")
    try:
        doc = json.loads(mfile.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise mf.error(f"not valid JSON ({str(exc).splitlines()[0]})")
    if not isinstance(doc, dict):
        raise mf.error("top level must be a JSON object")
    if doc.get("format") != FORMAT:
        raise mf.error(f"field 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise mf.error(f"field 'version' is {doc.get('version')!r}; this reader knows version {VERSION}")
    for key in doc:
        if key not in ("format", "version", "name", "input", "layers", "output", "meta"):
            raise mf.error(f"unknown field {key!r}")
    for key, typ in (("name", str), ("input", dict), ("layers", list), ("output", dict)):
        if key not in doc:
            raise mf.error(f"missing field '{key}'")
        if not isinstance(doc[key], typ):
            raise mf.error(f"field '{key}' must be a JSON {typ.__name__.replace('dict', 'object')}")
    for sect, keys in (("input", ("shape", "scale_exp")), ("output", ("scale_exp",))):
        for key in keys:
            if key not in doc[sect]:
                raise mf.error(f"missing field '{sect}.{key}'")
        for key in doc[sect]:
            if key not in keys:
                raise mf.error(f"unknown field '{sect}.{key}'")
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise mf.error("field 'meta' must be a JSON object")
    layers = []
    for i, entry in enumerate(doc["layers"]):
        if not isinstance(entry, dict):
            raise mf.error(f"layer {i}: must be a JSON object")
        name, kind = entry.get("name"), entry.get("kind")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise mf.error(f"layer {i}: field 'name' {name!r} is not a valid layer name")
        if kind not in KINDS:
            raise _Where(mfile, name).error(f"field 'kind' has unknown value {kind!r} (known: {', '.join(KINDS)})")
        where = _Where(mfile, name, kind)
        attrs = {k: v for k, v in entry.items() if k not in _LAYER_KEYS}
        layer = Layer(name=name, kind=kind, attrs=_check_attrs(where, kind, attrs))
        if kind in PARAM_KINDS:
            pf = entry.get("params")
            if pf is None:
                raise where.error("missing field 'params'")
            if not isinstance(pf, str) or not _FILE_RE.match(pf):
                raise where.error(f"field 'params' {pf!r} must be a plain file name ending in .npz")
            layer.params_file = pf
            layer.params = _load_npz(_Where(path / pf, name, kind), path / pf)
        elif "params" in entry:
            raise where.error("field 'params' given but this kind takes none")
        layers.append(layer)
    model = Model(name=doc["name"], input_shape=doc["input"]["shape"],
                  input_scale_exp=doc["input"]["scale_exp"], output_scale_exp=doc["output"]["scale_exp"],
                  layers=layers, path=path, meta=meta)
    return validate_model(model, path)


# --------------------------------------------------------------------------- save

def _check_replaceable(path):
    if not path.is_dir() or (not (path / "manifest.json").is_file() and any(path.iterdir())):
        raise SparrowError(f"{path}: exists and is not a model directory; refusing to replace it")


def save_model(model, path):
    """Validate ``model`` and write it as a model directory at ``path``, atomically.

    The files are written to a temporary directory beside ``path`` that is then
    renamed into place (an existing directory at ``path`` is replaced).  On any
    error nothing at ``path`` changes.  Returns the path; sets ``model.path``.
    """
    path = Path(path)
    validate_model(model, path)
    try:
        json.dumps(model.meta)
    except (TypeError, ValueError) as exc:
        raise SparrowError(f"{path / 'manifest.json'}: field 'meta' is not JSON-serialisable ({exc})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for layer in model.layers:
            if layer.has_params:
                layer.params_file = layer.params_file or f"{layer.name}.npz"
                np.savez(tmp / layer.params_file, **layer.params)
        (tmp / "manifest.json").write_text(json.dumps(model.manifest(), indent=1) + "\n")
        replace_directory(tmp, path, _check_replaceable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model.path = path
    return path
