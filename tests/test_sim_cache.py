"""The build cache and compile-once-per-structure: generic engines, run-time ROMs, atomic builds."""

import re
import threading

import numpy as np
import pytest

from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import engine_for_layer
from sparrow.hw.sd_engine import code_rom_depth
from sparrow.sw.randmodel import random_layer
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
        if kind == "sd_linear":     # every column nonzero: the same code-ROM depth
            sign = layer.params["coef_sign"]
            layer.params["coef_sign"] = np.where(sign == 0, 1, sign).astype(np.int8)
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


def test_generic_images_match_rtl():
    """A generic engine's memory images hold exactly its ROM depths (the runner pads nothing else)."""
    layer = random_layer("sd_linear", np.random.default_rng(4), name="l", **LAYERS["sd_linear"])
    engine = engine_for_layer(layer, EngineConfig(pes=4, generic=True))
    _, depths = runtime_roms(sim_verilog(engine, "eng"), "e0")
    for name, (width, words, _) in engine.memory_images().items():
        assert len(words) == depths[name], name
        assert all(0 <= w < (1 << width) for w in words)


def test_code_rom_depth_buckets():
    assert [code_rom_depth(e, 1000) for e in (3, 8, 15)] == [4, 9, 16]          # board: exact
    assert [code_rom_depth(e, 1000, True) for e in (3, 15, 16, 31, 300)] == [16, 16, 32, 32, 512]
    assert code_rom_depth(300, 400, True) == 401          # capped at the largest program
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
