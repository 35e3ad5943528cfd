"""ShiftFIFO (hw/vecfifo.py) against a Python deque: random writes and reads, every cycle checked."""

from collections import deque

import numpy as np
import pytest


@pytest.mark.parametrize("depth,p_write,p_read", [(10, 0.7, 0.4), (1, 0.5, 0.5), (4, 0.4, 0.9)])
def test_shift_fifo_against_deque(depth, p_write, p_read):
    from amaranth.sim import Simulator
    from sparrow.hw.vecfifo import ShiftFIFO
    dut = ShiftFIFO(8, depth)
    rng = np.random.default_rng(depth)
    errors = []

    async def bench(ctx):
        model = deque()
        for cycle in range(600):
            value, w_valid, r_ready = int(rng.integers(256)), rng.random() < p_write, rng.random() < p_read
            ctx.set(dut.w.valid, w_valid)
            ctx.set(dut.w.payload, value)
            ctx.set(dut.r.ready, r_ready)
            got = (ctx.get(dut.w.ready), ctx.get(dut.r.valid), ctx.get(dut.level))
            want = (int(len(model) < depth), int(bool(model)), len(model))
            if got != want or (model and ctx.get(dut.r.payload) != model[0]):
                errors.append((cycle, got, want))
            if model and r_ready:
                model.popleft()
            if w_valid and want[0]:
                model.append(value)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:3]


def test_shift_fifo_refuses_bad_depth():
    from sparrow.hw.vecfifo import ShiftFIFO
    with pytest.raises(TypeError, match="FIFO depth must be a positive integer, not 0"):
        ShiftFIFO(8, 0)
    with pytest.raises(ValueError, match="FIFO depth must be between 1 and 1024, not 1025"):
        ShiftFIFO(8, 1025)
