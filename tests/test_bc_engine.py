"""BCEngine: parameter checks, memory images, bit-exact cocotb runs on Verilator and Icarus."""

import json

import numpy as np
import pytest

from sparrow.hw.bc_engine import BCEngine, write_images
from sparrow.hw.component import discard
from sparrow.hw.engine import Engine, EngineConfig
from sparrow import fixedfft as golden_bc
from sparrow.sw.randmodel import random_layer
from sparrow.tb.model_sim import run_engine


def _layer(rng, k, n_in, n_out, **kw):
    return random_layer("bc_linear", rng, in_=n_in, out=n_out, k=k, **kw)


def test_parameter_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="^Layer must be a bc_linear sparrow.modeldir.Layer"):
        BCEngine.from_layer(random_layer("dense_linear", rng))
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["k"] = 12
    with pytest.raises(ValueError, match=r"^FFT size must be a power of two from 4 to 64, not 12$"):
        BCEngine.from_layer(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["out"] = 10
    with pytest.raises(ValueError, match=r"^Output count must be a multiple of k=4 up to 65536, not 10$"):
        BCEngine.from_layer(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["fft_frac"] = 17
    with pytest.raises(ValueError, match=r"^fft_frac must be an integer between 0 and 16, not 17$"):
        BCEngine.from_layer(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["ws_shift"] = 7
    with pytest.raises(ValueError, match=r"^ws_shift must be an integer between 0 and 6 for k = 4, not 7$"):
        BCEngine.from_layer(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.params["w"] = lay.params["w"][:1]
    with pytest.raises(ValueError, match=r"^w must be int8 of shape \[2, 2, 4\]$"):
        BCEngine.from_layer(lay)


def test_engine_interface():
    lay = _layer(np.random.default_rng(2), 16, 64, 48)
    engine = discard(BCEngine.from_layer(lay, EngineConfig(pes=4)))
    assert BCEngine.kind == "bc_linear" and isinstance(engine, Engine)
    assert BCEngine.multipliers(lay) == 8
    assert (engine.in_features, engine.out_features, engine.k) == (64, 48, 16)
    assert engine.describe() == {"lanes": 2}
    assert set(engine.signature.members) == {"i", "o", "error"}


def _documented_spectrum(w):
    """round(2^(8-L) * DFT(w)[m]) for m in [0, k/2], saturated to 16 bits (docs/format.md, step 2)."""
    k = w.shape[-1]
    spectrum = np.fft.rfft(w.astype(np.float64)) * 2.0 ** (8 - (k.bit_length() - 1))
    rounded = lambda v: np.clip(np.floor(v + 0.5), -(1 << 15), (1 << 15) - 1).astype(np.int64)
    return rounded(spectrum.real), rounded(spectrum.imag)


def _documented_ws_words(w):
    """``(b, words)``: b = the signed width of the largest spectrum component; word
    ((q*nb + j)*k/2 + m) = {im, re of W_2q+1,j[m], im, re of W_2q,j[m]}, b bits each,
    W_2q,j[m].re at bit 0, for 0 < m < k/2; at m = 0 the im fields hold W[k/2].re (bins
    0 and k/2 are real); a missing block row 2q+1 (odd count) is zero (docs/design-fft.md)."""
    wr, wi = _documented_spectrum(w)
    nbo, nb, h = wr.shape
    assert not wi[..., 0].any() and not wi[..., h - 1].any()
    b = 2
    while not all(-(1 << (b - 1)) <= v < (1 << (b - 1)) for v in np.concatenate([wr.ravel(), wi.ravel()])):
        b += 1
    words = []
    for q in range((nbo + 1) // 2):
        for j in range(nb):
            for m in range(h - 1):
                word = 0
                for lane, row in enumerate((2 * q, 2 * q + 1)):
                    if row < nbo:
                        im = wr[row, j, h - 1] if m == 0 else wi[row, j, m]
                        lane_bits = (int(wr[row, j, m]) % (1 << b)) | (int(im) % (1 << b)) << b
                        word |= lane_bits << (2 * b * lane)
                words.append(word)
    return b, words


def _documented_bias(layer):
    """b'[o] = floor((bias[o] + R) / 2^(s - Fe)), R = 2^(s-1) (0 for s = 0), Fe = min(fft_frac, s)."""
    s = layer.attrs["out_shift"]
    fe = min(layer.attrs.get("fft_frac", 5), s)
    r = (1 << (s - 1)) if s else 0
    return [(int(b) + r) >> (s - fe) for b in layer.params["bias"]]


@pytest.mark.parametrize("k, n_in, n_out, extra", [(8, 16, 24, {}), (4, 12, 8, {"out_shift": 0}),
                                                   (64, 128, 192, {"fft_frac": 9})])
def test_images(tmp_path, k, n_in, n_out, extra):
    """The ROM images equal an independent packing of numpy's rounded DFT, as documented."""
    rng = np.random.default_rng(k + n_in)
    lay = _layer(rng, k, n_in, n_out, name="fc")
    lay.attrs.update(extra)
    lay.params["w"][0, 0] = -128                             # full-scale block: saturates bin 0
    paths = write_images(lay, tmp_path)
    assert sorted(p.name for p in paths) == ["fc.bc.json", "fc.bias.hex", "fc.ws.hex"]
    meta = json.loads((tmp_path / "fc.bc.json").read_text())
    words = [int(s, 16) for s in (tmp_path / "fc.ws.hex").read_text().split()]
    b, expected = _documented_ws_words(np.asarray(lay.params["w"]))
    assert len(words) == meta["images"]["ws"]["depth"] == ((n_out // k + 1) // 2) * (n_in // k) * (k // 2)
    assert meta["images"]["ws"]["width"] == 4 * b
    mismatch = [i for i, (got, want) in enumerate(zip(words, expected)) if got != want]
    assert not mismatch, (mismatch[0], hex(words[mismatch[0]]), hex(expected[mismatch[0]]))
    assert discard(BCEngine.from_layer(lay)).memory_images()["ws"][1] == words
    bw = meta["images"]["bias"]["width"]
    b = [int(s, 16) for s in (tmp_path / "fc.bias.hex").read_text().split()]
    assert [v - (1 << bw) if v >> (bw - 1) else v for v in b] == _documented_bias(lay)
    assert meta["cycles_per_vector"] == BCEngine.cycles(lay)


# (simulator, k, in, out, relu, extra attributes): odd block counts, full-scale inputs,
# small out_shift (fft_frac clipped), explicit fft_frac, integer weight spectra (ws_shift
# 8 - L, what the compressor writes) and one between; several output pairs each, so
# the MAC of one pair overlaps the output of the previous one.
CASES = [
    ("verilator", 4, 12, 20, True, {}),
    ("verilator", 16, 64, 48, False, {"out_shift": 3, "ws_shift": 4}),
    ("verilator", 64, 128, 64, False, {"fft_frac": 8}),
    ("verilator", 8, 8, 40, True, {"ws_shift": 5}),          # nb = 1: a gap cycle per bin
    ("icarus", 4, 8, 12, False, {}),
    ("icarus", 8, 24, 8, True, {"fft_frac": 0, "ws_shift": 5}),
    ("icarus", 32, 64, 96, False, {"ws_shift": 1}),
]


@pytest.mark.parametrize("simulator, k, n_in, n_out, relu, extra", CASES)
def test_engine_bit_exact(simulator, k, n_in, n_out, relu, extra):
    rng = np.random.default_rng(k * 1000 + n_in + n_out)
    lay = _layer(rng, k, n_in, n_out, relu=relu)
    lay.attrs.update(extra)
    nvec = 6 if simulator == "verilator" else 3
    x = rng.integers(-128, 128, size=(nvec, n_in))
    x[0], x[1] = -128, 127                                   # full scale
    x[2] = np.where(np.arange(n_in) % 2, 127, -128)
    expected = golden_bc.bc_linear_forward(lay, x)
    assert len(np.unique(expected)) > 3
    y, cycles = run_engine(BCEngine.from_layer(lay), x, simulator, expected=expected, label=lay.name,
                           name=f"bc_engine{k}")
    assert (y == expected).all()
    model = nvec * BCEngine.cycles(lay)
    assert model - 8 <= cycles <= model + 4, (cycles, model)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_engine_backpressure(tmp_path, simulator):
    """Random input gaps and output stalls (o.ready low) change nothing but the timing."""
    from sparrow.tb.model_sim import sim_verilog
    from sparrow.tb.runner import run_cocotb
    rng = np.random.default_rng(77)
    lay = _layer(rng, 4, 12, 20, relu=False)
    x = rng.integers(-128, 128, size=(3, 12))
    path = tmp_path / "bc.npz"
    np.savez(path, x=x, expected=golden_bc.bc_linear_forward(lay, x), p_valid=0.6, p_ready=0.4,
             seed=5)
    run_cocotb(sim_verilog(BCEngine.from_layer(lay), "bc_engine_bp"), "bc_engine_bp",
               "sparrow.tb.bc_engine_tb",
               simulator, extra_env={"BC_TB_DATA": path}, log_file=tmp_path / "sim.log")


def test_sparrow_sim_runs_bc_models(tmp_path):
    """`sparrow sim` (simulate_model) on a two-layer bc_linear model equals `sparrow golden`."""
    from sparrow.sw.golden import run_model
    from sparrow.sw.randmodel import random_model
    from sparrow.hw.engines import engine_for_layer
    from sparrow.tb.model_sim import simulate_model
    rng = np.random.default_rng(11)
    model = random_model([_layer(rng, 8, 32, 16, name="fc1", relu=True),
                          _layer(rng, 4, 16, 8, name="fc2")], [32])
    assert all(type(discard(engine_for_layer(layer, EngineConfig()))) is BCEngine for layer in model.layers)
    x = rng.integers(-128, 128, size=(4, 32)).astype(np.int8)
    y = simulate_model(model, x, "icarus")
    assert (y == run_model(model, x)).all()


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_stream_bench_backpressure(simulator):
    """The stream bench's seeded bubbles and stalls (in the wrapper, no Python per cycle) change
    nothing but the timing; a generic build (run-time ROMs) gives the golden outputs."""
    from sparrow.tb.streambench import run_stream
    rng = np.random.default_rng(78)
    lay = _layer(rng, 4, 12, 20, relu=False)
    x = rng.integers(-128, 128, size=(5, 12)).astype(np.int8)
    expected = golden_bc.bc_linear_forward(lay, x)
    engine = BCEngine.from_layer(lay, EngineConfig(generic=True))
    free = run_stream([engine], x, simulator, expected=expected)
    stalled = run_stream([BCEngine.from_layer(lay, EngineConfig(generic=True))], x, simulator,
                         p_valid=0.6, p_ready=0.4, seed=5, expected=expected)
    assert stalled.cycles[0] > free.cycles[0] > 0
