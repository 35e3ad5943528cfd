"""The whole-model accelerator: every layer's engine in a chain behind a UART host interface.

::

  rx ─> UARTRx ─> frame parser ─> input buffer ─> engine 1 ─> FIFO ─> engine 2 ─> ... ─> FIFO ─┐
        (CRC-16 check, timeout)    (RAM, in B)                                                   │
  tx <─ UARTTx <─ reply framer (CRC-16) <─ identify ROM | status/counters | outputs + cycles ─────┘

The host protocol (frames, commands, CRC) is :mod:`sparrow.protocol`
(docs/host.md).  One vector is in flight at a time: an ``R`` frame is
received whole and its CRC checked before the input buffer streams into the
first engine, and the reply leaves before the next frame is parsed; bytes that
arrive meanwhile are dropped.  Each engine's output (which cannot stall)
lands in a FIFO deep enough for a whole output vector, which the next engine
drains at its own pace, so the chain never loses data.

The cycle count of a run goes from the first input element offered to the
first engine to the last output element of the last engine.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Component, In, Out

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.engines import check_engine_kinds, engine_for_layer
from sparrow.hw.uart import UARTRx, UARTTx

__all__ = ["Accelerator", "crc16_step"]


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


class Accelerator(Component):
    """A validated model directory's layers on their engines, behind the UART protocol.

    Parameters
    ----------
    model : sparrow.modeldir.Model
        Made of layers that have an engine (sd_linear, dense_linear, bc_linear).
    clk_hz : float
        The clock frequency, reported by ``I`` and used for the UART divisor.
    divisor : int
        UART clock cycles per bit (4..65535); :func:`~sparrow.hw.uart.uart_divisor`
        computes it from a baud rate.
    pes : int
        PEs of each sd_linear engine (1..1024).
    dense_lanes : int, optional
        MAC lanes of each dense_linear engine (default: the engine's default).

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
    """

    def __init__(self, model, clk_hz, divisor, pes=8, dense_lanes=None):
        self._MustUse__silence = True       # a refused model is not an unused design
        check_engine_kinds(model)
        in_size, out_size = model.layers[0].attrs["in"], model.layers[-1].attrs["out"]
        if in_size > 0xFFFF or out_size + 4 > 0xFFFF:
            raise SparrowError(f"model {model.name!r}: the host protocol carries at most 65535 "
                               f"input and 65531 output bytes per vector")
        if len(model.layers) > 255:
            raise SparrowError(f"model {model.name!r}: at most 255 layers, not {len(model.layers)}")
        self._engines = [engine_for_layer(layer, pes, dense_lanes) for layer in model.layers]
        self._rx, self._tx = UARTRx(divisor), UARTTx(divisor)
        self._in_size, self._out_size = int(in_size), int(out_size)
        self._model_id = P.model_id(model)
        self._ident = P.identify_payload(self._in_size, self._out_size, len(model.layers),
                                         self._model_id, clk_hz)
        self._divisor = divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                          "error": Out(1)})
        self._MustUse__silence = False

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
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        n_in, n_out = self._in_size, self._out_size

        # Engine chain: engine k -> FIFO k (a whole output vector) -> engine k+1.
        fifos = []
        lost = Signal()
        for k, engine in enumerate(self._engines):
            m.submodules[f"engine{k}"] = engine
            fifo = SyncFIFOBuffered(width=8, depth=engine.out_features)
            m.submodules[f"fifo{k}"] = fifo
            m.d.comb += [fifo.w_data.eq(engine.o.payload), fifo.w_en.eq(engine.o.valid),
                         engine.o.ready.eq(fifo.w_rdy)]
            with m.If(engine.o.valid & ~fifo.w_rdy):
                m.d.sync += lost.eq(1)
            if k:
                m.d.comb += [engine.i.payload.eq(fifos[-1].r_data),
                             engine.i.valid.eq(fifos[-1].r_rdy),
                             fifos[-1].r_en.eq(engine.i.ready)]
            fifos.append(fifo)
        first, out_fifo = self._engines[0], fifos[-1]
        last = self._engines[-1]

        m.submodules.buf = buf = Memory(shape=8, depth=n_in, init=[])
        wr, rd = buf.write_port(), buf.read_port()

        crc, crc_byte = Signal(16), Signal(8)
        crc_next = crc16_step(crc, crc_byte)      # one CRC unit, shared by receive and send
        cmd, length, got_crc = Signal(8), Signal(16), Signal(16)
        idx = Signal(16)
        rcmd, rlen, err_code = Signal(8), Signal(16), Signal(8)
        crc_seen, vectors, cycles, last_cycles = Signal(), Signal(32), Signal(32), Signal(32)
        produced, feed_addr, feed_valid = Signal(range(n_out + 1)), Signal(range(n_in + 1)), Signal()
        timeout = P.TIMEOUT_BYTES * 10 * self._divisor
        idle = Signal(range(timeout + 1))
        engine_error = Signal()
        m.d.comb += engine_error.eq(lost | Cat(*(e.error for e in self._engines)).any())
        flags = Signal(8)
        m.d.comb += [flags.eq(engine_error | (rx.overrun << 1) | (rx.frame_error << 2) |
                              (crc_seen << 3)),
                     self.error.eq(flags != 0)]
        ident = Array(Const(b, 8) for b in self._ident)
        status = Signal(8 * P.STATUS_LEN)

        byte = rx.o.payload
        got = Signal()
        m.d.comb += [rx.o.ready.eq(1), got.eq(rx.o.valid)]

        # Input buffer -> first engine, one element per accepted beat.
        feeding = Signal()
        advance = ~feed_valid | first.i.ready
        m.d.comb += [rd.addr.eq(feed_addr), rd.en.eq(advance),
                     first.i.payload.eq(rd.data), first.i.valid.eq(feed_valid)]
        with m.If(advance):
            m.d.sync += feed_valid.eq(feeding & (feed_addr < n_in))
            with m.If(feeding & (feed_addr < n_in)):
                m.d.sync += feed_addr.eq(feed_addr + 1)
        with m.If(last.o.valid):
            m.d.sync += produced.eq(produced + 1)

        def send(code, n):
            m.d.sync += [rcmd.eq(code), rlen.eq(n), crc.eq(0xFFFF)]
            m.next = "SEND_SYNC"

        def error(code):
            m.d.sync += err_code.eq(code)
            send(P.CMD_ERROR, 1)

        receiving = Signal()
        with m.If(receiving & ~got):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)

        def receive():
            """In a state inside a frame: count idle cycles; give up on the frame at the timeout."""
            m.d.comb += receiving.eq(1)
            with m.If(~got & (idle == timeout)):
                m.next = "SYNC"

        with m.FSM() as fsm:
            with m.State("SYNC"):
                with m.If(got & (byte == P.SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "CMD"
            with m.State("CMD"):
                receive()
                with m.If(got):
                    m.d.comb += crc_byte.eq(byte)
                    m.d.sync += [cmd.eq(byte), crc.eq(crc_next)]
                    m.next = "LEN0"
            with m.State("LEN0"):
                receive()
                with m.If(got):
                    m.d.comb += crc_byte.eq(byte)
                    m.d.sync += [length[:8].eq(byte), crc.eq(crc_next)]
                    m.next = "LEN1"
            with m.State("LEN1"):
                receive()
                with m.If(got):
                    m.d.comb += crc_byte.eq(byte)
                    m.d.sync += [length[8:].eq(byte), crc.eq(crc_next), idx.eq(0)]
                    with m.If(Cat(length[:8], byte) == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                receive()
                with m.If(got):
                    m.d.comb += [wr.addr.eq(idx), wr.data.eq(byte),
                                 wr.en.eq((cmd == P.CMD_RUN) & (length == n_in))]
                    m.d.comb += crc_byte.eq(byte)
                    m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                    with m.If(idx == length - 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                receive()
                with m.If(got):
                    m.d.sync += got_crc[:8].eq(byte)
                    m.next = "CRC1"
            with m.State("CRC1"):
                receive()
                with m.If(got):
                    m.d.sync += got_crc[8:].eq(byte)
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(got_crc != crc):
                    m.d.sync += crc_seen.eq(1)
                    error(1)
                with m.Elif(cmd == P.CMD_IDENTIFY):
                    with m.If(length == 0):
                        send(P.CMD_IDENTIFY, P.IDENT_LEN)
                    with m.Else():
                        error(2)
                with m.Elif(cmd == P.CMD_STATUS):
                    with m.If(length == 0):
                        m.d.sync += status.eq(flags | (vectors << 8) | (last_cycles << 40))
                        send(P.CMD_STATUS, P.STATUS_LEN)
                    with m.Else():
                        error(2)
                with m.Elif(cmd == P.CMD_RUN):
                    with m.If(length == n_in):
                        m.d.sync += [feed_addr.eq(0), produced.eq(0), cycles.eq(0)]
                        m.next = "RUN"
                    with m.Else():
                        error(2)
                with m.Else():
                    error(3)
            with m.State("RUN"):
                m.d.comb += feeding.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(produced == n_out):
                    m.d.sync += [vectors.eq(vectors + 1), last_cycles.eq(cycles)]
                    send(P.CMD_RUN, n_out + 4)

            def emit(value, next_state, update_crc=True):
                m.d.comb += [tx.i.valid.eq(1), tx.i.payload.eq(value), crc_byte.eq(value)]
                with m.If(tx.i.ready):
                    if update_crc:
                        m.d.sync += crc.eq(crc_next)
                    m.next = next_state

            with m.State("SEND_SYNC"):
                m.d.sync += idx.eq(0)
                emit(P.SYNC, "SEND_CMD", update_crc=False)
            with m.State("SEND_CMD"):
                emit(rcmd, "SEND_LEN0")
            with m.State("SEND_LEN0"):
                emit(rlen[:8], "SEND_LEN1")
            with m.State("SEND_LEN1"):
                emit(rlen[8:], "SEND_PAY")
            with m.State("SEND_PAY"):
                value, ready = Signal(8), Signal()
                m.d.comb += ready.eq(1)
                with m.Switch(rcmd):
                    with m.Case(P.CMD_IDENTIFY):
                        m.d.comb += value.eq(ident[idx[:5]])
                    with m.Case(P.CMD_STATUS):
                        m.d.comb += value.eq(status.word_select(idx[:4], 8))
                    with m.Case(P.CMD_RUN):
                        with m.If(idx < n_out):
                            m.d.comb += [value.eq(out_fifo.r_data), ready.eq(out_fifo.r_rdy)]
                        with m.Else():
                            m.d.comb += value.eq(last_cycles.word_select((idx - n_out)[:2], 8))
                    with m.Default():
                        m.d.comb += value.eq(err_code)
                m.d.comb += [tx.i.valid.eq(ready), tx.i.payload.eq(value), crc_byte.eq(value)]
                with m.If(ready & tx.i.ready):
                    m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                    with m.If((rcmd == P.CMD_RUN) & (idx < n_out)):
                        m.d.comb += out_fifo.r_en.eq(1)
                    with m.If(idx == rlen - 1):
                        m.next = "SEND_CRC0"
            with m.State("SEND_CRC0"):
                emit(crc[:8], "SEND_CRC1", update_crc=False)
            with m.State("SEND_CRC1"):
                emit(crc[8:], "SYNC", update_crc=False)

        m.d.comb += self.busy.eq(~fsm.ongoing("SYNC"))
        return m

