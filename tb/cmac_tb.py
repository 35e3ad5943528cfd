"""cocotb bench for :class:`sparrow.hw.cmac.ComplexMAC`: driver, monitor, reference, scoreboard.

The design under test is :class:`CMACWithFFT`: a two-lane ComplexMAC whose
lane 1 multiplies on an idle :class:`~sparrow.hw.fft.FFTUnit` (its lent
multiplier, ``mul_op``/``mul_res``), wired as in the engine.  The pytest side
(``tests/test_bc_cmac.py``) writes one row per clock cycle to the ``.npz``
named by ``$CMAC_TB_DATA``: ``x_re, x_im, w0_re, w0_im, w1_re, w1_im, first,
last, valid`` (int64) and scalars ``shift``, ``out_bits``.  The reference
:func:`cmac_reference` (Python ints) gives the closed sums in order; the
scoreboard compares re and im of both lanes.
"""

import os

import cocotb
import numpy as np

from sparrow.tb.bench import (CycleDriver, Scoreboard, StreamMonitor, run_steps, signed_fields,
                              start)

__all__ = ["FIELDS", "CMACWithFFT", "cmac_reference", "pack_operands"]

FIELDS = ("x_re", "x_im", "w0_re", "w0_im", "w1_re", "w1_im", "first", "last", "valid")


def cmac_reference(stim, shift, out_bits):
    """[((re0, im0), (re1, im1))] for every row with valid and last, per the ComplexMAC contract."""
    acc = {}
    out = []
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    for r in range(len(stim["valid"])):
        if not stim["valid"][r]:
            continue
        xr, xi = int(stim["x_re"][r]), int(stim["x_im"][r])
        closed = []
        for lane in (0, 1):
            wr, wi = int(stim[f"w{lane}_re"][r]), int(stim[f"w{lane}_im"][r])
            base = (1 << (shift - 1), 1 << (shift - 1)) if stim["first"][r] else acc[lane]
            acc[lane] = (base[0] + xr * wr - xi * wi, base[1] + xr * wi + xi * wr)
            closed.append((min(hi, max(lo, acc[lane][0] >> shift)), min(hi, max(lo, acc[lane][1] >> shift))))
        if stim["last"][r]:
            out.append(tuple(closed))
    return out


def pack_operands(row):
    """Integer value of an operand payload (x_re, x_im, w[0].re, w[0].im, w[1].re, w[1].im; first; last)."""
    v = 0
    off = 0
    for f, w in (("x_re", 16), ("x_im", 16), ("w0_re", 16), ("w0_im", 16), ("w1_re", 16), ("w1_im", 16),
                 ("first", 1), ("last", 1)):
        v |= (int(row[f]) & ((1 << w) - 1)) << off
        off += w
    return v


def CMACWithFFT(acc_width, shift, out_bits):
    """A two-lane :class:`~sparrow.hw.cmac.ComplexMAC` with an idle ``FFTUnit(4)`` as lane 1's multiplier."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring, stream
    from amaranth.lib.wiring import In, Out
    from sparrow.hw.cmac import ComplexMAC, operand_layout, result_layout
    from sparrow.hw.fft import FFTUnit

    class _Top(wiring.Component):
        def __init__(self):
            super().__init__({"inp": In(stream.Signature(operand_layout(2))), "res_valid": Out(1),
                              "res": Out(result_layout(out_bits, 2))})

        def elaborate(self, platform):
            m = Module()
            m.submodules.cmac = cmac = ComplexMAC(acc_width, shift, out_bits, 2)
            m.submodules.fft = fft = FFTUnit(4)
            wiring.connect(m, wiring.flipped(self.inp), cmac.inp)
            m.d.comb += [fft.mul_op.eq(cmac.ext_op), cmac.ext_res.eq(fft.mul_res),
                         self.res_valid.eq(cmac.res_valid), self.res.eq(cmac.res)]
            return m
    return _Top()


@cocotb.test()
async def cmac_sums(dut):
    """Every closed sum of both lanes (re and im) equals the reference's, in order."""
    data = np.load(os.environ["CMAC_TB_DATA"])
    stim = {f: data[f].astype(np.int64).tolist() for f in FIELDS}
    shift, out_bits = int(data["shift"]), int(data["out_bits"])
    expected = cmac_reference(stim, shift, out_bits)
    n = len(stim["valid"])
    payloads = [pack_operands({f: stim[f][r] for f in FIELDS}) for r in range(n)]
    await start(dut, idle={"inp__valid": 0, "inp__payload": 0})

    def unpack(value):
        f = signed_fields(value.to_unsigned(), out_bits, 4)
        return [((f[0], f[1]), (f[2], f[3]))]

    driver = CycleDriver([dut.inp__payload, dut.inp__valid], [payloads, stim["valid"]])
    monitor = StreamMonitor(dut.res_valid, dut.res, unpack=unpack)
    await run_steps(dut.clk, driver, monitor, until=lambda: driver.done)
    await run_steps(dut.clk, monitor, cycles=8)
    Scoreboard("sum", expected, where=lambda i: f"sum {i}: ((re0, im0), (re1, im1))").compare(monitor.items)
    dut._log.info("CMAC: %d sums over %d cycles match the reference", len(monitor.items), n)
