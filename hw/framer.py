"""The byte side of the host link: UART bytes <-> frames of :mod:`sparrow.protocol`, CRC-16 checked.

:class:`FrameReceiver` parses ``SYNC, cmd, len (LE16), payload, crc (LE16)``
from the received bytes; :class:`FrameSender` frames the replies the same
way.  They run independently (protocol version 2: a reply leaves while the
next frame arrives), each with its own CRC-16/CCITT-FALSE register stepped by
:func:`crc16_step`.  What a frame means is the command sequencer's
(:class:`sparrow.hw.accel.CommandSequencer`).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import Component, In, Out

from sparrow import protocol as P
from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_range

__all__ = ["FrameReceiver", "FrameSender", "crc16_step", "payload_layout"]


def _crc16_matrix():
    """For each bit of the next CRC, the CRC bits and byte bits whose XOR it is.

    One CRC-16/CCITT-FALSE step is linear over GF(2) in (crc, byte), so the
    columns come from the Python reference on unit vectors.
    """
    rows = [([], []) for _ in range(16)]
    for j in range(16):
        out = P.crc16(b"\0", 1 << j)
        for i in range(16):
            if out >> i & 1:
                rows[i][0].append(j)
    for j in range(8):
        out = P.crc16(bytes([1 << j]), 0)
        for i in range(16):
            if out >> i & 1:
                rows[i][1].append(j)
    return rows


_CRC16_ROWS = _crc16_matrix()


def crc16_step(crc, byte):
    """CRC-16/CCITT-FALSE of 16-bit ``crc`` after one more 8-bit ``byte``: 16 XOR trees."""
    bits = []
    for crc_bits, byte_bits in _CRC16_ROWS:
        bits.append(Cat(*[crc[j] for j in crc_bits], *[byte[j] for j in byte_bits]).xor())
    return Cat(*bits)


def payload_layout():
    """One received payload byte: ``first`` and ``last`` (its place in the payload) and ``byte``."""
    return data.StructLayout({"first": 1, "last": 1, "byte": 8})


class FrameReceiver(Component):
    """Parses the frames of the host protocol from received bytes.

    A frame is parsed from ``SYNC``; bytes before it are skipped, and a frame
    whose bytes stop for ``timeout`` cycles is abandoned.  After its CRC bytes
    the frame is offered for one cycle (``frame_valid``, with ``crc_ok``), and
    the receiver looks for the next ``SYNC`` at once.

    Parameters
    ----------
    timeout : int
        Idle cycles inside a frame after which it is abandoned.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes; always taken (the UART cannot be stalled).
    cmd : Out(8)
        The command of the frame being received (valid from its ``CMD`` byte until
        the next frame's).
    start : Out(1)
        High for one cycle when a frame's length is known (the cycle after its
        last ``LEN`` byte is taken, with ``cmd`` and ``length`` valid).
    length : Out(16)
        The payload length of the frame, in the cycle of ``start`` (it is the payload
        down-counter, which counts the bytes after it).
    payload : Out(stream.Signature(payload_layout(), always_ready=True))
        Its payload bytes as they arrive (before the CRC is known).
    frame_valid : Out(1)
        The frame's CRC bytes are in: high for one cycle, with ``crc_ok``.
    crc_ok : Out(1)
    busy : Out(1)
        A frame is being received.
    """

    def __init__(self, timeout):
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "cmd": Out(8),
            "length": Out(16),
            "start": Out(1),
            "payload": Out(stream.Signature(payload_layout(), always_ready=True)),
            "frame_valid": Out(1),
            "crc_ok": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16)
        crc_next = crc16_step(crc, self.rx.payload)
        crc_low_ok = Signal()            # the first CRC byte matched
        # Payload bytes left, this one included: one down-counter, loaded byte by byte with
        # the length, gives both `last` and the end of the payload.
        remaining, first = Signal(16), Signal()
        byte, got = self.rx.payload, self.rx.valid
        crc_match = Signal()
        m.d.comb += [self.rx.ready.eq(1), self.crc_ok.eq(crc_match), self.length.eq(remaining)]

        idle = Signal(range(self._timeout + 1))
        receiving = Signal()
        start_next = Signal()
        m.d.comb += self.start.eq(start_next)
        m.d.sync += start_next.eq(0)
        with m.If(receiving & ~got):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)

        def receive(next_state, *updates, crc_update=True):
            """In a state inside a frame: on a byte, apply ``updates`` and go on; give up at the timeout."""
            m.d.comb += receiving.eq(1)
            with m.If(~got & (idle == self._timeout)):
                m.next = "SYNC"
            with m.If(got):
                if crc_update:
                    m.d.sync += crc.eq(crc_next)
                m.d.sync += list(updates)
                m.next = next_state

        with m.FSM() as fsm:
            with m.State("SYNC"):
                with m.If(got & (byte == P.SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "CMD"
            with m.State("CMD"):
                receive("LEN0", self.cmd.eq(byte))
            with m.State("LEN0"):
                receive("LEN1", remaining[:8].eq(byte))
            with m.State("LEN1"):
                receive("PAYLOAD", remaining[8:].eq(byte), first.eq(1))
                with m.If(got):
                    m.d.sync += start_next.eq(1)
                with m.If(got & (Cat(remaining[:8], byte) == 0)):
                    m.next = "CRC0"
            with m.State("PAYLOAD"):
                last = remaining == 1
                receive("PAYLOAD", remaining.eq(remaining - 1), first.eq(0))
                m.d.comb += [self.payload.valid.eq(got), self.payload.payload.first.eq(first),
                             self.payload.payload.last.eq(last), self.payload.payload.byte.eq(byte)]
                with m.If(got & last):
                    m.next = "CRC0"
            with m.State("CRC0"):
                receive("CRC1", crc_low_ok.eq(byte == crc[:8]), crc_update=False)
            with m.State("CRC1"):
                # compared as the last byte arrives, so that `crc_ok` comes from a register
                receive("CHECK", crc_match.eq(crc_low_ok & (byte == crc[8:])), crc_update=False)
            with m.State("CHECK"):
                m.d.comb += self.frame_valid.eq(1)
                m.next = "SYNC"

        m.d.comb += self.busy.eq(~fsm.ongoing("SYNC"))
        return m


class FrameSender(ValidatedComponent):
    """Sends reply frames: ``SYNC, cmd, length, length bytes of data, CRC``.

    Parameters
    ----------
    max_length : int
        The longest payload this sender is asked to send (0..65535); its payload
        counter is only as wide as that needs.

    Members
    -------
    start : In(1)
        Send a frame (taken in this cycle; ignored while ``busy``).
    cmd, length : In(8), In(16)
        Its command and payload length (at most ``max_length``), from the cycle after
        ``start`` until the frame has left (``busy`` low); not registered here.
    poison : In(1)
        High in any cycle of a frame: its CRC is sent complemented, so that a
        reply whose data changed while it was sent never reaches the host as valid.
    index : Out(16)
        The payload byte being sent (0 first).
    data : In(stream.Signature(8))
        The payload byte ``index``; taken when the UART takes it.
    tx : Out(stream.Signature(8))
        Bytes to send.
    busy : Out(1)
        A frame is being sent (from the cycle after ``start``).

    Raises
    ------
    ValueError
        ``max_length`` is not an integer in [0, 65535] ("Maximum length must be an
        integer in [0, 65535], not ...").
    """

    def __init__(self, max_length=0xFFFF):
        super().__init__(max_length)

    def _validate(self, max_length):
        self._max_length = check_range(max_length, "Maximum length", 0, 0xFFFF)
        return {
            "start": In(1), "cmd": In(8), "length": In(16), "poison": In(1),
            "index": Out(16), "data": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)), "busy": Out(1),
        }

    @property
    def max_length(self):
        """The longest payload this sender sends."""
        return self._max_length

    def elaborate(self, platform):
        m = Module()
        crc, crc_byte = Signal(16), Signal(8)
        crc_next = crc16_step(crc, crc_byte)
        cmd, length = self.cmd, self.length[:max(1, self._max_length.bit_length())]
        index = Signal(range(self._max_length + 1))
        m.d.comb += self.index.eq(index)
        crc_out, poisoned = Signal(16), Signal()
        m.d.comb += crc_out.eq(crc ^ ((poisoned | self.poison) * 0xFFFF))
        with m.If(self.busy & self.poison):
            m.d.sync += poisoned.eq(1)

        def emit(value, next_state, crc_update=True):
            m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(value), crc_byte.eq(value)]
            with m.If(self.tx.ready):
                if crc_update:
                    m.d.sync += crc.eq(crc_next)
                m.next = next_state

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [crc.eq(0xFFFF), index.eq(0), poisoned.eq(0)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                emit(P.SYNC, "CMD", crc_update=False)
            with m.State("CMD"):
                emit(cmd, "LEN0")
            with m.State("LEN0"):
                emit(length[:8], "LEN1")
            with m.State("LEN1"):
                emit(length[8:], "PAY")
                with m.If(self.tx.ready & (length == 0)):
                    m.next = "CRC0"
            with m.State("PAY"):
                m.d.comb += [self.tx.valid.eq(self.data.valid), self.tx.payload.eq(self.data.payload),
                             crc_byte.eq(self.data.payload), self.data.ready.eq(self.tx.ready)]
                with m.If(self.data.valid & self.tx.ready):
                    m.d.sync += [crc.eq(crc_next), index.eq(index + 1)]
                    with m.If(index == length - 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                emit(crc_out[:8], "CRC1", crc_update=False)
            with m.State("CRC1"):
                emit(crc_out[8:], "IDLE", crc_update=False)

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
