"""cocotb bench for the layer engines (:class:`~sparrow.hw.sd_engine.SDEngine`,
:class:`~sparrow.hw.dense_engine.DenseEngine`): driver, monitor, scoreboard.

Both engines have the same ports: stream ``i`` (int8 elements of the input
vectors, x[0] first), stream ``o`` (int8 outputs, y[0] first, never stalls;
``8*C`` bits wide for an SD engine with C output lanes: C rows per beat),
sticky ``error``.  The pytest side writes ``$ENGINE_TB_DATA`` (``.npz``):

* ``x`` int8 [N, in]: the input vectors, sent back to back;
* ``n_out``: outputs per vector;
* ``expected`` int8 [N, out] (optional): the reference model's outputs;
  the scoreboard then reports the first mismatch (layer, vector, row, got,
  expected);
* ``gaps`` (optional, 0..1): probability of a bubble on ``i.valid``;
* ``label``: the layer's name for messages.

The bench writes ``$ENGINE_TB_OUT`` (``.npz``): ``y`` int8 [N, out] and
``cycles`` (clock cycles from the first input element taken to the last
output), so ``sparrow sim`` and the benchmarks can use it without a reference.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from sparrow.tb.bench import Scoreboard, StreamDriver, StreamMonitor, run_steps, signed_fields, start


@cocotb.test()
async def engine_vectors(dut):
    """The engine's outputs, in order, equal ``expected`` (when given); no extra output; no error."""
    data = np.load(os.environ["ENGINE_TB_DATA"])
    x = data["x"].astype(np.int64)
    n, n_in = x.shape
    n_out = int(data["n_out"])
    gaps = float(data["gaps"]) if "gaps" in data else 0.0
    label = str(data["label"]) if "label" in data else "layer"
    await start(dut, idle={"i__valid": 0, "i__payload": 0, "o__ready": 1})

    lanes = len(dut.o__payload) // 8            # int8 outputs per beat (SDEngine out_lanes)
    driver = StreamDriver(dut.i__valid, dut.i__payload, dut.i__ready, x.reshape(-1).tolist(),
                          p_valid=1.0 - gaps, rng=np.random.default_rng(1))
    # C int8 per beat, row r*C+c at bits [8c, 8c+8)
    monitor = StreamMonitor(dut.o__valid, dut.o__payload, name=label,
                            unpack=None if lanes == 1 else
                            lambda v: signed_fields(v.to_unsigned(), 8, lanes))
    total_out = n * n_out
    # Generous bound: load + basis tiles + one entry per coefficient + drains.
    limit = 200 + n * (4 * n_in + 8 * n_in * n_out + 16 * n_out)
    last = await run_steps(dut.clk, monitor, driver, until=lambda: len(monitor.items) >= total_out,
                           limit=limit, timeout=lambda: (
                               f"{label}: timeout after {limit} cycles with {driver.taken}/{n * n_in} "
                               f"inputs taken and {len(monitor.items)}/{total_out} outputs"))
    cycles = last - driver.first_cycle
    await ClockCycles(dut.clk, 8)
    assert not int(dut.o__valid.value), f"{label}: more than {total_out} outputs"
    assert not int(dut.error.value), f"{label}: engine error flag set (drain overrun or lost output)"

    y = np.array(monitor.items, dtype=np.int64).reshape(n, n_out)
    out_path = os.environ.get("ENGINE_TB_OUT")
    if out_path:
        np.savez(out_path, y=y.astype(np.int8), cycles=cycles)
    if "expected" in data:
        tail = " ..." if n_in > 16 else ""
        outputs = Scoreboard(f"{label}: output", data["expected"].astype(np.int64).reshape(-1).tolist(),
                             where=lambda i: f"{label}: vector {i // n_out}, output {i % n_out}",
                             terms=lambda i: f"input {x[i // n_out].tolist()[:16]}{tail}")
        outputs.compare(monitor.items)
    dut._log.info("%s: %d vectors, %d cycles (%.1f per vector)", label, n, cycles, cycles / n)


@cocotb.test()
async def engine_free_run(dut):
    """Speed probe: the engine runs ``$ENGINE_TB_CYCLES`` cycles on a constant input stream.

    The clock is a cocotb ``Clock`` and the only Python per cycle is
    ``ClockCycles`` counting edges, so the wall time is close to the
    simulator's own.  Writes ``$ENGINE_TB_OUT`` with ``cycles`` and
    ``seconds`` (the values are checked by ``engine_vectors``).
    """
    cycles = int(os.environ["ENGINE_TB_CYCLES"])
    await start(dut, idle={"i__valid": 1, "i__payload": 0x35, "o__ready": 1})
    begin = time.perf_counter()
    await ClockCycles(dut.clk, cycles)
    seconds = time.perf_counter() - begin
    assert not int(dut.error.value), "engine error flag set"
    np.savez(os.environ["ENGINE_TB_OUT"], cycles=cycles, seconds=seconds)
    dut._log.info("%d cycles in %.2f s: %.0f cycles/s", cycles, seconds, cycles / seconds)
