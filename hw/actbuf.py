"""Double-banked memories of one int8 activation vector, for the engines that re-index activations.

:class:`ActivationBuffer` fills one bank from a stream (in order) while a
reader reads the other at random addresses; :class:`OutputReorder` takes
values at computed addresses (it cannot stall its writer) and streams them out
in order.  Both hold two vectors: bank b occupies addresses ``[b*size,
(b+1)*size)`` of one memory of ``2*size`` int8 words.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_int

__all__ = ["ActivationBuffer", "OutputReorder", "MAX_VECTOR"]

#: Largest activation vector of one bank (elements).
MAX_VECTOR = 1 << 20


#: Memory attribute: a read of the word being written may return anything, so Yosys puts
#: no bypass logic (write-data and address registers, a comparator, a multiplexer) around
#: the block RAM.  Neither buffer uses such a read: data read counts only from a full bank,
#: and the writer writes only the other one (OutputReorder's overrun aside, an error anyway).
_NO_RW_CHECK = {"no_rw_check": 1}


def _bank_addr(bank, addr, size):
    """Address of element ``addr`` of bank ``bank`` (a constant offset, no multiplier; the bank
    bit above the address when ``size`` is a power of two)."""
    if size & (size - 1) == 0 and size > 1:
        return Cat(addr[:(size - 1).bit_length()], bank)
    return Mux(bank, addr + size, addr)


class ActivationBuffer(ValidatedComponent):
    """Two banks of one int8 vector: the writer fills one in order while the reader reads the other.

    A bank becomes readable when its last element is written; the reader
    releases it with ``r_release`` and moves to the other bank, which the
    writer may be filling meanwhile (so the next vector loads while the
    current one is read).  Reads are synchronous: ``r_data`` holds the
    element at ``r_addr`` one cycle after a cycle with ``r_en`` high, and
    keeps it while ``r_en`` is low.

    Parameters
    ----------
    size : int
        Elements of one vector, 1..2^20.

    Members
    -------
    w : In(stream.Signature(signed(8)))
        Elements of the vector, element 0 first; ready while the write bank is free.
    r_addr : In(range(size))
    r_en : In(1)
    r_data : Out(signed(8))
    r_full : Out(1)
        The read bank holds a complete vector.
    r_release : In(1)
        The reader is done with the read bank (one cycle, only while ``r_full``).

    Raises
    ------
    TypeError, ValueError
        ``size`` is not an integer in 1..2^20 ("Vector size must be ...").
    """

    def _validate(self, size):
        self._size = check_int(size, "Vector size", 1, MAX_VECTOR)
        return {"w": In(stream.Signature(signed(8))), "r_addr": In(range(max(size, 2))),
                "r_en": In(1), "r_data": Out(signed(8)), "r_full": Out(1), "r_release": In(1)}

    @property
    def size(self):
        return self._size

    def elaborate(self, platform):
        m = Module()
        n = self._size
        m.submodules.mem = mem = Memory(shape=signed(8), depth=2 * n, init=[], attrs=_NO_RW_CHECK)
        wp, rp = mem.write_port(), mem.read_port()
        full = Signal(2)
        set_full, clr_full = Signal(2), Signal(2)
        m.d.sync += full.eq((full | set_full) & ~clr_full)
        wb, rb = Signal(), Signal()
        wcnt = Signal(range(max(n, 2)))
        m.d.comb += [self.w.ready.eq(~full.bit_select(wb, 1)),
                     wp.addr.eq(_bank_addr(wb, wcnt, n)), wp.data.eq(self.w.payload),
                     wp.en.eq(self.w.valid & self.w.ready)]
        with m.If(self.w.valid & self.w.ready):
            with m.If(wcnt == n - 1):
                m.d.sync += [wcnt.eq(0), wb.eq(~wb)]
                m.d.comb += set_full.eq(Mux(wb, 0b10, 0b01))
            with m.Else():
                m.d.sync += wcnt.eq(wcnt + 1)
        m.d.comb += [rp.addr.eq(_bank_addr(rb, self.r_addr, n)), rp.en.eq(self.r_en),
                     self.r_data.eq(rp.data), self.r_full.eq(full.bit_select(rb, 1))]
        with m.If(self.r_release):
            m.d.comb += clr_full.eq(Mux(rb, 0b10, 0b01))
            m.d.sync += rb.eq(~rb)
        return m


class OutputReorder(ValidatedComponent):
    """Values arriving in patch order, leaving in C-major order.

    A convolution's inner engine gives, for output position p = 0..P-1 (row
    major), its ``channels`` outputs o = 0..channels-1; the format's order is
    o*P + p.  Each value is written at that address of the write bank (never
    stalled); a bank whose last value is in streams out in address order
    on ``o`` (which honours ``ready``) while the other bank fills.

    The writer must not start a vector while both banks are taken: ``done``
    pulses when a vector has left, and the user counts vectors in flight
    (at most two).  A value arriving for a full bank sets ``overrun``.

    Parameters
    ----------
    channels : int
        Outputs per position (1..65536).
    positions : int
        Output positions per vector (1..65536); ``channels * positions`` at most 2^20.

    Members
    -------
    w_valid : In(1)
    w_data : In(signed(8))
        The next value in patch order (accepted every cycle).
    o : Out(stream.Signature(signed(8)))
        The vector in C-major order.
    done : Out(1)
        The last element of a vector was read from its bank (it is on ``o`` next).
    overrun : Out(1)
        Sticky: a value arrived while the write bank was full.

    Raises
    ------
    TypeError, ValueError
        A count out of range ("Channel count must be ...", "Position count must
        be ...", "Vector size must be ...").
    """

    def _validate(self, channels, positions):
        self._channels = check_int(channels, "Channel count", 1, 1 << 16)
        self._positions = check_int(positions, "Position count", 1, 1 << 16)
        check_int(channels * positions, "Vector size", 1, MAX_VECTOR)
        return {"w_valid": In(1), "w_data": In(signed(8)),
                "o": Out(stream.Signature(signed(8))), "done": Out(1), "overrun": Out(1)}

    def elaborate(self, platform):
        m = Module()
        C, P = self._channels, self._positions
        n = C * P
        m.submodules.mem = mem = Memory(shape=signed(8), depth=2 * n, init=[], attrs=_NO_RW_CHECK)
        wp, rp = mem.write_port(), mem.read_port()
        full = Signal(2)
        set_full, clr_full = Signal(2), Signal(2)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # Writer: address o*P + p, kept as a running sum (no multiplier); the counters side
        # by side when P is a power of two.
        wb = Signal()
        ch = Signal(range(max(C, 2)))
        pos = Signal(range(max(P, 2)))
        packed = P & (P - 1) == 0 and P > 1
        waddr = Cat(pos, ch) if packed else Signal(range(max(n, 2)))
        m.d.comb += [wp.addr.eq(_bank_addr(wb, waddr, n)), wp.data.eq(self.w_data),
                     wp.en.eq(self.w_valid)]
        with m.If(self.w_valid):
            with m.If(full.bit_select(wb, 1)):
                m.d.sync += self.overrun.eq(1)
            with m.If(ch == C - 1):
                m.d.sync += ch.eq(0)
                with m.If(pos == P - 1):
                    m.d.sync += [pos.eq(0), wb.eq(~wb)]
                    m.d.comb += set_full.eq(Mux(wb, 0b10, 0b01))
                    if not packed:
                        m.d.sync += waddr.eq(0)
                with m.Else():
                    m.d.sync += pos.eq(pos + 1)
                    if not packed:
                        m.d.sync += waddr.eq(pos + 1)
            with m.Else():
                m.d.sync += ch.eq(ch + 1)
                if not packed:
                    m.d.sync += waddr.eq(waddr + P)

        # Reader: the full bank in address order; the read port's register is o's payload.
        rb = Signal()
        raddr = Signal(range(max(n, 2)))
        advance = ~self.o.valid | self.o.ready
        reading = full.bit_select(rb, 1)
        m.d.comb += [rp.addr.eq(_bank_addr(rb, raddr, n)), rp.en.eq(advance),
                     self.o.payload.eq(rp.data)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(reading)
            with m.If(reading):
                with m.If(raddr == n - 1):
                    m.d.sync += [raddr.eq(0), rb.eq(~rb)]
                    m.d.comb += [clr_full.eq(Mux(rb, 0b10, 0b01)), self.done.eq(1)]
                with m.Else():
                    m.d.sync += raddr.eq(raddr + 1)
        return m
