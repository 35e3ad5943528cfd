"""OutputStage (hw/pe_array.py) alone against a Python model: every previous-snapshot structure
(shift register, asynchronous RAM, synchronous RAM read a word ahead, none), one and several rows per word, tiles,
gaps between words; the outputs and their latency (4 edges running, 3 otherwise)."""

import numpy as np
import pytest


def _model(words, aw, lanes, rows, tile_rows, C, bias, shift, relu, running):
    prev = [[0] * C for _ in range(lanes)]
    out = []
    for n, word in enumerate(words):
        w = n % (rows // C)
        lane = (w % (tile_rows // C)) % lanes
        for c in range(C):
            snap = (word >> (c * aw)) & ((1 << aw) - 1)
            v = (snap - prev[lane][c]) & ((1 << aw) - 1) if running else snap
            prev[lane][c] = snap
            v -= (v >> (aw - 1)) << aw                  # two's complement
            t = v + bias[w * C + c] + ((1 << (shift - 1)) if shift else 0)
            out.append(max(0 if relu else -128, min(127, t >> shift)))
    return out


@pytest.mark.parametrize("lanes,rows,tile_rows,C,running", [
    (4, 16, 16, 1, True),       # whole blocks: shift register
    (4, 10, 10, 1, True),       # a short block, 4 lanes: RAM read asynchronously
    (3, 12, 6, 2, True),        # two tiles, two rows per word, short blocks
    (12, 30, 30, 1, True),      # a short block, 12 lanes: synchronous RAM
    (12, 24, 24, 1, True),      # whole blocks, 12 lanes: synchronous RAM
    (12, 25, 25, 1, True),      # a block of one word, then lane 0 again: transparent read
    (9, 38, 19, 1, True),       # two tiles, each ending with a block of one word
    (16, 40, 20, 1, True),      # 16 lanes (a power of two), two tiles of a short block
    (16, 34, 34, 1, True),      # 16 lanes, a block of one word: transparent read
    (4, 10, 10, 1, False),      # sums as they are
])
def test_output_stage_against_model(lanes, rows, tile_rows, C, running):
    from amaranth.sim import Simulator
    from sparrow.hw.pe_array import OutputStage
    aw, shift = 14, 3
    rng = np.random.default_rng(lanes * rows)
    bias = rng.integers(-300, 300, size=rows).tolist()
    relu = bool(lanes % 2)
    dut = OutputStage(aw, lanes, rows, tile_rows, bias, shift, relu, running=running, out_lanes=C)
    words = [int(rng.integers(0, 1 << (aw * C))) for _ in range(3 * rows // C)]
    want = _model(words, aw, lanes, rows, tile_rows, C, bias, shift, relu, running)
    latency = 4 if running else 3
    sent, got = [], []

    async def bench(ctx):
        n = 0
        for cycle in range(4 * len(words) + 10):
            valid = n < len(words) and rng.random() < 0.7
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, words[n] if valid else 0)
            if valid:
                sent.append(cycle)
                n += 1
            if ctx.get(dut.o.valid):
                y = ctx.get(dut.o.payload)
                got.append((cycle, [((y >> (8 * c)) & 0xFF) - (((y >> (8 * c + 7)) & 1) << 8)
                                    for c in range(C)] if C > 1 else [y]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [y for _, ys in got for y in ys] == want
    assert [cycle for cycle, _ in got] == [cycle + latency for cycle in sent]
