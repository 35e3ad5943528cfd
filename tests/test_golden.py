"""The integer golden model against independent computations (Python ints, torch float64)."""

import numpy as np
import pytest
import torch

from sparrow.sw import golden
from sparrow.sw.randmodel import random_layer, random_model


def _rshift(v, s):
    return v if s == 0 else (v + (1 << (s - 1))) // (1 << s)


def _finish(acc, a):
    y = max(-128, min(127, _rshift(acc, a["out_shift"])))
    return max(0, y) if a["relu"] else y


def test_rshift_rounds_half_up_and_sat8():
    v = np.array([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 2**40 + 3, -(2**40) - 3])
    for s in (0, 1, 2, 3, 31):
        assert golden.rshift(v, s).tolist() == [_rshift(int(i), s) for i in v]
    assert golden.rshift(np.array([-3, -2, -1, 1, 2, 3]), 1).tolist() == [-1, -1, 0, 1, 1, 2]
    assert golden.sat8(np.array([-1000, -129, -128, 0, 127, 128, 999])).tolist() == [-128, -128, -128, 0, 127, 127, 127]
    assert golden.satz(np.array([-40000, 40000, 5]), 16).tolist() == [-32768, 32767, 5]


def _ref_dense(layer, xs):
    w, b, a = layer.params["weight"].tolist(), layer.params["bias"].tolist(), layer.attrs
    return [[_finish(b[o] + sum(w[o][j] * x[j] for j in range(len(x))), a) for o in range(len(w))] for x in xs]


def _ref_sd(layer, xs):
    a, p = layer.attrs, layer.params
    k, lim = a["k"], 1 << (a["z_bits"] - 1)
    basis, sign, exp, bias = p["basis"].tolist(), p["coef_sign"].tolist(), p["coef_exp"].tolist(), p["bias"].tolist()
    tiles, n_out, n_in = len(basis), len(sign), len(sign[0])
    rows = n_out // tiles
    ys = []
    for x in xs:
        y = []
        for o in range(n_out):
            t = o // rows
            z = []
            for g in range(n_in // k):
                for i in range(k):
                    v = _rshift(sum(basis[t][g][i][j] * x[g * k + j] for j in range(k)), a["basis_shift"])
                    z.append(max(-lim, min(lim - 1, v)))
            acc = bias[o] + sum(sign[o][j] * z[j] * (1 << exp[o][j]) for j in range(n_in))
            y.append(_finish(acc, a))
        ys.append(y)
    return ys


def _ref_bc(layer, xs):
    a, w, b = layer.attrs, layer.params["w"].tolist(), layer.params["bias"].tolist()
    k = a["k"]
    ys = []
    for x in xs:
        y = []
        for o in range(a["out"]):
            i, r = divmod(o, k)
            acc = b[o] + sum(w[i][j][(r - c) % k] * x[j * k + c] for j in range(a["in"] // k) for c in range(k))
            y.append(_finish(acc, a))
        ys.append(y)
    return ys


@pytest.mark.parametrize("kind,kw", [
    ("dense_linear", dict(in_=12, out=5, relu=True)),
    ("dense_linear", dict(in_=7, out=3, out_shift=0)),
    ("sd_linear", dict(in_=16, out=6, k=4, tiles=2, z_bits=8)),
    ("sd_linear", dict(in_=12, out=6, k=3, tiles=3, z_bits=12, relu=True, basis_shift=3)),
    ("sd_linear", dict(in_=8, out=4, k=1, tiles=1, basis_shift=0, out_shift=31)),
])
def test_linear_kinds_match_python_ints(kind, kw):
    rng = np.random.default_rng(hash(str(kw)) % 2**32)
    layer = random_layer(kind, rng, **kw)
    model = random_model([layer], (layer.attrs["in"],))
    xs = rng.integers(-128, 128, size=(9, layer.attrs["in"])).astype(np.int8)
    xs[0] = 127
    xs[1] = -128
    ref = (_ref_dense if kind == "dense_linear" else _ref_sd)(layer, xs.astype(int).tolist())
    got = golden.run_model(model, xs)
    assert got.dtype == np.int8
    assert got.tolist() == ref


def test_sd_z_saturates_to_z_bits():
    basis = np.full((1, 1, 2, 2), 127, dtype=np.int8)
    x = np.array([[127, 127], [-128, -128]])
    z8 = golden.sd_z(basis, x, basis_shift=0, z_bits=8)
    z16 = golden.sd_z(basis, x, basis_shift=0, z_bits=16)
    assert z8.tolist() == [[[127, 127]], [[-128, -128]]]
    assert z16.tolist() == [[[32258, 32258]], [[-32512, -32512]]]


def test_bc_ideal_matches_circulant_definition():
    rng = np.random.default_rng(3)
    layer = random_layer("bc_linear", rng, in_=16, out=8, k=4)
    random_model([layer], (16,))
    xs = rng.integers(-128, 128, size=(5, 16))
    assert golden.bc_linear_ideal(layer, xs).tolist() == _ref_bc(layer, xs.tolist())
    # w[i, j, :] is the first column of block (i, j)
    dense = golden.bc_dense_weight(layer.params["w"])
    assert dense[0:4, 0].tolist() == layer.params["w"][0, 0].tolist()
    assert dense[4:8, 12].tolist() == layer.params["w"][1, 3].tolist()


@pytest.mark.parametrize("kind,cfg", [
    ("dense_conv2d", dict(in_ch=2, out_ch=3, kh=3, kw=3, stride=1, padding=1)),
    ("dense_conv2d", dict(in_ch=3, out_ch=2, kh=2, kw=3, stride=2, padding=0, relu=True)),
    ("sd_conv2d", dict(in_ch=2, out_ch=4, kh=3, kw=3, stride=1, padding=1, k=3, tiles=2)),
    ("sd_conv2d", dict(in_ch=4, out_ch=2, kh=1, kw=1, stride=1, padding=0, k=4, relu=True)),
])
def test_conv_matches_torch_float64(kind, cfg):
    """im2col order c*kh*kw + r*kw + s and zero padding, checked against torch's conv2d."""
    rng = np.random.default_rng(sum(map(ord, kind)) + cfg["kh"])
    layer = random_layer(kind, rng, **cfg)
    model = random_model([layer], (cfg["in_ch"], 7, 6))
    x = rng.integers(-128, 128, size=(4, cfg["in_ch"], 7, 6)).astype(np.int8)
    a, p = layer.attrs, layer.params
    if kind == "dense_conv2d":
        w = p["weight"].astype(np.float64)
        xin = torch.tensor(x, dtype=torch.float64)
    else:
        w = None  # sd: the Python-int reference on torch's unfold patches (same order as conv2d)
    if w is not None:
        acc = torch.nn.functional.conv2d(xin, torch.tensor(w.reshape(a["out_ch"], a["in_ch"], a["kh"], a["kw"])),
                                         stride=a["stride"], padding=a["padding"]).numpy()
        acc = acc.astype(np.int64) + p["bias"].astype(np.int64)[None, :, None, None]
        ref = golden.sat8(golden.rshift(acc, a["out_shift"]))
        if a["relu"]:
            ref = np.maximum(ref, 0)
    else:
        patches = torch.nn.functional.unfold(torch.tensor(x, dtype=torch.float64), (a["kh"], a["kw"]),
                                             stride=a["stride"], padding=a["padding"]).numpy().astype(np.int64)
        n, _, l = patches.shape
        oh = (7 + 2 * a["padding"] - a["kh"]) // a["stride"] + 1
        cols = patches.transpose(0, 2, 1).reshape(n * l, -1)
        ref = np.array(_ref_sd(layer, cols.tolist())).reshape(n, oh, l // oh, a["out_ch"]).transpose(0, 3, 1, 2)
    got = golden.run_layers(model, x)[-1]
    assert got.shape == (4, a["out_ch"]) + layer.out_shape[1:]
    assert got.tolist() == ref.tolist()


def test_im2col_order_by_hand():
    x = np.arange(2 * 3 * 3).reshape(1, 2, 3, 3)
    cols, oh, ow = golden.im2col(x, 2, 2, 1, 1)
    assert (oh, ow) == (4, 4)
    # output position (1, 1) covers rows 0..1, cols 0..1 of each channel
    assert cols[0, 1 * 4 + 1].tolist() == [0, 1, 3, 4, 9, 10, 12, 13]
    # position (0, 0) sees the zero padding above and left
    assert cols[0, 0].tolist() == [0, 0, 0, 0, 0, 0, 0, 9]


def test_pool_flatten_and_whole_cnn_against_torch():
    rng = np.random.default_rng(7)
    conv = random_layer("dense_conv2d", rng, name="c1", in_ch=1, out_ch=4, kh=3, kw=3, padding=1, relu=True)
    pool = random_layer("maxpool2d", rng, name="p1", kernel=2, pool_stride=2)
    flat = random_layer("flatten", rng, name="f")
    fc = random_layer("dense_linear", rng, name="fc", in_=4 * 4 * 4, out=10)
    model = random_model([conv, pool, flat, fc], (1, 9, 9))
    assert pool.out_shape == (4, 4, 4) and flat.out_shape == (64,)
    x = rng.integers(-128, 128, size=(6, 1, 9, 9)).astype(np.int8)
    acts = golden.run_layers(model, x)
    t = torch.tensor(acts[1], dtype=torch.float64)
    assert acts[2].tolist() == torch.nn.functional.max_pool2d(t, 2, 2).numpy().astype(np.int64).tolist()
    assert acts[3].tolist() == acts[2].reshape(6, -1).tolist()
    assert golden.run_model(model, x.reshape(6, -1)).tolist() == acts[4].tolist()
    pool3 = random_layer("maxpool2d", rng, name="p", kernel=3, pool_stride=2)
    m3 = random_model([pool3], (2, 7, 8))
    x3 = rng.integers(-128, 128, size=(3, 2, 7, 8)).astype(np.int8)
    ref3 = torch.nn.functional.max_pool2d(torch.tensor(x3, dtype=torch.float64), 3, 2).numpy()
    assert golden.run_layers(m3, x3)[-1].tolist() == ref3.astype(np.int64).tolist()


def test_run_model_rejects_bad_inputs():
    from sparrow import SparrowError
    rng = np.random.default_rng(1)
    model = random_model([random_layer("dense_linear", rng, in_=4, out=2)], (4,))
    with pytest.raises(SparrowError, match="dtype int64, expected int8"):
        golden.run_model(model, np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(SparrowError, match=r"shape \[2, 5\], expected \[N, 4\]"):
        golden.run_model(model, np.zeros((2, 5), dtype=np.int8))
