"""``sparrow flash``: the openFPGALoader command per board, and clear errors (no board is attached here)."""

import json

import pytest

from sparrow.fpga.build import build_design
from sparrow.fpga.pe_array_bench import PEArrayBench
from clirun import sparrow


def one_error_line(r):
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ice40_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ice40")
    build_design(PEArrayBench(1), "icebreaker", out, name="one_pe", progress=False)
    return out / "one_pe.report.json"


def test_report_names_board_and_bitstream(ice40_build):
    r = sparrow("flash", str(ice40_build), "--dry-run")
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.split()
    assert cmd[1:3] == ["-b", "ice40_generic"]
    assert cmd[-1] == str(ice40_build.with_name("one_pe.bin"))
    assert "openfpgaloader" in cmd[0].lower()


def test_without_a_board_attached_is_one_line(ice40_build):
    line = one_error_line(sparrow("flash", str(ice40_build)))
    assert "openFPGALoader could not program the icebreaker (iCE40UP5K) with one_pe.bin" in line
    assert "plugged in" in line


def test_ecp5_bitstreams_and_flash_option(tmp_path):
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff" * 16)
    r = sparrow("flash", str(bit), "--board", "ulx3s-85f", "--dry-run")
    assert r.stdout.split()[1:] == ["-b", "ulx3s", str(bit)]
    r = sparrow("flash", str(bit), "--board", "ulx3s-12f", "--flash", "--dry-run")
    assert r.stdout.split()[1:] == ["-b", "ulx3s", "-f", str(bit)]
    r = sparrow("flash", str(bit), "--board", "orangecrab-85f", "--dry-run")
    assert r.stdout.split()[1:] == ["-b", "orangeCrab", str(bit)]
    assert "always programmed into its flash" in one_error_line(
        sparrow("flash", str(bit), "--board", "orangecrab-25f", "--flash"))


def test_bad_paths_are_one_line(tmp_path, ice40_build):
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\0")
    assert one_error_line(sparrow("flash", str(tmp_path / "none.bin"), "--board", "icebreaker")) \
        .endswith("none.bin: no such file")
    assert "bitstreams for the iCE40UP5K end in .bin, not .bit" in one_error_line(
        sparrow("flash", str(bit), "--board", "icebreaker"))
    assert "needs --board" in one_error_line(sparrow("flash", str(bit)))
    assert "for icebreaker, not --board ulx3s-85f" in one_error_line(
        sparrow("flash", str(ice40_build), "--board", "ulx3s-85f"))
    bad = tmp_path / "x.report.json"
    bad.write_text(json.dumps({"board": "icebreaker"}))
    assert "not a sparrow build report" in one_error_line(sparrow("flash", str(bad)))
    gone = tmp_path / "gone.report.json"
    gone.write_text(json.dumps({"board": "icebreaker", "design": "gone"}))
    assert "its bitstream gone.bin is missing" in one_error_line(sparrow("flash", str(gone)))
