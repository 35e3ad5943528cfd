"""The whole-model accelerator: every layer's engine in a chain behind a UART host interface.

::

  rx ─> UARTRx ─> FrameReceiver ─> input slots ─> engine 1 ─> FIFO ─> engine 2 ─> ... ─> FIFO ─┐
        (CRC-16 check, timeout)   (2 vectors)                                                   │
  tx <─ UARTTx <─ FrameSender (CRC-16) <─ identify ROM | status | output banks (2 frames) <─────┘

The host protocol (frames, commands, CRC) is :mod:`sparrow.protocol`
(docs/host.md): :class:`~sparrow.hw.framer.FrameReceiver` parses it,
:class:`~sparrow.hw.framer.FrameSender` frames the replies,
:class:`CommandSequencer` acts on it and :class:`EngineChain` runs the
layers.  Receiving, computing and replying overlap (protocol version 2): the
vectors of a run or batch frame enter the chain as soon as each has arrived,
one slot filling while the other feeds the chain, and a frame's reply leaves
from its output bank while the next frame arrives into the other.  Each
engine's output that cannot stall lands in a FIFO deep enough for a whole
output vector, which the next engine drains at its own pace, so the chain
never loses data; an engine whose output waits (convolution, pooling,
flatten) feeds the next one directly.

The cycle count of a run goes from the first input element offered to the
first engine to the last output element of the last engine.
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Component, In, Out

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.component import ValidatedComponent
from sparrow.hw.engine import ROM_ATTR, EngineConfig
from sparrow.hw.engines import check_engine_kinds, engine_for_layer
from sparrow.hw.framer import FrameReceiver, FrameSender, crc16_step, payload_layout
from sparrow.hw.uart import UARTRx, UARTTx
from sparrow.hw.vecfifo import ShiftFIFO
from sparrow.validate import check_int

__all__ = ["Accelerator", "EngineChain", "CommandSequencer", "crc16_step"]

# For the input and output buffers: a read of the address written in the same cycle may
# return anything (Yosys then adds no bypass logic around the block RAM).  It only happens
# where the data is not used: the feeder reading a slot it is not feeding, or a bank
# written while its reply leaves (the reply is poisoned).
_NO_RW_CHECK = {"no_rw_check": 1}


#: Output vectors shorter than this wait in a :class:`~sparrow.hw.vecfifo.ShiftFIFO`
#: (registers; on the iCE40 UP5K a 10-value FIFO takes 74 LUTs where
#: SyncFIFOBuffered takes 102), longer ones in a SyncFIFOBuffered (a memory block).
SHIFT_FIFO_DEPTH = 16


class EngineChain(Component):
    """Engines joined by FIFOs: engine n -> FIFO n (a whole output vector) -> engine n+1.

    Each FIFO holds a whole output vector, which the next engine drains at its
    own pace, so the chain never loses data (a loss would set ``error``).  An
    engine whose output waits (:attr:`~sparrow.hw.engine.Engine.holds_output`:
    convolutions, pooling, flatten) connects to the next one directly.

    Parameters
    ----------
    engines : list of sparrow.hw.engine.Engine
        In order, each one's ``in_features`` equal to the previous one's ``out_features``.

    Members
    -------
    i : In(stream.Signature(signed(8)))
        The first engine's input.
    o : Out(stream.Signature(8))
        The last engine's outputs, from its FIFO.
    emitted : Out(1)
        The last engine emits an output this cycle (before its FIFO).
    error : Out(1)
        Sticky: an engine's error, or an output lost at a full FIFO.
    """

    def __init__(self, engines):
        self._engines = list(engines)
        super().__init__({"i": In(stream.Signature(signed(8))), "o": Out(stream.Signature(8)),
                          "emitted": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        lost = Signal()
        source = wiring.flipped(self.i)
        for n, engine in enumerate(self._engines):
            m.submodules[f"engine{n}"] = engine
            wiring.connect(m, source, engine.i)
            if engine.holds_output:         # its output waits: no FIFO needed
                source = engine.o
                continue
            depth = engine.out_features
            if depth < SHIFT_FIFO_DEPTH:    # a few values: registers, no memory block
                m.submodules[f"fifo{n}"] = fifo = ShiftFIFO(8, depth)
                fifo_w, fifo_r = fifo.w, fifo.r
            else:
                m.submodules[f"fifo{n}"] = fifo = SyncFIFOBuffered(width=8, depth=depth)
                fifo_w, fifo_r = fifo.w_stream, fifo.r_stream
            wiring.connect(m, engine.o, fifo_w)
            with m.If(engine.o.valid & ~fifo_w.ready):
                m.d.sync += lost.eq(1)
            source = fifo_r
        wiring.connect(m, source, wiring.flipped(self.o))
        last = self._engines[-1]
        m.d.comb += [self.emitted.eq(last.o.valid & (last.o.ready if last.holds_output else 1)),
                     self.error.eq(lost | Cat(*(e.error for e in self._engines)).any())]
        return m


class CommandSequencer(Component):
    """What the frames mean: ``I``, ``S``, ``R`` (one vector), ``B`` (a batch, protocol version 2), errors.

    The vectors of an ``R`` or ``B`` frame run as they arrive: the input
    buffer has two slots of one vector each, so the chain computes vector i
    while vector i+1 arrives; the outputs land in one of two output banks
    (one per frame, alternating), and the reply (sequence number, outputs,
    cycles) starts once the frame's CRC is checked and its last output is in,
    while the next frame arrives into the other bank.  A frame with a bad
    CRC still runs its vectors (they are complete before the CRC is known),
    but only an ``E`` reply leaves.

    Replies wait in a one-deep queue behind the one being sent; a data frame
    waits for its outputs in a second.  A frame that finds its place taken
    gets no reply (status flag 4), and the host sends it again.  Nothing is
    ever sent that does not hold, and no byte sequence wedges the device: the
    slots are a queue, so vectors run in order; a vector that finds both
    slots taken is dropped (never written over another) and its frame refused
    (``E`` 4); an output bank written after its frame's last output makes
    that frame's reply CRC wrong (:class:`~sparrow.hw.framer.FrameSender`'s
    ``poison``).

    Parameters
    ----------
    in_size, out_size : int
        Input and output elements per vector.
    ident : bytes
        The ``I`` reply (:func:`sparrow.protocol.identify_payload`).
    max_batch : int
        Vectors per ``B`` frame, at most.
    depth : int
        Vectors the engine chain can hold at once (one per engine, plus its FIFOs).
    ident_rom : bool
        The ``I`` reply from a ROM marked ``sparrow_rom = "ident"``, whose contents
        a simulation loads at run time (generic builds: the model id does not
        change the compiled simulator), instead of from logic.

    Members
    -------
    cmd, length, start, payload, frame_valid, crc_ok : In
        From :class:`~sparrow.hw.framer.FrameReceiver` (the frame being received).
    send, send_cmd, send_length, send_poison : Out; send_index, send_busy : In
        (``send_cmd`` and ``send_length`` are registered: valid from the cycle after ``send``)
    send_data : Out(stream.Signature(8))
        To and from :class:`~sparrow.hw.framer.FrameSender` (the reply).
    chain_in : Out(stream.Signature(signed(8)))
    chain_out : In(stream.Signature(8))
    chain_error : In(1)
        The :class:`EngineChain`.
    rx_overrun, rx_frame_error : In(1)
        From the UART receiver.
    error : Out(1)
        Any status flag is set (see :data:`sparrow.protocol.FLAGS`).
    busy : Out(1)
        Vectors are waiting or running, or replies waiting.
    """

    def __init__(self, in_size, out_size, ident, max_batch=16, depth=4, ident_rom=False):
        self._in_size, self._out_size, self._ident = in_size, out_size, ident
        self._ident_rom = bool(ident_rom)
        self._max_batch, self._depth = max_batch, depth
        self._max_reply = max(P.IDENT_LEN, P.STATUS_LEN, 2 + max_batch * out_size + 4)
        super().__init__({
            "busy": Out(1),
            "cmd": In(8), "length": In(16), "start": In(1),
            "payload": In(stream.Signature(payload_layout(), always_ready=True)),
            "frame_valid": In(1), "crc_ok": In(1),
            "send": Out(1), "send_cmd": Out(8), "send_length": Out(16), "send_poison": Out(1),
            "send_index": In(16), "send_busy": In(1), "send_data": Out(stream.Signature(8)),
            "chain_in": Out(stream.Signature(signed(8))), "chain_out": In(stream.Signature(8)),
            "chain_error": In(1),
            "rx_overrun": In(1), "rx_frame_error": In(1),
            "error": Out(1),
        })

    # Reply kinds kept in the reply records (3 bits instead of the 8-bit command):
    # bit 2 marks a data reply (R, B), bit 0 of a data reply a batch.
    _K_ERROR, _K_IDENTIFY, _K_STATUS, _K_RUN, _K_BATCH = 0, 1, 2, 4, 5
    _KIND_CMD = {_K_ERROR: P.CMD_ERROR, _K_IDENTIFY: P.CMD_IDENTIFY, _K_STATUS: P.CMD_STATUS,
                 _K_RUN: P.CMD_RUN, _K_BATCH: P.CMD_BATCH}
    _TAG_BITS = 3

    @property
    def max_reply(self):
        """The longest reply payload this sequencer sends."""
        return self._max_reply

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()       # the signals the parts share
        # The order matters: where two parts assign one register in a cycle, the later
        # wins (a pending frame taken to `ready` and replaced in the same cycle).
        self._receive_vectors(m, s)
        self._feed_chain(m, s)
        self._collect_outputs(m, s)
        self._status_flags(m, s)
        self._start_reply(m, s)
        self._finish_pending(m, s)
        self._judge_frame(m, s)
        self._act_on_frame(m, s)
        self._guard_banks(m, s)
        self._reply_byte(m, s)
        m.d.comb += self.busy.eq(s.feeding | s.inflight.r_rdy | s.slot_ready.any() |
                                 s.pend["valid"] | s.ready["valid"])
        return m

    def _receive_vectors(self, m, s):
        """Classify a frame at its start; write its vectors into the two input slots."""
        n_in, B, TAGS = self._in_size, self._max_batch, 1 << self._TAG_BITS
        m.submodules.inbuf = inbuf = Memory(shape=8, depth=2 * n_in, init=[], attrs=_NO_RW_CHECK)
        in_w, s.in_r = inbuf.write_port(), inbuf.read_port()
        # What the frame is, from its header (`length` is only valid at `start`)
        s.data_frame, s.is_batch, s.empty = Signal(), Signal(), Signal()
        s.tag = tag = Signal(range(TAGS))
        s.done_tag, s.done_valid, s.done_cycles = Signal(range(TAGS)), Signal(), Signal(32)
        s.rx_seq, s.vidx = Signal(8), Signal(range(B + 1))
        s.offset, wslot = Signal(range(n_in)), Signal()
        s.slot_ready = Signal(2)                      # a complete vector waits in / feeds from the slot
        s.slot_tag = Array(Signal(range(TAGS), name=f"slot_tag{i}") for i in range(2))
        s.slot_vidx = Array(Signal(range(B), name=f"slot_vidx{i}") for i in range(2))
        s.slot_last = Array(Signal(name=f"slot_last{i}") for i in range(2))
        # The frame being received is refused (`E` 4, none of its vectors after this runs):
        # a vector of it found its slot still taken.  No frame overwrites another's data.
        s.rx_bad = Signal()
        s.slot_free = Signal(2)                       # the feeder finished a slot (this cycle)
        slot_fill = Signal(2)
        m.d.sync += s.slot_ready.eq((s.slot_ready & ~s.slot_free) | slot_fill)

        # The header is classified the cycle after `start`, from comparisons registered in its
        # cycle (a short path from the receiver's length counter); the first payload byte and
        # the frame's end come a byte time later.
        header_in = Signal()
        is_run, is_batch, run_len, batch_len, zero_len = (Signal(name=n) for n in (
            "hdr_run", "hdr_batch", "hdr_run_len", "hdr_batch_len", "hdr_zero_len"))
        m.d.sync += [header_in.eq(self.start), is_run.eq(self.cmd == P.CMD_RUN),
                     is_batch.eq(self.cmd == P.CMD_BATCH), run_len.eq(self.length == n_in),
                     batch_len.eq((self.length >= 1 + n_in) & (self.length <= 1 + B * n_in)),
                     zero_len.eq(self.length == 0)]
        with m.If(header_in):
            ok_run, ok_batch = is_run & run_len, is_batch & batch_len
            m.d.sync += [s.data_frame.eq(ok_run | ok_batch), s.is_batch.eq(is_batch),
                         s.vidx.eq(0), s.offset.eq(0), s.empty.eq(zero_len)]
            with m.If(ok_run | ok_batch):
                m.d.sync += [tag.eq(tag + 1), s.rx_bad.eq(0)]
                with m.If(s.done_tag == (tag + 1)[:self._TAG_BITS]):
                    m.d.sync += s.done_valid.eq(0)    # a completion of an older frame with this tag
        # Payload bytes pass one register first (a short path from the receiver).
        byte_in, header, last_byte, byte = Signal(), Signal(), Signal(), Signal(8)
        m.d.sync += [byte_in.eq(self.payload.valid & s.data_frame), byte.eq(self.payload.payload.byte),
                     header.eq(s.is_batch & self.payload.payload.first),
                     last_byte.eq(self.payload.payload.last)]
        with m.If(byte_in & header):
            m.d.sync += s.rx_seq.eq(byte)
        # The slots are a FIFO of two vectors (`wslot` fills, `fslot` feeds), so vectors run
        # in the order they came and each frame's last output is its last vector's.
        taken = s.slot_ready.bit_select(wslot, 1)
        m.d.comb += [in_w.addr.eq(Cat(wslot, s.offset)), in_w.data.eq(byte)]
        with m.If(byte_in & ~header & (s.vidx < B)):
            with m.If(taken):
                m.d.sync += s.rx_bad.eq(1)            # the chain has not taken that vector yet
            with m.Else():
                m.d.comb += in_w.en.eq(1)
            with m.If(s.offset == n_in - 1):
                m.d.sync += [s.offset.eq(0), s.vidx.eq(s.vidx + 1)]
                with m.If(~taken & ~s.rx_bad):
                    m.d.sync += [wslot.eq(~wslot), s.slot_tag[wslot].eq(tag),
                                 s.slot_vidx[wslot].eq(s.vidx), s.slot_last[wslot].eq(last_byte)]
                    m.d.comb += slot_fill.eq(1 << wslot)
            with m.Else():
                m.d.sync += s.offset.eq(s.offset + 1)

    def _feed_chain(self, m, s):
        """A complete slot streams into the chain; its (tag, vector, last) follows it in a FIFO."""
        n_in = self._in_size
        s.idx_bits = max(1, (self._max_batch - 1).bit_length())
        m.submodules.inflight = s.inflight = inflight = SyncFIFOBuffered(
            width=self._TAG_BITS + s.idx_bits + 1, depth=self._depth + 2)
        fslot, s.feeding = Signal(), Signal()
        feeding = s.feeding
        feed_addr = Signal(range(n_in + 1))
        advance = ~self.chain_in.valid | self.chain_in.ready
        m.d.comb += [s.in_r.addr.eq(Cat(fslot, feed_addr)), s.in_r.en.eq(advance),
                     self.chain_in.payload.eq(s.in_r.data)]
        with m.If(advance):
            m.d.sync += self.chain_in.valid.eq(feeding & (feed_addr < n_in))
            with m.If(feeding & (feed_addr < n_in)):
                m.d.sync += feed_addr.eq(feed_addr + 1)
        with m.If(~feeding & s.slot_ready.bit_select(fslot, 1) & inflight.w_rdy):
            m.d.sync += [feeding.eq(1), feed_addr.eq(0)]
            m.d.comb += [inflight.w_en.eq(1),
                         inflight.w_data.eq(Cat(s.slot_tag[fslot], s.slot_vidx[fslot][:s.idx_bits],
                                                s.slot_last[fslot]))]
        with m.If(feeding & (feed_addr == n_in) & advance):
            m.d.sync += [feeding.eq(0), fslot.eq(~fslot)]
            m.d.comb += s.slot_free.eq(1 << fslot)

    def _collect_outputs(self, m, s):
        """Outputs go into bank (tag & 1) at the vector's place.

        ``acc`` counts the cycles the chain holds vectors; a frame's count ends with its
        last output (``done_now``).
        """
        n_out, B, T = self._out_size, self._max_batch, self._TAG_BITS
        m.submodules.outbuf = outbuf = Memory(shape=8, depth=2 * B * n_out, init=[], attrs=_NO_RW_CHECK)
        out_w, s.out_r = outbuf.write_port(), outbuf.read_port()
        r_data = s.inflight.r_data
        s.head_tag, head_vidx, head_last = r_data[:T], r_data[T:T + s.idx_bits], r_data[T + s.idx_bits]
        out_o = Signal(range(n_out))
        out_last = Signal(init=n_out == 1)      # `out_o == n_out - 1`, registered (a short path)
        s.done_now = Signal()
        s.vectors, s.last_cycles, s.acc = Signal(32), Signal(32), Signal(32)
        m.d.comb += self.chain_out.ready.eq(1)
        acc_next = Signal(32)
        m.d.comb += acc_next.eq(s.acc + 1)
        with m.If(s.inflight.r_rdy):
            m.d.sync += s.acc.eq(Mux(s.done_now, 0, acc_next))
        with m.If(self.chain_out.valid):
            m.d.comb += [out_w.en.eq(1), out_w.data.eq(self.chain_out.payload),
                         out_w.addr.eq(Cat(s.head_tag[0], head_vidx * n_out + out_o))]
            with m.If(out_last):
                m.d.sync += [out_o.eq(0), out_last.eq(n_out == 1), s.vectors.eq(s.vectors + 1)]
                m.d.comb += s.inflight.r_en.eq(1)
                with m.If(head_last):
                    m.d.comb += s.done_now.eq(1)
                    m.d.sync += [s.done_tag.eq(s.head_tag), s.done_valid.eq(1),
                                 s.done_cycles.eq(acc_next)]
            with m.Else():
                m.d.sync += [out_o.eq(out_o + 1), out_last.eq(out_o == n_out - 2)]

    def _status_flags(self, m, s):
        """The sticky status flags, and the reply records: pend (a data frame waiting for its
        outputs) -> ready -> cur (being sent)."""
        s.crc_seen, s.dropped = Signal(), Signal()
        s.flags = Signal(8)
        m.d.comb += [s.flags.eq(self.chain_error | (self.rx_overrun << 1) | (self.rx_frame_error << 2) |
                                (s.crc_seen << 3) | (s.dropped << 4)),
                     self.error.eq(s.flags != 0)]

        def record(prefix):
            return {"valid": Signal(name=f"{prefix}_valid"), "kind": Signal(3, name=f"{prefix}_kind"),
                    "tag": Signal(range(1 << self._TAG_BITS), name=f"{prefix}_tag"),
                    "seq": Signal(8, name=f"{prefix}_seq"), "repeat": Signal(name=f"{prefix}_repeat"),
                    "count": Signal(range(self._max_batch + 1), name=f"{prefix}_count"),
                    "code": Signal(3, name=f"{prefix}_code"), "cycles": Signal(32, name=f"{prefix}_cycles"),
                    "done": Signal(name=f"{prefix}_done"), "bad": Signal(name=f"{prefix}_bad")}
        s.pend, s.ready, s.cur = record("pend"), record("ready"), record("cur")
        # Set this cycle (`_guard_banks`): the pending or the ready frame's data is lost.  The
        # marks stick, follow the frame into `ready` and `cur`, and poison its reply; the
        # loads below (a new frame in the record) come later and win.
        s.mark_pend, s.mark_ready = Signal(), Signal()
        m.d.sync += [s.pend["bad"].eq(s.pend["bad"] | s.mark_pend),
                     s.ready["bad"].eq(s.ready["bad"] | s.mark_ready)]
        s.claimed = Signal()      # the pending data frame moves to `ready` this cycle

    def _to_ready(self, m, s, kind, code=0, src=None):
        """Queue a reply in `ready`, or count it dropped if the place is taken."""
        ready = s.ready
        # `ready` taken by the sender this cycle still counts as occupied: a short path
        # from the sender's state (the reply waits one cycle more).
        with m.If(ready["valid"] | (s.claimed if src is None else 0)):
            m.d.sync += s.dropped.eq(1)
        with m.Else():
            m.d.sync += [ready["valid"].eq(1), ready["kind"].eq(kind), ready["code"].eq(code)]
            if src is not None:
                m.d.sync += [ready[k].eq(src[k]) for k in ("tag", "seq", "repeat", "count", "cycles")]
                m.d.sync += ready["bad"].eq(src["bad"] | s.mark_pend)

    def _start_reply(self, m, s):
        """Start the next reply when the sender is idle: into `cur`, which gives the sender
        its command and length (held until the reply has left)."""
        n_out, B = self._out_size, self._max_batch
        ready, cur = s.ready, s.cur
        # Where the reply's cycle bytes begin (its outputs' bytes, after a B reply's 2 header
        # bytes), and whether it is a B reply: registered with `cur` (a short path to `_reply_byte`).
        s.data_end = data_end = Signal(range(B * n_out + 3))
        s.cur_batch = Signal()
        product = Signal(range(B * n_out + 1))
        m.d.comb += product.eq(ready["count"] * n_out)
        s.starting = starting = Signal()       # a reply started in the previous cycle
        with m.If(ready["valid"] & ~self.send_busy & ~starting):
            m.d.comb += self.send.eq(1)
            batch = ready["kind"] == self._K_BATCH
            m.d.sync += [starting.eq(1), ready["valid"].eq(0), s.cur_batch.eq(batch),
                         data_end.eq(product + Mux(batch, 2, 0))] + \
                [cur[k].eq(ready[k]) for k in ("kind", "tag", "seq", "repeat", "count", "code")] + \
                [cur["bad"].eq(ready["bad"] | s.mark_ready)]
            with m.If(ready["kind"][2]):
                m.d.sync += s.last_cycles.eq(ready["cycles"])
            # The reply's command and length, registered with `cur` (a short path to the sender).
            with m.Switch(ready["kind"]):
                for kind, cmd in self._KIND_CMD.items():
                    with m.Case(kind):
                        m.d.sync += self.send_cmd.eq(cmd)
            with m.Switch(ready["kind"]):
                with m.Case(self._K_IDENTIFY):
                    m.d.sync += self.send_length.eq(P.IDENT_LEN)
                with m.Case(self._K_STATUS):
                    m.d.sync += self.send_length.eq(P.STATUS_LEN)
                with m.Case(self._K_RUN, self._K_BATCH):
                    # an R frame holds one vector (`count` is 1); a B reply has 2 header bytes
                    m.d.sync += self.send_length.eq(Mux(ready["kind"][0], 6, 4) + product)
                with m.Default():
                    m.d.sync += self.send_length.eq(1)
        with m.Else():
            m.d.sync += starting.eq(0)

    def _finish_pending(self, m, s):
        """The pending frame's last output is in (now, at its CRC, or between): on to `ready`."""
        pend = s.pend
        # From the registered completion only (`done_*`, one cycle after `done_now`): the
        # cycles have one source, and a completion before the frame's CRC (`done_valid`
        # when it is judged) takes the same path.
        completes = s.done_valid & (s.done_tag == pend["tag"])
        s.pend_complete = pend["done"] | completes
        with m.If(pend["valid"] & ~pend["done"] & completes):
            m.d.sync += [pend["done"].eq(1), pend["cycles"].eq(s.done_cycles)]
        s.pend_take = Signal()
        with m.If(pend["valid"] & pend["done"] & ~s.ready["valid"]):
            m.d.comb += s.pend_take.eq(1)
            m.d.sync += pend["valid"].eq(0)
            self._to_ready(m, s, pend["kind"], src=pend)
            m.d.comb += s.claimed.eq(1)

    _V_ERROR, _V_IDENTIFY, _V_STATUS, _V_DATA = 0, 1, 2, 3

    def _judge_frame(self, m, s):
        """A received frame is judged in the cycle of `frame_valid` (the verdict registered,
        a short path from the receiver) and acted on in the next."""
        s.act, s.verdict, s.code = Signal(), Signal(2), Signal(3)
        verdict, code = s.verdict, s.code
        m.d.sync += s.act.eq(self.frame_valid)
        with m.If(self.frame_valid):
            with m.If(~self.crc_ok):
                m.d.sync += [s.crc_seen.eq(1), verdict.eq(self._V_ERROR), code.eq(1)]
            with m.Elif((self.cmd == P.CMD_IDENTIFY) | (self.cmd == P.CMD_STATUS)):
                m.d.sync += [verdict.eq(Mux(self.cmd == P.CMD_IDENTIFY, self._V_IDENTIFY, self._V_STATUS)),
                             code.eq(0)]
                with m.If(~s.empty):
                    m.d.sync += [verdict.eq(self._V_ERROR), code.eq(2)]
            with m.Elif((self.cmd == P.CMD_RUN) | (self.cmd == P.CMD_BATCH)):
                m.d.sync += [verdict.eq(self._V_DATA), code.eq(0)]
                with m.If(~s.data_frame | (s.offset != 0) | (s.vidx == 0)):
                    m.d.sync += [verdict.eq(self._V_ERROR), code.eq(2)]
                with m.Elif(s.rx_bad):
                    m.d.sync += [verdict.eq(self._V_ERROR), code.eq(4)]
            with m.Else():
                m.d.sync += [verdict.eq(self._V_ERROR), code.eq(3)]

    def _act_on_frame(self, m, s):
        """Queue the judged frame's reply, or (a data frame) make it the pending one."""
        pend = s.pend
        # The status reply's flags and vector count, taken when the request is judged.  Its
        # cycles are `last_cycles` itself: that changes only when a data reply starts, and
        # none starts between a status request taking `ready` and the end of its reply.
        s.status_flags, s.status_vectors = Signal(5), Signal(32)
        last_seqs, seq_valid = Signal(16), Signal(2)
        with m.If(s.act):
            with m.Switch(s.verdict):
                with m.Case(self._V_ERROR):
                    self._to_ready(m, s, self._K_ERROR, s.code)
                with m.Case(self._V_IDENTIFY):
                    self._to_ready(m, s, self._K_IDENTIFY)
                with m.Case(self._V_STATUS):
                    m.d.sync += [s.status_flags.eq(s.flags), s.status_vectors.eq(s.vectors)]
                    self._to_ready(m, s, self._K_STATUS)
                with m.Case(self._V_DATA):
                    with m.If(pend["valid"] & ~s.pend_take):
                        m.d.sync += s.dropped.eq(1)
                    with m.Else():
                        rx_seq, tag = s.rx_seq, s.tag
                        repeat = s.is_batch & (((last_seqs[:8] == rx_seq) & seq_valid[0]) |
                                               ((last_seqs[8:] == rx_seq) & seq_valid[1]))
                        m.d.sync += [pend["valid"].eq(1), pend["kind"].eq(Cat(s.is_batch, 0, 1)),
                                     pend["tag"].eq(tag), pend["seq"].eq(rx_seq),
                                     pend["repeat"].eq(repeat), pend["count"].eq(s.vidx),
                                     pend["done"].eq(0), pend["bad"].eq(0)]
                        with m.If(s.is_batch):
                            m.d.sync += [last_seqs.eq(Cat(rx_seq, last_seqs[:8])),
                                         seq_valid.eq(Cat(1, seq_valid[0]))]

    def _guard_banks(self, m, s):
        """Mark replies whose output bank is overwritten; poison the reply being sent."""
        cur = s.cur
        writing = Array([self.chain_out.valid & ~s.head_tag[0], self.chain_out.valid & s.head_tag[0]])
        # Vectors run in order, so a frame's outputs are all in once its last one is: any
        # output written later into its bank is another frame's, and the frame's reply is
        # lost (a pending frame's from its completion on, a ready one's, the one being sent).
        # The same holds if an older vector whose frame had the same (3-bit) tag completed
        # first and was taken for the frame's last: the frame's own outputs come after it.
        m.d.comb += [s.mark_pend.eq(writing[s.pend["tag"][0]] & s.pend["valid"] & s.pend_complete),
                     s.mark_ready.eq(writing[s.ready["tag"][0]] & s.ready["valid"])]
        # Poison the reply being sent if its bank changed under it.  (registered: a bank
        # written in cycle t changes bytes read from t + 1 on, which leave after the CRC's
        # poison is set)
        m.d.sync += self.send_poison.eq(self.send_busy & cur["kind"][2] &
                                        (cur["bad"] | writing[cur["tag"][0]]))

    def _reply_byte(self, m, s):
        """The reply payload byte `send_index`.

        The identify ROM, the status, the error code, or (R, B) the header, the outputs
        from the bank and the cycle count.  Bytes leave every 10 bit times at most, so
        the byte is computed over three registered stages (a short path to the UART):
        the index and its offset into the outputs; the output memory's read and the
        byte's source (an output, a byte of the counters, or one from the ROM, flags,
        code or header); the byte.  It is valid three cycles after `send_index` moved
        (four after a reply starts).
        The status reply's counters and a data reply's cycles are bytes of one 64-bit
        word (vectors run, then `last_cycles`) behind one 8:1 multiplexer.
        """
        cur, is_batch = s.cur, s.cur_batch
        max_index = self._max_reply + 1
        index_q, rel_q = Signal(range(max_index)), Signal(range(max_index))
        # One subtraction gives both the comparison (its sign) and the cycle byte (its low
        # bits); it and the header bytes' places are found in the first stage.
        width = max(len(rel_q), len(s.data_end))
        past_data, head0, head1 = Signal(width + 1), Signal(), Signal()
        index = self.send_index[:width]
        m.d.sync += [index_q.eq(self.send_index), rel_q.eq(self.send_index - Mux(is_batch, 2, 0)),
                     past_data.eq(index - s.data_end),
                     head0.eq(is_batch & (index == 0)), head1.eq(is_batch & (index == 1))]
        m.d.comb += [s.out_r.addr.eq(Cat(cur["tag"][0], rel_q)), s.out_r.en.eq(1)]
        # The byte's source, registered: an output, counter byte `cnt_sel`, or `misc`.
        from_out, from_cnt = Signal(name="from_out"), Signal(name="from_cnt")
        cnt_sel, misc = Signal(3, name="cnt_sel"), Signal(8, name="misc")
        m.d.sync += [from_out.eq(0), from_cnt.eq(0)]
        with m.Switch(cur["kind"]):
            with m.Case(self._K_IDENTIFY):
                if self._ident_rom:
                    m.submodules.ident = rom = Memory(shape=8, depth=32, init=self._ident,
                                                      attrs={ROM_ATTR: "ident"})
                    ident = rom.read_port(domain="comb")
                    m.d.comb += ident.addr.eq(index_q[:5])
                    m.d.sync += misc.eq(ident.data)
                else:
                    with m.Switch(index_q[:5]):
                        for i, b in enumerate(self._ident):
                            with m.Case(i):
                                m.d.sync += misc.eq(b)
            with m.Case(self._K_STATUS):
                # flags, then the 8 counter bytes
                m.d.sync += [misc.eq(s.status_flags), from_cnt.eq(index_q != 0),
                             cnt_sel.eq(index_q[:3] - 1)]
            with m.Case(self._K_RUN, self._K_BATCH):
                with m.If(head0):
                    m.d.sync += misc.eq(cur["seq"])
                with m.Elif(head1):
                    m.d.sync += misc.eq(cur["repeat"])
                with m.Elif(past_data[width]):
                    m.d.sync += from_out.eq(1)
                with m.Else():
                    m.d.sync += [from_cnt.eq(1), cnt_sel.eq(Cat(past_data[:2], 1))]
            with m.Default():
                m.d.sync += misc.eq(cur["code"])
        counters = Cat(s.status_vectors, s.last_cycles)
        value = Mux(from_out, s.out_r.data, Mux(from_cnt, counters.word_select(cnt_sel, 8), misc))
        settle = Signal(2)
        m.d.sync += self.send_data.payload.eq(value)
        # `send_index` moves only when a reply starts or a byte is taken (the cycle after).
        # After a start the count restarts a cycle late, from `starting` (a short path from
        # the sender's state): the sender takes no payload byte before its header has left.
        # `valid` is `settle == 3`, kept in a register (a short path to the sender).
        valid = Signal()
        with m.If(s.starting | (self.send_data.valid & self.send_data.ready)):
            m.d.sync += [settle.eq(0), valid.eq(0)]
        with m.Elif(settle != 3):
            m.d.sync += [settle.eq(settle + 1), valid.eq(settle == 2)]
        m.d.comb += self.send_data.valid.eq(valid)


class Accelerator(ValidatedComponent):
    """A validated model directory's layers on their engines, behind the UART protocol.

    Made of the UART, the :class:`~sparrow.hw.framer.FrameReceiver` and
    :class:`~sparrow.hw.framer.FrameSender`, the :class:`CommandSequencer` and
    the :class:`EngineChain`.

    Parameters
    ----------
    model : sparrow.modeldir.Model
        Made of layers that have an engine (:func:`sparrow.hw.engines.check_engine_kinds`).
    clk_hz : float
        The clock frequency, reported by ``I`` and used for the UART divisor.
    divisor : int
        UART clock cycles per bit (4..65535); :func:`~sparrow.hw.uart.uart_divisor`
        computes it from a baud rate.
    config : sparrow.hw.engine.EngineConfig
        Sizes of the engines (PEs of sd_linear engines, lanes of dense_linear ones, ...);
        ``out_lanes`` must be 1 (the chain carries one int8 a beat).
    max_batch : int
        Vectors per ``B`` frame, 1..255 (reported by ``I``): the output memory
        holds two frames of them.

    Members
    -------
    rx : In(1)
        UART line from the host (idle high).
    tx : Out(1)
        UART line to the host (idle high).
    busy : Out(1)
        A frame is being received, run or answered.
    error : Out(1)
        Any status flag is set (see :data:`sparrow.protocol.FLAGS`).

    Raises
    ------
    SparrowError
        A layer has no engine (``"layer {name!r}: kind {kind!r} has no RTL engine
        (supported: ...)"``), the vectors exceed the protocol (``"model {name!r}: the
        host protocol carries at most 65535 input and 65531 output bytes per
        vector"``), more than 255 layers (``"model {name!r}: at most 255 layers, not
        {n}"``), ``config.out_lanes`` is not 1, or a batch frame would exceed the
        protocol (``"model {name!r}: a batch of {k} vectors exceeds the 65535-byte
        frame"``).
    TypeError, ValueError
        ``max_batch`` is not an integer in 1..255 (``"Batch capacity must be ..."``).
    """

    def _validate(self, model, clk_hz, divisor, config=EngineConfig(), max_batch=16):
        check_engine_kinds(model)
        in_size, out_size = model.layers[0].in_size, model.layers[-1].out_size
        if in_size > 0xFFFF or out_size + 4 > 0xFFFF:
            raise SparrowError(f"model {model.name!r}: the host protocol carries at most 65535 "
                               f"input and 65531 output bytes per vector")
        if len(model.layers) > 255:
            raise SparrowError(f"model {model.name!r}: at most 255 layers, not {len(model.layers)}")
        if config.out_lanes != 1:
            raise SparrowError(f"the accelerator chains engines with one output lane, "
                               f"not {config.out_lanes}")
        self._max_batch = check_int(max_batch, "Batch capacity", 1, 255)
        if 1 + max_batch * in_size > 0xFFFF or 6 + max_batch * out_size > 0xFFFF:
            raise SparrowError(f"model {model.name!r}: a batch of {max_batch} vectors exceeds "
                               f"the 65535-byte frame")
        self._engines = [engine_for_layer(layer, config) for layer in model.layers]
        self._rx, self._tx = UARTRx(divisor), UARTTx(divisor)
        self._in_size, self._out_size = int(in_size), int(out_size)
        self._model_id = P.model_id(model)
        self._ident = P.identify_payload(self._in_size, self._out_size, len(model.layers),
                                         self._model_id, clk_hz, self._max_batch)
        self._ident_rom = config.generic        # simulation: the model id loads at run time
        self._divisor = divisor
        return {"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1), "error": Out(1)}

    @property
    def in_size(self):
        return self._in_size

    @property
    def out_size(self):
        return self._out_size

    @property
    def model_id(self):
        return self._model_id

    @property
    def divisor(self):
        return self._divisor

    @property
    def max_batch(self):
        """Vectors per ``B`` frame, at most."""
        return self._max_batch

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self._rx
        m.submodules.uart_tx = tx = self._tx
        m.submodules.receiver = receiver = FrameReceiver(P.TIMEOUT_BYTES * 10 * self._divisor)
        m.submodules.sequencer = sequencer = CommandSequencer(
            self._in_size, self._out_size, self._ident, self._max_batch, 2 * len(self._engines) + 2,
            ident_rom=self._ident_rom)
        m.submodules.sender = sender = FrameSender(sequencer.max_reply)
        m.submodules.chain = chain = EngineChain(self._engines)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.o, receiver.rx)
        wiring.connect(m, sender.tx, tx.i)
        wiring.connect(m, sequencer.chain_in, chain.i)
        wiring.connect(m, chain.o, sequencer.chain_out)
        wiring.connect(m, receiver.payload, sequencer.payload)
        wiring.connect(m, sequencer.send_data, sender.data)
        m.d.comb += [
            sequencer.cmd.eq(receiver.cmd), sequencer.length.eq(receiver.length),
            sequencer.start.eq(receiver.start), sequencer.frame_valid.eq(receiver.frame_valid),
            sequencer.crc_ok.eq(receiver.crc_ok),
            sender.start.eq(sequencer.send), sender.cmd.eq(sequencer.send_cmd),
            sender.length.eq(sequencer.send_length), sender.poison.eq(sequencer.send_poison),
            sequencer.send_index.eq(sender.index), sequencer.send_busy.eq(sender.busy),
            sequencer.chain_error.eq(chain.error),
            sequencer.rx_overrun.eq(rx.overrun), sequencer.rx_frame_error.eq(rx.frame_error),
            self.busy.eq(receiver.busy | sender.busy | sequencer.busy),
            self.error.eq(sequencer.error),
        ]
        return m
