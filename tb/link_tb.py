"""cocotb side of the link bench (:mod:`sparrow.tb.linkbench`): bytes in chunks, no Python per bit.

:class:`ChunkHost` is the host end of the wrapper's line: it offers the bytes
to send in chunks and takes the bytes received in chunks.  It waits on one
trigger, the wrapper's ``wake`` counter, which moves when a chunk was taken
or published, when sending has finished, when the wrapper fell quiet, or at
the cycle Python set as ``alarm`` (a deadline, or the bridge's poll of its
socket), never per bit or cycle.  It has the interface of
:class:`~sparrow.tb.accel_tb.UartHost`, so the host protocol checks
(:func:`~sparrow.tb.accel_tb.check_protocol`) run on either.

Tests:

* ``link_host_protocol``: :func:`~sparrow.tb.accel_tb.check_protocol`
  (``$ACCEL_TB_DATA``: see :mod:`sparrow.tb.accel_tb`).
* ``link_uart_line``: :func:`~sparrow.tb.accel_tb.check_uart_line`, bit by
  bit with cocotbext-uart on the accelerator's own pins (``rx``, ``tx``), the
  wrapper's host side idle: the independent check of the UART line.
* ``link_bridge``: the simulated board for the real host driver (``sparrow
  run --sim``): listens on a TCP port on 127.0.0.1 (written to the file
  ``$ACCEL_TB_BRIDGE``), moves the bytes of one connection into the line and
  the bytes received back, one connection after the other, until the file
  ``$ACCEL_TB_BRIDGE`` with the suffix ``.stop`` appears.  While the wrapper
  is ``quiet`` (the device idle, nothing on the line) simulated time stands
  still and the bench waits for the host on the socket; otherwise the
  simulation runs and the socket is polled every ``$ACCEL_TB_POLL`` cycles
  (default 4096), and for 2 ms of wall time after each reply (the host's
  next frame usually follows at once).  A host that stalls mid-frame
  therefore sees the device time the frame out, as on a board.  Writes ``$ACCEL_TB_BRIDGE`` with the
  suffix ``.json`` at the end: ``cycles`` simulated, ``run_seconds`` (wall
  time while the simulation ran) and ``wait_seconds`` (waiting for the host),
  ``cpu_seconds`` (processor time of the simulator process, Python
  included: the wall time it would take on an idle machine), ``bytes_in``,
  ``bytes_out``.
* ``link_identify_stream``: the ``I`` reply (the model id and sizes of
  ``$ACCEL_TB_DATA``: ``model_id``, ``layers``, ``clk_hz``, ``max_batch``),
  then ``x`` streamed as ``link_stream`` does, outputs == ``expected``: the
  short check of a model on a shared build (ROMs loaded at run time).
* ``link_stream``: ``B`` batches with a window of two frames, answered at
  once (``$ACCEL_TB_DATA``: ``x``, ``expected``, ``divisor``, ``batch``;
  writes ``$ACCEL_TB_RESULT`` as :mod:`sparrow.tb.accel_tb` did: ``cycles``
  from the first byte sent to the last received, ``vectors``, bytes,
  ``line_busy_cycles``, ``frame_cycles``, and ``seconds``, ``cpu_seconds``
  and ``sim_seconds`` (awaiting the simulator) of the run, ``wakes``).
"""

import json
import os
import select
import socket
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import Timer

from sparrow import protocol as P
from sparrow.tb.accel_tb import UartHost, check_protocol, check_stream, check_uart_line
from sparrow.tb.bench import CLOCK_NS


def _level(signal):
    """A 1-bit signal's value, 0 while it is still X (Icarus, before time 0's updates)."""
    value = signal.value
    return int(value) if value.is_resolvable else 0


class ChunkHost:
    """The host end of the wrapper's line at ``divisor`` cycles per bit, ``chunk`` bytes a chunk.

    ``raw`` keeps every byte received, ``frames`` the decoded reply frames
    not yet taken by :meth:`reply`.
    """

    def __init__(self, dut, divisor, chunk, poll_cycles=1 << 20):
        self.dut = dut
        self.bit_ns = divisor * CLOCK_NS
        self.chunk = chunk
        self.poll_cycles = poll_cycles
        self._event = dut.wake.value_change
        self.pending = bytearray()           # bytes not yet offered to the wrapper
        self.raw = bytearray()
        self.frames = []
        self.bad_frames = 0                 # replies that failed their CRC
        self.decoder = P.FrameDecoder()
        self._req = self._raw_req = self._alarm = 0
        self._seq = int(dut.d2h_seq.value)
        self.wakes = 0
        self.paused = False
        self.sim_seconds = 0.0        # wall time spent in the simulator (awaiting a trigger)

    # -- the wrapper's ports ------------------------------------------------------------
    def _offer(self):
        """Offer the next chunk of :attr:`pending` if the wrapper's slot is free."""
        if self.pending and int(self.dut.h2d_ack.value) == self._req:
            part = bytes(self.pending[:self.chunk])
            del self.pending[:self.chunk]
            self.dut.h2d_data.value = int.from_bytes(part, "little")
            self.dut.h2d_count.value = len(part)
            self._req ^= 1
            self.dut.h2d_req.value = self._req

    def collect(self):
        """Take the chunk the wrapper published since the last call, if any."""
        seq = int(self.dut.d2h_seq.value)
        if seq == self._seq:
            return
        assert seq == (self._seq + 1) & 0xFFFF, f"chunks {self._seq + 1}..{seq - 1} were missed"
        self._seq = seq
        count = int(self.dut.d2h_count.value)
        data = int(self.dut.d2h_data.value).to_bytes(self.chunk, "little")[:count]
        self.raw += data
        for i in range(len(data)):          # byte by byte: a bad frame loses no good one beside it
            try:
                self.frames += self.decoder.feed(data[i:i + 1])
            except P.ProtocolError:
                # a reply the device poisons on purpose (docs/host.md: a host that broke the
                # window); the bridge passes the bytes on as they are, tests see the count
                self.bad_frames += 1
        self.paused = count < self.chunk       # published because the device's output paused

    def _state(self):
        """The wrapper's handshake state, for a failure message."""
        d = self.dut
        return (f"{len(self.pending)} bytes to offer, {len(self.raw)} received "
                f"({self.bad_frames} frames failed their CRC), h2d_req "
                f"{self._req} ack {d.h2d_ack.value}, h2d_idle {d.h2d_idle.value}, quiet "
                f"{d.quiet.value}, busy {d.busy.value}, d2h_seq {d.d2h_seq.value}")

    def busy(self):
        return int(self.dut.busy.value)

    def error(self):
        return int(self.dut.error.value)

    def quiet(self):
        return _level(self.dut.quiet)

    def idle(self):
        """Nothing left to send and the last stop bit has ended."""
        return not self.pending and _level(self.dut.h2d_idle) and self._raw_req == _level(
            self.dut.raw_ack)

    def now(self):
        """Clock cycles since reset."""
        return int(self.dut.cycle.value)

    async def step(self, max_cycles=None):
        """Wait for the wrapper to take or publish a chunk, to finish sending, to fall quiet,
        or for ``poll_cycles`` (or ``max_cycles``) cycles; one trigger (``wake``)."""
        self._offer()
        now = self.now()
        wait = self.poll_cycles if max_cycles is None else max(1, min(self.poll_cycles, max_cycles))
        # Several coroutines may wait at once (one sending, one awaiting a reply): the
        # earliest alarm still ahead stands.
        if not now < self._alarm <= now + 1 + wait:
            self._alarm = now + 1 + wait
            self.dut.alarm.value = self._alarm
        begin = time.perf_counter()
        await self._event
        self.sim_seconds += time.perf_counter() - begin
        self.wakes += 1
        self.collect()
        self._offer()

    # -- the interface of UartHost -----------------------------------------------------
    async def write(self, data):
        """Queue ``data`` to send; it goes out while the host waits (:meth:`step`)."""
        self.pending += data

    async def drain(self):
        """Return after the last stop bit of everything queued."""
        while not self.idle():
            await self.step()

    async def send_bytes(self, data):
        """Send ``data``; returns after the last stop bit."""
        await self.write(data)
        await self.drain()

    async def send_bits(self, bits):
        """Drive the line with raw bit values, one bit time each (for malformed bytes)."""
        while not self.idle():
            await self.step()
        self.dut.raw_bits.value = sum(b << i for i, b in enumerate(bits))
        self.dut.raw_len.value = len(bits)
        self._raw_req ^= 1
        self.dut.raw_req.value = self._raw_req
        while not self.idle():
            await self.step()

    async def wait_bytes(self, n):
        """Let ``n`` byte times pass (sending and receiving meanwhile)."""
        end = self.now() + n * 10 * self.bit_ns // CLOCK_NS
        while (left := end - self.now()) > 0:
            await self.step(left)

    async def reply(self, timeout_bytes=4096):
        """The next reply frame ``(cmd, payload)``; fails if none comes within ``timeout_bytes``."""
        deadline = self.now() + timeout_bytes * 10 * self.bit_ns // CLOCK_NS
        self.collect()
        while not self.frames:
            left = deadline - self.now()
            if left <= 0:
                raise AssertionError(f"no reply frame within {timeout_bytes} byte times ({self._state()})")
            await self.step(left)
        return self.frames.pop(0)

    async def request(self, cmd, payload=b""):
        await self.send_bytes(P.encode_frame(cmd, payload))
        return await self.reply()


async def _start(dut, div, poll_cycles=1 << 20):
    host = ChunkHost(dut, div, len(dut.h2d_data) // 8, poll_cycles)
    await host.wait_bytes(1)          # out of reset, the line idle
    return host


@cocotb.test()
async def link_host_protocol(dut):
    """Identify, runs bit-exact with the golden model, and every error path of the protocol."""
    data = np.load(os.environ["ACCEL_TB_DATA"])
    host = await _start(dut, int(data["divisor"]))
    await check_protocol(dut, host, data)
    assert not int(dut.host_frame_error.value), "a byte from the device had a low stop bit"


@cocotb.test()
async def link_uart_line(dut):
    """The accelerator's pins bit by bit with cocotbext-uart (:func:`.accel_tb.check_uart_line`)."""
    data = np.load(os.environ["ACCEL_TB_DATA"])
    div = int(data["divisor"])
    await Timer(2 * 10 * div * CLOCK_NS, unit="ns")      # out of reset, the line idle
    await check_uart_line(dut, UartHost(dut, div), data)


@cocotb.test()
async def link_identify_stream(dut):
    """The identify reply names this model; its vectors streamed are bit-exact with the golden model."""
    data = np.load(os.environ["ACCEL_TB_DATA"])
    host = await _start(dut, int(data["divisor"]))
    ident = P.parse_identify(await host.request(P.CMD_IDENTIFY))
    want = {"version": P.VERSION, "in_size": data["x"].shape[1], "out_size": data["expected"].shape[1],
            "layers": int(data["layers"]), "model_id": int(data["model_id"]),
            "clk_hz": int(data["clk_hz"]), "max_batch": int(data["max_batch"])}
    assert ident == want, f"identify: got {ident}, expected {want}"
    await check_stream(dut, host, data)
    assert not int(dut.host_frame_error.value), "a byte from the device had a low stop bit"


@cocotb.test()
async def link_stream(dut):
    """Stream ``B`` batches, window of two frames, answered at once: outputs == golden, timing."""
    data = np.load(os.environ["ACCEL_TB_DATA"])
    host = await _start(dut, int(data["divisor"]))
    begin, cpu = time.perf_counter(), time.process_time()
    result = await check_stream(dut, host, data)
    result["seconds"] = time.perf_counter() - begin
    result["cpu_seconds"] = time.process_time() - cpu
    result["sim_seconds"] = host.sim_seconds
    result["wakes"] = host.wakes
    assert not int(dut.host_frame_error.value), "a byte from the device had a low stop bit"
    Path(os.environ["ACCEL_TB_RESULT"]).write_text(json.dumps(result))


class _Clock:
    """Wall time split into running the simulation and waiting for the host."""

    def __init__(self):
        self.run = self.wait = 0.0
        self._mark = time.perf_counter()

    def lap(self, waiting):
        now = time.perf_counter()
        if waiting:
            self.wait += now - self._mark
        else:
            self.run += now - self._mark
        self._mark = now


@cocotb.test()
async def link_bridge(dut):
    """The simulated board on a TCP port: bytes in go to the line, bytes received go back."""
    div = int(os.environ["ACCEL_TB_DIVISOR"])
    accept_s = float(os.environ.get("ACCEL_TB_ACCEPT_S", "120"))
    host = await _start(dut, div, int(os.environ.get("ACCEL_TB_POLL", "4096")))
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port_file = Path(os.environ["ACCEL_TB_BRIDGE"])
    stop_file = port_file.with_suffix(".stop")
    port_file.with_suffix(".tmp").write_text(str(server.getsockname()[1]))
    port_file.with_suffix(".tmp").replace(port_file)
    conn, deadline, sent, served, bytes_in = None, time.monotonic() + accept_s, 0, 0, 0
    start, clock, cpu = host.now(), _Clock(), time.process_time()
    while True:
        host.collect()
        answer = 0.0
        if conn is not None and len(host.raw) > sent:
            conn.sendall(bytes(host.raw[sent:]))
            sent = len(host.raw)
            # The host usually answers a reply with its next frame at once: after the device's
            # output pauses (a reply ended), wait a moment with simulated time standing still
            # rather than simulate the line idle meanwhile.
            answer = 0.002 if host.paused else 0.0
        quiet = host.quiet() and not host.pending
        if conn is None:
            if not quiet:
                await host.step()
                continue
            clock.lap(False)
            if stop_file.exists():
                break
            ready, _, _ = select.select([server], [], [], 0.05)
            clock.lap(True)
            if ready:
                conn, _ = server.accept()
                sent = len(host.raw)
            else:
                assert served or time.monotonic() < deadline, f"no host connected within {accept_s:g} s"
            continue
        # Nothing happens until the host sends while quiet: let simulated time stand still.
        clock.lap(False)
        ready, _, _ = select.select([conn], [], [], 0.05 if quiet else answer)
        clock.lap(bool(quiet or answer))
        if ready:
            try:
                data = conn.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if data:
                await host.write(data)
                bytes_in += len(data)
            else:                    # the host closed the link
                conn.close()
                conn, served = None, served + 1
        elif not quiet:
            await host.step()
    server.close()
    clock.lap(False)
    cycles = host.now() - start
    port_file.with_suffix(".json").write_text(json.dumps({
        "cycles": cycles, "run_seconds": clock.run, "wait_seconds": clock.wait,
        "cpu_seconds": time.process_time() - cpu,
        "bytes_in": bytes_in, "bytes_out": len(host.raw), "wakes": host.wakes}))
    dut._log.info(f"{cycles} cycles in {clock.run:.2f} s running ({cycles / max(clock.run, 1e-9):.0f} "
                  f"cycles/s), {clock.wait:.2f} s waiting for the host")
