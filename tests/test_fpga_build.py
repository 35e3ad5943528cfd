"""Real place and route of the PE array for both board families, reports parsed from nextpnr."""

import json

import pytest

from sparrow import SparrowError
from sparrow.fpga.build import build_design
from sparrow.fpga.pe_array_bench import PEArrayBench
from sparrow.fpga.report import parse_nextpnr_report
from sparrow.hw.component import discard
from clirun import sparrow


@pytest.mark.parametrize("board, lut_field", [("icebreaker", "lc"), ("ulx3s-85f", "lut")])
def test_build_pe_array_report(tmp_path, board, lut_field):
    r = sparrow("build", "--board", board, "--pes", "4", "--seed", "3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "pe_array_4.report.json").read_text())
    assert report["board"] == board and report["seed"] == 3
    assert report["params"] == {"pes": 4, "act_width": 8, "exp_bits": 3, "acc_width": 20}
    util = report["utilization"]
    assert 0 < util[lut_field]["used"] < util[lut_field]["available"]
    # 4 PEs each hold a 20-bit accumulator and a registered term: at least that many FFs.
    assert util["ff"]["used"] >= 4 * 20
    (clock, fmax), = report["fmax_mhz"].items()
    assert fmax["achieved"] > 10
    assert all(report["tools"].values()), report["tools"]
    assert (tmp_path / ("pe_array_4.bin" if board == "icebreaker" else "pe_array_4.bit")).exists()
    # the nextpnr report is the source of the numbers
    again = parse_nextpnr_report(tmp_path / "pe_array_4.nextpnr.json", report["family"])
    assert again["utilization"][lut_field] == util[lut_field]


def test_more_pes_cost_more_logic(tmp_path):
    small = build_design(PEArrayBench(2), "icebreaker", tmp_path / "a", name="a", progress=False)
    large = build_design(PEArrayBench(8), "icebreaker", tmp_path / "b", name="b", progress=False)
    per_pe = (large["utilization"]["lc"]["used"] - small["utilization"]["lc"]["used"]) / 6
    assert 20 < per_pe < 200, per_pe


def test_too_large_for_the_device_is_one_clear_line(tmp_path):
    r = sparrow("build", "--board", "icebreaker", "--pes", "80", "--out", str(tmp_path))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert "does not fit the iCE40UP5K: ICESTORM_LC" in lines[-1]
    assert "Traceback" not in r.stderr


def test_bad_seed_rejected(tmp_path):
    unit = discard(PEArrayBench(1))       # refused by the build, never elaborated
    with pytest.raises(SparrowError, match="seed must be a non-negative integer"):
        build_design(unit, "icebreaker", tmp_path, seed=-1)


def test_build_model_accelerator_and_one_layer(tmp_path):
    """``sparrow build --model DIR``: the whole accelerator; ``--layer``: one engine in the harness."""
    import numpy as np
    from sparrow.modeldir import save_model
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(7)
    model = random_model([random_layer("sd_linear", rng, name="fc1", in_=16, out=12, k=4, relu=True),
                          random_layer("dense_linear", rng, name="fc2", in_=12, out=6)], [16],
                         name="tiny")
    save_model(model, tmp_path / "tiny")
    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--pes", "4",
                "--clock", "24", "--out", str(tmp_path / "accel"))
    assert r.returncode == 0, r.stderr
    assert "clock 24.000 MHz from the PLL" in r.stdout and "UART 3000000 baud (divisor 8)" in r.stdout
    accel = json.loads((tmp_path / "accel" / "tiny_accel.report.json").read_text())
    assert accel["design_kind"] == "accelerator" and accel["harness"] is None
    assert accel["layers"] == ["fc1 sd_linear 16->12", "fc2 dense_linear 12->6"]
    assert accel["clock_hz"] == 24e6 and accel["target_mhz"] == 24.0 and accel["baud"] == 3_000_000
    # icepll -i 12 -o 24: DIVR 0, DIVF 63, DIVQ 5, FILTER_RANGE 1
    pll = accel["pll"]
    assert (pll["primitive"], pll["divr"], pll["divf"], pll["divq"], pll["filter_range"]) == \
        ("SB_PLL40_PAD", 0, 63, 5, 1)
    (clock, fmax), = accel["fmax_mhz"].items()
    assert fmax["constraint"] == pytest.approx(24.0, abs=0.1), fmax     # nextpnr through the PLL
    assert accel["fmax_hz"] == round(fmax["achieved"] * 1e6) > 24e6
    assert (tmp_path / "accel" / "tiny_accel.bin").is_file()

    # Without --clock: a first place and route learns fmax; the clock keeps a 3% margin.
    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--pes", "4",
                "--out", str(tmp_path / "auto"))
    assert r.returncode == 0, r.stderr
    auto = json.loads((tmp_path / "auto" / "tiny_accel.report.json").read_text())
    assert auto["clock_hz"] <= auto["learn_fmax_hz"] * 0.97 and auto["clock_hz"] <= auto["fmax_hz"]
    assert auto["clock_hz"] > 24e6 and auto["clock_hz"] % 3e6 == 0     # 3 Mbaud exactly
    # A clock the design does not meet is refused, with one line, and leaves no bitstream.
    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--pes", "4",
                "--clock", "200", "--out", str(tmp_path / "fast"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("sparrow build: error: --clock 200: tiny_accel meets only") and "choose --clock" in line
    assert not (tmp_path / "fast" / "tiny_accel.bin").exists()

    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--layer", "fc1",
                "--pes", "4", "--out", str(tmp_path / "fc1"))
    assert r.returncode == 0, r.stderr
    sd = json.loads((tmp_path / "fc1" / "tiny_fc1.report.json").read_text())
    assert (sd["kind"], sd["pes"], sd["shape"]) == ("sd_linear", 4, [16, 12])
    assert sd["utilization"]["dsp"]["used"] >= 1 and sd["harness"]["input_bits"] > 0
    assert sd["utilization"]["lc"]["used"] < accel["utilization"]["lc"]["used"]

    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--layer", "fc9")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("has no such layer (layers: fc1, fc2)")
    r = sparrow("build", "--board", "orangecrab-25f", "--model", str(tmp_path / "tiny"))
    assert r.returncode == 1 and "orangecrab-25f has no UART resource" in r.stderr
    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--baud", "6000000",
                "--clock", "18")
    assert r.returncode == 1 and "--baud 6000000: Baud rate 6000000 is too high" in r.stderr
    r = sparrow("build", "--board", "icebreaker", "--model", str(tmp_path / "tiny"), "--clock", "300")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == ("sparrow build: error: iCE40 PLL: output frequency "
                                                 "300.000 MHz is outside 16..275 MHz")
