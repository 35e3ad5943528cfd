"""cocotb bench for :class:`sparrow.hw.pe_array.PEArray`: driver, monitor, reference, scoreboard.

``$PE_ARRAY_TB_DATA`` (``.npz``) holds the entries: ``z`` [E], ``codes`` [E, P]
(5-bit codes as in :mod:`sparrow.hw.pe_array`), ``last`` [E], ``lanes`` [E]
(chain words shifted out at a ``last``), ``gap`` [E]
(idle cycles before the entry), ``acc_width`` and optionally ``out_lanes``
(sums per chain word, default 1).  The driver offers one
entry per cycle, holding an entry with ``last`` while ``can_last`` is low;
the monitor collects the drain chain's words; the reference model gives the
running-sum snapshots (lane 0 first, modulo 2^acc_width, as signed values);
the scoreboard reports the first mismatch (block, lane, got, expected).
"""

import os

import numpy as np

__all__ = ["pe_array_reference"]


def code_value(code):
    """Coefficient of a 5-bit code: nz[4], sign[3], exp[2:0]."""
    if not code >> 4:
        return 0
    return (-1 if code & 8 else 1) << (code & 7)


def pe_array_reference(z, codes, last, acc_width, lanes=None):
    """Snapshots of the running sums at each ``last`` (signed, wrapped), ``lanes[e]`` lanes each."""
    P = codes.shape[1]
    vals = np.vectorize(code_value)(codes).astype(object)
    acc = [0] * P
    snaps = []
    for e in range(len(z)):
        for p in range(P):
            acc[p] += int(vals[e, p]) * int(z[e])
        if last[e]:
            n = P if lanes is None else int(lanes[e])
            snaps.append([((a + (1 << (acc_width - 1))) % (1 << acc_width)) - (1 << (acc_width - 1))
                          for a in acc[:n]])
    return snaps


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, FallingEdge
except ImportError:
    cocotb = None


if cocotb is not None:
    @cocotb.test()
    async def pe_array_blocks(dut):
        d = np.load(os.environ["PE_ARRAY_TB_DATA"])
        z, codes, last, gap, lanes = (d[k].astype(np.int64)
                                      for k in ("z", "codes", "last", "gap", "lanes"))
        acc_width = int(d["acc_width"])
        C = int(d["out_lanes"]) if "out_lanes" in d else 1     # sums per chain word
        P = codes.shape[1]
        expected = pe_array_reference(z, codes, last, acc_width, lanes * C)
        flat = [v for snap in expected for v in snap]
        packed = [sum(int(c) << (5 * p) for p, c in enumerate(row)) for row in codes]

        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.valid.value = 0
        dut.last.value = 0
        dut.z.value = 0              # defined from time 0, as the engine's registers are
        dut.codes.value = 0
        dut.lanes.value = 0
        dut.o__ready.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

        got = []
        stalls = 0
        e = 0
        wait = int(gap[0]) if len(gap) else 0
        cycles = 0
        while len(got) < len(flat):
            if int(dut.o__valid.value):
                if C == 1:
                    got.append(dut.o__payload.value.to_signed())
                else:
                    word, half = dut.o__payload.value.to_unsigned(), 1 << (acc_width - 1)
                    got.extend((((word >> (c * acc_width)) + half) % (2 * half)) - half
                               for c in range(C))
            if e < len(z) and wait == 0:
                dut.z.value = int(z[e])
                dut.codes.value = packed[e]
                dut.last.value = int(last[e])
                dut.lanes.value = int(lanes[e])
                if last[e] and not int(dut.can_last.value):
                    dut.valid.value = 0
                    stalls += 1
                else:
                    dut.valid.value = 1
                    e += 1
                    wait = int(gap[e]) if e < len(z) else 0
            else:
                dut.valid.value = 0
                wait = max(wait - 1, 0)
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < 20 * (len(z) + P * len(expected)) + 100, "timeout"
        await ClockCycles(dut.clk, P + 8)
        assert not int(dut.overrun.value), "drain chain overrun"
        where = [(b, p) for b, snap in enumerate(expected) for p in range(len(snap))]
        for i, g in enumerate(got):
            b, p = where[i]
            assert g == flat[i], f"block {b}, lane {p}: got {g}, expected {flat[i]}"
        assert stalls > 0, "the stimulus never exercised can_last"
        dut._log.info("PE array: %d blocks x %d lanes match, %d stall cycles", len(expected), P, stalls)
