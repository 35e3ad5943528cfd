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

from amaranth.hdl import Module, Signal, Cat, Mux, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow.fixedfft import DATA_BITS, ZBUF_BITS, E_MAX, twiddles, log2k
from sparrow.hw.component import ValidatedComponent
from sparrow.hw.fft_units import (FFT_PIPELINE, MUL_LATENCY, BlockExponent, ButterflyDatapath,
                                  ButterflySchedule, mul_op_layout, mul_res_layout)

__all__ = ["FFTUnit", "FFT_PIPELINE", "MUL_LATENCY", "fft_cycles", "load_layout", "result_layout",
           "mul_op_layout", "mul_res_layout"]



def fft_cycles(k):
    """Cycles ``busy`` stays high after an accepted ``start``: L * (k/2 + 6)."""
    return log2k(k) * (k // 2 + FFT_PIPELINE)


def load_layout(k):
    """Payload of :attr:`FFTUnit.load`: index, re, im (22-bit words), we_re, we_im."""
    return data.StructLayout({"index": unsigned(log2k(k)), "re": signed(ZBUF_BITS),
                              "im": signed(ZBUF_BITS), "we_re": 1, "we_im": 1})


def result_layout():
    """Payload of :attr:`FFTUnit.rd_data`: re, im (16-bit)."""
    return data.StructLayout({"re": signed(DATA_BITS), "im": signed(DATA_BITS)})


class FFTUnit(ValidatedComponent):
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

    def _validate(self, k):
        if not isinstance(k, int) or isinstance(k, bool):
            raise TypeError(f"FFT size must be an integer, not {k!r}")
        if k not in (4, 8, 16, 32, 64):
            raise ValueError(f"FFT size must be a power of two from 4 to 64, not {k}")
        self._k = k
        self._L = log2k(k)
        return {
            "load": In(stream.Signature(load_layout(k))),
            "start": In(stream.Signature(data.StructLayout({"inverse": 1}))),
            "rd_req": In(stream.Signature(unsigned(self._L))),
            "rd_valid": Out(1),
            "rd_data": Out(result_layout()),
            "busy": Out(1),
            "exp": Out(range(E_MAX + 1)),
            "mul_op": In(mul_op_layout()),
            "mul_res": Out(mul_res_layout()),
        }

    @property
    def k(self):
        return self._k

    def elaborate(self, platform):
        m = Module()
        k, bits, half = self._k, self._L, self._k // 2
        D, ZW = DATA_BITS, ZBUF_BITS
        m.submodules.exponent = exponent = BlockExponent()
        m.submodules.schedule = schedule = ButterflySchedule(k)
        m.submodules.butterfly = butterfly = ButterflyDatapath()

        # Buffer: bank b, k/2 words of {im, re} (ZW bits each, written separately): one
        # memory per bank (3 EBR of the iCE40 for both parts, not 2 + 2).
        reads, writes, bank = {}, {}, {}
        for b in (0, 1):
            m.submodules[f"buf{b}"] = memory = Memory(shape=unsigned(2 * ZW), depth=half, init=[])
            reads[b], writes[b] = memory.read_port(), memory.write_port(granularity=ZW)
            for j, part in enumerate(("re", "im")):
                bank[b, part] = reads[b].data[j * ZW:(j + 1) * ZW].as_signed()
        cos, sin = twiddles(k)
        m.submodules.rom_c = rom_cos = Memory(shape=signed(D), depth=half, init=[int(v) for v in cos])
        m.submodules.rom_s = rom_sin = Memory(shape=signed(D), depth=half, init=[int(v) for v in sin])
        read_cos, read_sin = rom_cos.read_port(), rom_sin.read_port()

        running, inverse = schedule.running, Signal()
        exp = Signal(range(E_MAX + 1))
        idle = ~running
        # A load beat is registered first and written (and counted for the block
        # exponent) one cycle later; `start` waits for that write.
        loading = Signal()
        beat = Signal(load_layout(k))
        started = self.start.valid & self.start.ready
        m.d.comb += [
            self.busy.eq(running), self.exp.eq(exp),
            self.start.ready.eq(idle & ~loading),
            self.load.ready.eq(idle & ~self.start.valid),
            self.rd_req.ready.eq(idle),
        ]
        m.d.sync += [loading.eq(self.load.valid & self.load.ready), beat.eq(self.load.payload)]
        m.d.comb += [exponent.valid.eq(loading), exponent.re.eq(beat.re), exponent.im.eq(beat.im),
                     exponent.we_re.eq(beat.we_re), exponent.we_im.eq(beat.we_im),
                     exponent.clear.eq(started), schedule.start.eq(started)]
        with m.If(started):
            m.d.sync += [inverse.eq(self.start.payload.inverse), exp.eq(exponent.exp)]

        # Read addresses: the butterfly's two positions (bank b holds lo if parity(lo) == b,
        # else hi), or the external read.
        read_index = self.rd_req.payload
        for b in (0, 1):
            addr = Signal(max(1, bits - 1), name=f"raddr{b}")
            with m.If(running):
                m.d.comb += addr.eq(Mux(schedule.lo_parity == b, schedule.lo, schedule.hi) >> 1)
            with m.Else():
                m.d.comb += addr.eq(read_index >> 1)
            m.d.comb += reads[b].addr.eq(addr)
        m.d.comb += [read_cos.addr.eq(schedule.twiddle), read_sin.addr.eq(schedule.twiddle)]

        # External read response (one cycle later)
        read_parity = Signal()
        m.d.sync += [self.rd_valid.eq(self.rd_req.valid & self.rd_req.ready),
                     read_parity.eq(read_index.xor())]
        m.d.comb += [
            self.rd_data.re.eq(Mux(read_parity, bank[1, "re"], bank[0, "re"])[:D].as_signed()),
            self.rd_data.im.eq(Mux(read_parity, bank[1, "im"], bank[0, "im"])[:D].as_signed()),
        ]

        lo_bank = schedule.read_parity
        m.d.comb += [
            butterfly.a.re.eq(Mux(lo_bank, bank[1, "re"], bank[0, "re"])),
            butterfly.a.im.eq(Mux(lo_bank, bank[1, "im"], bank[0, "im"])),
            butterfly.b.re.eq(Mux(lo_bank, bank[0, "re"], bank[1, "re"])),
            butterfly.b.im.eq(Mux(lo_bank, bank[0, "im"], bank[1, "im"])),
            butterfly.cos.eq(read_cos.data), butterfly.sin.eq(read_sin.data),
            butterfly.first_stage.eq(schedule.first_stage), butterfly.exp.eq(exp),
            butterfly.inverse.eq(inverse), butterfly.running.eq(running),
            butterfly.mul_op.eq(self.mul_op), self.mul_res.eq(butterfly.mul_res),
        ]

        # Write-back: the butterfly's results, or a load beat at its bit-reversed position.
        position = Cat(*[beat.index[bits - 1 - i] for i in range(bits)])
        results = {"re": (butterfly.lo.re, butterfly.hi.re), "im": (butterfly.lo.im, butterfly.hi.im)}
        lo_bank = schedule.write_parity
        for b in (0, 1):
            for j, part in enumerate(("re", "im")):
                port = writes[b]
                port_data = port.data[j * ZW:(j + 1) * ZW]
                with m.If(running):
                    # bank b receives the lo output when parity(lo) == b
                    m.d.comb += [
                        port.en[j].eq(schedule.write_valid),
                        port.addr.eq(Mux(lo_bank == b, schedule.write_lo, schedule.write_hi) >> 1),
                        port_data.eq(Mux(lo_bank == b, results[part][0], results[part][1])),
                    ]
                with m.Else():
                    written = beat.we_re if part == "re" else beat.we_im
                    m.d.comb += [
                        port.en[j].eq(loading & written & (position.xor() == b)),
                        port.addr.eq(position >> 1),
                        port_data.eq(beat.re if part == "re" else beat.im),
                    ]
        return m
