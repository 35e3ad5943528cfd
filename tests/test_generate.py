"""``sparrow generate``: units and errors."""

import json

from sparrow.cli import main


def test_generate_pe(tmp_path, capsys):
    assert main(["generate", "pe", "--act-width", "16", "--exp-bits", "4", "--acc-width", "40",
                 "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "pe.v").read_text()
    assert "module pe(" in text
    for port in ("act", "sign", "exp", "zero", "valid", "clear", "last", "acc", "out_valid"):
        assert f" {port}" in text
    assert "[39:0] acc" in text and "[15:0] act" in text
    meta = json.loads((tmp_path / "o" / "pe.json").read_text())
    assert meta["max_terms"] == 511


def test_generate_pe_bad_width(tmp_path, capsys):
    assert main(["generate", "pe", "--acc-width", "12", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "Accumulator width 12 cannot hold one term" in err


def test_generate_unknown_target(tmp_path, capsys):
    assert main(["generate", "nosuch", "--out", str(tmp_path)]) == 1
    assert "neither a unit" in capsys.readouterr().err


def test_generate_model_images_round_trip(tmp_path):
    """The code image decodes back to the layer's coefficients; bias image = bias + rounding."""
    import numpy as np
    from sparrow.hw.images import read_hex
    from sparrow.modeldir import save_model, load_model
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(3)
    sd = random_layer("sd_linear", rng, name="fc1", in_=12, out=10, k=4, tiles=2, density=0.3)
    dense = random_layer("dense_linear", rng, name="fc2", in_=10, out=5)
    save_model(random_model([sd, dense], (12,)), tmp_path / "m")
    assert main(["generate", str(tmp_path / "m"), "--pes", "3", "--out", str(tmp_path / "g")]) == 0
    doc = json.loads((tmp_path / "g" / "generate.json").read_text())
    assert [l["top"] for l in doc["layers"]] == ["engine_fc1", "engine_fc2"]
    assert "module engine_fc1(" in (tmp_path / "g" / "fc1.v").read_text()
    layer = load_model(tmp_path / "m").layers[0]
    mem = doc["layers"][0]["memories"]
    desc = doc["layers"][0]
    P, T, rows_per_tile = 3, 2, 5
    B, d, eb, zero, G = (desc[key] for key in ("group_rows", "delta_bits", "exp_bits", "zero_codes",
                                                "groups"))
    cw, fill = eb + 1 + int(zero), (1 << d) - 1
    sign = np.zeros((10, 12), np.int64)
    exp = np.zeros((10, 12), np.int64)
    # Decode every group's ROM as docs (sparrow.hw.sd_program) describe it: B codes, the delta
    # column v (fill = 2^d - 1) of the entry after next, last, next last; per tile the first
    # entry's v and last and the second entry's v.
    for g in range(G):
        name = "codes" if G == 1 else f"codes{g}"
        words = read_hex(tmp_path / "g" / mem[name]["file"])
        assert len(words) == mem[name]["depth"] == desc["tile_ends"][g][-1] + 1 and words[-1] == 0
        pc = 0
        for t in range(T):
            v, v_next = desc["first_v"][g][t], desc["second_v"][g][t]
            for b0 in range(0, rows_per_tile, P):
                base = 0
                while True:
                    w = words[pc]
                    pc += 1
                    if v == fill:
                        base += fill
                    else:
                        col = base + v
                        base = col + 1
                        for i in range(B):
                            code = (w >> (cw * i)) & ((1 << cw) - 1)
                            if zero and not code >> (eb + 1):
                                continue
                            assert b0 + g * B + i < rows_per_tile
                            r = t * rows_per_tile + b0 + g * B + i
                            sign[r, col] = -1 if (code >> eb) & 1 else 1
                            exp[r, col] = code & ((1 << eb) - 1)
                    v, v_next = v_next, (w >> (B * cw)) & fill
                    if (w >> (B * cw + d)) & 1:
                        break
            assert pc == desc["tile_ends"][g][t]
    s = layer.params["coef_sign"].astype(np.int64)
    np.testing.assert_array_equal(sign, s)
    np.testing.assert_array_equal(exp[s != 0], layer.params["coef_exp"][s != 0])
    bias = read_hex(tmp_path / "g" / mem["bias"]["file"])
    bw = mem["bias"]["width"]
    signed = [b - (1 << bw) if b >> (bw - 1) else b for b in bias]
    assert signed == [int(b) + (1 << (layer.attrs["out_shift"] - 1)) for b in layer.params["bias"]]
    basis = read_hex(tmp_path / "g" / mem["basis"]["file"])
    assert len(basis) == 2 * 12 and mem["basis"]["width"] == 32


def test_generate_model_unsupported(tmp_path, capsys, monkeypatch):
    """A kind without an engine in the registry (every kind has one now: remove one) is refused."""
    import numpy as np
    from sparrow.hw.engines import ENGINES
    from sparrow.modeldir import save_model
    from sparrow.sw.randmodel import random_layer, random_model
    monkeypatch.delitem(ENGINES, "dense_conv2d")
    rng = np.random.default_rng(4)
    save_model(random_model([random_layer("dense_conv2d", rng, name="conv")], (2, 4, 4)),
               tmp_path / "m")
    assert main(["generate", str(tmp_path / "m"), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "layer 'conv': kind 'dense_conv2d' has no RTL engine (supported: sd_linear, dense_linear, " in err
    assert err.count("\n") == 1
