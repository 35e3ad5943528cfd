"""On-chip weight memory (hw/onchip.py) against an independent count of the written memory images."""

import json

import numpy as np
import pytest

from sparrow.cli import main
from sparrow.hw.engine import EngineConfig
from sparrow.hw.onchip import memory_blocks, model_onchip, rom_role
from sparrow.modeldir import load_model, save_model
from sparrow.sw.randmodel import random_layer, random_model
from sparrow.sw.storage import model_storage

NOT_WEIGHTS = {"bias", "consts", "tiles"}     # biases apart; shifts/flags/tables of generic builds


def _model(tmp_path):
    """One layer of every kind the linear engines run: SmartDeal/ADMM (sd_linear, 2-bit
    exponents and 3-bit ones), dense, circulant."""
    rng = np.random.default_rng(17)
    sd = random_layer("sd_linear", rng, name="sd", in_=16, out=20, k=4, tiles=2, density=0.3, relu=True)
    sd.params["coef_exp"] = (sd.params["coef_exp"] % 4).astype(np.uint8)        # four levels
    admm = random_layer("sd_linear", rng, name="admm", in_=20, out=16, k=1, density=0.2, relu=True)
    bc = random_layer("bc_linear", rng, name="bc", in_=16, out=16, k=8, relu=True)
    dense = random_layer("dense_linear", rng, name="dense", in_=16, out=10)
    save_model(random_model([sd, admm, bc, dense], (16,)), tmp_path / "m")
    return tmp_path / "m"


def _written_bits(out_dir):
    """{layer: (weight bits, bias bits)} counted from generate.json and the .hex files alone."""
    doc = json.loads((out_dir / "generate.json").read_text())
    counts = {}
    for layer in doc["layers"]:
        weight = bias = 0
        for name, mem in layer["memories"].items():
            lines = (out_dir / mem["file"]).read_text().split()
            assert len(lines) == mem["depth"], (layer["name"], name)
            assert all(len(line) == -(-mem["width"] // 4) for line in lines)
            bits = mem["width"] * len(lines)
            if name == "bias":
                bias += bits
            elif name.rstrip("0123456789") not in NOT_WEIGHTS:
                weight += bits
        counts[layer["name"]] = (weight, bias)
    return counts, doc


@pytest.mark.parametrize("pes", [4, 16])
def test_onchip_equals_written_images(tmp_path, capsys, pes):
    model_dir = _model(tmp_path)
    out = tmp_path / "g"
    assert main(["generate", str(model_dir), "--pes", str(pes), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written, doc = _written_bits(out)
    model = load_model(model_dir)
    oc = model_onchip(model, EngineConfig(pes=pes))
    assert {l["name"]: (l["weight_bits"], l["bias_bits"]) for l in oc["layers"]} == written
    assert oc["weight_bits"] == sum(w for w, _ in written.values())
    st = model_storage(model)
    assert doc["storage"]["onchip_weight_bits"] == oc["weight_bits"]
    assert doc["storage"]["encoded_weight_bits"] == st["weight_bits"]
    ratio = st["fp32_bits"] / oc["weight_bits"]
    assert f"storage: {st['ratio']:.1f}x encoded, {ratio:.1f}x on chip ({pes} PEs: " in printed


def test_layout_facts(tmp_path):
    """What the images hold for these layers, counted from the formats by hand."""
    model = load_model(_model(tmp_path))
    layers = {l["name"]: l for l in model_onchip(model, EngineConfig(pes=4))["layers"]}
    sd = layers["sd"]["memories"]
    # exponents 0..3: 2-bit exponent + sign (+ nz where a stored code is zero) a code, B codes,
    # d delta bits, 2 flags; one ROM per PE group
    codes = {n: m for n, m in sd.items() if n.startswith("codes")}
    widths = {m["width"] for m in codes.values()}
    assert len(widths) == 1 and len(codes) in (1, 2, 4)
    B = 4 // len(codes)
    assert widths.pop() - 2 - B * 3 in range(1, B + 5)         # d in 1..4 (+ B nz bits)
    assert sd["basis"]["bits"] == 8 * 2 * 16 * 4          # T * in * k bytes
    # bc k = 8: k/2 words per block pair and input block, 4 components each
    bc = layers["bc"]["memories"]["ws"]
    assert bc["depth"] == (16 // 8 // 2) * (16 // 8) * (8 // 2)
    assert bc["width"] % 4 == 0 and bc["width"] <= 64
    # dense, 10 rows on 8 lanes: two blocks of 5 rows, no padding row
    dense = layers["dense"]["memories"]["weight"]
    assert dense["bits"] == 8 * 10 * 16
    assert {rom_role(n) for n in ("codes", "basis", "ws", "weight")} == {"weight"}
    assert (rom_role("bias"), rom_role("consts"), rom_role("tiles")) == ("bias", "control", "control")
    assert (rom_role("codes3"), rom_role("tiles12")) == ("weight", "control")


def test_memory_blocks():
    assert memory_blocks(16, 256, "ice40") == ("EBR", 1)
    assert memory_blocks(72, 100, "ice40") == ("EBR", 5)       # 5 x 256x16
    assert memory_blocks(8, 1024, "ice40") == ("EBR", 2)       # 2 x 512x8
    assert memory_blocks(64, 512, "ecp5") == ("DP16KD", 2)     # 2 x 512x36
    assert memory_blocks(18, 1024, "ecp5") == ("DP16KD", 1)
    with pytest.raises(ValueError, match="Unknown FPGA family 'xc7' \\(known: ice40, ecp5\\)"):
        memory_blocks(8, 8, "xc7")


def test_build_report_weight_memory(tmp_path):
    from sparrow.fpga.report import weight_memory
    model = load_model(_model(tmp_path))
    oc = model_onchip(model, EngineConfig(pes=4))
    wm = weight_memory(oc, "ice40")
    assert wm["weight_bits"] == oc["weight_bits"] and wm["primitive"] == "EBR"
    assert wm["weight_blocks"] == sum(m["blocks"] for m in wm["memories"] if m["role"] == "weight")
    assert {(m["layer"], m["rom"]) for m in wm["memories"]} == {
        (l["name"], n) for l in oc["layers"] for n in l["memories"]}


def test_block_settings_apply_under_explicit_options():
    from sparrow.sw.pipeline import BLOCK_CONFIGS, digits_config
    tall = BLOCK_CONFIGS[("digits-mlp", "smartdeal", 16)]
    assert digits_config("digits-mlp", "smartdeal", {"block": 16}).density == tall["density"]
    assert digits_config("digits-mlp", "smartdeal", {"block": 16, "density": 0.2}).density == 0.2
    assert digits_config("digits-mlp", "smartdeal", {"block": 8}).density == \
        digits_config("digits-mlp", "smartdeal").density


def test_demo_model_fits_one_pe_group_within_the_goal():
    """The demo's digits-mlp (blocks as tall as its 16 PEs): the UP5K's one-group layout holds
    at most 1.25x the encoded bits, and the encoding still meets SmartDeal's 30x."""
    from sparrow.sw.pipeline import compress_digits
    model, rep = compress_digits("digits-mlp", "smartdeal", {"block": 16}, seed=0, progress=False)
    st = model_storage(model)
    assert st["ratio"] >= 30
    for groups in (1, 16):
        oc = model_onchip(model, EngineConfig(pes=16, max_groups=groups))
        assert oc["weight_bits"] <= 1.25 * st["weight_bits"], (groups, oc["weight_bits"], st["weight_bits"])


def test_circulant_cnn_within_the_goal():
    """digits-cnn, block-circulant (k = 8 conv2): the compressor writes integer weight spectra
    (ws_shift = 8 - L), so the spectrum ROM holds 8 + L bits a component at most and the chip
    at most 1.25x the encoded bits (15-bit spectra held 1.54x); short training."""
    from sparrow import fixedfft
    from sparrow.sw.pipeline import compress_digits
    model, _ = compress_digits("digits-cnn", "circulant", {"epochs": 3, "qat_epochs": 2}, seed=0,
                               progress=False, fp32_epochs=5)
    st = model_storage(model)
    oc = model_onchip(model, EngineConfig(pes=4, max_groups=1))
    conv2 = next(l for l in model.layers if l.name == "conv2")
    L = fixedfft.log2k(conv2.attrs["k"])
    assert conv2.attrs["ws_shift"] == 8 - L
    ws = next(l for l in oc["layers"] if l["name"] == "conv2")["memories"]["ws"]
    assert ws["width"] <= 4 * (8 + L), ws
    assert oc["weight_bits"] <= 1.25 * st["weight_bits"], (oc["weight_bits"], st["weight_bits"])


def test_storage_line_says_when_blocks_are_too_short_for_the_groups():
    """4-row blocks on one group of 16 PEs (the UP5K's layout) hold far more than their encoding:
    the line says why and what to do; 16 groups store them as encoded and say nothing more."""
    from sparrow.hw.onchip import storage_line
    rng = np.random.default_rng(3)
    stored = rng.random((8, 64)) < 0.15
    sign = np.repeat(stored, 4, axis=0) * rng.choice([-1, 1], size=(32, 64))
    sd = random_layer("sd_linear", rng, name="fc", in_=64, out=32, k=1, relu=True)
    sd.params["coef_sign"] = sign.astype(np.int8)
    sd.params["coef_exp"] = rng.integers(0, 4, size=(32, 64)).astype(np.uint8)
    model = random_model([sd], (64,))
    st = model_storage(model, 4)
    one = storage_line(model, EngineConfig(pes=16, max_groups=1), st["ratio"], st["fp32_bits"])
    assert "x the encoding: 1 PE group of 16 rows stores a word per column of each 16-row block, " \
           "so shorter pruning blocks cost more (compress with --block 16)" in one, one
    many = storage_line(model, EngineConfig(pes=16, max_groups=16), st["ratio"], st["fp32_bits"])
    assert "the encoding" not in many and many.endswith("bits beside)"), many
