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
    words = read_hex(tmp_path / "g" / mem["codes"]["file"])
    # the entries, then one zero word (the issue stage reads one past the last entry)
    assert len(words) == mem["codes"]["depth"] == doc["layers"][0]["code_entries"] + 1
    assert words[-1] == 0
    P, cw, col_bits = 3, 5, 4
    sign = np.zeros((10, 12), np.int64)
    exp = np.zeros((10, 12), np.int64)
    rows_per_tile, pc = 5, 0
    first_cols = doc["layers"][0]["first_cols"]
    for t in range(2):
        col = first_cols[t]
        for b0 in range(0, rows_per_tile, P):
            while True:
                w = words[pc]
                pc += 1
                for p in range(P):
                    code = (w >> (cw * p)) & 31
                    r = t * rows_per_tile + b0 + p
                    if code >> 4:
                        assert b0 + p < rows_per_tile
                        sign[r, col] = -1 if code & 8 else 1
                        exp[r, col] = code & 7
                col = (w >> (P * cw)) & ((1 << col_bits) - 1)    # the next entry's column
                if (w >> (P * cw + col_bits)) & 1:
                    break
    s = layer.params["coef_sign"].astype(np.int64)
    np.testing.assert_array_equal(sign, s)
    np.testing.assert_array_equal(exp[s != 0], layer.params["coef_exp"][s != 0])
    bias = read_hex(tmp_path / "g" / mem["bias"]["file"])
    bw = mem["bias"]["width"]
    signed = [b - (1 << bw) if b >> (bw - 1) else b for b in bias]
    assert signed == [int(b) + (1 << (layer.attrs["out_shift"] - 1)) for b in layer.params["bias"]]
    basis = read_hex(tmp_path / "g" / mem["basis"]["file"])
    assert len(basis) == 2 * 12 and mem["basis"]["width"] == 32


def test_generate_model_unsupported(tmp_path, capsys):
    import numpy as np
    from sparrow.modeldir import save_model
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(4)
    save_model(random_model([random_layer("dense_conv2d", rng, name="conv")], (2, 4, 4)),
               tmp_path / "m")
    assert main(["generate", str(tmp_path / "m"), "--out", str(tmp_path / "g")]) == 1
    assert "layer 'conv': kind 'dense_conv2d' has no RTL engine (supported: sd_linear, dense_linear, bc_linear)" in capsys.readouterr().err
