"""The whole-model accelerator: every layer's engine in a chain behind a UART host interface.

::

  rx ─> UARTRx ─> frame parser ─> input buffer ─> engine 1 ─> FIFO ─> engine 2 ─> ... ─> FIFO ─┐
        (CRC-16 check, timeout)    (RAM, in B)                                                   │
  tx <─ UARTTx <─ reply framer (CRC-16) <─ identify ROM | status/counters | outputs + cycles ─────┘

The host protocol (frames, commands, CRC) is :mod:`sparrow.protocol`
(docs/host.md): :class:`~sparrow.hw.framer.Framer` parses and frames it,
:class:`CommandSequencer` acts on it, :class:`EngineChain` runs the layers.  One vector is in flight at a time: an ``R`` frame is
received whole and its CRC checked before the input buffer streams into the
first engine, and the reply leaves before the next frame is parsed; bytes that
arrive meanwhile are dropped.  Each engine's output (which cannot stall)
lands in a FIFO deep enough for a whole output vector, which the next engine
drains at its own pace, so the chain never loses data.

The cycle count of a run goes from the first input element offered to the
first engine to the last output element of the last engine.
"""

from amaranth.hdl import Array, Cat, Const, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Component, In, Out

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.component import ValidatedComponent
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import check_engine_kinds, engine_for_layer
from sparrow.hw.framer import Framer, crc16_step, payload_layout
from sparrow.hw.uart import UARTRx, UARTTx

__all__ = ["Accelerator", "EngineChain", "CommandSequencer", "crc16_step"]


class EngineChain(Component):
    """Engines joined by FIFOs: engine n -> FIFO n (a whole output vector) -> engine n+1.

    Each FIFO holds a whole output vector, which the next engine drains at its
    own pace, so the chain never loses data (a loss would set ``error``).

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
            m.submodules[f"fifo{n}"] = fifo = SyncFIFOBuffered(width=8, depth=engine.out_features)
            wiring.connect(m, source, engine.i)
            wiring.connect(m, engine.o, fifo.w_stream)
            with m.If(engine.o.valid & ~fifo.w_rdy):
                m.d.sync += lost.eq(1)
            source = fifo.r_stream
        wiring.connect(m, source, wiring.flipped(self.o))
        m.d.comb += [self.emitted.eq(self._engines[-1].o.valid),
                     self.error.eq(lost | Cat(*(e.error for e in self._engines)).any())]
        return m


class CommandSequencer(Component):
    """What the frames mean: ``I`` (identify), ``S`` (status), ``R`` (run one vector), errors.

    A ``R`` frame's payload lands in the input buffer as it arrives; once its
    CRC is checked the buffer streams into the engine chain, and the reply
    (the outputs and the run's cycle count) starts when the last output has
    left the last engine.

    Parameters
    ----------
    in_size, out_size : int
        Input and output elements per vector.
    ident : bytes
        The ``I`` reply (:func:`sparrow.protocol.identify_payload`).

    Members
    -------
    cmd, length, payload, frame_valid, crc_ok : In
        From :class:`~sparrow.hw.framer.Framer` (the received frame).
    reply_start, reply_cmd, reply_length, reply_data : Out; index : In
        To and from the framer (the reply).
    chain_in : Out(stream.Signature(signed(8)))
    chain_out : In(stream.Signature(8))
    chain_emitted, chain_error : In(1)
        The :class:`EngineChain`.
    rx_overrun, rx_frame_error : In(1)
        From the UART receiver.
    error : Out(1)
        Any status flag is set (see :data:`sparrow.protocol.FLAGS`).
    """

    def __init__(self, in_size, out_size, ident):
        self._in_size, self._out_size, self._ident = in_size, out_size, ident
        super().__init__({
            "cmd": In(8), "length": In(16),
            "payload": In(stream.Signature(payload_layout(), always_ready=True)),
            "frame_valid": In(1), "crc_ok": In(1),
            "reply_start": Out(1), "reply_cmd": Out(8), "reply_length": Out(16),
            "index": In(16), "reply_data": Out(stream.Signature(8)),
            "chain_in": Out(stream.Signature(signed(8))), "chain_out": In(stream.Signature(8)),
            "chain_emitted": In(1), "chain_error": In(1),
            "rx_overrun": In(1), "rx_frame_error": In(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, n_out = self._in_size, self._out_size
        m.submodules.buf = buf = Memory(shape=8, depth=n_in, init=[])
        write, read = buf.write_port(), buf.read_port()
        m.d.comb += [write.addr.eq(self.payload.payload.index), write.data.eq(self.payload.payload.byte),
                     write.en.eq(self.payload.valid & (self.cmd == P.CMD_RUN) & (self.length == n_in))]

        error_code, crc_seen = Signal(8), Signal()
        vectors, cycles, last_cycles = Signal(32), Signal(32), Signal(32)
        flags = Signal(8)
        status = Signal(8 * P.STATUS_LEN)
        m.d.comb += [flags.eq(self.chain_error | (self.rx_overrun << 1) | (self.rx_frame_error << 2) |
                              (crc_seen << 3)),
                     self.error.eq(flags != 0)]

        # Input buffer -> engine chain, one element per accepted beat, while running.
        running = Signal()
        produced, feed_addr = Signal(range(n_out + 1)), Signal(range(n_in + 1))
        advance = ~self.chain_in.valid | self.chain_in.ready
        m.d.comb += [read.addr.eq(feed_addr), read.en.eq(advance), self.chain_in.payload.eq(read.data)]
        with m.If(advance):
            m.d.sync += self.chain_in.valid.eq(running & (feed_addr < n_in))
            with m.If(running & (feed_addr < n_in)):
                m.d.sync += feed_addr.eq(feed_addr + 1)
        with m.If(self.chain_emitted):
            m.d.sync += produced.eq(produced + 1)

        def reply(code, length):
            m.d.comb += self.reply_start.eq(1)
            m.d.sync += [self.reply_cmd.eq(code), self.reply_length.eq(length)]

        def refuse(code):
            m.d.sync += error_code.eq(code)
            reply(P.CMD_ERROR, 1)

        with m.If(self.frame_valid):
            with m.If(~self.crc_ok):
                m.d.sync += crc_seen.eq(1)
                refuse(1)
            with m.Elif(self.cmd == P.CMD_IDENTIFY):
                with m.If(self.length == 0):
                    reply(P.CMD_IDENTIFY, P.IDENT_LEN)
                with m.Else():
                    refuse(2)
            with m.Elif(self.cmd == P.CMD_STATUS):
                with m.If(self.length == 0):
                    m.d.sync += status.eq(flags | (vectors << 8) | (last_cycles << 40))
                    reply(P.CMD_STATUS, P.STATUS_LEN)
                with m.Else():
                    refuse(2)
            with m.Elif(self.cmd == P.CMD_RUN):
                with m.If(self.length == n_in):
                    m.d.sync += [feed_addr.eq(0), produced.eq(0), cycles.eq(0), running.eq(1)]
                with m.Else():
                    refuse(2)
            with m.Else():
                refuse(3)
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(produced == n_out):
                m.d.sync += [vectors.eq(vectors + 1), last_cycles.eq(cycles), running.eq(0)]
                reply(P.CMD_RUN, n_out + 4)

        # The reply payload: byte `index` of the identify ROM, the status, the outputs
        # and cycle count, or the error code.
        index, value = self.index, self.reply_data.payload
        ident = Array(Const(b, 8) for b in self._ident)
        m.d.comb += self.reply_data.valid.eq(1)
        with m.Switch(self.reply_cmd):
            with m.Case(P.CMD_IDENTIFY):
                m.d.comb += value.eq(ident[index[:5]])
            with m.Case(P.CMD_STATUS):
                m.d.comb += value.eq(status.word_select(index[:4], 8))
            with m.Case(P.CMD_RUN):
                with m.If(index < n_out):
                    m.d.comb += [value.eq(self.chain_out.payload),
                                 self.reply_data.valid.eq(self.chain_out.valid)]
                with m.Else():
                    m.d.comb += value.eq(last_cycles.word_select((index - n_out)[:2], 8))
            with m.Default():
                m.d.comb += value.eq(error_code)
        m.d.comb += self.chain_out.ready.eq(self.reply_data.valid & self.reply_data.ready &
                                            (self.reply_cmd == P.CMD_RUN) & (index < n_out))
        return m


class Accelerator(ValidatedComponent):
    """A validated model directory's layers on their engines, behind the UART protocol.

    Made of the UART, the :class:`~sparrow.hw.framer.Framer`, the
    :class:`CommandSequencer` and the :class:`EngineChain`.

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
        {n}"``), or ``config.out_lanes`` is not 1.
    """

    def _validate(self, model, clk_hz, divisor, config=EngineConfig()):
        check_engine_kinds(model)
        in_size, out_size = model.layers[0].attrs["in"], model.layers[-1].attrs["out"]
        if in_size > 0xFFFF or out_size + 4 > 0xFFFF:
            raise SparrowError(f"model {model.name!r}: the host protocol carries at most 65535 "
                               f"input and 65531 output bytes per vector")
        if len(model.layers) > 255:
            raise SparrowError(f"model {model.name!r}: at most 255 layers, not {len(model.layers)}")
        if config.out_lanes != 1:
            raise SparrowError(f"the accelerator chains engines with one output lane, "
                               f"not {config.out_lanes}")
        self._engines = [engine_for_layer(layer, config) for layer in model.layers]
        self._rx, self._tx = UARTRx(divisor), UARTTx(divisor)
        self._in_size, self._out_size = int(in_size), int(out_size)
        self._model_id = P.model_id(model)
        self._ident = P.identify_payload(self._in_size, self._out_size, len(model.layers),
                                         self._model_id, clk_hz)
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

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self._rx
        m.submodules.uart_tx = tx = self._tx
        m.submodules.framer = framer = Framer(P.TIMEOUT_BYTES * 10 * self._divisor)
        m.submodules.sequencer = sequencer = CommandSequencer(self._in_size, self._out_size, self._ident)
        m.submodules.chain = chain = EngineChain(self._engines)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.o, framer.rx)
        wiring.connect(m, framer.tx, tx.i)
        wiring.connect(m, sequencer.chain_in, chain.i)
        wiring.connect(m, chain.o, sequencer.chain_out)
        wiring.connect(m, framer.payload, sequencer.payload)
        wiring.connect(m, sequencer.reply_data, framer.reply_data)
        m.d.comb += [
            sequencer.cmd.eq(framer.cmd), sequencer.length.eq(framer.length),
            sequencer.frame_valid.eq(framer.frame_valid), sequencer.crc_ok.eq(framer.crc_ok),
            sequencer.index.eq(framer.index),
            framer.reply_start.eq(sequencer.reply_start), framer.reply_cmd.eq(sequencer.reply_cmd),
            framer.reply_length.eq(sequencer.reply_length),
            sequencer.chain_emitted.eq(chain.emitted), sequencer.chain_error.eq(chain.error),
            sequencer.rx_overrun.eq(rx.overrun), sequencer.rx_frame_error.eq(rx.frame_error),
            self.busy.eq(framer.busy), self.error.eq(sequencer.error),
        ]
        return m
