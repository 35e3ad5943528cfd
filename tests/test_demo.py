"""``sparrow demo`` end to end (without board builds: tests/test_fpga_build.py covers those)."""

import json
from clirun import sparrow as _sparrow


def test_demo_compresses_simulates_and_reports(tmp_path):
    out = tmp_path / "demo"
    r = _sparrow("demo", "--out", str(out), "--boards", "", "--sim-samples", "6", "--host-samples", "3",
                 "--icarus-samples", "2", "--pes", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sparrow demo report" in r.stdout
    summary = json.loads((out / "demo.json").read_text())
    assert summary["sim"]["verilator"] == {"samples": 6, "bit_exact": True,
                                           "seconds": summary["sim"]["verilator"]["seconds"]}
    assert summary["sim"]["icarus"]["samples"] == 2
    assert summary["host"]["samples"] == 3 and summary["host"]["bit_exact"]
    assert summary["host"]["status_flags"] == []
    assert summary["compress"]["storage_ratio"] > 4
    assert (out / "model" / "manifest.json").is_file()


def test_demo_rejects_bad_arguments(tmp_path):
    r = _sparrow("demo", "--out", str(tmp_path / "d"), "--pes", "0")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["sparrow demo: error: --pes must be at least 1, not 0"]
    r = _sparrow("demo", "--out", str(tmp_path / "d"), "--boards", "nosuchboard")
    assert r.returncode == 1 and "nosuchboard" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()
