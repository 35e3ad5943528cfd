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

import numpy as np

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


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ClockCycles
except ImportError:  # imported by pytest for the reference model only
    cocotb = None


if cocotb is not None:
    @cocotb.test()
    async def pe_random_and_corners(dut):
        data = np.load(os.environ["PE_TB_DATA"])
        stim = {f: data[f].astype(np.int64) for f in STIM_FIELDS}
        acc_width = int(data["acc_width"])
        n = len(stim["act"])
        expected = pe_reference(stim, acc_width)

        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        for f in STIM_FIELDS:
            getattr(dut, f).value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

        got = []

        async def monitor():
            while True:
                await FallingEdge(dut.clk)
                if int(dut.out_valid.value):
                    got.append(dut.acc.value.to_signed())

        async def driver():
            ports = [getattr(dut, f) for f in STIM_FIELDS]
            cols = [stim[f].tolist() for f in STIM_FIELDS]
            for r in range(n):
                for p, c in zip(ports, cols):
                    p.value = c[r]
                await FallingEdge(dut.clk)
            for p in ports:
                p.value = 0

        cocotb.start_soon(monitor())
        await driver()
        await ClockCycles(dut.clk, 4)

        # Scoreboard.
        for i, ((exp_sum, rows), g) in enumerate(zip(expected, got)):
            assert g == exp_sum, (f"sum {i} (stimulus rows {rows[0]}..{rows[-1]}): got {g}, "
                                  f"expected {exp_sum}; terms {_describe(stim, rows)}")
        assert len(got) == len(expected), f"got {len(got)} finished sums, expected {len(expected)}"
        dut._log.info("PE: %d sums over %d cycles match the reference", len(got), n)
