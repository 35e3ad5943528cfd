"""The engines' cycle model against RTL simulation, and break-even pruning from it."""

import numpy as np
import pytest

from sparrow.bench.bench_sd import _cycles
from sparrow.hw.cycle_model import break_even_ratio, dense_cycles, sd_cycles
from sparrow.hw.dense_engine import DenseEngine
from sparrow.hw.sd_engine import SDEngine
from sparrow.modeldir import Layer
from sparrow.sw import golden


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
    x = rng.integers(-128, 128, size=(8, 16)).astype(np.int8)
    steady, _ = _cycles(lambda: SDEngine.from_layer(layer, pes, lanes, 0), layer, x,
                        golden.sd_linear_forward, "icarus")
    model = sd_cycles(16, n_out, per_block / 16, pes, lanes)
    assert abs(model - steady) <= 0.15 * steady, (model, steady)


def test_dense_cycle_model_equals_rtl():
    rng = np.random.default_rng(3)
    layer = Layer("dense", "dense_linear", {"in": 16, "out": 20, "out_shift": 8, "relu": False},
                  {"weight": rng.integers(-128, 128, size=(20, 16)).astype(np.int8),
                   "bias": np.zeros(20, np.int32)})
    x = rng.integers(-128, 128, size=(8, 16)).astype(np.int8)
    steady, _ = _cycles(lambda: DenseEngine.from_layer(layer, 3), layer, x, golden.dense_linear_forward, "icarus")
    assert steady == dense_cycles(16, 20, 3)


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
    from sparrow.sw.pipeline import compress_digits
    cfg = {"admm_epochs": 2, "retrain_epochs": 1, "qat_epochs": 1, "density": 0.3, "break_even": "auto"}
    _, rep_fast = compress_digits("digits-mlp", "admm", {**cfg, "dense_lanes": 1}, progress=False, fp32_epochs=2)
    model, rep = compress_digits("digits-mlp", "admm", {**cfg, "dense_lanes": 4096}, progress=False,
                                 fp32_epochs=2)
    ratios = model.meta["config"]["break_even_ratios"]
    assert set(ratios) == {"fc1", "fc2"} and min(ratios.values()) > 0.7      # above the target sparsity
    assert rep["nonzero"] > 3 * rep_fast["nonzero"]
    assert rep["golden_vs_torch_mismatching_samples"] == 0
