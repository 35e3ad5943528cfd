"""Frequency-domain complex multiply-accumulate for the block-circulant engine.

:class:`ComplexMAC` accumulates ``Y_l = sum_j W_lj * X_j`` over 16-bit complex
operands for ``lanes`` (1 or 2) output lanes in parallel: every beat carries one
X and one W per lane.  Lane 0 multiplies on its own four registered 16x16
products (DSP tiles); lane 1 uses an external complex multiplier (``ext_op`` ->
``ext_res``, three edges: in the engine, the FFT unit's multiplier, idle during
the MAC).  When a sum closes it emits ``clamp(rshift(Y, shift))`` per lane: the
rounding shift ``s1`` and the clamp of :func:`sparrow.fixedfft.cmac`.
"""

from amaranth.hdl import Module, Signal, Mux, signed
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from sparrow.fixedfft import DATA_BITS
from sparrow.hw.component import ValidatedComponent
from sparrow.hw.fft import MUL_LATENCY, mul_op_layout, mul_res_layout
from sparrow.validate import check_int

__all__ = ["ComplexMAC", "CMAC_LATENCY", "cmac_min_acc_width", "operand_layout", "result_layout"]

_C16 = data.StructLayout({"re": signed(DATA_BITS), "im": signed(DATA_BITS)})

#: Clock edges from an accepted operand beat (with ``last``) to ``res_valid``.
CMAC_LATENCY = 6


def cmac_min_acc_width(terms, shift):
    """Smallest signed accumulator width holding ``terms`` worst-case products plus 2**(shift-1).

    One complex product component is at most 2 * 2**30 = 2**31 in magnitude
    (two 16x16 products of -2**15).
    """
    bound = terms * (1 << 31) + (1 << (shift - 1))
    return bound.bit_length() + 1


def operand_layout(lanes):
    """One beat: x (complex), w[lanes] (complex, one per lane), first, last."""
    return data.StructLayout({"x_re": signed(DATA_BITS), "x_im": signed(DATA_BITS),
                              "w": data.ArrayLayout(_C16, lanes), "first": 1, "last": 1})


def result_layout(out_bits, lanes):
    """One closed sum per lane: y[lanes] (re, im: ``out_bits`` each)."""
    return data.ArrayLayout(data.StructLayout({"re": signed(out_bits), "im": signed(out_bits)}), lanes)


class ComplexMAC(ValidatedComponent):
    """Complex MAC over ``lanes`` parallel accumulators, rounding shift and clamp.

    Each beat on ``inp`` multiplies ``x * w[l]`` exactly (pr = xr*wr - xi*wi,
    pi = xr*wi + xi*wr) for every lane l and adds it to accumulator l;
    ``first`` restarts the accumulators at 2**(shift-1) (the rounding
    constant), ``last`` closes the sums: ``CMAC_LATENCY`` edges later
    ``res_valid`` is high for one cycle and ``res[l]`` holds
    ``clamp(floor(acc_l / 2**shift))`` per component, clamped to
    ``[-2**(out_bits-1), 2**(out_bits-1) - 1]``.  A beat may carry both
    ``first`` and ``last``.  ``inp`` is always ready.

    Lane 0 has its own multiplier; with ``lanes=2`` the product of lane 1 is
    computed outside: ``ext_op`` (x, w[1]) is the beat's operand register (one
    edge after the beat), and ``ext_res`` must carry its exact product
    :data:`~sparrow.hw.fft.MUL_LATENCY` edges later (as
    :attr:`sparrow.hw.fft.FFTUnit.mul_res` does for ``mul_op``); lane 0's
    product waits one register for it.

    Parameters
    ----------
    acc_width : int
        Signed accumulator width, 34..64 bits; see :func:`cmac_min_acc_width`.
    shift : int
        Rounding right shift of the result, 1..40 bits.
    out_bits : int
        Width of the clamped result, 2..32 bits (default 20).
    lanes : int
        Parallel lanes, 1 or 2 (default 2).

    Members
    -------
    inp : In(stream.Signature(operand_layout(lanes)))
    res_valid : Out(1)
    res : Out(result_layout(out_bits, lanes))
    ext_op : Out(mul_op_layout())
        Only with ``lanes=2``.
    ext_res : In(mul_res_layout())
        Only with ``lanes=2``.

    Raises
    ------
    TypeError, ValueError
        A parameter is not an integer in its range.
    """

    def _validate(self, acc_width, shift, out_bits=20, lanes=2):
        check_int(acc_width, "Accumulator width", 34, 64)
        check_int(shift, "Shift", 1, 40)
        check_int(out_bits, "Output width", 2, 32)
        check_int(lanes, "Lane count", 1, 2)
        if cmac_min_acc_width(1, shift) > acc_width:
            raise ValueError(f"Accumulator width {acc_width} cannot hold one product plus the "
                             f"rounding constant of a {shift}-bit shift")
        self._acc_width, self._shift, self._out_bits, self._lanes = acc_width, shift, out_bits, lanes
        members = {
            "inp": In(stream.Signature(operand_layout(lanes))),
            "res_valid": Out(1),
            "res": Out(result_layout(out_bits, lanes)),
        }
        if lanes == 2:
            members.update({"ext_op": Out(mul_op_layout()), "ext_res": In(mul_res_layout())})
        return members

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
        assert MUL_LATENCY == 3                # external: operand register, products, sum

        # c0: operand registers; lane 1's go out to the external multiplier (registered,
        # so the memory outputs that feed the beat see one flop, not the external mux)
        xr, xi, wr, wi = (Signal(signed(D), name=n) for n in ("xr", "xi", "wr", "wi"))
        v0, f0, l0 = Signal(), Signal(), Signal()
        m.d.sync += [xr.eq(p.x_re), xi.eq(p.x_im), wr.eq(p.w[0].re), wi.eq(p.w[0].im),
                     v0.eq(self.inp.valid), f0.eq(p.first), l0.eq(p.last)]
        if self._lanes == 2:
            w1r, w1i = Signal(signed(D)), Signal(signed(D))
            m.d.sync += [w1r.eq(p.w[1].re), w1i.eq(p.w[1].im)]
            m.d.comb += [self.ext_op.x_re.eq(xr), self.ext_op.x_im.eq(xi),
                         self.ext_op.w_re.eq(w1r), self.ext_op.w_im.eq(w1i)]
        # c1: the four products (DSP tiles)
        p1, p2, p3, p4 = (Signal(signed(2 * D), name=f"mp{i}") for i in range(4))
        v1, f1, l1 = Signal(), Signal(), Signal()
        m.d.sync += [p1.eq(xr * wr), p2.eq(xi * wi), p3.eq(xr * wi), p4.eq(xi * wr),
                     v1.eq(v0), f1.eq(f0), l1.eq(l0)]
        # c2: complex product
        qr, qi = Signal(signed(2 * D + 1)), Signal(signed(2 * D + 1))
        v2, f2, l2 = Signal(), Signal(), Signal()
        m.d.sync += [qr.eq(p1 - p2), qi.eq(p3 + p4), v2.eq(v1), f2.eq(f1), l2.eq(l1)]
        # c2b: aligned with the external product (one edge later: its operand register)
        qr2, qi2 = Signal.like(qr), Signal.like(qi)
        v3, f3, l3 = Signal(), Signal(), Signal()
        m.d.sync += [qr2.eq(qr), qi2.eq(qi), v3.eq(v2), f3.eq(f2), l3.eq(l2)]
        v2, f2, l2 = v3, f3, l3
        prods = [(qr2, qi2)]
        if self._lanes == 2:
            prods.append((self.ext_res.re, self.ext_res.im))
        # c3: accumulate; closing sums are registered as they are ...
        rnd = 1 << (self._shift - 1)
        lo, hi = -(1 << (ob - 1)), (1 << (ob - 1)) - 1
        fin_v = Signal()
        m.d.sync += fin_v.eq(v2 & l2)
        for lane, (pr, pi) in enumerate(prods):
            acc_r = Signal(signed(A), name=f"acc{lane}_re")
            acc_i = Signal(signed(A), name=f"acc{lane}_im")
            fin_r = Signal(signed(A), name=f"fin{lane}_re")
            fin_i = Signal(signed(A), name=f"fin{lane}_im")
            new_r = Signal(signed(A), name=f"new{lane}_re")
            new_i = Signal(signed(A), name=f"new{lane}_im")
            m.d.comb += [new_r.eq(Mux(f2, rnd, acc_r) + pr), new_i.eq(Mux(f2, rnd, acc_i) + pi)]
            with m.If(v2):
                m.d.sync += [acc_r.eq(new_r), acc_i.eq(new_i)]
                with m.If(l2):
                    m.d.sync += [fin_r.eq(new_r), fin_i.eq(new_i)]
            # c4: ... then shifted and clamped
            sr, si = fin_r >> self._shift, fin_i >> self._shift
            m.d.sync += [
                self.res[lane].re.eq(Mux(sr < lo, lo, Mux(sr > hi, hi, sr))),
                self.res[lane].im.eq(Mux(si < lo, lo, Mux(si > hi, hi, si))),
            ]
        m.d.sync += self.res_valid.eq(fin_v)
        return m
