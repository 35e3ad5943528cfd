"""cocotb bench for :class:`sparrow.hw.bc_engine.BCEngine` under random back-pressure.

The pytest side (``tests/test_bc_engine.py``) writes ``$BC_TB_DATA`` (``.npz``):
``x`` int8 [N, in], ``expected`` int8 [N, out] (the golden model), ``p_valid``
(probability that the driver offers an input element in a cycle), ``p_ready``
(probability that the consumer takes an output), ``seed``.  The driver and
the consumer decide at each falling edge; a transfer happens at the next
rising edge when valid and ready are both high.  The scoreboard compares the
outputs in order and reports the first mismatch (vector, row, got, expected).
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from sparrow.tb.bench import Scoreboard, StreamDriver, StreamMonitor, run_steps, start


@cocotb.test()
async def bc_engine_backpressure(dut):
    """Outputs under random input gaps and output stalls equal the golden's; no extra output; no error."""
    data = np.load(os.environ["BC_TB_DATA"])
    x = data["x"].astype(np.int64)
    expected = data["expected"].astype(np.int64)
    n, n_in = x.shape
    n_out = expected.shape[1]
    # One RNG for both sides, drawn consumer first, so a seed gives one timing.
    rng = np.random.default_rng(int(data["seed"]))
    await start(dut, idle={"i__valid": 0, "i__payload": 0, "o__ready": 0})

    driver = StreamDriver(dut.i__valid, dut.i__payload, dut.i__ready, x.reshape(-1).tolist(),
                          p_valid=float(data["p_valid"]), rng=rng)
    monitor = StreamMonitor(dut.o__valid, dut.o__payload, dut.o__ready,
                            p_ready=float(data["p_ready"]), rng=rng)
    cycle = await run_steps(dut.clk, monitor, driver, until=lambda: len(monitor.items) >= n * n_out,
                            limit=1000 + 20 * n * (n_in * n_out // 4 + 64 * (n_in + n_out)),
                            timeout=lambda: (f"timeout: {driver.taken} inputs taken, "
                                             f"{len(monitor.items)} outputs"))
    dut.o__ready.value = 1
    await ClockCycles(dut.clk, 20)
    assert not int(dut.o__valid.value), "more outputs than expected"
    assert not int(dut.error.value), "error flag set"
    outputs = Scoreboard("output", expected.reshape(-1).tolist(),
                         where=lambda i: f"vector {i // n_out}, output {i % n_out}")
    outputs.compare(monitor.items)
    dut._log.info("BCEngine under back-pressure: %d vectors in %d cycles match", n, cycle)
