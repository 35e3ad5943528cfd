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

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from sparrow.tb.bench import Scoreboard, StreamMonitor, run_steps, signed, signed_fields, start

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
            snaps.append([signed(a, acc_width) for a in acc[:n]])
    return snaps


class _EntryDriver:
    """Offer one entry per cycle after its ``gap`` idle cycles.

    An entry with ``last`` is held (valid low) while ``can_last`` is low;
    ``stalls`` counts those cycles.
    """

    def __init__(self, dut, z, packed, last, lanes, gap):
        self._dut = dut
        self._entries = list(zip(z.tolist(), packed, last.tolist(), lanes.tolist()))
        self._gap = gap.tolist()
        self._wait = self._gap[0] if self._gap else 0
        self.sent = 0
        self.stalls = 0

    def step(self, cycle):
        dut = self._dut
        if self.sent < len(self._entries) and self._wait == 0:
            z, codes, last, lanes = self._entries[self.sent]
            dut.z.value = z
            dut.codes.value = codes
            dut.last.value = last
            dut.lanes.value = lanes
            if last and not int(dut.can_last.value):
                dut.valid.value = 0
                self.stalls += 1
            else:
                dut.valid.value = 1
                self.sent += 1
                self._wait = self._gap[self.sent] if self.sent < len(self._entries) else 0
        else:
            dut.valid.value = 0
            self._wait = max(self._wait - 1, 0)


@cocotb.test()
async def pe_array_blocks(dut):
    """Every lane of every drained snapshot equals the reference; no overrun; can_last exercised."""
    d = np.load(os.environ["PE_ARRAY_TB_DATA"])
    z, codes, last, gap, lanes = (d[k].astype(np.int64) for k in ("z", "codes", "last", "gap", "lanes"))
    acc_width = int(d["acc_width"])
    C = int(d["out_lanes"]) if "out_lanes" in d else 1     # sums per chain word
    P = codes.shape[1]
    expected = pe_array_reference(z, codes, last, acc_width, lanes * C)
    where = [(b, p) for b, snap in enumerate(expected) for p in range(len(snap))]
    packed = [sum(int(c) << (5 * p) for p, c in enumerate(row)) for row in codes]
    # z defined from time 0, as the engine's registers are.
    await start(dut, idle={"valid": 0, "last": 0, "z": 0, "codes": 0, "lanes": 0, "o__ready": 1})

    driver = _EntryDriver(dut, z, packed, last, lanes, gap)
    monitor = StreamMonitor(dut.o__valid, dut.o__payload,
                            unpack=None if C == 1 else
                            lambda v: signed_fields(v.to_unsigned(), acc_width, C))
    await run_steps(dut.clk, driver, monitor, until=lambda: len(monitor.items) >= len(where),
                    limit=20 * (len(z) + P * len(expected)) + 100, timeout=lambda: "timeout")
    await ClockCycles(dut.clk, P + 8)
    assert not int(dut.overrun.value), "drain chain overrun"
    Scoreboard("lane", [v for snap in expected for v in snap],
               where=lambda i: f"block {where[i][0]}, lane {where[i][1]}").compare(monitor.items,
                                                                                  check_count=False)
    assert driver.stalls > 0, "the stimulus never exercised can_last"
    dut._log.info("PE array: %d blocks x %d lanes match, %d stall cycles", len(expected), P,
                  driver.stalls)
