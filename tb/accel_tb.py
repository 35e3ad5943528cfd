"""The host's side of the accelerator benches: a per-bit UART host and the protocol checks.

:class:`UartHost` is the host end of the UART line bit by bit: cocotbext-uart's
``UartSource`` sends frames built by the host driver's own protocol module
(:mod:`sparrow.protocol`) on ``rx``, its ``UartSink`` reads ``tx`` (checking
every stop bit) and the same module decodes the reply frames.  Python awaits
every bit here: it is the unit check of the UART line against an independent
UART model (:func:`check_uart_line`).  The fast host for everything else is
:class:`~sparrow.tb.link_tb.ChunkHost` (the link bench,
:mod:`sparrow.tb.linkbench`: the host's end of the line in HDL, bytes in
chunks); it has the same interface, so the checks here run on either.  The
cocotb tests that use them are in :mod:`sparrow.tb.link_tb`, on the link
bench's build, whose ``rx``/``tx`` are the accelerator's pins.

``data`` (the ``.npz`` of ``$ACCEL_TB_DATA``) holds ``x`` int8 [N, in],
``expected`` int8 [N, out] (the golden model's), ``divisor``, ``model_id``,
``layers``, ``clk_hz``, ``max_batch`` (``batch`` for :func:`check_stream`).

:func:`check_protocol`, in order: identify (protocol version 2, the batch
capacity); every vector through ``R`` (outputs == golden, cycles > 0); the
same vectors as ``B`` batches streamed with a window of two frames in flight
(the next frame sent while the previous one computes and its reply leaves:
outputs == golden, sequence numbers echoed, the line never idle between
frames); a batch sent again with the same sequence number (flagged as a
repeat); a batch of the wrong length and one over the capacity (``E`` 2); a
frame with a wrong CRC (``E`` 1) and the next frame still answered; a run
frame of the wrong length (``E`` 2); an unknown command (``E`` 3); a frame
cut short (dropped after the timeout, the next frame answered); status
(flags name the CRC failure, vectors counted, cycles of the last run); a
byte with a low stop bit (flagged as a framing error).
"""

import logging
import warnings

import cocotb
import numpy as np
from cocotb.triggers import Timer
from cocotb.utils import get_sim_time
from cocotbext.uart import UartSink, UartSource

from sparrow import protocol as P
from sparrow.tb.bench import CLOCK_NS, Scoreboard

__all__ = ["UartHost", "check_protocol", "check_stream", "check_uart_line"]


class UartHost:
    """The host end of the UART line at ``divisor`` clock cycles per bit: frames out, replies in.

    ``raw`` keeps every byte seen on ``tx``, ``frames`` the decoded reply
    frames not yet taken by :meth:`reply`.
    """

    def __init__(self, dut, divisor):
        self.dut = dut
        self.bit_ns = divisor * CLOCK_NS
        # cocotbext-uart times bits with int(1e9 / baud) ns: the nudge keeps that exact.
        baud = 1e9 / (self.bit_ns + 1e-6)
        with warnings.catch_warnings():    # cocotbext-uart 0.1.4 sets rx's idle level with the
            warnings.simplefilter("ignore", DeprecationWarning)    # deprecated setimmediatevalue
            self.source = UartSource(dut.rx, baud=baud)
        # The stop bit is read as a ninth data bit, so that it can be checked; the remaining
        # quarter bit re-arms the sink before the earliest next start bit.
        self.sink = UartSink(dut.tx, baud=baud, bits=9, stop_bits=0.25)
        for side in (self.source, self.sink):
            side.log.setLevel(logging.WARNING)          # no line per byte
        self.decoder = P.FrameDecoder()
        self.frames = []
        self.raw = bytearray()

    def collect(self):
        """Move the bytes received so far into :attr:`raw` and :attr:`frames`."""
        for word in self.sink.read_nowait():
            assert word >> 8 == 1, "stop bit of a reply byte is low"
            self.raw.append(word & 0xFF)
            self.frames += self.decoder.feed(bytes([word & 0xFF]))

    def busy(self):
        return int(self.dut.busy.value)

    def error(self):
        return int(self.dut.error.value)

    async def write(self, data):
        """Queue ``data`` to send (sent back to back in the background)."""
        await self.source.write(data)

    async def drain(self):
        """Return after the last stop bit of everything queued."""
        await self.source.wait()

    async def send_bytes(self, data):
        """Send ``data`` on ``rx``; returns after the last stop bit."""
        await self.write(data)
        await self.drain()

    async def send_bits(self, bits):
        """Drive ``rx`` with raw bit values, one bit time each (for malformed bytes)."""
        for bit in bits:
            self.dut.rx.value = bit
            await Timer(self.bit_ns, unit="ns")

    async def wait_bytes(self, n):
        """Let ``n`` byte times pass."""
        await Timer(n * 10 * self.bit_ns, unit="ns")

    async def reply(self, timeout_bytes=4096):
        """The next reply frame ``(cmd, payload)``; fails if none comes within ``timeout_bytes``."""
        deadline = get_sim_time("ns") + timeout_bytes * 10 * self.bit_ns
        self.collect()
        while not self.frames:
            left = deadline - get_sim_time("ns")
            if left <= 0:
                raise AssertionError(f"no reply frame within {timeout_bytes} byte times")
            await self.sink.wait(timeout=left, timeout_unit="ns")
            self.collect()
        return self.frames.pop(0)

    async def request(self, cmd, payload=b""):
        await self.send_bytes(P.encode_frame(cmd, payload))
        return await self.reply()


def _error_code(frame):
    cmd, payload = frame
    assert cmd == P.CMD_ERROR and len(payload) == 1, f"expected an E reply, got {frame!r}"
    return payload[0]


async def check_protocol(dut, host, data):
    """The host protocol checks (module docstring) through ``host`` (:class:`UartHost` or a
    :class:`~sparrow.tb.link_tb.ChunkHost`); ``data`` is the ``$ACCEL_TB_DATA`` archive."""
    x, expected = data["x"].astype(np.int64), data["expected"].astype(np.int64)
    n, n_in = x.shape
    n_out = expected.shape[1]

    max_batch = int(data["max_batch"])
    ident = P.parse_identify(await host.request(P.CMD_IDENTIFY))
    assert ident == {"version": P.VERSION, "in_size": n_in, "out_size": n_out,
                     "layers": int(data["layers"]), "model_id": int(data["model_id"]),
                     "clk_hz": int(data["clk_hz"]), "max_batch": max_batch}, ident

    last = None
    for v in range(n):
        frame = await host.request(P.CMD_RUN, (x[v] & 0xFF).astype(np.uint8).tobytes())
        y, cycles = P.parse_run(frame, n_out)
        Scoreboard("output", expected[v].tolist(), where=lambda i: f"vector {v}: output {i}",
                   terms=lambda i: f"rtl {list(y)}, expected {expected[v].tolist()}").compare(y)
        assert cycles > 0
        last = cycles
    dut._log.info(f"{n} vectors bit-exact with the golden model; last run {last} cycles")

    # Batches, streamed: frame k+1 is sent while frame k computes and its reply leaves.
    sizes = [min(max_batch, 1 + k % 3) for k in range(6)]
    starts = np.cumsum([0] + sizes) % n
    batches = [[x[(s + i) % n] for i in range(k)] for s, k in zip(starts, sizes)]
    wants = [[expected[(s + i) % n] for i in range(k)] for s, k in zip(starts, sizes)]
    frames = [P.encode_frame(P.CMD_BATCH, P.batch_payload(10 + k, b)) for k, b in enumerate(batches)]
    t0 = get_sim_time("ns")
    sender = cocotb.start_soon(host.send_bytes(frames[0] + frames[1]))
    for k in range(len(frames)):
        if k + 2 < len(frames):
            await sender
            reply = await host.reply()
            sender = cocotb.start_soon(host.send_bytes(frames[k + 2]))
        else:
            reply = await host.reply()
        ys, cycles, repeat = P.parse_batch(reply, 10 + k, sizes[k], n_out)
        assert not repeat and cycles > 0
        for v, (y, want) in enumerate(zip(ys, wants[k])):
            Scoreboard("output", want.tolist(), where=lambda i: f"batch {k} vector {v}: output {i}",
                       terms=lambda i: f"rtl {y}, expected {want.tolist()}").compare(y)
    await sender
    wire_ns = sum(len(f) for f in frames) * 10 * host.bit_ns
    busy = wire_ns / (get_sim_time("ns") - t0)
    dut._log.info(f"{len(frames)} batches streamed bit-exact; host-to-device line busy {100 * busy:.0f}%")
    # Batches of 1 to 3 vectors of a small model: a reply is nearly as long as a request,
    # so the window of two frames leaves gaps; long batches fill the line (bench/bench_link.py).
    assert busy > 0.7, f"the line was busy only {100 * busy:.0f}% of the time while streaming"

    # A full batch (over 255 bytes when the capacity allows: both length bytes matter).
    full = [x[i % n] for i in range(max_batch)]
    ys, _, _ = P.parse_batch(await host.request(P.CMD_BATCH, P.batch_payload(200, full)),
                             200, max_batch, n_out)
    assert ys == [expected[i % n].tolist() for i in range(max_batch)], "full batch"

    again = P.parse_batch(await host.request(P.CMD_BATCH, P.batch_payload(15, batches[-1])),
                          15, sizes[-1], n_out)
    assert again[2], "a batch sent again with the same sequence number was not flagged"
    assert again[0] == [w.tolist() for w in wants[-1]]
    assert _error_code(await host.request(P.CMD_BATCH, bytes(1 + n_in + 1))) == 2
    assert _error_code(await host.request(P.CMD_BATCH, bytes(1 + (max_batch + 1) * n_in))) == 2
    batch_vectors = sum(sizes) + max_batch + sizes[-1]

    bad = bytearray(P.encode_frame(P.CMD_RUN, bytes(n_in)))
    bad[-1] ^= 0x40
    await host.send_bytes(bad)
    assert _error_code(await host.reply()) == 1
    assert _error_code(await host.request(P.CMD_RUN, bytes(n_in + 1))) == 2
    assert _error_code(await host.request(b"Z"[0])) == 3

    await host.send_bytes(P.encode_frame(P.CMD_RUN, bytes(n_in))[:5])     # cut short
    await host.wait_bytes(P.TIMEOUT_BYTES + 2)
    assert host.busy() == 0, "a frame cut short was not dropped after the timeout"
    status = P.parse_status(await host.request(P.CMD_STATUS))
    assert status["flags"] == [P.FLAGS[3]], status
    # The batch one byte too long and the frame with the wrong CRC ran their complete vectors
    # before their end came (their outputs never left).
    assert status["vectors"] == n + batch_vectors + 2, status
    assert status["cycles"] == again[1], status
    assert host.error() == 1

    # A byte whose stop bit is low (a wrong baud rate) is dropped and flagged.
    await host.send_bits([0] + [1] * 8 + [0] + [1] * 2)
    status = P.parse_status(await host.request(P.CMD_STATUS))
    assert status["flags"] == [P.FLAGS[2], P.FLAGS[3]], status


async def check_stream(dut, host, data):
    """Stream ``B`` batches, window of two frames, answered at once: outputs == golden.

    ``data``: ``x``, ``expected``, ``divisor``, ``batch``.  Returns a dict:
    clock ``cycles`` from the first byte sent to the last byte received,
    ``vectors``, ``bytes_sent`` and ``bytes_received``, ``line_busy_cycles``
    (the cycles the host-to-device line carried bytes) and the device cycles
    of every frame (``frame_cycles``).
    """
    x, expected = data["x"].astype(np.int64), data["expected"].astype(np.int64)
    div, batch = int(data["divisor"]), int(data["batch"])
    n, n_out = len(x), expected.shape[1]
    starts = list(range(0, n, batch))
    frames = [P.encode_frame(P.CMD_BATCH, P.batch_payload(k, x[s:s + batch])) for k, s in enumerate(starts)]
    received = len(host.raw)
    t0 = get_sim_time("ns")
    await host.write(b"".join(frames[:2]))       # queued: sent back to back
    frame_cycles = []
    for k, s in enumerate(starts):
        reply = await host.reply(timeout_bytes=1 << 20)
        if k + 2 < len(frames):
            await host.write(frames[k + 2])
        want = expected[s:s + batch]
        ys, cycles, _ = P.parse_batch(reply, k, len(want), n_out)
        for v, (y, w) in enumerate(zip(ys, want)):
            Scoreboard("output", w.tolist(), where=lambda i: f"frame {k} vector {v}: output {i}",
                       terms=lambda i: f"rtl {y}, expected {w.tolist()}").compare(y)
        frame_cycles.append(cycles)
    await host.drain()
    total = (get_sim_time("ns") - t0) / CLOCK_NS
    sent = sum(len(f) for f in frames)
    dut._log.info(f"{n} vectors streamed bit-exact in {total:.0f} cycles")
    return {"cycles": total, "vectors": n, "bytes_sent": sent,
            "bytes_received": len(host.raw) - received, "line_busy_cycles": sent * 10 * div,
            "frame_cycles": frame_cycles}


async def check_uart_line(dut, host, data):
    """The UART line against an independent UART model (a :class:`UartHost`): bit timing, stop bits.

    Identify; every vector through ``R`` (outputs == golden); two ``B``
    frames sent back to back while the first one's reply leaves (both
    directions busy at once); a byte with a low stop bit (dropped, flagged);
    status.  ``data`` as for :func:`check_protocol`.
    """
    x, expected = data["x"].astype(np.int64), data["expected"].astype(np.int64)
    n_out = expected.shape[1]
    ident = P.parse_identify(await host.request(P.CMD_IDENTIFY))
    assert ident["in_size"] == x.shape[1] and ident["out_size"] == n_out, ident
    for v in range(len(x)):
        y, cycles = P.parse_run(await host.request(P.CMD_RUN, (x[v] & 0xFF).astype(np.uint8).tobytes()),
                                n_out)
        assert y == expected[v].tolist() and cycles > 0, f"vector {v}: rtl {y}, expected {expected[v]}"
    frames = [P.encode_frame(P.CMD_BATCH, P.batch_payload(k, x)) for k in (1, 2)]
    await host.send_bytes(frames[0] + frames[1])
    for k in (1, 2):
        ys, _, repeat = P.parse_batch(await host.reply(), k, len(x), n_out)
        assert ys == expected.tolist() and not repeat, f"batch {k}: rtl {ys}"
    await host.send_bits([0] + [1] * 8 + [0] + [1] * 2)
    status = P.parse_status(await host.request(P.CMD_STATUS))
    assert status["flags"] == [P.FLAGS[2]], status
