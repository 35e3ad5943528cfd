"""The host link's framing units (:mod:`sparrow.hw.framer`) against :mod:`sparrow.protocol`.

The receiver and sender keep their frame bookkeeping in registers computed a
cycle ahead (issue 14: the length checks and the CRC step off the critical
path); these benches drive them at their limits (a byte every cycle, lengths
0, 1, 2 and over 255, bytes stalled at random), which the link benches, at
one byte per UART frame, never do.
"""

import random
import struct

from sparrow import protocol as P


def _frame(cmd, payload):
    body = bytes([cmd]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([P.SYNC]) + body + struct.pack("<H", P.crc16(body))


def _payload_byte(i):
    return (7 * i + 3) & 0xFF


def _sender_bench():
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from sparrow.hw.framer import FrameSender

    class Bench(wiring.Component):
        """The sender, its payload byte `index` a function of the index (valid always)."""

        def __init__(self):
            self.sender = FrameSender(400)
            super().__init__({})

        def elaborate(self, platform):
            m = Module()
            m.submodules.sender = snd = self.sender
            m.d.comb += [snd.data.valid.eq(1), snd.data.payload.eq(snd.index * 7 + 3)]
            return m

    return Bench()


def _send(length, cmd=0x52, stall=0.0, poison_at=None, seed=0):
    """The bytes the sender emits for one frame of ``length`` bytes; the UART stalls with
    probability ``stall`` each cycle; ``poison`` is raised for one cycle at ``poison_at``."""
    from amaranth.sim import Simulator
    dut = _sender_bench()
    snd = dut.sender
    rng = random.Random(seed)
    out = []

    async def bench(ctx):
        ctx.set(snd.start, 1)
        ctx.set(snd.cmd, cmd)
        ctx.set(snd.length, length)
        await ctx.tick()
        ctx.set(snd.start, 0)
        for cycle in range(20 * (length + 8) + 100):
            ready = rng.random() >= stall
            ctx.set(snd.tx.ready, ready)
            ctx.set(snd.poison, cycle == poison_at)
            if ready and ctx.get(snd.tx.valid):
                out.append(ctx.get(snd.tx.payload))
            if not ctx.get(snd.busy):
                return
            await ctx.tick()
        raise AssertionError(f"the sender of a {length}-byte frame did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(out)


def test_sender_frames_every_length_with_the_uart_always_ready():
    for length in (0, 1, 2, 3, 17, 300):
        payload = bytes(_payload_byte(i) for i in range(length))
        assert _send(length) == _frame(0x52, payload), length


def test_sender_frames_with_a_stalling_uart():
    for seed, length in enumerate((0, 1, 2, 5, 40)):
        payload = bytes(_payload_byte(i) for i in range(length))
        assert _send(length, cmd=0x42, stall=0.6, seed=seed) == _frame(0x42, payload), length


def test_sender_poison_complements_the_crc():
    payload = bytes(_payload_byte(i) for i in range(6))
    good = _frame(0x52, payload)
    sent = _send(6, poison_at=8)
    assert sent[:-2] == good[:-2]
    assert struct.unpack("<H", sent[-2:])[0] == struct.unpack("<H", good[-2:])[0] ^ 0xFFFF


def _receive(data, gaps=(0,), timeout=50, seed=0, pause=0):
    """Feed ``data`` (bytes, or a list of bytes with ``pause`` idle cycles after each) to a
    receiver, ``gaps`` idle cycles (chosen at random) after each byte; returns its events:
    ("start", cmd, length), ("byte", first, last, byte), ("frame", crc_ok)."""
    from amaranth.sim import Simulator
    from sparrow.hw.framer import FrameReceiver
    dut = FrameReceiver(timeout)
    rng = random.Random(seed)
    events = []

    def watch(ctx):
        if ctx.get(dut.start):
            events.append(("start", ctx.get(dut.cmd), ctx.get(dut.length)))
        if ctx.get(dut.payload.valid):
            p = ctx.get(dut.payload.payload)
            events.append(("byte", p.first, p.last, p.byte))
        if ctx.get(dut.frame_valid):
            events.append(("frame", ctx.get(dut.crc_ok)))

    async def bench(ctx):
        for chunk in [data] if isinstance(data, bytes) else data:
            for b in chunk:
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                watch(ctx)
                await ctx.tick()
                ctx.set(dut.rx.valid, 0)
                for _ in range(rng.choice(gaps)):
                    watch(ctx)
                    await ctx.tick()
            for _ in range(pause):
                watch(ctx)
                await ctx.tick()
        for _ in range(timeout + 10):
            watch(ctx)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return events


def _expected(cmd, payload, crc_ok=True):
    n = len(payload)
    return ([("start", cmd, n)] + [("byte", int(i == 0), int(i == n - 1), b) for i, b in enumerate(payload)]
            + [("frame", int(crc_ok))])


def test_receiver_parses_back_to_back_frames_of_every_length():
    frames = [(0x52, bytes(range(n))) for n in (0, 1, 2, 3, 9)] + [(0x42, bytes(i & 0xFF for i in range(300)))]
    # (the receiver looks for the next SYNC a cycle after a frame's last byte)
    for gaps in ((0,), (0, 1, 3)):
        data = [b"\x00\x13"] + [_frame(c, p) for c, p in frames]
        expected = [e for c, p in frames for e in _expected(c, p)]
        assert _receive(data, gaps, pause=1) == expected, gaps


def test_receiver_reports_a_bad_crc_and_abandons_a_stopped_frame():
    bad = bytearray(_frame(0x52, b"\x01\x02"))
    bad[-1] ^= 0x40
    cut = _frame(0x52, b"\x05\x06\x07")[:5]        # stops inside its payload
    good = _frame(0x49, b"")
    assert _receive(bytes(bad), timeout=20) == _expected(0x52, b"\x01\x02", crc_ok=False)
    # A frame cut short is abandoned after `timeout` idle cycles; the next one parses.
    events = _receive([cut, good], timeout=20, pause=21)
    assert events == [("start", 0x52, 3), ("byte", 1, 0, 5)] + _expected(0x49, b"")
    # One idle cycle short of the timeout, the next frame's bytes are still this one's.
    events = _receive([cut, good], timeout=20, pause=19)
    assert ("start", 0x49, 0) not in events
