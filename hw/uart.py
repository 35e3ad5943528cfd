"""8N1 UART receiver and transmitter with stream interfaces.

Line format: idle high, one start bit (low), eight data bits LSB first, one
stop bit (high); no parity.  ``divisor`` is the bit time in clock cycles
(clock frequency / baud rate, rounded to the nearest integer; at least 4 so
that the receiver can sample the middle of each bit).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_int

__all__ = ["UARTRx", "UARTTx", "uart_divisor"]


def uart_divisor(clk_hz, baud):
    """Clock cycles per bit for ``baud`` at ``clk_hz``; ValueError when the rate error exceeds 2%.

    The receiver re-synchronises on every start bit, so the 10 bits of a frame
    tolerate a few percent of rate mismatch; 2% leaves room for the host's own
    error.
    """
    if not clk_hz > 0 or not baud > 0:
        raise ValueError(f"Clock and baud rate must be positive, not {clk_hz!r} and {baud!r}")
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"Baud rate {baud} is too high for a {clk_hz / 1e6:g} MHz clock "
                         f"(needs at least 4 clock cycles per bit)")
    error = abs(clk_hz / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"Baud rate {baud} is {100 * error:.1f}% off at {clk_hz / 1e6:g} MHz "
                         f"(divisor {divisor}); choose a rate within 2%")
    return divisor


class _UART(ValidatedComponent):
    """A UART side: ``divisor`` checked (4..65535) before the signature is built."""

    def _validate(self, divisor, members):
        self._divisor = check_int(divisor, "Divisor", 4, 65535)
        return members

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor


class UARTRx(_UART):
    """Receive 8N1 bytes from ``rx`` into stream ``o``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 4..65535.

    Members
    -------
    rx : In(1)
        The serial line (idle high); synchronised here through two flip-flops.
    o : Out(stream.Signature(8))
        Received bytes.  A byte not taken before the next one completes is
        replaced (the host paces its frames; ``overrun`` records it).
    overrun : Out(1)
        Sticky: a byte was lost because ``o.ready`` stayed low.
    frame_error : Out(1)
        Sticky: a stop bit was low (wrong baud rate or line noise); the byte is dropped.
    """

    def __init__(self, divisor):
        super().__init__(divisor, {"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                                   "overrun": Out(1), "frame_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        sync1, line = Signal(init=1), Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]

        timer = Signal(range(d + d // 2 + 1))
        bits = Signal(range(10))
        shift = Signal(8)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # First sample in the middle of data bit 0: 1.5 bit times after the edge.
                    m.d.sync += [timer.eq(d + d // 2 - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq((shift >> 1) | (line << 7)), bits.eq(bits + 1),
                                 timer.eq(d - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(line):
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                    m.next = "WAIT_IDLE"
            with m.State("WAIT_IDLE"):
                # A low stop bit (break) must end before the next start bit is looked for.
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(_UART):
    """Send the bytes of stream ``i`` as 8N1 frames on ``tx``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 4..65535.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; one is taken when the previous frame's stop bit has ended.
    tx : Out(1)
        The serial line, registered, idle high.
    """

    def __init__(self, divisor):
        super().__init__(divisor, {"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        frame = Signal(10, init=0x3FF)      # stop bit, 8 data bits, start bit (sent LSB first)
        left = Signal(range(11))
        # `idle` is `left == 0`, kept in a register (a short path to the byte's source).
        idle = Signal(init=1)
        m.d.comb += self.i.ready.eq(idle)
        m.d.sync += self.tx.eq(frame[0])
        with m.If(idle):
            with m.If(self.i.valid):
                m.d.sync += [frame.eq((1 << 9) | (self.i.payload << 1)), left.eq(10),
                             timer.eq(d - 1), idle.eq(0)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [frame.eq((frame >> 1) | (1 << 9)), left.eq(left - 1), timer.eq(d - 1),
                         idle.eq(left == 1)]
        return m
