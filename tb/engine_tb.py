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

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge


@cocotb.test()
async def engine_vectors(dut):
    data = np.load(os.environ["ENGINE_TB_DATA"])
    x = data["x"].astype(np.int64)
    n, n_in = x.shape
    n_out = int(data["n_out"])
    gaps = float(data["gaps"]) if "gaps" in data else 0.0
    label = str(data["label"]) if "label" in data else "layer"
    expected = data["expected"].astype(np.int64) if "expected" in data else None
    rng = np.random.default_rng(1)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    flat = x.reshape(-1).tolist()
    total_in, total_out = len(flat), n * n_out
    bubbles = (rng.random(total_in * 2 + 16) < gaps).tolist()
    got = []
    idx = cycle = start = 0
    # Generous bound: load + basis tiles + one entry per coefficient + drains.
    limit = 200 + n * (4 * n_in + 8 * n_in * n_out + 16 * n_out)
    i_valid, i_payload, i_ready = dut.i__valid, dut.i__payload, dut.i__ready
    o_valid, o_payload = dut.o__valid, dut.o__payload
    lanes = len(o_payload) // 8            # int8 outputs per beat (SDEngine out_lanes)
    while len(got) < total_out:
        await FallingEdge(dut.clk)
        cycle += 1
        if int(o_valid.value):
            if lanes == 1:
                got.append(o_payload.value.to_signed())
            else:                           # C int8 per beat, row r*C+c at bits [8c, 8c+8)
                if not o_payload.value.is_resolvable:
                    raise AssertionError(f"{label}: unresolved output {o_payload.value} at cycle {cycle}")
                word = o_payload.value.to_unsigned()
                got.extend(((word >> (8 * c)) & 0xFF) - (((word >> (8 * c)) & 0x80) << 1)
                           for c in range(lanes))
        if idx < total_in and not bubbles[cycle % len(bubbles)]:
            i_valid.value = 1
            i_payload.value = flat[idx]
            if int(i_ready.value):          # ready depends on state only: taken at the next edge
                if idx == 0:
                    start = cycle
                idx += 1
        else:
            i_valid.value = 0
        assert cycle < limit, (f"{label}: timeout after {cycle} cycles with {idx}/{total_in} "
                               f"inputs taken and {len(got)}/{total_out} outputs")
    cycles = cycle - start
    await ClockCycles(dut.clk, 8)
    assert not int(o_valid.value), f"{label}: more than {total_out} outputs"
    assert not int(dut.error.value), f"{label}: engine error flag set (drain overrun or lost output)"

    y = np.array(got, dtype=np.int64).reshape(n, n_out)
    out_path = os.environ.get("ENGINE_TB_OUT")
    if out_path:
        np.savez(out_path, y=y.astype(np.int8), cycles=cycles)
    if expected is not None:
        bad = np.argwhere(y != expected)
        if len(bad):
            v, r = bad[0]
            raise AssertionError(f"{label}: vector {v}, output {r}: got {y[v, r]}, expected "
                                 f"{expected[v, r]} ({len(bad)} mismatches of {y.size}); "
                                 f"input {x[v].tolist()[:16]}{' ...' if n_in > 16 else ''}")
    dut._log.info("%s: %d vectors, %d cycles (%.1f per vector)", label, n, cycles, cycles / n)


@cocotb.test()
async def engine_free_run(dut):
    """Speed probe: the engine runs ``$ENGINE_TB_CYCLES`` cycles on a constant input stream.

    The clock is a cocotb ``Clock`` and Python touches nothing per cycle, so
    the wall time measures the simulator itself.  Writes ``$ENGINE_TB_OUT``
    with ``cycles`` and ``seconds`` (
    the values are checked by ``engine_vectors``).
    """
    import time
    cycles = int(os.environ["ENGINE_TB_CYCLES"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.i__valid.value = 1
    dut.i__payload.value = 0x35
    dut.o__ready.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    start = time.perf_counter()
    await ClockCycles(dut.clk, cycles)
    seconds = time.perf_counter() - start
    assert not int(dut.error.value), "engine error flag set"
    np.savez(os.environ["ENGINE_TB_OUT"], cycles=cycles, seconds=seconds)
    dut._log.info("%d cycles in %.2f s: %.0f cycles/s", cycles, seconds, cycles / seconds)
