"""The byte side of the host link: UART bytes <-> frames of :mod:`sparrow.protocol`, CRC-16 checked.

:class:`FrameReceiver` parses ``SYNC, cmd, len (LE16), payload, crc (LE16)``
from the received bytes; :class:`FrameSender` frames the replies the same
way.  They run independently (protocol version 2: a reply leaves while the
next frame arrives), each with its own CRC-16/CCITT-FALSE register stepped by
:func:`crc16_step`.  What a frame means is the command sequencer's
(:class:`sparrow.hw.accel.CommandSequencer`).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
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
        Received bytes; always taken (the UART cannot be stalled), and parsed from a
        register a cycle later.
    cmd : Out(8)
        The command of the frame being received (valid from its ``CMD`` byte until
        the next frame's).
    start : Out(1)
        High for one cycle when a frame's length is known (two cycles after its
        last ``LEN`` byte is taken, with ``cmd`` and ``length`` valid).
    length : Out(16)
        The payload length of the frame, in the cycle of ``start`` (it is the payload
        down-counter, which counts the bytes after it).
    payload : Out(stream.Signature(payload_layout(), always_ready=True))
        Its payload bytes as they arrive (a cycle after ``rx``, before the CRC is known).
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
        # Each received byte passes one register first, with the comparisons that steer the
        # state (a short path from the UART to the state).
        byte, got = Signal(8), Signal()
        is_sync, is_zero, is_one = Signal(), Signal(), Signal()
        m.d.sync += [got.eq(self.rx.valid), byte.eq(self.rx.payload),
                     is_sync.eq(self.rx.payload == P.SYNC), is_zero.eq(self.rx.payload == 0),
                     is_one.eq(self.rx.payload == 1)]
        crc = Signal(16)
        crc_next = crc16_step(crc, byte)
        crc_low_ok = Signal()            # the first CRC byte matched
        # Payload bytes left, this one included: one down-counter, loaded byte by byte with
        # the length, gives both `last` and the end of the payload.
        remaining, first = Signal(16), Signal()
        # `remaining == 1` (this byte is the payload's last), kept in a register: computed as
        # the length's bytes arrive, then from `remaining == 2` at each byte (a short path
        # to the state and to the sequencer); `low_*`: the length's low byte is 0 or 1.
        last, low_zero, low_one = Signal(), Signal(), Signal()
        crc_match = Signal()
        m.d.comb += [self.rx.ready.eq(1), self.crc_ok.eq(crc_match), self.length.eq(remaining)]

        idle = Signal(range(self._timeout + 1))
        receiving = Signal()
        start_next = Signal()
        m.d.comb += self.start.eq(start_next)
        m.d.sync += start_next.eq(0)
        # `idle == timeout`, kept in a register (a short path to the state): set as `idle`
        # steps onto the timeout, cleared as it leaves it or restarts.
        timed_out = Signal()
        with m.If(receiving & ~got):
            m.d.sync += [idle.eq(idle + 1), timed_out.eq(idle == self._timeout - 1)]
        with m.Else():
            m.d.sync += [idle.eq(0), timed_out.eq(self._timeout == 0)]

        def receive(next_state, *updates, crc_update=True):
            """In a state inside a frame: on a byte, apply ``updates`` and go on; give up at the timeout."""
            m.d.comb += receiving.eq(1)
            with m.If(~got & timed_out):
                m.next = "SYNC"
            with m.If(got):
                if crc_update:
                    m.d.sync += crc.eq(crc_next)
                m.d.sync += list(updates)
                m.next = next_state

        with m.FSM() as fsm:
            with m.State("SYNC"):
                with m.If(got & is_sync):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "CMD"
            with m.State("CMD"):
                receive("LEN0", self.cmd.eq(byte))
            with m.State("LEN0"):
                receive("LEN1", remaining[:8].eq(byte), low_zero.eq(is_zero), low_one.eq(is_one))
            with m.State("LEN1"):
                receive("PAYLOAD", remaining[8:].eq(byte), first.eq(1), last.eq(low_one & is_zero))
                with m.If(got):
                    m.d.sync += start_next.eq(1)
                with m.If(got & low_zero & is_zero):
                    m.next = "CRC0"
            with m.State("PAYLOAD"):
                receive("PAYLOAD", remaining.eq(remaining - 1), first.eq(0), last.eq(remaining == 2))
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

    _STATES = ("IDLE", "SYNC", "CMD", "LEN0", "LEN1", "PAY", "CRCW", "CRC0", "CRC1")

    def elaborate(self, platform):
        m = Module()
        # The CRC steps a cycle after each byte leaves, from registers (`crc_byte`, `crc_step`:
        # a short path from the state and the UART); the CRC bytes wait one cycle (`CRCW`).
        crc, crc_byte, crc_step = Signal(16), Signal(8), Signal()
        with m.If(crc_step):
            m.d.sync += crc.eq(crc16_step(crc, crc_byte))
        cmd, length = self.cmd, self.length[:max(1, self._max_length.bit_length())]
        length_hi = Signal(8)
        m.d.comb += length_hi.eq(length[8:])
        index = Signal(range(self._max_length + 1))
        m.d.comb += self.index.eq(index)
        # Compared ahead, in registers (a short path to the state): `empty` is `length == 0`
        # and `last` is `index == length - 1`, set before the payload from `length` (valid
        # from the cycle after `start`, at least three cycles before the payload) and at each
        # byte from `index == length - 2`.
        empty, last, length_m2 = Signal(), Signal(), Signal(len(length))
        crc_out, poisoned = Signal(16), Signal()
        m.d.comb += crc_out.eq(crc ^ ((poisoned | self.poison) * 0xFFFF))
        with m.If(self.busy & self.poison):
            m.d.sync += poisoned.eq(1)

        # One flip-flop per state (one-hot: each state's next value is a small function of
        # its neighbours and the handshakes, a short path).  A state that emits a byte moves
        # on when the UART takes it; PAY when its last payload byte leaves.
        state = Signal(len(self._STATES), init=1)
        at = {name: state[i] for i, name in enumerate(self._STATES)}
        ready, start = self.tx.ready, self.start
        take = self.data.valid & ready
        done = at["PAY"] & take & last | at["LEN1"] & ready & empty
        nxt = {
            "IDLE": at["IDLE"] & ~start | at["CRC1"] & ready,
            "SYNC": at["IDLE"] & start | at["SYNC"] & ~ready,
            "CMD": at["SYNC"] & ready | at["CMD"] & ~ready,
            "LEN0": at["CMD"] & ready | at["LEN0"] & ~ready,
            "LEN1": at["LEN0"] & ready | at["LEN1"] & ~ready,
            "PAY": at["LEN1"] & ready & ~empty | at["PAY"] & ~(take & last),
            "CRCW": done,
            "CRC0": at["CRCW"] | at["CRC0"] & ~ready,
            "CRC1": at["CRC0"] & ready | at["CRC1"] & ~ready,
        }
        m.d.sync += state.eq(Cat(*(nxt[name] for name in self._STATES)))
        sources = {"SYNC": P.SYNC, "CMD": cmd, "LEN0": length[:8], "LEN1": length_hi,
                   "PAY": self.data.payload, "CRC0": crc_out[:8], "CRC1": crc_out[8:]}
        value = 0
        for name, source in sources.items():
            value = value | Mux(at[name], source, 0)
        emitting = at["SYNC"] | at["CMD"] | at["LEN0"] | at["LEN1"] | at["CRC0"] | at["CRC1"]
        m.d.comb += [self.tx.valid.eq(emitting | at["PAY"] & self.data.valid),
                     self.tx.payload.eq(value), self.data.ready.eq(at["PAY"] & ready)]
        m.d.sync += [crc_byte.eq(value),
                     crc_step.eq((at["CMD"] | at["LEN0"] | at["LEN1"]) & ready | at["PAY"] & take)]
        with m.If(at["IDLE"] & start):
            m.d.sync += [crc.eq(0xFFFF), index.eq(0), poisoned.eq(0)]
        with m.If(at["PAY"] & take):
            m.d.sync += [index.eq(index + 1), last.eq(index == length_m2)]
        with m.If(~at["PAY"]):
            m.d.sync += [empty.eq(length == 0), last.eq(length == 1), length_m2.eq(length - 2)]
        m.d.comb += self.busy.eq(~at["IDLE"])
        return m
