"""The host link under faults: dropped, corrupted, duplicated and inserted bytes, host stalls.

The driver streams batches to the accelerator's RTL (Verilator, in the link
bench: no Python per bit) through
:class:`~sparrow.fpga.host.FaultyLink`; every output must equal the integer
golden model, or the driver must stop with one line, in bounded time.  The
long version (>= 1000 frames) is ``bench/bench_link.py --faults``.
"""

import time

import numpy as np
import pytest

from sparrow import SparrowError
from sparrow.fpga.host import FaultyLink, LinkStats, run_model_on_board
from sparrow.hw.engine import EngineConfig
from sparrow.sw.golden import run_model
from test_host import two_layer_model
from clirun import sparrow


class Loopback:
    """A link that returns what was written (to test the injector alone)."""

    def __init__(self):
        self.buf = bytearray()

    def write(self, data):
        self.buf += data

    def read(self, n):
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def reset_input_buffer(self):
        self.buf.clear()


def test_fault_injector_kinds_and_rate():
    link = FaultyLink(Loopback(), 0.05, seed=3, stall_s=0)
    data = bytes(range(256)) * 40
    link.write(data)
    got = link.read(len(data) * 2)
    assert got != data
    n = sum(link.faults.values())
    # two passes over 10240 bytes at 5%: ~1024 faults
    assert 800 < n < 1250, link.faults
    assert set(link.faults) == set(FaultyLink.KINDS), link.faults
    clean = FaultyLink(Loopback(), 0.0)
    clean.write(data)
    assert clean.read(len(data)) == data and not clean.faults
    with pytest.raises(SparrowError, match="--fault-rate must be between 0 and 1, not 2"):
        FaultyLink(Loopback(), 2)


def test_streaming_under_faults_equals_golden():
    model = two_layer_model(1)
    x = np.random.default_rng(5).integers(-128, 128, size=(240, 12)).astype(np.int8)
    stats = LinkStats()
    start = time.monotonic()
    y, cycles, seconds, ident = run_model_on_board(
        model, x, sim="verilator", config=EngineConfig(pes=4), batch=1, fault_rate=0.004,
        fault_seed=7, retries=6, stats=stats)
    elapsed = time.monotonic() - start
    np.testing.assert_array_equal(y, run_model(model, x))       # zero silent corruptions
    assert ident["version"] == 2 and stats.batches == 240
    assert sum(stats.faults.values()) >= 10 and stats.recoveries >= 5, (stats.as_dict())
    assert stats.frames_sent > stats.batches
    assert all(c > 0 for c in cycles)
    print(f"240 frames, {sum(stats.faults.values())} faults {stats.faults}, "
          f"{stats.recoveries} recoveries, {stats.repeats} repeats, {elapsed:.0f} s")


def test_a_dead_link_stops_with_one_line(tmp_path):
    from sparrow.modeldir import save_model
    save_model(two_layer_model(1), tmp_path / "m")
    np.save(tmp_path / "x.npy", np.zeros((20, 12), dtype=np.int8))
    start = time.monotonic()
    r = sparrow("run", str(tmp_path / "m"), "--sim", "verilator", "--pes", "4", "--inputs",
                str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), "--fault-rate", "0.6",
                "--retries", "2")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("sparrow run: error: batch ") and "no valid reply after 3 tries" in line
    assert not (tmp_path / "y.npy").exists()
    assert time.monotonic() - start < 600


class InOrderDevice(Loopback):
    """A scripted ``B``-frame device: answers frames in order (outputs = the input's first
    ``out`` bytes negated), except that it drops the reply to the ``drop``-th data frame it
    receives, as the accelerator does when a frame finds its reply place taken, and refuses
    (``E`` 4, overrun) the data frames whose numbers are in ``refuse``.  Replies are read
    back as :class:`Loopback` reads what was written."""

    def __init__(self, out_size, drop, refuse=()):
        from sparrow import protocol as P
        super().__init__()
        self.P, self.out_size, self.drop, self.refuse = P, out_size, drop, set(refuse)
        self.decoder, self.received = P.FrameDecoder(), 0

    def write(self, data):
        import struct
        P = self.P
        for cmd, payload in self.decoder.feed(bytes(data)):
            self.received += 1
            if self.received == self.drop:
                continue
            if self.received in self.refuse:
                self.buf += P.encode_frame(P.CMD_ERROR, b"\x04")
                continue
            seq, x = payload[0], np.frombuffer(payload[1:], dtype=np.int8)
            y = (-x[:self.out_size].astype(np.int16)).clip(-128, 127).astype(np.int8)
            self.buf += P.encode_frame(P.CMD_BATCH, bytes([seq, 0]) + y.tobytes() +
                                       struct.pack("<I", 100))


def test_a_lost_reply_is_resent_before_sequence_numbers_wrap():
    """Reply 8 of 300 one-vector frames is lost: the driver sees reply 9 come first (the device
    answers in order), resends 8 at once, and frame 264 (sequence number 8 again) can never
    be matched to frame 8: every output is right."""
    from sparrow.fpga.host import Device
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, size=(300, 6)).astype(np.int8)
    dev = Device(link=InOrderDevice(3, drop=9), timeout=5.0)
    stats = LinkStats()
    start = time.monotonic()
    y, cycles = dev.stream(x, 3, 1, window=2, pause=0.01, stats=stats)
    assert (y == -x[:, :3]).all()
    assert stats.recoveries == 1 and stats.frames_sent == 301   # frame 8 again
    assert time.monotonic() - start < 5.0          # found by order, not by the timeout


def test_a_refused_frame_is_sent_again():
    """The device refuses data frames 5 and 9 (``E`` 4, overrun): the driver keeps the
    replies that came meanwhile, sends each refused frame again, and every output is right."""
    from sparrow.fpga.host import Device
    x = np.random.default_rng(4).integers(-127, 128, size=(30, 6)).astype(np.int8)
    dev = Device(link=InOrderDevice(3, drop=None, refuse={5, 9}), timeout=5.0)
    stats = LinkStats()
    y, cycles = dev.stream(x, 3, 1, window=2, pause=0.01, stats=stats)
    assert (y == -x[:, :3]).all() and all(c == 100 for c in cycles)
    assert stats.errors == 2 and stats.recoveries == 2, stats.as_dict()
    assert stats.frames_sent == 30 + 2, stats.as_dict()


def _slow_model():
    """Two dense layers of one MAC lane: 128 cycles a vector against 80 on the simulated
    link (2 bytes of 40 cycles), so vectors sent back to back overrun the input slots."""
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(21)
    return random_model([random_layer("dense_linear", rng, name="fc1", in_=2, out=64, relu=True),
                         random_layer("dense_linear", rng, name="fc2", in_=64, out=2)], [2],
                        name="slow")


def test_a_host_ignoring_the_window_gets_refusals_never_wrong_outputs():
    """Issue 14 on the accelerator's RTL: a host sends eight batches of eight vectors back to
    back, far faster than the engines run them, then streams properly.  Every reply it
    could accept (valid CRC, a batch's number and length) carries that batch's golden
    outputs, the rest are refusals (``E`` 4: a vector found both input slots taken), and
    the device is not wedged: the driver then streams every vector bit-exact.  (The burst
    leaves no reply to be poisoned: the link bench's host end stops at a reply whose CRC
    fails; the Amaranth-simulated link of test_link_overrun.py checks those too.)"""
    from sparrow import protocol as P
    from sparrow.fpga.host import Device, SimulatedBoard
    model = _slow_model()
    rng = np.random.default_rng(8)
    burst = [rng.integers(-128, 128, size=(8, 2)).astype(np.int8) for _ in range(8)]
    x = rng.integers(-128, 128, size=(24, 2)).astype(np.int8)
    board = SimulatedBoard(model, "verilator", EngineConfig(dense_lanes=1), max_batch=8)
    try:
        dev = Device(board.wait_port(), timeout=30.0)
        dev.link.write(b"".join(P.encode_frame(P.CMD_BATCH, P.batch_payload(100 + k, b))
                                for k, b in enumerate(burst)))
        raw, quiet_until = bytearray(), time.monotonic() + 20
        while time.monotonic() < quiet_until:
            data = dev.link.read(4096)
            if data:
                raw += data
                quiet_until = time.monotonic() + 3
        accepted, errors, k = [], 0, 0
        while (k := raw.find(bytes([P.SYNC]), k)) >= 0 and k + 6 <= len(raw):
            # every frame in the bytes; a corrupted one (the device poisons a reply whose
            # outputs were overwritten) is skipped from its sync byte on
            n = int.from_bytes(raw[k + 2:k + 4], "little")
            body, crc = bytes(raw[k + 1:k + 4 + n]), int.from_bytes(raw[k + 4 + n:k + 6 + n], "little")
            if len(body) != 3 + n or crc != P.crc16(body):
                k += 1
                continue
            k += 6 + n
            cmd, payload = body[0], body[3:]
            errors += cmd == P.CMD_ERROR
            if cmd == P.CMD_BATCH and 100 <= payload[0] < 108 and \
                    len(payload) == 2 + len(burst[payload[0] - 100]) * 2 + 4:
                want = run_model(model, burst[payload[0] - 100]).astype(np.int8)
                got = np.frombuffer(payload[2:-4], dtype=np.int8).reshape(want.shape)
                np.testing.assert_array_equal(got, want, err_msg=f"batch {payload[0]}")
                accepted.append(payload[0])
        assert errors >= 4, (accepted, raw.hex())       # the burst did overrun the device
        stats = LinkStats()
        y, _ = dev.stream(x, 2, 4, window=2, stats=stats)
        np.testing.assert_array_equal(y, run_model(model, x))
        dev.close()
    finally:
        board.close()
    print(f"burst: {len(accepted)} of 8 batches answered, {errors} refusals; then "
          f"{stats.frames_sent} frames, {stats.recoveries} recoveries")
