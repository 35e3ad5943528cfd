"""The byte side of the host link: UART bytes <-> frames of :mod:`sparrow.protocol`, CRC-16 checked.

:class:`Framer` parses ``SYNC, cmd, len (LE16), payload, crc (LE16)`` from the
received bytes and frames the replies the same way; one CRC-16/CCITT-FALSE
unit (:func:`crc16_step`) serves both directions, as a frame is never received
and answered at once.  What a frame means is the command sequencer's
(:class:`sparrow.hw.accel.CommandSequencer`).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream
from amaranth.lib.wiring import Component, In, Out

from sparrow import protocol as P

__all__ = ["Framer", "crc16_step", "payload_layout"]


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
    """One received payload byte: ``index`` (0 first, 16 bits) and ``byte``."""
    return data.StructLayout({"index": 16, "byte": 8})


class Framer(Component):
    """Receives and sends the frames of the host protocol, one at a time.

    A frame is parsed from ``SYNC``; bytes before it are skipped, and a frame
    whose bytes stop for ``timeout`` cycles is abandoned.  After its CRC bytes
    the frame is offered for one cycle (``frame_valid``); the framer then waits
    for ``reply_start`` (the same cycle or later) and sends ``SYNC,
    reply_cmd, reply_length, reply_length bytes of reply_data, CRC``.

    Parameters
    ----------
    timeout : int
        Idle cycles inside a frame after which it is abandoned.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes; always taken (the UART cannot be stalled).
    tx : Out(stream.Signature(8))
        Bytes to send.
    cmd, length : Out(8), Out(16)
        The command and payload length of the frame received last.
    payload : Out(stream.Signature(payload_layout(), always_ready=True))
        Its payload bytes as they arrive (before the CRC is known).
    frame_valid : Out(1)
        The frame's CRC bytes are in: high for one cycle, with ``crc_ok``.
    crc_ok : Out(1)
    reply_start : In(1)
        Send a reply now (in the cycle of ``frame_valid`` or any later one
        before the reply).
    reply_cmd, reply_length : In(8), In(16)
        The reply's command and payload length, held until it is sent.
    index : Out(16)
        The reply payload byte being sent (0 first).
    reply_data : In(stream.Signature(8))
        The reply payload byte ``index``; taken when the UART takes it.
    busy : Out(1)
        A frame is being received, handled or answered.
    """

    def __init__(self, timeout):
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd": Out(8),
            "length": Out(16),
            "payload": Out(stream.Signature(payload_layout(), always_ready=True)),
            "frame_valid": Out(1),
            "crc_ok": Out(1),
            "reply_start": In(1),
            "reply_cmd": In(8),
            "reply_length": In(16),
            "index": Out(16),
            "reply_data": In(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        crc, crc_byte = Signal(16), Signal(8)
        crc_next = crc16_step(crc, crc_byte)
        received_crc = Signal(16)
        byte, got = self.rx.payload, self.rx.valid
        m.d.comb += [self.rx.ready.eq(1), self.crc_ok.eq(received_crc == crc)]

        idle = Signal(range(self._timeout + 1))
        receiving = Signal()
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
                    m.d.comb += crc_byte.eq(byte)
                    m.d.sync += crc.eq(crc_next)
                m.d.sync += list(updates)
                m.next = next_state

        def emit(value, next_state, crc_update=True):
            m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(value), crc_byte.eq(value)]
            with m.If(self.tx.ready):
                if crc_update:
                    m.d.sync += crc.eq(crc_next)
                m.next = next_state

        def reply():
            with m.If(self.reply_start):
                m.d.sync += crc.eq(0xFFFF)
                m.next = "SEND_SYNC"

        with m.FSM() as fsm:
            with m.State("SYNC"):
                with m.If(got & (byte == P.SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "CMD"
            with m.State("CMD"):
                receive("LEN0", self.cmd.eq(byte))
            with m.State("LEN0"):
                receive("LEN1", self.length[:8].eq(byte))
            with m.State("LEN1"):
                receive("PAYLOAD", self.length[8:].eq(byte), self.index.eq(0))
                with m.If(got & (Cat(self.length[:8], byte) == 0)):
                    m.next = "CRC0"
            with m.State("PAYLOAD"):
                receive("PAYLOAD", self.index.eq(self.index + 1))
                m.d.comb += [self.payload.valid.eq(got), self.payload.payload.index.eq(self.index),
                             self.payload.payload.byte.eq(byte)]
                with m.If(got & (self.index == self.length - 1)):
                    m.next = "CRC0"
            with m.State("CRC0"):
                receive("CRC1", received_crc[:8].eq(byte), crc_update=False)
            with m.State("CRC1"):
                receive("CHECK", received_crc[8:].eq(byte), crc_update=False)
            with m.State("CHECK"):
                m.d.comb += self.frame_valid.eq(1)
                m.next = "HANDLE"
                reply()
            with m.State("HANDLE"):
                reply()
            with m.State("SEND_SYNC"):
                m.d.sync += self.index.eq(0)
                emit(P.SYNC, "SEND_CMD", crc_update=False)
            with m.State("SEND_CMD"):
                emit(self.reply_cmd, "SEND_LEN0")
            with m.State("SEND_LEN0"):
                emit(self.reply_length[:8], "SEND_LEN1")
            with m.State("SEND_LEN1"):
                emit(self.reply_length[8:], "SEND_PAY")
            with m.State("SEND_PAY"):
                data_valid = self.reply_data.valid
                m.d.comb += [self.tx.valid.eq(data_valid), self.tx.payload.eq(self.reply_data.payload),
                             crc_byte.eq(self.reply_data.payload),
                             self.reply_data.ready.eq(self.tx.ready)]
                with m.If(data_valid & self.tx.ready):
                    m.d.sync += [crc.eq(crc_next), self.index.eq(self.index + 1)]
                    with m.If(self.index == self.reply_length - 1):
                        m.next = "SEND_CRC0"
            with m.State("SEND_CRC0"):
                emit(crc[:8], "SEND_CRC1", crc_update=False)
            with m.State("SEND_CRC1"):
                emit(crc[8:], "SYNC", crc_update=False)

        m.d.comb += self.busy.eq(~fsm.ongoing("SYNC"))
        return m
