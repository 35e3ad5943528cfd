"""Frequency-domain complex multiply-accumulate for the block-circulant engine.

:class:`ComplexMAC` accumulates ``Y = sum_j W_j * X_j`` over 16-bit complex
operands (four registered 16x16 products: DSP tiles) into one of ``lanes``
accumulators and, when a sum closes, emits ``clamp(rshift(Y, shift))``: the
rounding shift ``s1`` and the clamp of :func:`sparrow.sw.golden_bc.cmac`.
"""

from amaranth.hdl import Module, Signal, Mux, signed
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from ..sw.golden_bc import DATA_BITS

__all__ = ["ComplexMAC", "CMAC_LATENCY", "cmac_min_acc_width", "operand_layout", "result_layout"]

#: Clock edges from an accepted operand beat (with ``last``) to ``res_valid``.
CMAC_LATENCY = 5


def cmac_min_acc_width(terms, shift):
    """Smallest signed accumulator width holding ``terms`` worst-case products plus 2**(shift-1).

    One complex product component is at most 2 * 2**30 = 2**31 in magnitude
    (two 16x16 products of -2**15).
    """
    bound = terms * (1 << 31) + (1 << (shift - 1))
    return bound.bit_length() + 1


def operand_layout(lanes):
    return data.StructLayout({"x_re": signed(DATA_BITS), "x_im": signed(DATA_BITS),
                              "w_re": signed(DATA_BITS), "w_im": signed(DATA_BITS),
                              "lane": range(max(2, lanes)), "first": 1, "last": 1})


def result_layout(out_bits, lanes):
    return data.StructLayout({"re": signed(out_bits), "im": signed(out_bits), "lane": range(max(2, lanes))})


def _check(value, name, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")


class ComplexMAC(wiring.Component):
    """Complex MAC with ``lanes`` interleavable accumulators, rounding shift and clamp.

    Each beat on ``inp`` multiplies ``x * w`` exactly (pr = xr*wr - xi*wi,
    pi = xr*wi + xi*wr) and adds it to accumulator ``lane``; ``first`` restarts
    that accumulator at 2**(shift-1) (the rounding constant), ``last`` closes the
    sum: ``CMAC_LATENCY`` edges later ``res_valid`` is high for one cycle and
    ``res`` holds ``clamp(floor(acc / 2**shift))`` per component, clamped to
    ``[-2**(out_bits-1), 2**(out_bits-1) - 1]``, with the lane.  A beat may
    carry both ``first`` and ``last``.  ``inp`` is always ready.

    Parameters
    ----------
    acc_width : int
        Signed accumulator width, 34..64 bits; see :func:`cmac_min_acc_width`.
    shift : int
        Rounding right shift of the result, 1..40 bits.
    out_bits : int
        Width of the clamped result, 2..32 bits (default 20).
    lanes : int
        Number of accumulators, 1..4 (default 2).

    Members
    -------
    inp : In(stream.Signature(operand_layout(lanes)))
    res_valid : Out(1)
    res : Out(result_layout(out_bits, lanes))

    Raises
    ------
    TypeError, ValueError
        A parameter is not an integer in its range.
    """

    def __init__(self, acc_width, shift, out_bits=20, lanes=2):
        self._MustUse__silence = True          # until validated: a refused unit is never elaborated
        _check(acc_width, "Accumulator width", 34, 64)
        _check(shift, "Shift", 1, 40)
        _check(out_bits, "Output width", 2, 32)
        _check(lanes, "Lane count", 1, 4)
        if cmac_min_acc_width(1, shift) > acc_width:
            raise ValueError(f"Accumulator width {acc_width} cannot hold one product plus the "
                             f"rounding constant of a {shift}-bit shift")
        self._acc_width, self._shift, self._out_bits, self._lanes = acc_width, shift, out_bits, lanes
        self._MustUse__silence = False
        super().__init__({
            "inp": In(stream.Signature(operand_layout(lanes))),
            "res_valid": Out(1),
            "res": Out(result_layout(out_bits, lanes)),
        })

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def shift(self):
        return self._shift

    @property
    def out_bits(self):
        return self._out_bits

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        D, A, ob = DATA_BITS, self._acc_width, self._out_bits
        p = self.inp.payload
        m.d.comb += self.inp.ready.eq(1)

        # c0: operand registers
        xr, xi, wr, wi = (Signal(signed(D), name=n) for n in ("xr", "xi", "wr", "wi"))
        v0, f0, l0 = Signal(), Signal(), Signal()
        lane0 = Signal(range(max(2, self._lanes)))
        m.d.sync += [xr.eq(p.x_re), xi.eq(p.x_im), wr.eq(p.w_re), wi.eq(p.w_im),
                     v0.eq(self.inp.valid), f0.eq(p.first), l0.eq(p.last), lane0.eq(p.lane)]
        # c1: the four products (DSP tiles)
        p1, p2, p3, p4 = (Signal(signed(2 * D), name=f"mp{i}") for i in range(4))
        v1, f1, l1 = Signal(), Signal(), Signal()
        lane1 = Signal.like(lane0)
        m.d.sync += [p1.eq(xr * wr), p2.eq(xi * wi), p3.eq(xr * wi), p4.eq(xi * wr),
                     v1.eq(v0), f1.eq(f0), l1.eq(l0), lane1.eq(lane0)]
        # c2: complex product
        qr, qi = Signal(signed(2 * D + 1)), Signal(signed(2 * D + 1))
        v2, f2, l2 = Signal(), Signal(), Signal()
        lane2 = Signal.like(lane0)
        m.d.sync += [qr.eq(p1 - p2), qi.eq(p3 + p4), v2.eq(v1), f2.eq(f1), l2.eq(l1), lane2.eq(lane1)]
        # c3: accumulate; a closing sum is registered as is ...
        rnd = 1 << (self._shift - 1)
        lo, hi = -(1 << (ob - 1)), (1 << (ob - 1)) - 1
        fin_v = Signal()
        fin_lane = Signal.like(lane0)
        fin_r, fin_i = Signal(signed(A)), Signal(signed(A))
        m.d.sync += fin_v.eq(0)
        for lane in range(self._lanes):
            acc_r = Signal(signed(A), name=f"acc{lane}_re")
            acc_i = Signal(signed(A), name=f"acc{lane}_im")
            new_r = Signal(signed(A), name=f"new{lane}_re")
            new_i = Signal(signed(A), name=f"new{lane}_im")
            m.d.comb += [new_r.eq(Mux(f2, rnd, acc_r) + qr), new_i.eq(Mux(f2, rnd, acc_i) + qi)]
            with m.If(v2 & (lane2 == lane)):
                m.d.sync += [acc_r.eq(new_r), acc_i.eq(new_i)]
                with m.If(l2):
                    m.d.sync += [fin_v.eq(1), fin_lane.eq(lane), fin_r.eq(new_r), fin_i.eq(new_i)]
        # c4: ... then shifted and clamped
        sr, si = fin_r >> self._shift, fin_i >> self._shift
        m.d.sync += [
            self.res_valid.eq(fin_v),
            self.res.lane.eq(fin_lane),
            self.res.re.eq(Mux(sr < lo, lo, Mux(sr > hi, hi, sr))),
            self.res.im.eq(Mux(si < lo, lo, Mux(si > hi, hi, si))),
        ]
        return m
