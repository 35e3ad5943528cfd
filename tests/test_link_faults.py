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
    receives, as the accelerator does when a frame finds its reply place taken.  Replies
    are read back as :class:`Loopback` reads what was written."""

    def __init__(self, out_size, drop):
        from sparrow import protocol as P
        super().__init__()
        self.P, self.out_size, self.drop = P, out_size, drop
        self.decoder, self.received = P.FrameDecoder(), 0

    def write(self, data):
        import struct
        P = self.P
        for cmd, payload in self.decoder.feed(bytes(data)):
            self.received += 1
            if self.received == self.drop:
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
