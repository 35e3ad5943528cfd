"""A small FIFO in registers with no write pointer: a shift register read at its fill level.

Made for the few values between the last engine and the host interface,
where a memory block would be wasted and the FIFOs of
:mod:`amaranth.lib.fifo` spend a write-address decoder, two pointers and a
level on registers: here a write shifts every entry by one (one enable for
all of them, no multiplexer in front of any) and the oldest entry is the one
at the fill level, so one counter and one read multiplexer remain.
"""

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_int

__all__ = ["ShiftFIFO"]


class ShiftFIFO(ValidatedComponent):
    """First in, first out, ``depth`` entries of ``width`` bits in registers.

    A value written enters entry 0 while every entry moves up by one; with
    ``n`` values held the oldest is entry ``n - 1``, which ``r`` offers
    (combinationally: no read latency, a value written is readable the next
    cycle).  A read and a write in one cycle leave the level as it is.

    Parameters
    ----------
    width : int
        Bits per value, 1..1024.
    depth : int
        Entries, 1..1024.

    Members
    -------
    w : In(stream.Signature(width))
        Ready while fewer than ``depth`` values are held.
    r : Out(stream.Signature(width))
        Valid while a value is held.
    level : Out(range(depth + 1))
        Values held.

    Raises
    ------
    TypeError, ValueError
        ``width`` or ``depth`` not an integer in range ("FIFO width must be ...").
    """

    def _validate(self, width, depth):
        self._width = check_int(width, "FIFO width", 1, 1024)
        self._depth = check_int(depth, "FIFO depth", 1, 1024)
        return {"w": In(stream.Signature(width)), "r": Out(stream.Signature(width)),
                "level": Out(range(depth + 1))}

    @property
    def width(self):
        return self._width

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        entries = [Signal(self._width, name=f"entry{j}") for j in range(self._depth)]
        write = self.w.valid & self.w.ready
        read = self.r.valid & self.r.ready
        with m.If(write):
            m.d.sync += entries[0].eq(self.w.payload)
            m.d.sync += [entries[j].eq(entries[j - 1]) for j in range(1, self._depth)]
        with m.If(write & ~read):
            m.d.sync += self.level.eq(self.level + 1)
        with m.Elif(read & ~write):
            m.d.sync += self.level.eq(self.level - 1)
        # Indexed by the level itself: slot 0 (nothing held) repeats entry 0.
        slots = Array([entries[0]] + entries)
        m.d.comb += [self.w.ready.eq(self.level != self._depth), self.r.valid.eq(self.level != 0),
                     self.r.payload.eq(slots[self.level])]
        return m
