"""The build cache and compile-once-per-structure: generic engines, run-time ROMs, atomic builds;
the whole accelerator in the link bench too (new weights and model id, one compiled simulator)."""

import re
import threading

import numpy as np
import pytest

from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import engine_for_layer
from sparrow.hw.sd_program import code_rom_depth, generic_code_depth, sd_layout
from sparrow.sw.randmodel import random_layer, random_model
from sparrow.tb.model_sim import sim_verilog
from sparrow.tb.runner import cache_dir, compile_design
from sparrow.tb.streambench import act_depth, runtime_roms

LAYERS = {
    "sd_linear": dict(in_=12, out=10, k=4, tiles=2, density=0.4, relu=True),
    "dense_linear": dict(in_=12, out=10),
    "bc_linear": dict(in_=16, out=8, k=4),
}
ROMS = {"sd_linear": {"codes", "tiles", "basis", "bias", "consts"},
        "dense_linear": {"weight", "bias", "consts"},
        "bc_linear": {"ws", "bias"}}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_same_structure_same_simulation_verilog(kind):
    """Two layers with different values (and, but for bc_linear, different shifts and ReLU)
    give one simulation text once the ROMs load at run time."""
    texts = []
    for seed in (1, 2):
        extra = {} if kind == "bc_linear" else {"out_shift": 3 + 5 * seed, "relu": seed == 1}
        if kind == "sd_linear":
            extra["basis_shift"] = 2 * seed
        layer = random_layer(kind, np.random.default_rng(seed), name="l", **{**LAYERS[kind], **extra})
        text, roms = runtime_roms(sim_verilog(engine_for_layer(
            layer, EngineConfig(pes=4, generic=True)), "eng"), "e0")
        assert set(roms) == ROMS[kind]
        assert text.count("$readmemh(") == len(roms)
        texts.append(text)
    assert texts[0] == texts[1]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_board_build_keeps_rom_contents(kind):
    """Without ``generic`` the netlist has no run-time ROMs: contents are initialisers (builds)."""
    layer = random_layer(kind, np.random.default_rng(3), name="l", **LAYERS[kind])
    text = sim_verilog(engine_for_layer(layer, EngineConfig(pes=4)), "eng")
    assert "sparrow_rom" not in text
    assert runtime_roms(text, "e0") == (text, {})


@pytest.mark.parametrize("kind", list(LAYERS))
def test_generic_images_match_rtl(kind):
    """A generic engine's memory images are exactly the ROM contents its Verilog held (which
    the benches load at run time): ``sparrow generate``'s images are what the simulation ran."""
    layer = random_layer(kind, np.random.default_rng(4), name="l", **LAYERS[kind])
    engine = engine_for_layer(layer, EngineConfig(pes=4, generic=True))
    _, roms = runtime_roms(sim_verilog(engine, "eng"), "e0")
    images = engine.memory_images()
    assert set(images) == set(roms)
    for name, (width, words, _) in images.items():
        assert (roms[name].width, roms[name].words) == (width, tuple(words)), name


def test_code_rom_depth_buckets():
    assert [code_rom_depth(e) for e in (3, 8, 15)] == [4, 9, 16]          # board: exact
    # generic: half the structure's largest program while the program fits, else all of it
    assert [generic_code_depth(w, 8200) for w in (1, 1004, 1020, 4100)] == [4100] * 4
    assert generic_code_depth(4101, 8200) == generic_code_depth(8200, 8200) == 8200
    assert generic_code_depth(514, 1027) == 514 and generic_code_depth(515, 1027) == 1027
    assert act_depth(360, [64, 128, 10]) == 65536 and act_depth(1000, [128]) == 131072


def _design(tag):
    return (f"module top_{tag}(input clk, output reg [7:0] q);\n"
            f"  always @(posedge clk) q <= q + 8'd1;\nendmodule\n")


def test_cache_atomic_and_concurrent(tmp_path, monkeypatch):
    """Concurrent builds of one key compile once; an interrupted build is cleaned up."""
    monkeypatch.setenv("SPARROW_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        compile_design(_design("a"), "top_a", "icarus"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folders = {r[0] for r in results}
    assert len(folders) == 1 and sum(r[1] > 0 for r in results) == 1
    folder = folders.pop()
    assert (folder / "sparrow-build.ok").exists()
    assert compile_design(_design("a"), "top_a", "icarus") == (folder, 0.0)

    # An interrupted build: a temporary folder left behind, a final folder without its marker.
    final, seconds = compile_design(_design("b"), "top_b", "icarus")
    assert seconds > 0 and re.fullmatch(r"top_b-icarus-[0-9a-f]{20}", final.name)
    (final.parent / f"{final.name}.tmp-dead").mkdir()
    (final / "sparrow-build.ok").unlink()
    again, seconds = compile_design(_design("b"), "top_b", "icarus")
    assert again == final and seconds > 0 and (final / "sparrow-build.ok").exists()
    assert not list(final.parent.glob("*.tmp-*"))


def _digits_like(seed, redraw_of=None):
    """A digits-mlp-shaped model (sd_linear 64 -> 128 ReLU -> 10); ``redraw_of``: the same
    structure and sparsity pattern, every value (signs, exponents, bases, biases, shifts) new."""
    rng = np.random.default_rng(seed)
    if redraw_of is None:
        layers = [random_layer("sd_linear", rng, name="fc1", in_=64, out=128, k=4, density=0.2,
                               relu=True),
                  random_layer("sd_linear", rng, name="fc2", in_=128, out=10, k=4, density=0.3)]
        return random_model(layers, [64], name="digits-a")
    layers = []
    for layer in redraw_of.layers:
        p = {k: np.array(v) for k, v in layer.params.items()}
        flip = rng.choice(np.array([-1, 1], np.int8), size=p["coef_sign"].shape)
        p["coef_sign"] = (p["coef_sign"] * flip).astype(np.int8)
        p["coef_exp"] = rng.integers(0, 8, size=p["coef_exp"].shape).astype(np.uint8)
        p["basis"] = rng.integers(-128, 128, size=p["basis"].shape).astype(np.int8)
        p["bias"] = rng.integers(-2000, 2001, size=p["bias"].shape).astype(np.int32)
        attrs = {**layer.attrs, "out_shift": layer.attrs["out_shift"] + 1,
                 "basis_shift": layer.attrs["basis_shift"] - 1}
        layers.append(type(layer)(layer.name, layer.kind, attrs, p))
    return random_model(layers, [64], name="digits-b")


def _digits_pattern(seed, block, densities):
    """A digits-mlp-shaped SmartDeal model (sd_linear 64 -> 128 ReLU -> 10) whose coefficients
    are nonzero in ``block`` x 1 blocks (as the compressor's) at ``densities``: another seed,
    block size or density is another sparsity pattern, with another board layout (group size
    B, delta width d) and other code-list lengths, as a retrained model has."""
    rng = np.random.default_rng(seed)
    layers = []
    for name, n_in, n_out, k, density, relu in (("fc1", 64, 128, 4, densities[0], True),
                                                ("fc2", 128, 10, 1, densities[1], False)):
        layer = random_layer("sd_linear", rng, name=name, in_=n_in, out=n_out, k=k,
                             density=density, relu=relu)
        mask = np.repeat(rng.random((-(-n_out // block), n_in)) < density, block, axis=0)[:n_out]
        layer.params["coef_sign"] = (mask * rng.choice([-1, 1], size=mask.shape)).astype(np.int8)
        layers.append(layer)
    return random_model(layers, [64], name=f"digits-{seed}")


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_new_sparsity_pattern_shares_a_build(tmp_path, monkeypatch, simulator):
    """``sparrow sim`` of two digits-mlp-shaped SmartDeal models with other sparsity patterns
    (other board group sizes and delta widths, other list lengths): one compiled simulator
    (generic builds: structural code layout, one code ROM of a rounded depth, start addresses
    read at run time), both bit-exact with the golden model."""
    from sparrow.sw.golden import run_model
    from sparrow.tb.model_sim import simulate_model
    from sparrow.tb.streambench import TOPLEVEL
    monkeypatch.setenv("SPARROW_CACHE", str(tmp_path / "cache"))
    models = [_digits_pattern(1, 4, (0.12, 0.4)), _digits_pattern(2, 2, (0.2, 0.3))]
    (a1, a2), (b1, b2) = ([sd_layout(l.params["coef_sign"], l.params["coef_exp"], 1, 8)[:2]
                           for l in m.layers] for m in models)
    assert a1 != b1 and a2 != b2 and a1[0] != b1[0] and a2[1] != b2[1], (a1, a2, b1, b2)
    x = np.random.default_rng(3).integers(-128, 128, size=(4, 64)).astype(np.int8)
    compiles = []
    for model in models:
        stats = {}
        y = simulate_model(model, x, simulator, EngineConfig(pes=8), stats=stats)
        np.testing.assert_array_equal(y, run_model(model, x))
        compiles.append(stats["compile_seconds"])
    builds = [d for d in (tmp_path / "cache" / "sim").glob(f"{TOPLEVEL}-{simulator}-*")
              if d.is_dir() and (d / "sparrow-build.ok").exists()]
    assert len(builds) == 1 and compiles[0] > 0 and compiles[1] == 0.0, (builds, compiles)


def test_link_text_depends_on_structure_only():
    """The whole accelerator (generic build) in the link bench: two models of one structure, other
    values and ids, give one text once the ROMs load at run time; the identify reply (model id) is
    a ROM there, and logic in the board build."""
    from sparrow import protocol as P
    from sparrow.hw.accel import Accelerator
    from sparrow.tb.linkbench import _rom_arg, link_verilog
    from sparrow.tb.runner import load_roms_at_run_time
    texts = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        fc1 = random_layer("sd_linear", rng, name="fc1", in_=12, out=8, k=4, relu=True,
                           out_shift=4 + seed)
        sign = fc1.params["coef_sign"]        # every column nonzero: the same code-ROM depth
        fc1.params["coef_sign"] = np.where(sign == 0, 1, sign).astype(np.int8)
        model = random_model([fc1, random_layer("dense_linear", rng, name="fc2", in_=8, out=4)],
                             [12], name=f"m{seed}")
        acc = Accelerator(model, 1_000_000, 4, EngineConfig(pes=4, generic=True), max_batch=2)
        text, roms = load_roms_at_run_time(link_verilog(acc), _rom_arg)
        ident = {r.arg: r for r in roms}["accel_sequencer_ident"]
        assert bytes(ident.words[:P.IDENT_LEN]) == P.identify_payload(
            12, 4, 2, P.model_id(model), 1_000_000, 2)
        texts.append(text)
    assert texts[0] == texts[1]
    board = link_verilog(Accelerator(model, 1_000_000, 4, EngineConfig(pes=4), max_batch=2))
    assert "sparrow_rom" not in board


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_link_bench_new_weights_share_a_build(tmp_path, monkeypatch, simulator):
    """Two models of one structure on the whole accelerator (link bench, generic build): one
    compiled simulator, each reports its own model id, both bit-exact with the golden model."""
    from sparrow import protocol as P
    from sparrow.hw.accel import Accelerator
    from sparrow.sw.golden import run_model
    from sparrow.tb.linkbench import TOPLEVEL, run_link
    monkeypatch.setenv("SPARROW_CACHE", str(tmp_path / "cache"))
    first = _digits_like(5)
    models = [first, _digits_like(6, redraw_of=first)]
    x = np.random.default_rng(7).integers(-128, 128, size=(3, 64)).astype(np.int8)
    compiles, ids = [], []
    for k, model in enumerate(models):
        acc = Accelerator(model, 1_000_000, 4, EngineConfig(pes=8, generic=True), max_batch=2)
        ids.append(acc.model_id)
        expected = run_model(model, x)
        np.savez(tmp_path / f"data{k}.npz", x=x, expected=expected, divisor=4, batch=2,
                 model_id=P.model_id(model), layers=len(model.layers), clk_hz=1_000_000,
                 max_batch=2)
        stats = {}
        run_link(acc, simulator, "link_identify_stream", stats=stats,
                 extra_env={"ACCEL_TB_DATA": tmp_path / f"data{k}.npz"},
                 test_dir=tmp_path / f"run{k}", log_file=tmp_path / f"sim{k}.log")
        compiles.append(stats["compile_seconds"])
    assert ids[0] != ids[1]
    assert not np.array_equal(run_model(models[0], x), run_model(models[1], x))
    builds = [d for d in (tmp_path / "cache" / "sim").glob(f"{TOPLEVEL}-{simulator}-*")
              if d.is_dir() and (d / "sparrow-build.ok").exists()]
    assert len(builds) == 1 and compiles[0] > 0 and compiles[1] == 0.0, (builds, compiles)
