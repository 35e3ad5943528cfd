"""The integer golden model: a model directory run in plain numpy int64.

Written from ``docs/format.md`` alone, independent of the training code.  All
arithmetic is exact on int64 (no value of a valid format-v1 model comes near
2**63).  Activations are int8 values held in int64 arrays with a leading batch
dimension ``N``.

The pieces of ``sd_linear`` (:func:`sd_z`, :func:`sd_acc`) and of the other
kinds are exported so that hardware benches can use them as reference models.
``bc_linear``/``bc_conv2d`` run through the fixed-point FFT datapath of
:mod:`sparrow.fixedfft` (imported lazily); :func:`bc_linear_ideal` is the
exact circulant product that the datapath approximates.
"""

import numpy as np

from sparrow import SparrowError
from sparrow.arrays import quantize_real

__all__ = [
    "rshift", "sat8", "satz", "relu",
    "dense_linear_acc", "dense_linear_forward",
    "sd_z", "sd_acc", "sd_linear_forward",
    "bc_dense_weight", "bc_linear_ideal_acc", "bc_linear_ideal", "bc_linear_forward",
    "im2col", "conv2d_forward", "maxpool2d_forward", "flatten_forward",
    "layer_forward", "run_model", "run_layers", "real_input_accuracy",
]


def rshift(v, s):
    """Round-half-up arithmetic right shift: floor((v + 2**(s-1)) / 2**s), or v when s == 0."""
    v = np.asarray(v, dtype=np.int64)
    s = int(s)
    if s == 0:
        return v.copy()
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def sat8(v):
    """Clamp to the int8 range [-128, 127] (int64 result)."""
    return np.clip(np.asarray(v, dtype=np.int64), -128, 127)


def satz(v, bits):
    """Clamp to the signed ``bits``-bit range [-2**(bits-1), 2**(bits-1) - 1]."""
    lim = 1 << (int(bits) - 1)
    return np.clip(np.asarray(v, dtype=np.int64), -lim, lim - 1)


def relu(v):
    return np.maximum(v, 0)


def _finish(acc, attrs):
    """acc -> int8 activation: sat8(rshift(acc, out_shift)), then ReLU if the layer has it."""
    y = sat8(rshift(acc, attrs["out_shift"]))
    return relu(y) if attrs["relu"] else y


def _i64(a):
    return np.asarray(a, dtype=np.int64)


# --------------------------------------------------------------------------- dense

def dense_linear_acc(weight, bias, x):
    """bias + weight @ x for a batch: weight [out, in], bias [out], x [N, in] -> [N, out] int64."""
    return _i64(x) @ _i64(weight).T + _i64(bias)[None, :]


def dense_linear_forward(layer, x):
    """dense_linear on x [N, in] -> int8 values [N, out] (int64)."""
    p = layer.params
    return _finish(dense_linear_acc(p["weight"], p["bias"], x), layer.attrs)


# --------------------------------------------------------------------------- SmartDeal

def sd_z(basis, x, basis_shift, z_bits=8):
    """The SmartDeal basis stage for every tile.

    basis int [T, G, k, k] (G = in/k groups), x [N, in] ->
    z [N, T, in] with z[n, t, g*k+i] = satz(rshift(sum_j basis[t,g,i,j] * x[n, g*k+j], basis_shift)).
    """
    b = _i64(basis)
    t, g, k, _ = b.shape
    xg = _i64(x).reshape(-1, g, k)                      # [N, G, k]
    z = np.einsum("tgij,ngj->ntgi", b, xg)              # exact on int64
    return satz(rshift(z, basis_shift), z_bits).reshape(-1, t, g * k)


def sd_coef(coef_sign, coef_exp):
    """The signed power-of-two coefficient matrix C = sign * 2**exp (0 where sign == 0), int64 [out, in]."""
    return _i64(coef_sign) * (np.int64(1) << _i64(coef_exp))


def sd_acc(z, coef_sign, coef_exp, bias):
    """acc[n, o] = bias[o] + sum_j sign[o,j] * z[n, t(o), j] * 2**exp[o,j]; z [N, T, in] -> [N, out]."""
    c = sd_coef(coef_sign, coef_exp)
    out = c.shape[0]
    t = z.shape[1]
    rows = out // t
    acc = np.empty((z.shape[0], out), dtype=np.int64)
    for ti in range(t):
        sl = slice(ti * rows, (ti + 1) * rows)
        acc[:, sl] = z[:, ti, :] @ c[sl].T
    return acc + _i64(bias)[None, :]


def sd_linear_forward(layer, x):
    """sd_linear on x [N, in] -> int8 values [N, out] (int64)."""
    a, p = layer.attrs, layer.params
    z = sd_z(p["basis"], x, a["basis_shift"], a.get("z_bits", 8))
    return _finish(sd_acc(z, p["coef_sign"], p["coef_exp"], p["bias"]), a)


# --------------------------------------------------------------------------- block-circulant

def bc_dense_weight(w):
    """Expand circulant first columns w [out/k, in/k, k] to the dense matrix [out, in].

    Block (i, j), row r, column c holds w[i, j, (r - c) mod k].
    """
    w = _i64(w)
    bo, bi, k = w.shape
    r = np.arange(k)
    idx = (r[:, None] - r[None, :]) % k                # [k, k]
    blocks = w[:, :, idx]                              # [bo, bi, k, k]
    return blocks.transpose(0, 2, 1, 3).reshape(bo * k, bi * k)


def bc_linear_ideal_acc(layer, x):
    """The exact integer circulant product plus bias, x [N, in] -> [N, out] int64."""
    return dense_linear_acc(bc_dense_weight(layer.params["w"]), layer.params["bias"], x)


def bc_linear_ideal(layer, x):
    """The ideal bc_linear result: exact circulant product, shifted and saturated as dense_linear."""
    return _finish(bc_linear_ideal_acc(layer, x), layer.attrs)


def bc_linear_forward(layer, x):
    """bc_linear through the project's fixed-point FFT datapath (``sparrow.fixedfft``)."""
    try:
        from sparrow import fixedfft as golden_bc
    except ImportError as exc:  # pragma: no cover - depends on the FFT engineer's module
        raise SparrowError(f"layer {layer.name!r} ({layer.kind}): the fixed-point FFT golden model "
                           f"(sparrow.fixedfft) is not available: {exc}")
    return _i64(golden_bc.bc_linear_forward(layer, _i64(x)))


# --------------------------------------------------------------------------- conv / pool / flatten

def im2col(x, kh, kw, stride, padding):
    """Patches of x [N, C, H, W] -> [N, OH*OW, C*kh*kw], zero padding.

    Patch element index = c*kh*kw + r*kw + s (PyTorch's weight flatten order);
    patches are ordered row-major over the output positions (oh*OW + ow).
    """
    x = _i64(x)
    n, c, h, w = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.int64)
    for r in range(kh):
        for s in range(kw):
            cols[:, :, r, s] = x[:, :, r:r + stride * oh:stride, s:s + stride * ow:stride]
    return cols.reshape(n, c * kh * kw, oh * ow).transpose(0, 2, 1), oh, ow


_LINEAR_FN = {}


def conv2d_forward(layer, x):
    """dense_conv2d / sd_conv2d / bc_conv2d: the linear kind on every im2col patch.

    x [N, C, H, W] -> [N, out_ch, OH, OW] int8 values (int64).
    """
    a = layer.attrs
    cols, oh, ow = im2col(x, a["kh"], a["kw"], a["stride"], a["padding"])
    n = cols.shape[0]
    y = _LINEAR_FN[layer.kind.replace("conv2d", "linear")](layer, cols.reshape(n * oh * ow, -1))
    return y.reshape(n, oh, ow, a["out_ch"]).transpose(0, 3, 1, 2)


def maxpool2d_forward(layer, x):
    """Max over kernel x kernel windows with the given stride, no padding (floor output size)."""
    kernel, stride = layer.attrs["kernel"], layer.attrs["stride"]
    x = _i64(x)
    n, c, h, w = x.shape
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    y = None
    for r in range(kernel):
        for s in range(kernel):
            win = x[:, :, r:r + stride * oh:stride, s:s + stride * ow:stride][:, :, :oh, :ow]
            y = win.copy() if y is None else np.maximum(y, win)
    return y


def flatten_forward(layer, x):
    """C-major flatten: [N, C, H, W] -> [N, C*H*W] with index c*H*W + h*W + w."""
    return _i64(x).reshape(x.shape[0], -1)


_LINEAR_FN.update({"dense_linear": dense_linear_forward, "sd_linear": sd_linear_forward,
                   "bc_linear": bc_linear_forward})
_FORWARD = {**_LINEAR_FN, "dense_conv2d": conv2d_forward, "sd_conv2d": conv2d_forward,
            "bc_conv2d": conv2d_forward, "maxpool2d": maxpool2d_forward, "flatten": flatten_forward}


def layer_forward(layer, x):
    """Run one layer on a batch x [N, *layer.in_shape]; returns [N, *layer.out_shape] int64."""
    return _FORWARD[layer.kind](layer, x)


def run_layers(model, x):
    """Run every layer; returns the list of activations [input, after layer 0, ...] (int64)."""
    acts = [_check_input(model, x)]
    for layer in model.layers:
        acts.append(layer_forward(layer, acts[-1]))
    return acts


def _check_input(model, x):
    x = np.asarray(x)
    shape = tuple(model.input_shape)
    if x.dtype != np.int8:
        raise SparrowError(f"inputs have dtype {x.dtype}, expected int8")
    size = int(np.prod(shape))
    if x.ndim == 2 and x.shape[1] == size:
        x = x.reshape((x.shape[0],) + shape)
    if x.shape[1:] != shape:
        raise SparrowError(f"inputs have shape {list(x.shape)}, expected [N, {size}] "
                           f"or [N, {', '.join(map(str, shape))}] for model {model.name!r}")
    return x.astype(np.int64)


def run_model(model, x):
    """Run ``model`` on int8 inputs x [N, *input_shape] (or [N, prod(input_shape)]).

    Returns int8 [N, output size]: the last layer's activation, flattened C-major.
    """
    y = run_layers(model, x)[-1]
    return y.reshape(y.shape[0], -1).astype(np.int8)


def real_input_accuracy(model, x, labels):
    """Top-1 accuracy of ``model`` on real inputs ``x`` [N, ...] (quantised with its input scale) against ``labels``."""
    codes = quantize_real(np.asarray(x).reshape(len(x), -1), model.input_scale_exp)
    return float((run_model(model, codes).argmax(1) == np.asarray(labels)).mean())

