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
