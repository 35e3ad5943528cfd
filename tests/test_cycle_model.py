"""The engines' cycle model against RTL simulation, and break-even pruning from it."""

import math

import numpy as np
import pytest

from sparrow.hw.cycle_model import break_even_ratio, dense_cycles, sd_cycles
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import engine_for_layer, layer_cycles
from sparrow.modeldir import Layer
from sparrow.sw import golden
from sparrow.tb.model_sim import steady_cycles


def _sd_layer(rng, n_in, n_out, pes, per_block):
    """Every P-row block has exactly ``per_block`` nonzero columns."""
    sign = np.zeros((n_out, n_in), np.int8)
    for b in range(0, n_out, pes):
        cols = rng.choice(n_in, size=per_block, replace=False)
        sign[b:b + pes, cols] = rng.choice([-1, 1], size=(min(pes, n_out - b), per_block))
    return Layer("sd", "sd_linear",
                 {"in": n_in, "out": n_out, "k": 4, "basis_shift": 8, "out_shift": 9, "relu": True, "z_bits": 8},
                 {"basis": rng.integers(-128, 128, size=(1, n_in // 4, 4, 4)).astype(np.int8),
                  "coef_sign": sign, "coef_exp": rng.integers(0, 8, size=(n_out, n_in)).astype(np.uint8),
                  "bias": rng.integers(-500, 500, size=n_out).astype(np.int32)})


@pytest.mark.parametrize("n_out,pes,per_block,lanes", [(64, 8, 12, 1), (64, 8, 3, 2), (48, 16, 10, 4)])
def test_sd_cycle_model_within_15_percent_of_rtl(n_out, pes, per_block, lanes):
    rng = np.random.default_rng(n_out + pes + per_block)
    layer = _sd_layer(rng, 16, n_out, pes, per_block)
    config = EngineConfig(pes=pes, out_lanes=lanes)
    x = rng.integers(-128, 128, size=(8, 16)).astype(np.int8)
    steady, _ = steady_cycles(lambda: engine_for_layer(layer, config), x,
                              lambda xs: golden.sd_linear_forward(layer, xs), "icarus")
    # docs/design-sd.md, one tile: every block of P rows costs max(entries, rows/C) cycles
    blocks = sum(max(per_block, math.ceil(min(pes, n_out - b) / lanes)) for b in range(0, n_out, pes))
    expected = max(16, 16 + 1, math.ceil(n_out / lanes), blocks + 4)
    model = layer_cycles(layer, config)
    assert model == expected == sd_cycles(16, n_out, per_block / 16, pes, lanes)
    assert abs(model - steady) <= 0.15 * steady, (model, steady)


def test_dense_cycle_model_equals_rtl():
    rng = np.random.default_rng(3)
    layer = Layer("dense", "dense_linear", {"in": 16, "out": 20, "out_shift": 8, "relu": False},
                  {"weight": rng.integers(-128, 128, size=(20, 16)).astype(np.int8),
                   "bias": np.zeros(20, np.int32)})
    config = EngineConfig(dense_lanes=3)
    x = rng.integers(-128, 128, size=(8, 16)).astype(np.int8)
    steady, _ = steady_cycles(lambda: engine_for_layer(layer, config), x,
                              lambda xs: golden.dense_linear_forward(layer, xs), "icarus")
    # 7 blocks of 3 lanes, 16 columns each, +1 to hand over the x bank
    assert steady == layer_cycles(layer, config) == dense_cycles(16, 20, 3) == 7 * 16 + 1


@pytest.mark.parametrize("board, pes, lanes, sd, dense", [("icebreaker", 56, 2, 97, 1345),
                                                         ("ulx3s-85f", 768, 16, 129, 1548)])
def test_cycle_model_gives_the_measured_benchmark_cycles(board, pes, lanes, sd, dense):
    """The steady-state cycles that bench_sd measured in Verilator (README), from the model alone."""
    from sparrow.bench.bench_sd import CONFIGS, dense_layer, realistic_sd_layer
    cfg = CONFIGS[board]
    rng = np.random.default_rng(2024)
    sd_layer = realistic_sd_layer(rng, cfg["in"], cfg["out"], cfg["k"], pes)
    dense_layer_ = dense_layer(rng, cfg["in"], cfg["out"])
    assert layer_cycles(sd_layer, EngineConfig(pes=pes, out_lanes=lanes)) == sd
    assert layer_cycles(dense_layer_, EngineConfig(dense_lanes=cfg["dense_lanes"])) == dense


def test_break_even_ratio():
    # 56 PEs against 8 MACs win unpruned; 4 PEs against 8 MACs need about half the blocks gone
    assert break_even_ratio(96, 112, 56, 8, out_lanes=2) == 0.0
    r = break_even_ratio(128, 128, 4, 8)
    assert 0.4 < r < 0.6
    assert sd_cycles(128, 128, 1 - r, 4) <= dense_cycles(128, 128, 8) < sd_cycles(128, 128, 1 - r + 0.01, 4)
    assert break_even_ratio(64, 128, 4, 4096) == 1.0
    with pytest.raises(ValueError, match="Block density must be a number in"):
        sd_cycles(16, 16, 1.5, 4)


def test_compress_break_even_auto_keeps_layers_dense_when_pruning_cannot_pay():
    from sparrow.cli.compress import break_even_ratios
    from sparrow.sw.pipeline import compress_digits
    cfg = {"admm_epochs": 2, "retrain_epochs": 1, "qat_epochs": 1, "density": 0.35}
    fast = break_even_ratios("digits-mlp", "admm", cfg, dense_lanes=1)
    slow = break_even_ratios("digits-mlp", "admm", cfg, dense_lanes=4096)
    assert set(slow) == {"fc1", "fc2"} and min(slow.values()) > 0.65     # above the target sparsity
    _, rep_fast = compress_digits("digits-mlp", "admm", {**cfg, "break_even": fast}, progress=False,
                                  fp32_epochs=2)
    model, rep = compress_digits("digits-mlp", "admm", {**cfg, "break_even": slow}, progress=False,
                                 fp32_epochs=2)
    assert model.meta["config"]["break_even"] == slow
    assert rep["nonzero"] > 2.5 * rep_fast["nonzero"]          # dense against 35% of the blocks
    assert rep["golden_vs_torch_mismatching_samples"] == 0
