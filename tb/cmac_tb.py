"""cocotb bench for :class:`sparrow.hw.cmac.ComplexMAC`: driver, monitor, reference, scoreboard.

The pytest side (``tests/test_bc_cmac.py``) writes one row per clock cycle to
the ``.npz`` named by ``$CMAC_TB_DATA``: ``x_re, x_im, w_re, w_im, lane,
first, last, valid`` (int64) and scalars ``shift``, ``out_bits``, ``lanes``.  The
reference :func:`cmac_reference` (Python ints) gives the closed sums in
order; the scoreboard compares lane, re and im of each.
"""

import os

import numpy as np

__all__ = ["FIELDS", "cmac_reference", "pack_operands"]

FIELDS = ("x_re", "x_im", "w_re", "w_im", "lane", "first", "last", "valid")


def cmac_reference(stim, shift, out_bits):
    """[(lane, re, im)] for every row with valid and last, per the ComplexMAC contract."""
    acc = {}
    out = []
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    for r in range(len(stim["valid"])):
        if not stim["valid"][r]:
            continue
        lane = int(stim["lane"][r])
        xr, xi, wr, wi = (int(stim[f][r]) for f in ("x_re", "x_im", "w_re", "w_im"))
        base = (1 << (shift - 1), 1 << (shift - 1)) if stim["first"][r] else acc[lane]
        acc[lane] = (base[0] + xr * wr - xi * wi, base[1] + xr * wi + xi * wr)
        if stim["last"][r]:
            out.append((lane, min(hi, max(lo, acc[lane][0] >> shift)),
                        min(hi, max(lo, acc[lane][1] >> shift))))
    return out


def pack_operands(row, lane_bits=1):
    """Integer value of an operand payload (x_re, x_im, w_re, w_im: 16 bits each; lane; first; last)."""
    v = 0
    off = 0
    for f, w in (("x_re", 16), ("x_im", 16), ("w_re", 16), ("w_im", 16), ("lane", lane_bits), ("first", 1),
                 ("last", 1)):
        v |= (int(row[f]) & ((1 << w) - 1)) << off
        off += w
    return v


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ClockCycles
except ImportError:
    cocotb = None


if cocotb is not None:
    @cocotb.test()
    async def cmac_sums(dut):
        data = np.load(os.environ["CMAC_TB_DATA"])
        stim = {f: data[f].astype(np.int64).tolist() for f in FIELDS}
        shift, out_bits = int(data["shift"]), int(data["out_bits"])
        lane_bits = (max(2, int(data["lanes"])) - 1).bit_length()
        expected = cmac_reference(stim, shift, out_bits)
        n = len(stim["valid"])
        rows = [pack_operands({f: stim[f][r] for f in FIELDS}, lane_bits) for r in range(n)]

        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.inp__valid.value = 0
        dut.inp__payload.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        got = []
        mask = (1 << out_bits) - 1

        def sx(v):
            return v - (1 << out_bits) if v >> (out_bits - 1) else v

        async def monitor():
            while True:
                await FallingEdge(dut.clk)
                if int(dut.res_valid.value):
                    v = dut.res.value.to_unsigned()
                    got.append((v >> (2 * out_bits), sx(v & mask), sx((v >> out_bits) & mask)))

        cocotb.start_soon(monitor())
        for r in range(n):
            dut.inp__payload.value = rows[r]
            dut.inp__valid.value = stim["valid"][r]
            await FallingEdge(dut.clk)
        dut.inp__valid.value = 0
        await ClockCycles(dut.clk, 8)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"sum {i}: got (lane, re, im) = {g}, expected {e}"
        assert len(got) == len(expected), f"got {len(got)} sums, expected {len(expected)}"
        dut._log.info("CMAC: %d sums over %d cycles match the reference", len(got), n)
