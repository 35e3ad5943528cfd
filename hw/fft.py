"""In-place radix-2 fixed-point FFT/IFFT unit for the block-circulant engine.

:class:`FFTUnit` computes exactly :func:`sparrow.fixedfft.fft_int`: a
k-point (k = 4..64) decimation-in-time FFT on 16-bit complex data with Q1.14
twiddles from ROM, one rounding per butterfly output, no scaling in the
forward direction, a halving shift per stage in the inverse direction, and a
block exponent applied on the way into the first stage.

Storage is one k-word complex buffer split into two banks by the parity of the
index (bank = popcount(i) mod 2, address = i >> 1): the two inputs of every
radix-2 butterfly differ in one bit, so they always sit in different banks and
one butterfly is read and written per cycle with one read and one write port
per bank (block RAM on iCE40 and ECP5).  The butterfly multiplier is one
complex multiplier (four registered 16x16 products: DSP tiles); while the
unit is idle that multiplier is lent out through ``mul_op``/``mul_res`` (the
engine's complex MAC uses it as its second lane).
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, signed, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow.fixedfft import DATA_BITS, TW_FRAC, ZBUF_BITS, E_MAX, twiddles, log2k

__all__ = ["FFTUnit", "FFT_PIPELINE", "MUL_LATENCY", "fft_cycles", "load_layout", "result_layout",
           "mul_op_layout", "mul_res_layout"]

#: Cycles from issuing a butterfly to its write-back (the drain between stages).
FFT_PIPELINE = 6

#: Clock edges from ``mul_op`` to the matching ``mul_res`` (operand register, products, sum).
MUL_LATENCY = 3


def fft_cycles(k):
    """Cycles ``busy`` stays high after an accepted ``start``: L * (k/2 + 6)."""
    return log2k(k) * (k // 2 + FFT_PIPELINE)


def load_layout(k):
    """Payload of :attr:`FFTUnit.load`: index, re, im (22-bit words), we_re, we_im."""
    return data.StructLayout({"index": unsigned(log2k(k)), "re": signed(ZBUF_BITS),
                              "im": signed(ZBUF_BITS), "we_re": 1, "we_im": 1})


def mul_op_layout():
    """Payload of :attr:`FFTUnit.mul_op`: complex operands x and w (16-bit components)."""
    return data.StructLayout({"x_re": signed(DATA_BITS), "x_im": signed(DATA_BITS),
                              "w_re": signed(DATA_BITS), "w_im": signed(DATA_BITS)})


def mul_res_layout():
    """Payload of :attr:`FFTUnit.mul_res`: the exact complex product x * w (33-bit components)."""
    return data.StructLayout({"re": signed(2 * DATA_BITS + 1), "im": signed(2 * DATA_BITS + 1)})


def result_layout():
    """Payload of :attr:`FFTUnit.rd_data`: re, im (16-bit)."""
    return data.StructLayout({"re": signed(DATA_BITS), "im": signed(DATA_BITS)})


class FFTUnit(wiring.Component):
    """k-point fixed-point complex FFT (forward or inverse), in place, one butterfly per cycle.

    Use: write the k input samples through ``load`` (any order; each beat names
    its natural-order ``index`` and writes ``re`` and/or ``im`` as selected by
    ``we_re``/``we_im``), then send one ``start`` beat (``inverse`` selects the
    direction); ``busy`` is high for :func:`fft_cycles` cycles.  Afterwards read
    the result in any order through ``rd_req`` (an index); ``rd_data`` carries
    the 16-bit value one cycle later (with ``rd_valid``; it cannot be stalled).  ``exp`` holds the
    block exponent of the last transform: the result is scaled by 2**-exp.

    Parameters
    ----------
    k : int
        Transform size, a power of two from 4 to 64.

    Members
    -------
    load : In(stream.Signature(load_layout(k)))
        Ready when idle and no ``start`` is offered.  Values are signed 22-bit.
        The block exponent is taken over the components written since the last start.
    start : In(stream.Signature(StructLayout({"inverse": 1})))
        Ready when idle and the last load beat has been written (one cycle after it).
    rd_req : In(stream.Signature(unsigned(log2 k)))
        Ready when idle.
    rd_valid : Out(1)
        High one cycle after an accepted ``rd_req`` (there is no backpressure).
    rd_data : Out(result_layout())
        The value read, valid with ``rd_valid``.
    busy : Out(1)
    exp : Out(range(E_MAX + 1))
    mul_op : In(mul_op_layout())
        Operands for the lent multiplier, sampled every cycle in which the unit is idle.
    mul_res : Out(mul_res_layout())
        x * w exactly (re = xr wr - xi wi, im = xr wi + xi wr) of the ``mul_op``
        sampled :data:`MUL_LATENCY` edges earlier, when the unit was idle then.

    Raises
    ------
    TypeError
        ``k`` is not an integer.
    ValueError
        ``k`` is not a power of two in [4, 64].
    """

    def __init__(self, k):
        if not isinstance(k, int) or isinstance(k, bool):
            self._MustUse__silence = True      # refused, so never elaborated: no warning
            raise TypeError(f"FFT size must be an integer, not {k!r}")
        if k not in (4, 8, 16, 32, 64):
            self._MustUse__silence = True
            raise ValueError(f"FFT size must be a power of two from 4 to 64, not {k}")
        self._k = k
        self._L = log2k(k)
        super().__init__({
            "load": In(stream.Signature(load_layout(k))),
            "start": In(stream.Signature(data.StructLayout({"inverse": 1}))),
            "rd_req": In(stream.Signature(unsigned(self._L))),
            "rd_valid": Out(1),
            "rd_data": Out(result_layout()),
            "busy": Out(1),
            "exp": Out(range(E_MAX + 1)),
            "mul_op": In(mul_op_layout()),
            "mul_res": Out(mul_res_layout()),
        })

    @property
    def k(self):
        return self._k

    def elaborate(self, platform):
        m = Module()
        k, L = self._k, self._L
        half = k // 2
        D, ZW = DATA_BITS, ZBUF_BITS

        # Buffer: bank b, k/2 words of {im, re} (ZW bits each, written separately): one
        # memory per bank (3 EBR of the iCE40 for both parts, not 2 + 2).
        rd, wr, rdp, wrp = {}, {}, {}, {}
        for b in (0, 1):
            mem = Memory(shape=unsigned(2 * ZW), depth=half, init=[])
            m.submodules[f"buf{b}"] = mem
            rdp[b], wrp[b] = mem.read_port(), mem.write_port(granularity=ZW)
            for j, p in enumerate(("re", "im")):
                rd[b, p] = rdp[b].data[j * ZW:(j + 1) * ZW].as_signed()
        cos, sin = twiddles(k)
        rom_c = Memory(shape=signed(D), depth=half, init=[int(v) for v in cos])
        rom_s = Memory(shape=signed(D), depth=half, init=[int(v) for v in sin])
        m.submodules.rom_c, m.submodules.rom_s = rom_c, rom_s
        tw_c, tw_s = rom_c.read_port(), rom_s.read_port()

        running = Signal()
        inverse = Signal()
        e = Signal(range(E_MAX + 1))
        flags = Signal(E_MAX + 1)          # flags[c]: a loaded component needs more than 15+c bits
        # Idle values differ from the start values, so that every combinational block
        # sees an input change when a transform starts (Icarus evaluates `always @*`
        # blocks only on events, not at time 0).
        stage = Signal(range(L + 1), init=L)
        u = Signal(range(half + 1), init=half)   # butterfly counter within the stage
        drain = Signal(range(FFT_PIPELINE + 1))
        m.d.comb += [self.busy.eq(running), self.exp.eq(e)]

        idle = ~running
        # A load beat is registered first and written (and counted for the block
        # exponent) one cycle later; `start` waits for that write.
        ld_v = Signal()
        ld = Signal(load_layout(k))
        m.d.comb += [
            self.start.ready.eq(idle & ~ld_v),
            self.load.ready.eq(idle & ~self.start.valid),
            self.rd_req.ready.eq(idle),
        ]

        # ---- load: natural index -> bit-reversed position -> (bank, address)
        m.d.sync += [ld_v.eq(self.load.valid & self.load.ready), ld.eq(self.load.payload)]
        lp = ld
        pos = Cat(*[lp.index[L - 1 - i] for i in range(L)])
        do_load = ld_v
        new_flags = Signal(E_MAX + 1)
        for c in range(E_MAX + 1):
            def fits(v, c=c):
                top = v[14 + c:]
                return (top == 0) | (top == (1 << len(top)) - 1)
            bad = (lp.we_re & ~fits(lp.re)) | (lp.we_im & ~fits(lp.im))
            m.d.comb += new_flags[c].eq(flags[c] | bad)
        with m.If(do_load):
            m.d.sync += flags.eq(new_flags)

        # ---- start: block exponent = least c whose flag is clear
        with m.If(self.start.valid & self.start.ready):
            sel = Signal(range(E_MAX + 1), init=E_MAX)
            for c in reversed(range(E_MAX + 1)):
                with m.If(~flags[c]):
                    m.d.comb += sel.eq(c)
            m.d.sync += [running.eq(1), inverse.eq(self.start.payload.inverse), e.eq(sel),
                         flags.eq(0), stage.eq(0), u.eq(0), drain.eq(0)]

        # ---- issue: butterfly u of the current stage
        issue = Signal()
        lo = Signal(L)
        tw = Signal(range(half))
        m.d.comb += issue.eq(running & (u < half))
        with m.Switch(stage):
            for s in range(L):
                with m.Case(s):
                    m.d.comb += lo.eq(Cat(u[:s], Const(0, 1), u[s:L - 1]))
                    if s < L - 1:
                        m.d.comb += tw.eq(u[:s] << (L - 1 - s))
                    else:
                        m.d.comb += tw.eq(u[:s])
        hi = Signal(L)
        m.d.comb += hi.eq(lo | (Const(1, L) << stage))
        par_lo = lo.xor()
        with m.If(running):
            m.d.sync += u.eq(u + 1)
            with m.If(u >= half):
                with m.If(drain == FFT_PIPELINE - 1):
                    m.d.sync += [drain.eq(0), u.eq(0), stage.eq(stage + 1)]
                    with m.If(stage == L - 1):
                        m.d.sync += [running.eq(0), u.eq(half), stage.eq(L)]
                with m.Else():
                    m.d.sync += [drain.eq(drain + 1), u.eq(u)]

        # Read addresses: compute (issue) or external read.
        rd_par = Signal()
        rd_pos = self.rd_req.payload
        for b in (0, 1):
            addr = Signal(max(1, L - 1), name=f"raddr{b}")
            with m.If(running):
                # bank b holds lo if parity(lo) == b, else hi
                m.d.comb += addr.eq(Mux(par_lo == b, lo, hi) >> 1)
            with m.Else():
                m.d.comb += addr.eq(rd_pos >> 1)
            m.d.comb += rdp[b].addr.eq(addr)
        m.d.comb += [tw_c.addr.eq(tw), tw_s.addr.eq(tw)]

        # External read response (one cycle later)
        m.d.sync += [self.rd_valid.eq(self.rd_req.valid & self.rd_req.ready),
                     rd_par.eq(rd_pos.xor())]
        m.d.comb += [
            self.rd_data.re.eq(Mux(rd_par, rd[1, "re"], rd[0, "re"])[:D].as_signed()),
            self.rd_data.im.eq(Mux(rd_par, rd[1, "im"], rd[0, "im"])[:D].as_signed()),
        ]

        # ---- pipeline tags: valid, lo, hi, parity(lo), first stage
        def tag(name, width=1):
            return [Signal(width, name=f"{name}{i}") for i in range(1, FFT_PIPELINE + 1)]
        v_t, lo_t, hi_t, par_t, s0_t = tag("v"), tag("lo", L), tag("hi", L), tag("par"), tag("s0")
        m.d.sync += [v_t[0].eq(issue), lo_t[0].eq(lo), hi_t[0].eq(hi), par_t[0].eq(par_lo),
                     s0_t[0].eq(stage == 0)]
        for i in range(1, FFT_PIPELINE):
            m.d.sync += [v_t[i].eq(v_t[i - 1]), lo_t[i].eq(lo_t[i - 1]), hi_t[i].eq(hi_t[i - 1]),
                         par_t[i].eq(par_t[i - 1]), s0_t[i].eq(s0_t[i - 1])]

        # c1: operands from the banks plus the rounding constant of the block exponent
        # (2^(e-1) in stage 0, else 0), twiddle, this butterfly's shift
        half_e = Signal(E_MAX)                 # 2^(e-1) <= 64
        m.d.comb += half_e.eq(Mux(s0_t[0], (Const(1, E_MAX + 1) << e) >> 1, 0))
        par = par_t[0]
        raw = {}
        for nm, bank_a in (("a_r", ("re", 1, 0)), ("a_i", ("im", 1, 0)),
                           ("b_r", ("re", 0, 1)), ("b_i", ("im", 0, 1))):
            part, b_if1, b_if0 = bank_a
            r = Signal(signed(ZW + 1), name=f"{nm}_raw")
            m.d.sync += r.eq(Mux(par, rd[b_if1, part], rd[b_if0, part]) + half_e)
            raw[nm] = r
        sh = Signal(range(E_MAX + 1))
        w_r0, w_i0 = Signal(signed(D)), Signal(signed(D))
        m.d.sync += [sh.eq(Mux(s0_t[0], e, 0)), w_r0.eq(tw_c.data),
                     w_i0.eq(Mux(inverse, tw_s.data, -tw_s.data))]
        # c1b: the floor shift of the block exponent (nonzero only in stage 0)
        a_r, a_i, b_r, b_i = (Signal(signed(D), name=n) for n in ("a_r1", "a_i1", "b_r1", "b_i1"))
        w_r, w_i = Signal(signed(D)), Signal(signed(D))
        m.d.sync += [a_r.eq((raw["a_r"] >> sh)[:D].as_signed()), a_i.eq((raw["a_i"] >> sh)[:D].as_signed())]
        # While idle the multiplier operands come from mul_op (the lent multiplier).
        mo = self.mul_op
        with m.If(running):
            m.d.sync += [b_r.eq((raw["b_r"] >> sh)[:D].as_signed()), b_i.eq((raw["b_i"] >> sh)[:D].as_signed()),
                         w_r.eq(w_r0), w_i.eq(w_i0)]
        with m.Else():
            m.d.sync += [b_r.eq(mo.x_re), b_i.eq(mo.x_im), w_r.eq(mo.w_re), w_i.eq(mo.w_im)]
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
        rnd = Mux(inverse, 1 << TW_FRAC, 1 << (TW_FRAC - 1))
        sums = []
        for a, q, sign, name in ((a3_r, q_r, 1, "lo_r"), (a3_i, q_i, 1, "lo_i"),
                                 (a3_r, q_r, -1, "hi_r"), (a3_i, q_i, -1, "hi_i")):
            u4 = Signal(signed(2 * D + 3), name=f"u4_{name}")
            full = (a.as_signed() << TW_FRAC) + (q if sign > 0 else -q)
            m.d.sync += u4.eq(full + rnd)
            sums.append(u4)
        # c5: floor shift by 14 (forward) or 15 (inverse), write-back
        def fin(u4):
            return Mux(inverse, u4[TW_FRAC + 1:TW_FRAC + 1 + D], u4[TW_FRAC:TW_FRAC + D]).as_signed()
        out_lo = (fin(sums[0]), fin(sums[1]))
        out_hi = (fin(sums[2]), fin(sums[3]))
        wpar = par_t[-1]
        for b in (0, 1):
            for j, p in enumerate(("re", "im")):
                port = wrp[b]
                pdata = port.data[j * ZW:(j + 1) * ZW]
                with m.If(running):
                    # bank b receives the lo output when parity(lo) == b
                    m.d.comb += [
                        port.en[j].eq(v_t[-1]),
                        port.addr.eq(Mux(wpar == b, lo_t[-1], hi_t[-1]) >> 1),
                        pdata.eq(Mux(wpar == b, out_lo[j], out_hi[j])),
                    ]
                with m.Else():
                    we = lp.we_re if p == "re" else lp.we_im
                    m.d.comb += [
                        port.en[j].eq(do_load & we & (pos.xor() == b)),
                        port.addr.eq(pos >> 1),
                        pdata.eq(lp.re if p == "re" else lp.im),
                    ]
        return m
