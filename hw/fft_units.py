"""The sub-units of the FFT unit (:class:`sparrow.hw.fft.FFTUnit`).

- :class:`BlockExponent`: the least exponent e at which every loaded component fits 15 + e bits;
- :class:`ButterflySchedule`: stage and butterfly counters, the two buffer positions and the
  twiddle of each butterfly, and the tags that travel with it down the pipeline;
- :class:`ButterflyDatapath`: the five-stage radix-2 butterfly on one complex multiplier
  (lent out through ``mul_op``/``mul_res`` while the unit is idle).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sparrow.fixedfft import DATA_BITS, E_MAX, TW_FRAC, ZBUF_BITS, log2k

__all__ = ["BlockExponent", "ButterflySchedule", "ButterflyDatapath", "FFT_PIPELINE", "MUL_LATENCY",
           "mul_op_layout", "mul_res_layout"]

#: Cycles from issuing a butterfly to its write-back (the drain between stages).
FFT_PIPELINE = 6

#: Clock edges from ``mul_op`` to the matching ``mul_res`` (operand register, products, sum).
MUL_LATENCY = 3


def mul_op_layout():
    """Payload of :attr:`FFTUnit.mul_op`: complex operands x and w (16-bit components)."""
    return data.StructLayout({"x_re": signed(DATA_BITS), "x_im": signed(DATA_BITS),
                              "w_re": signed(DATA_BITS), "w_im": signed(DATA_BITS)})


def mul_res_layout():
    """Payload of :attr:`FFTUnit.mul_res`: the exact complex product x * w (33-bit components)."""
    return data.StructLayout({"re": signed(2 * DATA_BITS + 1), "im": signed(2 * DATA_BITS + 1)})


def _complex(bits):
    return data.StructLayout({"re": signed(bits), "im": signed(bits)})


class BlockExponent(wiring.Component):
    """The block exponent of the components loaded since the last ``clear``.

    Members
    -------
    valid : In(1)
        A component pair is written this cycle.
    re, im : In(signed(ZBUF_BITS))
    we_re, we_im : In(1)
        Which of the two is written.
    clear : In(1)
        A transform starts: forget the loaded components (wins over ``valid``).
    exp : Out(range(E_MAX + 1))
        With ``clear``: the least e in [0, E_MAX] such that every written
        component v has -2**(14+e) <= v < 2**(14+e) (E_MAX when none).
    """

    def __init__(self):
        super().__init__({
            "valid": In(1), "re": In(signed(ZBUF_BITS)), "im": In(signed(ZBUF_BITS)),
            "we_re": In(1), "we_im": In(1), "clear": In(1), "exp": Out(range(E_MAX + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        too_wide = Signal(E_MAX + 1)       # bit e: a loaded component needs more than 15+e bits
        updated = Signal(E_MAX + 1)
        for e in range(E_MAX + 1):
            def fits(value, e=e):
                top = value[14 + e:]
                return (top == 0) | (top == (1 << len(top)) - 1)
            wide = (self.we_re & ~fits(self.re)) | (self.we_im & ~fits(self.im))
            m.d.comb += updated[e].eq(too_wide[e] | wide)
        with m.If(self.valid):
            m.d.sync += too_wide.eq(updated)
        with m.If(self.clear):
            m.d.sync += too_wide.eq(0)
        # Computed under `clear` (when it is used): Icarus evaluates `always @*` blocks only
        # on events, and the flags may never change after reset.
        m.d.comb += self.exp.eq(E_MAX)
        with m.If(self.clear):
            for e in reversed(range(E_MAX + 1)):
                with m.If(~too_wide[e]):
                    m.d.comb += self.exp.eq(e)
        return m


class ButterflySchedule(wiring.Component):
    """Stage by stage, butterfly by butterfly: positions (bit-reversed order), twiddle, tags.

    Stage s pairs positions lo and hi = lo | 2**s (lo with bit s clear); the
    twiddle index is (lo mod 2**s) * k / 2**(s+1).  Each stage issues k/2
    butterflies and waits :data:`FFT_PIPELINE` cycles for the last write-back.

    Parameters
    ----------
    k : int
        Transform size (4..64, checked by the FFT unit).

    Members
    -------
    start : In(1)
        Begin a transform (next cycle).
    running : Out(1)
    issue : Out(1)
        A butterfly is issued this cycle.
    lo, hi : Out(log2 k)
        Its two positions; ``lo_parity`` is the parity of ``lo`` (the bank of ``lo``).
    lo_parity : Out(1)
    twiddle : Out(range(k // 2))
    first_stage, read_parity : Out(1)
        Of the butterfly whose operands arrive from the buffer this cycle (read last
        cycle): it is in stage 0 (the exponent applies); the parity of its ``lo``.
    write_valid, write_lo, write_hi, write_parity : Out
        The tags of the butterfly written back this cycle.
    """

    def __init__(self, k):
        self._k = k
        bits = log2k(k)
        super().__init__({
            "start": In(1), "running": Out(1), "issue": Out(1),
            "lo": Out(bits), "hi": Out(bits), "lo_parity": Out(1), "twiddle": Out(range(k // 2)),
            "first_stage": Out(1), "read_parity": Out(1),
            "write_valid": Out(1), "write_lo": Out(bits), "write_hi": Out(bits), "write_parity": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        k, bits, half = self._k, log2k(self._k), self._k // 2
        # Idle values differ from the start values, so that every combinational block
        # sees an input change when a transform starts (Icarus evaluates `always @*`
        # blocks only on events, not at time 0).
        stage = Signal(range(bits + 1), init=bits)
        butterfly = Signal(range(half + 1), init=half)
        drain = Signal(range(FFT_PIPELINE + 1))
        running = self.running
        m.d.comb += self.issue.eq(running & (butterfly < half))
        with m.Switch(stage):
            for s in range(bits):
                with m.Case(s):
                    m.d.comb += self.lo.eq(Cat(butterfly[:s], Const(0, 1), butterfly[s:bits - 1]))
                    if s < bits - 1:
                        m.d.comb += self.twiddle.eq(butterfly[:s] << (bits - 1 - s))
                    else:
                        m.d.comb += self.twiddle.eq(butterfly[:s])
        m.d.comb += [self.hi.eq(self.lo | (Const(1, bits) << stage)), self.lo_parity.eq(self.lo.xor())]
        with m.If(running):
            m.d.sync += butterfly.eq(butterfly + 1)
            with m.If(butterfly >= half):
                with m.If(drain == FFT_PIPELINE - 1):
                    m.d.sync += [drain.eq(0), butterfly.eq(0), stage.eq(stage + 1)]
                    with m.If(stage == bits - 1):
                        m.d.sync += [running.eq(0), butterfly.eq(half), stage.eq(bits)]
                with m.Else():
                    m.d.sync += [drain.eq(drain + 1), butterfly.eq(butterfly)]
        with m.If(self.start):
            m.d.sync += [running.eq(1), stage.eq(0), butterfly.eq(0), drain.eq(0)]

        # The tags of each butterfly in flight, one register per pipeline stage.
        def tags(name, width=1):
            return [Signal(width, name=f"{name}{i}") for i in range(1, FFT_PIPELINE + 1)]
        valid, lo, hi, parity, first = tags("v"), tags("lo", bits), tags("hi", bits), tags("par"), tags("s0")
        m.d.sync += [valid[0].eq(self.issue), lo[0].eq(self.lo), hi[0].eq(self.hi),
                     parity[0].eq(self.lo_parity), first[0].eq(stage == 0)]
        for i in range(1, FFT_PIPELINE):
            m.d.sync += [valid[i].eq(valid[i - 1]), lo[i].eq(lo[i - 1]), hi[i].eq(hi[i - 1]),
                         parity[i].eq(parity[i - 1]), first[i].eq(first[i - 1])]
        m.d.comb += [self.first_stage.eq(first[0]), self.read_parity.eq(parity[0]),
                     self.write_valid.eq(valid[-1]),
                     self.write_lo.eq(lo[-1]), self.write_hi.eq(hi[-1]), self.write_parity.eq(parity[-1])]
        return m


class ButterflyDatapath(wiring.Component):
    """One radix-2 butterfly a cycle: A' = rshift(A*2^14 + B*W, 14+d), B' = rshift(A*2^14 - B*W, 14+d).

    Stages: c1 operands (plus the rounding constant of the block exponent in
    stage 0) and twiddle; c1b the exponent's floor shift; c2 the four real
    products (DSP tiles); c3 the complex product; c4 the sums with the
    rounding constant; c5 (combinational) the floor shift by 14 (forward) or
    15 (inverse).  While the unit is idle the multiplier takes ``mul_op``
    instead and ``mul_res`` carries its product three edges later.

    Members
    -------
    a, b : In(StructLayout{re, im: signed(ZBUF_BITS)})
        The butterfly's operands as read from the buffer.
    cos, sin : In(signed(DATA_BITS))
        The twiddle table entries (Q1.14).
    first_stage : In(1)
        The operands are of stage 0: apply the block exponent ``exp``.
    exp : In(range(E_MAX + 1))
    inverse, running : In(1)
    mul_op : In(mul_op_layout())
    mul_res : Out(mul_res_layout())
    lo, hi : Out(StructLayout{re, im: signed(DATA_BITS)})
        The butterfly's two results, :data:`FFT_PIPELINE` - 1 edges after the operands.
    """

    def __init__(self):
        super().__init__({
            "a": In(_complex(ZBUF_BITS)), "b": In(_complex(ZBUF_BITS)),
            "cos": In(signed(DATA_BITS)), "sin": In(signed(DATA_BITS)),
            "first_stage": In(1), "exp": In(range(E_MAX + 1)), "inverse": In(1), "running": In(1),
            "mul_op": In(mul_op_layout()), "mul_res": Out(mul_res_layout()),
            "lo": Out(_complex(DATA_BITS)), "hi": Out(_complex(DATA_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        D, ZW = DATA_BITS, ZBUF_BITS
        # c1: operands plus 2^(e-1) in stage 0 (else 0), twiddle, this butterfly's shift
        half_unit = Signal(E_MAX)                 # 2^(e-1) <= 64
        m.d.comb += half_unit.eq(Mux(self.first_stage, (Const(1, E_MAX + 1) << self.exp) >> 1, 0))
        raw = {}
        for name, value in (("a_r", self.a.re), ("a_i", self.a.im), ("b_r", self.b.re), ("b_i", self.b.im)):
            raw[name] = Signal(signed(ZW + 1), name=f"{name}_raw")
            m.d.sync += raw[name].eq(value + half_unit)
        shift = Signal(range(E_MAX + 1))
        w_r0, w_i0 = Signal(signed(D)), Signal(signed(D))
        m.d.sync += [shift.eq(Mux(self.first_stage, self.exp, 0)), w_r0.eq(self.cos),
                     w_i0.eq(Mux(self.inverse, self.sin, -self.sin))]
        # c1b: the floor shift of the block exponent (nonzero only in stage 0)
        a_r, a_i, b_r, b_i = (Signal(signed(D), name=n) for n in ("a_r1", "a_i1", "b_r1", "b_i1"))
        w_r, w_i = Signal(signed(D)), Signal(signed(D))
        m.d.sync += [a_r.eq((raw["a_r"] >> shift)[:D].as_signed()),
                     a_i.eq((raw["a_i"] >> shift)[:D].as_signed())]
        lent = self.mul_op
        with m.If(self.running):
            m.d.sync += [b_r.eq((raw["b_r"] >> shift)[:D].as_signed()),
                         b_i.eq((raw["b_i"] >> shift)[:D].as_signed()), w_r.eq(w_r0), w_i.eq(w_i0)]
        with m.Else():
            m.d.sync += [b_r.eq(lent.x_re), b_i.eq(lent.x_im), w_r.eq(lent.w_re), w_i.eq(lent.w_im)]
        # c2: the four real products (DSP tiles, registered)
        p1, p2, p3, p4 = (Signal(signed(2 * D), name=f"prod{i}") for i in range(4))
        a2_r, a2_i = Signal(signed(D)), Signal(signed(D))
        m.d.sync += [p1.eq(b_r * w_r), p2.eq(b_i * w_i), p3.eq(b_r * w_i), p4.eq(b_i * w_r),
                     a2_r.eq(a_r), a2_i.eq(a_i)]
        # c3: complex product
        q_r, q_i = Signal(signed(2 * D + 1)), Signal(signed(2 * D + 1))
        a3_r, a3_i = Signal(signed(D)), Signal(signed(D))
        m.d.sync += [q_r.eq(p1 - p2), q_i.eq(p3 + p4), a3_r.eq(a2_r), a3_i.eq(a2_i)]
        m.d.comb += [self.mul_res.re.eq(q_r), self.mul_res.im.eq(q_i)]
        # c4: butterfly sums with the rounding constant of the stage's shift (14 or 15)
        rounding = Mux(self.inverse, 1 << TW_FRAC, 1 << (TW_FRAC - 1))
        sums = []
        for a, q, sign, name in ((a3_r, q_r, 1, "lo_r"), (a3_i, q_i, 1, "lo_i"),
                                 (a3_r, q_r, -1, "hi_r"), (a3_i, q_i, -1, "hi_i")):
            total = Signal(signed(2 * D + 3), name=f"u4_{name}")
            m.d.sync += total.eq((a.as_signed() << TW_FRAC) + (q if sign > 0 else -q) + rounding)
            sums.append(total)
        # c5: floor shift by 14 (forward) or 15 (inverse)
        def scaled(total):
            return Mux(self.inverse, total[TW_FRAC + 1:TW_FRAC + 1 + D],
                       total[TW_FRAC:TW_FRAC + D]).as_signed()
        m.d.comb += [self.lo.re.eq(scaled(sums[0])), self.lo.im.eq(scaled(sums[1])),
                     self.hi.re.eq(scaled(sums[2])), self.hi.im.eq(scaled(sums[3]))]
        return m
