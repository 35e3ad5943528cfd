"""The fixed-point bc_linear datapath (sparrow.fixedfft): pieces against float, whole against ideal."""

import numpy as np
import pytest

from sparrow import SparrowError
from sparrow import fixedfft as G
from sparrow.sw import golden
from sparrow.sw.randmodel import random_layer


@pytest.mark.parametrize("k", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("integer", [False, True])
def test_weight_spectra_are_rounded_dft(k, integer):
    """round(DFT(w) * 2^(8 - L - R)); R = 8 - L gives round(DFT(w)), 8 + L bits signed."""
    rng = np.random.default_rng(k)
    w = rng.integers(-128, 128, size=(3, 2, k))
    w[0, 0] = -128
    shift = G.max_ws_shift(k) if integer else 0
    wr, wi = G.weight_spectra(w, shift)
    ref = np.fft.rfft(w) * 2.0 ** (8 - G.log2k(k) - shift)
    assert np.abs(wr - ref.real).max() <= 0.5 + 1e-9
    assert np.abs(wi - ref.imag).max() <= 0.5 + 1e-9
    assert wr[0, 0, 0] == -(1 << (15 - shift)) and not wi[..., 0].any() and not wi[..., -1].any()
    bits = 8 + G.log2k(k) if integer else 16
    assert max(wr.max(), wi.max()) < 1 << (bits - 1) and min(wr.min(), wi.min()) >= -(1 << (bits - 1))


@pytest.mark.parametrize("bad", [-1, 6, 1.5, True, "2"])
def test_ws_shift_range(bad):
    lay = random_layer("bc_linear", np.random.default_rng(0), in_=16, out=8, k=8)
    lay.attrs["ws_shift"] = bad
    with pytest.raises(SparrowError, match=r"^ws_shift must be an integer between 0 and 5 for k = 8, not "):
        G.layer_constants(lay)


@pytest.mark.parametrize("k", [4, 16, 64])
def test_forward_spectra_close_to_dft(k):
    rng = np.random.default_rng(k + 1)
    x = rng.integers(-128, 128, size=(20, 5 * k))
    x[0] = -128
    xr, xi = G.forward_spectra(x, k)
    ref = np.fft.rfft(x.reshape(20, 5, k)) * 2.0 ** (8 - G.log2k(k))
    err = np.maximum(np.abs(xr - ref.real), np.abs(xi - ref.imag)).max()
    assert err <= 2 * (1 + 0.6 * G.log2k(k)), err


def test_split_and_hermitian_roundtrip():
    rng = np.random.default_rng(3)
    k = 16
    a, b = rng.integers(-2000, 2000, size=(2, 4, k))
    Z = np.fft.fft(a + 1j * b)
    zr, zi = np.round(Z.real).astype(np.int64), np.round(Z.imag).astype(np.int64)
    ar, ai, br, bi = G.split_spectra(zr, zi)
    assert np.abs(ar + 1j * ai - 2 * np.fft.rfft(a)).max() < 2
    assert np.abs(br + 1j * bi - 2 * np.fft.rfft(b)).max() < 2
    zr2, zi2 = G.ifft_input(*(np.round(v).astype(np.int64) for v in
                              (np.fft.rfft(a).real, np.fft.rfft(a).imag,
                               np.fft.rfft(b).real, np.fft.rfft(b).imag)))
    assert np.abs(zr2 + 1j * zi2 - Z).max() < 2


def test_block_exponent_and_rounding_helpers():
    z = np.array([[(1 << 14) - 1, -(1 << 14)], [1 << 14, 0], [-(1 << 20), 5]])
    assert G.block_exponent(z, np.zeros_like(z)).tolist() == [0, 1, 6]
    assert G.rshift_var(np.array([3, -3, 5]), np.array([1, 1, 0])).tolist() == [2, -1, 5]
    assert G.adjusted_bias(np.array([100, -100]), 4, 2).tolist() == [27, -23]
    with pytest.raises(SparrowError, match="FFT size"):
        G.log2k(12)


def test_rshift_identity_of_the_output_stage():
    """floor((v + b') / 2**Fe) == rshift(v * 2**(s-Fe) + bias, s) for every v, bias, s, Fe."""
    rng = np.random.default_rng(4)
    for s in range(0, 12):
        for fe in range(0, min(s, 6) + 1):
            v = rng.integers(-40000, 40000, size=200)
            bias = rng.integers(-(1 << 31), 1 << 31, size=200)
            lhs = (v + G.adjusted_bias(bias, s, fe)) >> fe
            rhs = golden.rshift(v * (1 << (s - fe)) + bias, s)
            assert (lhs == rhs).all()


def _error_hist(rng, k, layers=4, vectors=32, shift_delta=0, ws=0):
    hist = np.zeros(512, np.int64)
    for _ in range(layers):
        n_in = int(rng.choice([2, 4, 8])) * max(k, 16)
        n_out = int(rng.choice([1, 2, 3])) * k
        lay = random_layer("bc_linear", rng, in_=n_in, out=n_out, k=k, relu=bool(rng.integers(2)))
        lay.attrs["out_shift"] += shift_delta
        lay.attrs["ws_shift"] = ws
        x = rng.integers(-128, 128, size=(vectors, n_in))
        d = np.abs(G.bc_linear_forward(lay, x) - golden.bc_linear_ideal(lay, x)).ravel()
        np.add.at(hist, d, 1)
    return hist


@pytest.mark.parametrize("k", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("integer", [False, True])
def test_error_bound_against_ideal(k, integer):
    """>= 99% of outputs within 1 LSB of the exact circulant product, none off by more than 2
    (16-bit weight spectra, and the integer spectra the compressor writes)."""
    rng = np.random.default_rng(50 + k)
    for delta in (0, -1):                  # as exported, and with 4x more saturation
        hist = _error_hist(rng, k, shift_delta=delta, ws=G.max_ws_shift(k) if integer else 0)
        total = hist.sum()
        assert hist[:2].sum() >= 0.99 * total, hist[:4]
        assert not hist[3:].any(), np.nonzero(hist)[0]


def _exact_circulant(layer, x):
    """The ideal bc_linear result, written from docs/format.md: block (i, j) row r col c
    holds w[i, j, (r - c) mod k]; y = sat8(rshift(bias + W x, out_shift)), then ReLU."""
    w = np.asarray(layer.params["w"], np.int64)
    nbo, nb, k = w.shape
    r = np.arange(k)
    dense = np.zeros((nbo * k, nb * k), np.int64)
    for i in range(nbo):
        for j in range(nb):
            dense[i * k:(i + 1) * k, j * k:(j + 1) * k] = w[i, j][(r[:, None] - r[None, :]) % k]
    acc = np.asarray(x, np.int64) @ dense.T + np.asarray(layer.params["bias"], np.int64)
    s = layer.attrs["out_shift"]
    if s:
        acc = (acc + (1 << (s - 1))) >> s                  # floor: numpy's >> on int64
    y = np.clip(acc, -128, 127)
    return np.maximum(y, 0) if layer.attrs["relu"] else y


@pytest.mark.parametrize("k", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("integer", [False, True])
def test_datapath_within_one_lsb_of_the_exact_circulant_product(k, integer):
    """As README and docs/design-fft.md state: every output within 1 LSB of the exact product
    (16-bit and integer weight spectra)."""
    rng = np.random.default_rng(700 + k)
    counts = np.zeros(3, np.int64)                          # exact, off by 1, off by more
    for _ in range(6):
        n_in = int(rng.choice([1, 2, 3, 8])) * k
        n_out = int(rng.choice([1, 2, 3])) * k
        lay = random_layer("bc_linear", rng, in_=n_in, out=n_out, k=k, relu=bool(rng.integers(2)))
        lay.attrs["ws_shift"] = G.max_ws_shift(k) if integer else 0
        x = rng.integers(-128, 128, size=(24, n_in))
        x[0], x[1] = -128, 127                              # full scale
        diff = np.abs(G.bc_linear_forward(lay, x) - _exact_circulant(lay, x)).ravel()
        counts += [np.sum(diff == 0), np.sum(diff == 1), np.sum(diff > 1)]
    assert counts[2] == 0, counts
    assert counts[0] > 0, counts


def test_forward_checks_shape():
    rng = np.random.default_rng(9)
    lay = random_layer("bc_linear", rng, in_=32, out=16, k=8)
    x = rng.integers(-128, 128, size=(5, 32))
    with pytest.raises(SparrowError, match=r"input has shape \[5, 16\]"):
        G.bc_linear_forward(lay, x[:, :16])
