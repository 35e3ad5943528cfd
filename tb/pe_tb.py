"""cocotb bench for :class:`sparrow.hw.pe.ShiftAddPE`: driver, monitor, reference, scoreboard.

The pytest side (``tests/test_hw_pe.py``) writes the stimulus, one row per
clock cycle, to an ``.npz`` file named by ``$PE_TB_DATA``: arrays ``act``,
``sign``, ``exp``, ``zero``, ``valid``, ``clear``, ``last`` (int64, same
length) and scalars ``act_width``, ``exp_bits``, ``acc_width``.  The driver
applies one row per cycle; the monitor collects every finished sum; the
reference model (:func:`pe_reference`, plain Python ints) gives the expected
sums; the scoreboard compares them in order and reports the first mismatch
with the terms that made it.
"""

import os

import cocotb
import numpy as np

from sparrow.tb.bench import CycleDriver, Scoreboard, StreamMonitor, run_steps, start

__all__ = ["pe_reference", "STIM_FIELDS"]

STIM_FIELDS = ("act", "sign", "exp", "zero", "valid", "clear", "last")


def pe_reference(stim, acc_width=None):
    """Expected finished sums of a PE fed ``stim`` (dict of equal-length int arrays).

    Sequential semantics: per row, ``clear`` resets the sum to 0, then a
    ``valid`` term ``(-1)^sign * act * 2^exp`` (0 when ``zero``) is added; a
    valid ``last`` row emits the sum.  Returns ``[(sum, [row indices])]``.
    When ``acc_width`` is given, raises ``ValueError`` if a partial sum leaves
    the signed range (the stimulus broke the documented bounds).
    """
    out = []
    acc = 0
    rows = []
    n = len(stim["act"])
    for r in range(n):
        if stim["clear"][r]:
            acc = 0
            rows = []
        if stim["valid"][r]:
            if not stim["zero"][r]:
                t = int(stim["act"][r]) << int(stim["exp"][r])
                acc += -t if stim["sign"][r] else t
            rows.append(r)
            if acc_width is not None and not -(1 << (acc_width - 1)) <= acc < (1 << (acc_width - 1)):
                raise ValueError(f"stimulus row {r}: partial sum {acc} leaves {acc_width} bits")
            if stim["last"][r]:
                out.append((acc, rows))
                acc = 0
                rows = []
    return out


def _describe(stim, rows):
    parts = []
    for r in rows[:8]:
        if stim["zero"][r]:
            parts.append("0")
        else:
            parts.append(f"{'-' if stim['sign'][r] else '+'}{int(stim['act'][r])}<<{int(stim['exp'][r])}")
    more = f" ... ({len(rows)} terms)" if len(rows) > 8 else ""
    return " ".join(parts) + more


@cocotb.test()
async def pe_random_and_corners(dut):
    """Every finished sum of the PE equals the reference's, in order, and none is missing."""
    data = np.load(os.environ["PE_TB_DATA"])
    stim = {f: data[f].astype(np.int64) for f in STIM_FIELDS}
    expected = pe_reference(stim, int(data["acc_width"]))
    await start(dut, idle={f: 0 for f in STIM_FIELDS})

    driver = CycleDriver([getattr(dut, f) for f in STIM_FIELDS], [stim[f].tolist() for f in STIM_FIELDS])
    monitor = StreamMonitor(dut.out_valid, dut.acc)
    await run_steps(dut.clk, driver, monitor, until=lambda: driver.done)
    await run_steps(dut.clk, monitor, cycles=4)

    sums = Scoreboard("sum", [s for s, _ in expected],
                      where=lambda i: f"sum {i} (stimulus rows {expected[i][1][0]}..{expected[i][1][-1]})",
                      terms=lambda i: f"terms {_describe(stim, expected[i][1])}")
    sums.compare(monitor.items)
    dut._log.info("PE: %d sums over %d cycles match the reference", len(monitor.items), len(stim["act"]))
