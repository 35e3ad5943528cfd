"""The `sparrow` command line: dispatch, one-line errors, doctor."""


from sparrow.cli import COMMANDS
from clirun import sparrow


def test_unknown_subcommand_is_one_line_exit_2():
    r = sparrow("frobnicate")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "invalid choice: 'frobnicate'" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_argument_is_one_line_exit_2():
    r = sparrow("build", "--board", "icebreaker", "--pes", "many")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--pes" in r.stderr


def test_missing_subcommand_is_an_error():
    r = sparrow()
    assert r.returncode == 2 and "required" in r.stderr


def test_every_subcommand_has_help():
    for name in COMMANDS:
        r = sparrow(name, "--help")
        assert r.returncode == 0, (name, r.stderr)
        assert "usage: sparrow " + name in r.stdout


def test_doctor_lists_every_tool_with_version_and_path():
    r = sparrow("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for tool in ("amaranth", "yosys", "nextpnr-ice40", "nextpnr-ecp5", "icepack", "ecppack",
                 "verilator", "iverilog", "openfpgaloader", "cocotb", "torch"):
        row = [l for l in lines if l.split()[0] == tool]
        assert len(row) == 1, f"{tool} missing from doctor output:\n{r.stdout}"
        assert "/" in row[0].split()[-1], row[0]


def test_doctor_reports_a_missing_tool(monkeypatch):
    import sparrow.toolchain as tc
    from sparrow.cli import doctor
    monkeypatch.setenv("NEXTPNR_ECP5", "no-such-nextpnr-ecp5")
    rows = tc.probe()
    missing = [t.name for t, v, p in rows if p is None]
    assert missing == ["nextpnr-ecp5"]
    assert doctor.run(None) == 1
