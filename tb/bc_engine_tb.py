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

import numpy as np

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, FallingEdge
except ImportError:
    cocotb = None


if cocotb is not None:
    @cocotb.test()
    async def bc_engine_backpressure(dut):
        data = np.load(os.environ["BC_TB_DATA"])
        x = data["x"].astype(np.int64)
        expected = data["expected"].astype(np.int64)
        n, n_in = x.shape
        n_out = expected.shape[1]
        rng = np.random.default_rng(int(data["seed"]))
        p_valid, p_ready = float(data["p_valid"]), float(data["p_ready"])

        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

        flat = x.reshape(-1).tolist()
        got = []
        idx = cycle = 0
        limit = 1000 + 20 * n * (n_in * n_out // 4 + 64 * (n_in + n_out))
        while len(got) < n * n_out:
            await FallingEdge(dut.clk)
            cycle += 1
            assert cycle < limit, f"timeout: {idx} inputs taken, {len(got)} outputs"
            ready = int(rng.random() < p_ready)
            if int(dut.o__valid.value) and ready:
                got.append(dut.o__payload.value.to_signed())
            dut.o__ready.value = ready
            if idx < len(flat) and rng.random() < p_valid:
                dut.i__valid.value = 1
                dut.i__payload.value = flat[idx]
                if int(dut.i__ready.value):
                    idx += 1
            else:
                dut.i__valid.value = 0
        dut.o__ready.value = 1
        await ClockCycles(dut.clk, 20)
        assert not int(dut.o__valid.value), "more outputs than expected"
        assert not int(dut.error.value), "error flag set"
        y = np.array(got).reshape(n, n_out)
        bad = np.argwhere(y != expected)
        if len(bad):
            v, r = bad[0]
            raise AssertionError(f"vector {v}, output {r}: got {y[v, r]}, expected {expected[v, r]} "
                                 f"({len(bad)} mismatches of {y.size})")
        dut._log.info("BCEngine under back-pressure: %d vectors in %d cycles match", n, cycle)
