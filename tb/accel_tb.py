"""cocotb bench for the whole-model accelerator (:class:`~sparrow.hw.accel.Accelerator`).

The bench is the host: a UART driver sends frames built by the host driver's
own protocol module (:mod:`sparrow.protocol`) bit by bit on ``rx``, a
UART monitor samples ``tx`` in the middle of each bit and decodes the reply
frames with the same module, and a scoreboard compares every run's outputs
with the integer golden model's.  ``$ACCEL_TB_DATA`` (``.npz``) holds
``x`` int8 [N, in], ``expected`` int8 [N, out], ``divisor``, ``model_id``,
``layers``, ``clk_hz``.

Checks, in order: identify; every vector (outputs == golden, cycles > 0);
a frame with a wrong CRC (``E`` 1) and the next frame still answered; a run
frame of the wrong length (``E`` 2); an unknown command (``E`` 3); a frame
cut short (dropped after the timeout, the next frame answered); status
(flags name the CRC failure, vectors counted, cycles of the last run); a
byte with a low stop bit (flagged as a framing error).

A second test, ``accelerator_bridge``, makes the simulated board reachable
by the real host driver: it listens on a TCP port on 127.0.0.1 (written to
the file ``$ACCEL_TB_BRIDGE``), and moves the bytes of one connection to
``rx`` and the bytes seen on ``tx`` back; one connection after the other,
until the file ``$ACCEL_TB_BRIDGE`` with the suffix ``.stop`` appears.
``sparrow run --sim`` connects to it through pyserial's ``socket://`` URL.
"""

import os
import socket
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from sparrow import protocol as P


class UartHost:
    """Drive ``rx`` and decode ``tx`` of the design at ``divisor`` clock cycles per bit."""

    def __init__(self, dut, divisor):
        self.dut, self.div = dut, divisor
        self.decoder = P.FrameDecoder()
        self.frames = []
        self.raw = bytearray()            # every byte seen on tx, for the bridge
        cocotb.start_soon(self._monitor())

    async def send_bytes(self, data):
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.div)

    async def _monitor(self):
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            await ClockCycles(self.dut.clk, self.div // 2)
            if int(tx.value) != 0:
                continue                       # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.div)
                byte |= int(tx.value) << i
            await ClockCycles(self.dut.clk, self.div)
            assert int(tx.value) == 1, "stop bit of a reply byte is low"
            self.raw.append(byte)
            self.frames += self.decoder.feed(bytes([byte]))

    async def reply(self, timeout_bytes=4096):
        """The next reply frame ``(cmd, payload)``; fails if none comes within ``timeout_bytes``."""
        for _ in range(timeout_bytes):
            if self.frames:
                return self.frames.pop(0)
            await ClockCycles(self.dut.clk, 10 * self.div)
        raise AssertionError(f"no reply frame within {timeout_bytes} byte times")

    async def request(self, cmd, payload=b""):
        await self.send_bytes(P.encode_frame(cmd, payload))
        return await self.reply()


def _error_code(frame):
    cmd, payload = frame
    assert cmd == P.CMD_ERROR and len(payload) == 1, f"expected an E reply, got {frame!r}"
    return payload[0]


async def _start(dut, div):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2 * div)
    return UartHost(dut, div)


@cocotb.test()
async def accelerator_host_protocol(dut):
    data = np.load(os.environ["ACCEL_TB_DATA"])
    x, expected = data["x"].astype(np.int64), data["expected"].astype(np.int64)
    div = int(data["divisor"])
    n, n_in = x.shape
    n_out = expected.shape[1]
    host = await _start(dut, div)

    ident = P.parse_identify(await host.request(P.CMD_IDENTIFY))
    assert ident == {"version": P.VERSION, "in_size": n_in, "out_size": n_out,
                     "layers": int(data["layers"]), "model_id": int(data["model_id"]),
                     "clk_hz": int(data["clk_hz"])}, ident

    last = None
    for v in range(n):
        frame = await host.request(P.CMD_RUN, (x[v] & 0xFF).astype(np.uint8).tobytes())
        y, cycles = P.parse_run(frame, n_out)
        if list(y) != expected[v].tolist():
            row = next(r for r in range(n_out) if y[r] != expected[v, r])
            raise AssertionError(f"vector {v}: output {row}: rtl {y[row]} expected "
                                 f"{expected[v, row]} (rtl {y}, expected {expected[v].tolist()})")
        assert cycles > 0
        last = cycles
    dut._log.info(f"{n} vectors bit-exact with the golden model; last run {last} cycles")

    bad = bytearray(P.encode_frame(P.CMD_RUN, bytes(n_in)))
    bad[-1] ^= 0x40
    await host.send_bytes(bad)
    assert _error_code(await host.reply()) == 1
    assert _error_code(await host.request(P.CMD_RUN, bytes(n_in + 1))) == 2
    assert _error_code(await host.request(b"Z"[0])) == 3

    await host.send_bytes(P.encode_frame(P.CMD_RUN, bytes(n_in))[:5])     # cut short
    await ClockCycles(dut.clk, (P.TIMEOUT_BYTES + 2) * 10 * div)
    assert int(dut.busy.value) == 0, "a frame cut short was not dropped after the timeout"
    status = P.parse_status(await host.request(P.CMD_STATUS))
    assert status["flags"] == [P.FLAGS[3]], status
    assert status["vectors"] == n and status["cycles"] == last, status
    assert int(dut.error.value) == 1

    # A byte whose stop bit is low (a wrong baud rate) is dropped and flagged.
    for bit in [0] + [1] * 8 + [0]:
        dut.rx.value = bit
        await ClockCycles(dut.clk, div)
    dut.rx.value = 1
    await ClockCycles(dut.clk, 2 * div)
    status = P.parse_status(await host.request(P.CMD_STATUS))
    assert status["flags"] == [P.FLAGS[2], P.FLAGS[3]], status


@cocotb.test()
async def accelerator_bridge(dut):
    div = int(os.environ["ACCEL_TB_DIVISOR"])
    accept_s = float(os.environ.get("ACCEL_TB_ACCEPT_S", "120"))
    host = await _start(dut, div)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port_file = Path(os.environ["ACCEL_TB_BRIDGE"])
    stop_file = port_file.with_suffix(".stop")
    port_file.with_suffix(".tmp").write_text(str(server.getsockname()[1]))
    port_file.with_suffix(".tmp").replace(port_file)
    conn, deadline, sent, served = None, time.monotonic() + accept_s, 0, 0
    while True:
        if conn is None:
            if stop_file.exists():
                break
            try:
                conn, _ = server.accept()
                conn.setblocking(False)
                sent = len(host.raw)
            except BlockingIOError:
                assert served or time.monotonic() < deadline, \
                    f"no host connected within {accept_s:g} s"
        else:
            closed = False
            try:
                data = conn.recv(4096)
                if data:
                    await host.send_bytes(data)
                else:
                    closed = True                  # the host closed the link
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            if closed:
                conn.close()
                conn, served = None, served + 1
            elif len(host.raw) > sent:
                conn.sendall(bytes(host.raw[sent:]))
                sent = len(host.raw)
        await ClockCycles(dut.clk, 10 * div)
    server.close()
