"""dense_linear engine (the int8 MAC baseline): bit-exact against the golden model."""

import numpy as np
import pytest

from sparrow.hw.dense_engine import DenseEngine, balanced_lanes, dense_image, dense_acc_width
from sparrow.hw.engine import EngineConfig
from sparrow.modeldir import Layer
from sparrow.sw import golden
from sparrow.tb.model_sim import run_engine


def _extreme_layer(rng):
    """in < lanes (drain stalls), out not a multiple of the lanes, saturating rows, a zero row."""
    n_in, n_out = 5, 19
    w = rng.integers(-128, 128, size=(n_out, n_in))
    w[0], w[1], w[2] = -128, 127, 0
    return Layer("extreme", "dense_linear", {"in": n_in, "out": n_out, "out_shift": 6, "relu": True},
                 {"weight": w.astype(np.int8),
                  "bias": rng.integers(-3000, 3000, size=n_out).astype(np.int32)})


def _random_layer(rng):
    n_in, n_out = 37, 22
    return Layer("random", "dense_linear", {"in": n_in, "out": n_out, "out_shift": 10, "relu": False},
                 {"weight": rng.integers(-128, 128, size=(n_out, n_in)).astype(np.int8),
                  "bias": rng.integers(-2**20, 2**20, size=n_out).astype(np.int32)})


CASES = {"extreme-lanes8": (_extreme_layer, 8), "random-lanes3": (_random_layer, 3)}


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("case", list(CASES))
def test_dense_engine_bit_exact(simulator, case):
    rng = np.random.default_rng(sum(map(ord, case)))
    make, lanes = CASES[case]
    layer = make(rng)
    x = rng.integers(-128, 128, size=(24, layer.attrs["in"]))
    x[0], x[1] = -128, 127
    x = x.astype(np.int8)
    expected = golden.dense_linear_forward(layer, x)
    if case.startswith("extreme"):
        assert (expected == 127).any() and (expected == 0).any()
    engine = DenseEngine.from_layer(layer, EngineConfig(dense_lanes=lanes))
    y, cycles = run_engine(engine, x, simulator, label=layer.name, expected=expected, gaps=0.1,
                           name="dense_engine")
    np.testing.assert_array_equal(y, expected)
    blocks = -(-layer.attrs["out"] // lanes)
    assert cycles >= 24 * blocks * layer.attrs["in"]


def test_image_and_width():
    w = np.array([[1, -1], [2, -128], [127, 0]])
    words = dense_image(w, 2)
    assert words == [1 | (2 << 8), 0xFF | (0x80 << 8), 127, 0]
    assert dense_acc_width(w) == 17                           # at least one full product
    assert dense_acc_width(np.full((2, 100), -128)) == (100 * 128 * 128).bit_length() + 1


def test_balanced_lanes():
    """As many row blocks as the configured lanes give (same cycles), no padding row but the last
    block's: 10 rows on 8 lanes are two blocks of 5 (the weight ROM holds 10 rows, not 16)."""
    assert [balanced_lanes(n, 8) for n in (10, 19, 16, 8, 3, 128)] == [5, 7, 8, 8, 3, 8]
    assert balanced_lanes(22, 3) == 3
    for n_out in range(1, 40):
        lanes = balanced_lanes(n_out, 8)
        blocks = -(-n_out // lanes)
        assert blocks == -(-n_out // 8) and blocks * lanes - n_out < blocks
    layer = _random_layer(np.random.default_rng(0))
    layer.attrs["out"], layer.params["weight"] = 10, layer.params["weight"][:10]
    layer.params["bias"] = layer.params["bias"][:10]
    engine = DenseEngine.from_layer(layer, EngineConfig(dense_lanes=8))
    width, words, _ = engine.memory_images()["weight"]
    assert (engine.lanes, width, len(words)) == (5, 40, 2 * 37)
    assert DenseEngine.multipliers(layer, EngineConfig(dense_lanes=8)) == 5
    from sparrow.hw.onchip import discard_units
    discard_units(engine)


def test_parameter_errors():
    with pytest.raises(ValueError, match=r"Weight must have shape \[2, 3\], not \[3, 2\]"):
        DenseEngine(3, 2, np.zeros((3, 2)), np.zeros(2), 4, False)
    with pytest.raises(TypeError, match="Lane count must be a positive integer, not 0"):
        DenseEngine(3, 2, np.zeros((2, 3)), np.zeros(2), 4, False, lanes=0)
