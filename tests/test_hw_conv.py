"""Convolution, max-pooling and flatten engines (hw/conv.py, hw/pool.py) against the golden model.

The reference is the integer golden model (sparrow.sw.golden), written from
docs/format.md; the models here are written layer by layer through the
format (random parameters, shapes the project never trained).
"""

import numpy as np
import pytest

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.accel import Accelerator
from sparrow.hw.onchip import discard_units
from sparrow.hw.conv import ConvEngine, PatchGenerator, inner_layer
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import engine_class, engine_for_layer, layer_cycles
from sparrow.modeldir import Layer
from sparrow.sw.golden import run_layers, run_model
from sparrow.sw.randmodel import random_layer, random_model
from sparrow.tb.linkbench import run_link
from sparrow.tb.model_sim import simulate_model
from sparrow.tb.streambench import run_stream


def _golden_im2col(x, kh, kw, stride, padding):
    """Patches [OH*OW, C*kh*kw] of one [C, H, W] image, from docs/format.md by loops."""
    c, h, w = x.shape
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    out = np.zeros((oh * ow, c * kh * kw), dtype=np.int64)
    for p in range(oh * ow):
        for ci in range(c):
            for r in range(kh):
                for s in range(kw):
                    i, j = (p // ow) * stride + r - padding, (p % ow) * stride + s - padding
                    if 0 <= i < h and 0 <= j < w:
                        out[p, ci * kh * kw + r * kw + s] = x[ci, i, j]
    return out


def shapes_chain():
    """Every conv kind and both max-pooling structures on odd, non-square sizes: padding 0/1/2,
    stride 1/2, one input channel and several, kernels 1x1 to 5x5."""
    rng = np.random.default_rng(5)
    return random_model([
        random_layer("sd_conv2d", rng, name="c5x5", in_ch=1, out_ch=4, kh=5, kw=5, stride=2,
                     padding=2, k=5, relu=True),                                  # [1,13,11] -> [4,7,6]
        random_layer("maxpool2d", rng, name="pool2", kernel=2, pool_stride=2),    # streaming -> [4,3,3]
        random_layer("dense_conv2d", rng, name="c2x2", in_ch=4, out_ch=3, kh=2, kw=2, padding=1),
        random_layer("maxpool2d", rng, name="pool3", kernel=3, pool_stride=1),    # windowed -> [3,2,2]
        random_layer("bc_conv2d", rng, name="bc2x2", in_ch=3, out_ch=4, kh=2, kw=2, padding=1, k=4),
        random_layer("sd_conv2d", rng, name="c1x1", in_ch=4, out_ch=6, kh=1, kw=1, stride=2,
                     padding=0, k=2, tiles=2),                                    # [4,3,3] -> [6,2,2]
        random_layer("dense_conv2d", rng, name="c4x3", in_ch=6, out_ch=2, kh=4, kw=3, padding=2),
    ], (1, 13, 11), name="shapes")


def digits_cnn_like(kind="sd_conv2d", seed=7):
    """digits-cnn's structure (sw/digits.py) with random parameters."""
    rng = np.random.default_rng(seed)
    lin = kind.replace("conv2d", "linear")
    extra = {"k": 3} if kind == "sd_conv2d" else {}
    return random_model([
        random_layer(kind, rng, name="conv1", in_ch=1, out_ch=16, kh=3, kw=3, padding=1, relu=True,
                     density=0.3, **extra),
        random_layer("maxpool2d", rng, name="pool1"),
        random_layer(kind, rng, name="conv2", in_ch=16, out_ch=128, kh=3, kw=3, padding=0, relu=True,
                     density=0.1, **({"k": 4} if extra else {})),
        random_layer("maxpool2d", rng, name="pool2"),
        random_layer("flatten", rng, name="flatten"),
        random_layer(lin, rng, name="fc", in_=128, out=10, density=0.3, **({"k": 4} if extra else {})),
    ], (1, 8, 8), name=f"cnn-{kind}")


def test_golden_im2col_matches_format_loops():
    # The golden model's im2col (the reference of every bench below) against loops over docs/format.md.
    from sparrow.sw.golden import im2col
    rng = np.random.default_rng(0)
    for c, h, w, kh, kw, stride, pad in [(1, 5, 7, 3, 3, 1, 1), (3, 6, 5, 5, 2, 2, 2), (2, 4, 4, 1, 1, 2, 0)]:
        x = rng.integers(-128, 128, size=(1, c, h, w))
        cols, _, _ = im2col(x, kh, kw, stride, pad)
        np.testing.assert_array_equal(cols[0], _golden_im2col(x[0], kh, kw, stride, pad))


@pytest.mark.parametrize("c,h,w,kh,kw,stride,pad", [(2, 5, 4, 3, 2, 2, 2), (1, 3, 3, 1, 1, 1, 0),
                                                     (1, 8, 8, 3, 3, 1, 1), (1, 1, 1, 1, 1, 1, 0),
                                                     (3, 4, 6, 2, 3, 3, 3), (1, 70, 1, 3, 1, 1, 1)])
def test_window_scanner_addresses(c, h, w, kh, kw, stride, pad):
    # Amaranth's simulator: every step's (address, inside, window flags) against nested loops.
    from amaranth.sim import Simulator
    from sparrow.hw.conv_scan import WindowScanner, conv_levels
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    want = [(ci * h * w + i * w + j, 0 <= i < h and 0 <= j < w, (ci, r, s) == (0, 0, 0),
             (ci, r, s) == (c - 1, kh - 1, kw - 1))
            for p in range(oh * ow) for ci in range(c) for r in range(kh) for s in range(kw)
            for i, j in [((p // ow) * stride + r - pad, (p % ow) * stride + s - pad)]]
    dut = WindowScanner(conv_levels(c, h, w, kh, kw, stride, oh, ow), h, w, pad, 3)
    got = []

    async def bench(ctx):
        for n in range(2 * len(want)):             # twice: the scanner wraps to the first position
            inside = ctx.get(dut.inside)
            got.append((ctx.get(dut.addr) if inside else None, bool(inside), bool(ctx.get(dut.win_first)),
                        bool(ctx.get(dut.win_last))))
            assert bool(ctx.get(dut.last)) == (n % len(want) == len(want) - 1)
            ctx.set(dut.step, 1)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expect = [(a if ins else None, ins, f, l) for a, ins, f, l in want] * 2
    assert got == expect


@pytest.mark.parametrize("simulator,vectors,p_valid,p_ready",
                         [("verilator", 3, 0.7, 0.6), ("icarus", 1, 1.0, 1.0)])
def test_conv_kinds_and_pooling_equal_golden(simulator, vectors, p_valid, p_ready):
    model = shapes_chain()
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, size=(vectors, 1, 13, 11)).astype(np.int8)
    x[0, 0, 0] = -128                                     # full-scale corner
    acts = run_layers(model, x)
    engines = [engine_for_layer(l, EngineConfig(pes=4, generic=True)) for l in model.layers]
    # Every engine here honours o.ready: bubbles on the input, back-pressure on the output.
    run = run_stream(engines, x.reshape(vectors, -1), simulator, labels=[l.name for l in model.layers],
                     p_valid=p_valid, p_ready=p_ready, seed=3,
                     expected=acts[-1].reshape(vectors, -1).astype(np.int8), name="shapes")
    assert run.y.shape == (vectors, model.output_size)


def test_digits_cnn_structure_through_sparrow_sim_and_cycle_model():
    model = digits_cnn_like("sd_conv2d")
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, size=(4, 1, 8, 8)).astype(np.int8)
    stats = {}
    y = simulate_model(model, x, "verilator", EngineConfig(pes=8), stats=stats)
    np.testing.assert_array_equal(y, run_model(model, x))
    assert stats["cycles"]["flatten"] == 0
    # The cycle model's steady state against the measured cycles per vector (4 vectors back to
    # back, one pipeline fill included, so loosely).
    for layer in model.layers:
        model_c = layer_cycles(layer, EngineConfig(pes=8))
        if layer.kind in ("sd_conv2d", "maxpool2d"):
            measured = stats["cycles"][layer.name] / len(x)
            assert 0.85 * model_c <= measured <= 1.6 * model_c, (layer.name, measured, model_c)


def test_digits_cnn_structure_dense_on_stream_bench():
    model = digits_cnn_like("dense_conv2d", seed=8)
    x = np.random.default_rng(4).integers(-128, 128, size=(2, 1, 8, 8)).astype(np.int8)
    y = simulate_model(model, x, "verilator", EngineConfig(dense_lanes=8))
    np.testing.assert_array_equal(y, run_model(model, x))


def test_accelerator_runs_a_cnn_over_uart(tmp_path):
    model = random_model([
        random_layer("sd_conv2d", np.random.default_rng(1), name="conv", in_ch=1, out_ch=4, kh=3,
                     kw=3, padding=1, k=3, relu=True),
        random_layer("maxpool2d", None, name="pool"),
        random_layer("flatten", None, name="flat"),
        random_layer("dense_linear", np.random.default_rng(2), name="fc", in_=16, out=5),
    ], (1, 4, 4), name="tinycnn")
    x = np.random.default_rng(3).integers(-128, 128, size=(3, 16)).astype(np.int8)
    expected = run_model(model, x)
    acc = Accelerator(model, 1_000_000, 4, EngineConfig(pes=4), max_batch=3)
    assert (acc.in_size, acc.out_size) == (16, 5)
    np.savez(tmp_path / "data.npz", x=x, expected=expected, divisor=4, model_id=P.model_id(model),
             layers=len(model.layers), clk_hz=1_000_000, max_batch=acc.max_batch)
    run_link(acc, "verilator", "link_host_protocol", extra_env={"ACCEL_TB_DATA": tmp_path / "data.npz"},
             test_dir=tmp_path / "run", log_file=tmp_path / "sim.log")


def test_registry_and_refusals():
    model = digits_cnn_like("sd_conv2d")
    conv1, pool1 = model.layers[0], model.layers[1]
    assert issubclass(engine_class("sd_conv2d"), ConvEngine)
    engine = engine_for_layer(conv1, EngineConfig(pes=8))
    discard_units(engine)
    pool = engine_for_layer(pool1)
    discard_units(pool)
    assert (engine.in_features, engine.out_features) == (64, 16 * 64)
    assert engine.holds_output and pool.holds_output
    assert engine.inner.kind == "sd_linear"
    assert engine.memory_images().keys() == engine.inner.memory_images().keys()
    inner = inner_layer(conv1)
    assert (inner.kind, inner.attrs["in"], inner.attrs["out"]) == ("sd_linear", 9, 16)
    assert layer_cycles(model.layers[4]) == 0 and engine_class("flatten").multipliers(model.layers[4]) == 0
    with pytest.raises(ValueError, match="Kernel 5x5 does not fit the padded input 4x4"):
        PatchGenerator(1, 2, 2, 5, 5, 1, 1)
    with pytest.raises(TypeError, match="^Layer must be a validated sd_conv2d sparrow.modeldir.Layer, "
                                        "not kind 'sd_linear' \\(not validated\\)$"):
        engine_class("sd_conv2d")(Layer("x", "sd_linear", {}), EngineConfig())
    with pytest.raises(SparrowError, match="no RTL engine"):
        engine_class("conv3d")
    # An im2col width that k does not divide is refused by the format (docs/format.md), one line.
    bad = random_layer("sd_conv2d", np.random.default_rng(0), name="odd", in_ch=1, out_ch=4, kh=3,
                       kw=3, k=3)
    bad.attrs["k"] = 4
    with pytest.raises(SparrowError, match=r"field 'k' \(4\) does not divide in \(9\)"):
        random_model([bad], (1, 5, 5))


def test_board_refuses_activation_memories_that_do_not_fit():
    from sparrow.fpga.accel_top import accelerator_design
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.memfit import activation_blocks
    rng = np.random.default_rng(0)
    big = random_model([random_layer("sd_conv2d", rng, name="conv", in_ch=1, out_ch=16, kh=3, kw=3,
                                     padding=1, k=3),
                        random_layer("maxpool2d", rng, name="pool", kernel=4, pool_stride=4),
                        random_layer("flatten", rng, name="flat"),
                        random_layer("dense_linear", rng, name="fc", in_=1024, out=10)],
                       (1, 32, 32), name="big")
    blocks, rows = activation_blocks(big, get_board("icebreaker"), EngineConfig())
    assert ("conv buffer", 2 * 16384, 8, 64) in rows and blocks == sum(r[3] for r in rows) > 30
    with pytest.raises(SparrowError, match=r"model 'big': activation memories need about \d+ EBR "
                                           r"\(4 kbit\) \(\d+ bytes\), the iCE40UP5K has 30"):
        accelerator_design(big, "icebreaker")
    assert activation_blocks(digits_cnn_like(), get_board("icebreaker"), EngineConfig())[0] <= 30
    # dense convolutions share the board's DSPs with the dense linear layers: 8 // 3 lanes each
    from sparrow.fpga.accel_top import fit_dense_lanes
    assert fit_dense_lanes(digits_cnn_like("dense_conv2d"), get_board("icebreaker")) == 2


def test_hand_written_conv_model_through_sparrow_sim(tmp_path):
    # A model directory written with json and numpy alone (docs/format.md), run by the CLI,
    # against a reference written here from the format's integer semantics.
    import json
    from clirun import sparrow
    rng = np.random.default_rng(21)
    c, h, w, oc, kh, kw, stride, pad, shift = 2, 7, 5, 3, 3, 3, 2, 1, 7
    weight = rng.integers(-128, 128, size=(oc, c * kh * kw)).astype(np.int8)
    bias = rng.integers(-3000, 3000, size=oc).astype(np.int32)
    d = tmp_path / "hand"
    d.mkdir()
    np.savez(d / "conv.npz", weight=weight, bias=bias)
    manifest = {"format": "sparrow-model", "version": 1, "name": "hand",
                "input": {"shape": [c, h, w], "scale_exp": -4}, "output": {"scale_exp": -3},
                "layers": [{"name": "conv", "kind": "dense_conv2d", "in_ch": c, "out_ch": oc, "kh": kh,
                            "kw": kw, "stride": stride, "padding": pad, "out_shift": shift,
                            "relu": True, "params": "conv.npz"},
                           {"name": "pool", "kind": "maxpool2d", "kernel": 2, "stride": 1},
                           {"name": "flat", "kind": "flatten"}]}
    (d / "manifest.json").write_text(json.dumps(manifest))
    x = rng.integers(-128, 128, size=(2, c, h, w)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    res = sparrow("sim", d, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert res.returncode == 0, res.stderr
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    for n in range(len(x)):
        acc = _golden_im2col(x[n].astype(np.int64), kh, kw, stride, pad) @ weight.T.astype(np.int64) + bias
        conv = np.clip((acc + (1 << (shift - 1))) >> shift, 0, 127).T.reshape(oc, oh, ow)
        pool = np.maximum.reduce([conv[:, r:r + oh - 1, s:s + ow - 1] for r in (0, 1) for s in (0, 1)])
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy")[n], pool.reshape(-1))


@pytest.mark.parametrize("shape,kernel", [((2, 6, 3), 3), ((3, 4, 6), 2), ((1, 2, 3), 1), ((2, 5, 7), 2)])
def test_streaming_maxpool_with_stalls(shape, kernel):
    # Amaranth's simulator: the streaming structure (tiled and with a remainder), bubbles on
    # the input and back-pressure on the output, against the golden model.
    from amaranth.sim import Simulator
    from sparrow.hw.pool import MaxPoolEngine
    rng = np.random.default_rng(kernel)
    model = random_model([random_layer("maxpool2d", rng, name="pool", kernel=kernel,
                                       pool_stride=kernel)], shape, name="pool")
    x = rng.integers(-128, 128, size=(2, *shape)).astype(np.int8)
    want = run_layers(model, x)[-1].reshape(-1).tolist()
    dut = MaxPoolEngine(model.layers[0])
    got = []

    async def feed(ctx):
        for v in x.reshape(-1).tolist():
            ctx.set(dut.i.payload, v)
            ctx.set(dut.i.valid, 0)
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def drain(ctx):
        while len(got) < len(want):
            ready = rng.random() < 0.6
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    assert got == want
