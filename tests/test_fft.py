"""The integer FFT (sparrow.fixedfft.fft_int) and the FFT unit (sparrow.hw.fft.FFTUnit).

The integer model is checked against numpy's FFT within the documented error;
the RTL is checked against the integer model exactly, on Verilator and Icarus.
"""

import numpy as np
import pytest

from sparrow.hw.fft import FFTUnit
from sparrow.fixedfft import fft_int, ZBUF_BITS
from sparrow.tb.runner import run_cocotb, to_verilog


def _forward_blocks(rng, k, n):
    """Pairs of int8 blocks, pre-shifted by 7 - L: random, full scale, alternating."""
    g = 7 - (k.bit_length() - 1)
    xs = [rng.integers(-128, 128, size=(n, 2, k))]
    corners = np.array([[-128] * k, [127] * k, [127, -128] * (k // 2), [-128, 127] * (k // 2),
                        [0] * k, [1] + [0] * (k - 1)])
    for a in corners:
        for b in corners[:3]:
            xs.append(np.stack([a, b])[None])
    x = np.concatenate(xs)
    return x[:, 0] << g, x[:, 1] << g


def _inverse_blocks(rng, k, n):
    """22-bit words of every magnitude (every block exponent 0..7 occurs)."""
    lim = 1 << (ZBUF_BITS - 1)
    parts = []
    for bits in (6, 13, 15, 16, 17, 18, 19, 20, 21, 22):
        b = min(bits, ZBUF_BITS)
        parts.append(rng.integers(-(1 << (b - 1)), 1 << (b - 1), size=(n, 2, k)))
    full = np.full((1, 2, k), lim - 1)
    parts += [full, -full - 1, np.full((1, 2, k), -(1 << 14)), np.full((1, 2, k), (1 << 14) - 1)]
    z = np.concatenate(parts)
    return z[:, 0], z[:, 1]


@pytest.mark.parametrize("k", [4, 8, 16, 32, 64])
def test_fft_int_matches_numpy(k):
    """Forward: error vs numpy within 1 + 0.6 * L per component; inverse (halved): within 3 (in units of 2**e)."""
    rng = np.random.default_rng(k)
    L = k.bit_length() - 1
    re, im = _forward_blocks(rng, k, 200)
    gr, gi, e = fft_int(re, im)
    assert not e.any()
    ref = np.fft.fft(re + 1j * im)
    err = np.maximum(np.abs(gr - ref.real), np.abs(gi - ref.imag)).max()
    assert err <= 1 + 0.6 * L, err
    zr, zi = _inverse_blocks(rng, k, 40)
    vr, vi, e = fft_int(zr, zi, inverse=True)
    ref = np.fft.ifft(zr + 1j * zi) / 2.0 ** e[:, None]
    err = np.maximum(np.abs(vr - ref.real), np.abs(vi - ref.imag)).max()
    assert err <= 3.0, err
    assert set(e.tolist()) >= set(range(8))


def test_fft_unit_parameters():
    with pytest.raises(TypeError, match=r"^FFT size must be an integer, not 16.0$"):
        FFTUnit(16.0)
    with pytest.raises(ValueError, match=r"^FFT size must be a power of two from 4 to 64, not 12$"):
        FFTUnit(12)
    with pytest.raises(ValueError, match=r"^FFT size must be a power of two from 4 to 64, not 128$"):
        FFTUnit(128)


@pytest.mark.parametrize("simulator, k", [("verilator", 4), ("verilator", 64), ("icarus", 4),
                                          ("icarus", 16), ("icarus", 64)])
def test_fft_unit_bit_exact(tmp_path, simulator, k):
    rng = np.random.default_rng(100 + k)
    n = 6 if simulator == "icarus" else 12
    fr, fi = _forward_blocks(rng, k, n)
    ir, ii = _inverse_blocks(rng, k, 2 if simulator == "icarus" else 4)
    sel_f = rng.permutation(len(fr))[:n + 4]
    sel_i = rng.permutation(len(ir))[:n + 4]
    re = np.concatenate([fr[sel_f], ir[sel_i]])
    im = np.concatenate([fi[sel_f], ii[sel_i]])
    inverse = np.array([0] * len(sel_f) + [1] * len(sel_i))
    path = tmp_path / "fft.npz"
    np.savez(path, re=re, im=im, inverse=inverse, seed=k)
    run_cocotb(to_verilog(FFTUnit(k), f"fft{k}"), f"fft{k}", "sparrow.tb.fft_tb", simulator,
               extra_env={"FFT_TB_DATA": path}, log_file=tmp_path / "sim.log")
