"""BCEngine: parameter checks, memory images, bit-exact cocotb runs on Verilator and Icarus."""

import json

import numpy as np
import pytest

from sparrow.hw.bc_engine import BCEngine, bc_cycles, write_images, spectra_images
from sparrow.modeldir import Layer
from sparrow import fixedfft as golden_bc
from sparrow.sw.randmodel import random_layer
from sparrow.tb.model_sim import run_engine


def _layer(rng, k, n_in, n_out, **kw):
    return random_layer("bc_linear", rng, in_=n_in, out=n_out, k=k, **kw)


def test_parameter_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="^Layer must be a bc_linear sparrow.modeldir.Layer"):
        BCEngine(random_layer("dense_linear", rng))
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["k"] = 12
    with pytest.raises(ValueError, match=r"^FFT size must be a power of two from 4 to 64, not 12$"):
        BCEngine(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["out"] = 10
    with pytest.raises(ValueError, match=r"^Output count must be a multiple of k=4 up to 65536, not 10$"):
        BCEngine(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.attrs["fft_frac"] = 17
    with pytest.raises(ValueError, match=r"^fft_frac must be an integer between 0 and 16, not 17$"):
        BCEngine(lay)
    lay = _layer(rng, 4, 8, 8)
    lay.params["w"] = lay.params["w"][:1]
    with pytest.raises(ValueError, match=r"^w must be int8 of shape \[2, 2, 4\]$"):
        BCEngine(lay)


def test_images(tmp_path):
    rng = np.random.default_rng(1)
    lay = _layer(rng, 8, 16, 24, name="fc")
    paths = write_images(lay, tmp_path)
    assert sorted(p.name for p in paths) == ["fc.bc.json", "fc.bias.hex", "fc.ws.hex"]
    meta = json.loads((tmp_path / "fc.bc.json").read_text())
    c = golden_bc.layer_constants(lay)
    words = [int(s, 16) for s in (tmp_path / "fc.ws.hex").read_text().split()]
    assert BCEngine(lay).memory_images()["ws"][1] == words
    # 3 block rows padded to 4 = 2 pairs; one 64-bit word per (pair, input block, bin)
    assert len(words) == meta["images"]["ws"]["depth"] == 2 * 2 * 5
    assert meta["images"]["ws"]["width"] == 64
    sx = lambda v: v - (1 << 16) if v >> 15 else v
    field = lambda sh: np.array([sx((w >> sh) & 0xFFFF) for w in words]).reshape(2, 2, 5)
    re = np.stack([field(0), field(32)], axis=1).reshape(4, 2, 5)      # row 2q, row 2q+1
    im = np.stack([field(16), field(48)], axis=1).reshape(4, 2, 5)
    assert (re[:3] == c["wr"]).all() and (im[:3] == c["wi"]).all() and not re[3].any()
    bw = meta["images"]["bias"]["width"]
    b = [int(s, 16) for s in (tmp_path / "fc.bias.hex").read_text().split()]
    b = np.array([v - (1 << bw) if v >> (bw - 1) else v for v in b])
    assert (b == c["bias_adj"]).all()
    assert meta["cycles_per_vector"] == bc_cycles(8, 16, 24)
    assert spectra_images(lay)["ws"][1] == words


# (simulator, k, in, out, relu, extra attributes): odd block counts, full-scale inputs,
# small out_shift (fft_frac clipped), explicit fft_frac; several output pairs each, so
# the MAC of one pair overlaps the output of the previous one.
CASES = [
    ("verilator", 4, 12, 20, True, {}),
    ("verilator", 16, 64, 48, False, {"out_shift": 3}),
    ("verilator", 64, 128, 64, False, {"fft_frac": 8}),
    ("verilator", 8, 8, 40, True, {}),                       # nb = 1: a gap cycle per bin
    ("icarus", 4, 8, 12, False, {}),
    ("icarus", 8, 24, 8, True, {"fft_frac": 0}),
    ("icarus", 32, 64, 96, False, {}),
]


@pytest.mark.parametrize("simulator, k, n_in, n_out, relu, extra", CASES)
def test_engine_bit_exact(simulator, k, n_in, n_out, relu, extra):
    rng = np.random.default_rng(k * 1000 + n_in + n_out)
    lay = _layer(rng, k, n_in, n_out, relu=relu)
    if "out_shift" in extra:
        lay.attrs["out_shift"] = extra["out_shift"]
    if "fft_frac" in extra:
        lay.attrs["fft_frac"] = extra["fft_frac"]
    nvec = 6 if simulator == "verilator" else 3
    x = rng.integers(-128, 128, size=(nvec, n_in))
    x[0], x[1] = -128, 127                                   # full scale
    x[2] = np.where(np.arange(n_in) % 2, 127, -128)
    expected = golden_bc.bc_linear_forward(lay, x)
    assert len(np.unique(expected)) > 3
    y, cycles = run_engine(BCEngine(lay), x, simulator, expected=expected, label=lay.name,
                           name=f"bc_engine{k}")
    assert (y == expected).all()
    model = nvec * bc_cycles(k, n_in, n_out)
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
    run_cocotb(sim_verilog(BCEngine(lay), "bc_engine_bp"), "bc_engine_bp", "sparrow.tb.bc_engine_tb",
               simulator, extra_env={"BC_TB_DATA": path}, log_file=tmp_path / "sim.log")


def test_sparrow_sim_runs_bc_models(tmp_path):
    """`sparrow sim` (simulate_model) on a two-layer bc_linear model equals `sparrow golden`."""
    from sparrow.sw.golden import run_model
    from sparrow.sw.randmodel import random_model
    from sparrow.tb.model_sim import ENGINES, simulate_model
    assert "bc_linear" in ENGINES
    rng = np.random.default_rng(11)
    model = random_model([_layer(rng, 8, 32, 16, name="fc1", relu=True),
                          _layer(rng, 4, 16, 8, name="fc2")], [32])
    x = rng.integers(-128, 128, size=(4, 32)).astype(np.int8)
    y = simulate_model(model, x, "icarus")
    assert (y == run_model(model, x)).all()
