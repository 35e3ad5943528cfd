"""A misbehaving host against the device's link logic: frames that overrun the input slots (issue 14).

The frame receiver, command sequencer and frame sender of the accelerator
(:mod:`sparrow.hw.framer`, :class:`sparrow.hw.accel.CommandSequencer`) run in
Amaranth's simulator; the bench is the host (one byte every
:data:`BYTE_CYCLES` cycles each way, as a UART) and the engine chain (a
Python model whose input the bench can hold back, so that vectors wait in
their slots as behind a slow engine).  Two properties:

* no byte sequence wedges the device: after any burst, a well-formed frame
  sent to the quiet device is answered, right;
* a reply the host would accept (valid CRC, ``B``, its sequence number and
  length) always carries that frame's outputs.
"""

import struct

import numpy as np
import pytest

from sparrow import protocol as P

N_IN, N_OUT, MAX_BATCH = 4, 2, 4
#: Cycles per byte on the simulated line, both ways.
BYTE_CYCLES = 10


def chain_model(x):
    """The bench's engine chain: two outputs per vector of four (uint8 arithmetic)."""
    x = [int(v) & 0xFF for v in x]
    return [(x[0] + x[1]) & 0xFF, (x[2] - x[3] + 3 * x[0]) & 0xFF]


def _link_core():
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from sparrow.hw.accel import CommandSequencer
    from sparrow.hw.framer import FrameReceiver, FrameSender

    class LinkCore(wiring.Component):
        """Receiver -> sequencer -> sender, as in :class:`~sparrow.hw.accel.Accelerator`; the
        chain's ports are the bench's."""

        def __init__(self):
            self.receiver = FrameReceiver(P.TIMEOUT_BYTES * BYTE_CYCLES)
            ident = P.identify_payload(N_IN, N_OUT, 1, 0x1234, 1e6, MAX_BATCH)
            self.sequencer = CommandSequencer(N_IN, N_OUT, ident, MAX_BATCH, depth=4)
            self.sender = FrameSender(self.sequencer.max_reply)
            super().__init__({})

        def elaborate(self, platform):
            m = Module()
            rcv, seq, snd = self.receiver, self.sequencer, self.sender
            m.submodules += [rcv, seq, snd]
            wiring.connect(m, rcv.payload, seq.payload)
            wiring.connect(m, seq.send_data, snd.data)
            m.d.comb += [
                seq.cmd.eq(rcv.cmd), seq.length.eq(rcv.length), seq.start.eq(rcv.start),
                seq.frame_valid.eq(rcv.frame_valid), seq.crc_ok.eq(rcv.crc_ok),
                snd.start.eq(seq.send), snd.cmd.eq(seq.send_cmd), snd.length.eq(seq.send_length),
                snd.poison.eq(seq.send_poison), seq.send_index.eq(snd.index),
                seq.send_busy.eq(snd.busy),
            ]
            return m

    return LinkCore()


def _split(raw):
    """Reply frames in ``raw`` bytes: ``(cmd, payload, crc_ok)`` each, as a host resyncs on SYNC."""
    frames, i = [], 0
    while (i := raw.find(bytes([P.SYNC]), i)) >= 0 and len(raw) >= i + 6:
        n = struct.unpack_from("<H", raw, i + 2)[0]
        if len(raw) < i + 6 + n:            # not a frame's start (a sync value inside one)
            i += 1
            continue
        body = bytes(raw[i + 1:i + 4 + n])
        crc_ok = struct.unpack_from("<H", raw, i + 4 + n)[0] == P.crc16(body)
        frames.append((body[0], body[3:], crc_ok))
        i += 6 + n if crc_ok else 1
    return frames


def simulate(script, max_cycles):
    """Run the link core under ``script``; returns the raw reply bytes.

    ``script`` is a list of steps: ``("send", bytes)`` (queued on the line at once),
    ``("hold", bool)`` (the chain stops or resumes taking inputs), ``("wait", cycles)``,
    ``("quiet",)`` (until nothing is received, sent or run for 80 byte times) or
    ``("replies", n)`` (until ``n`` reply frames have come in all).  A step that does not
    finish by ``max_cycles`` ends the run.
    """
    from amaranth.sim import Simulator
    dut = _link_core()
    rcv, seq, snd = dut.receiver, dut.sequencer, dut.sender
    raw = bytearray()

    async def bench(ctx):
        line = bytearray()                       # bytes queued for the device
        rx_wait = tx_wait = 0
        hold = False
        vector, outputs = [], []                 # the chain: taking a vector, then emitting
        last_activity = 0
        for step in script + [("end",)]:
            kind = step[0]
            if kind == "send":
                line += step[1]
                continue
            if kind == "hold":
                hold = step[1]
                continue
            if kind == "end":
                return
            begin = cycle = bench.cycle
            while True:
                if kind == "wait" and cycle - begin >= step[1]:
                    break
                if kind == "quiet" and cycle - last_activity > 80 * BYTE_CYCLES and not line:
                    break
                if kind == "replies" and len(_split(raw)) >= step[1]:
                    break
                if cycle >= max_cycles:
                    return
                # the line to the device: one byte every BYTE_CYCLES
                send = bool(line) and rx_wait == 0
                ctx.set(rcv.rx.valid, send)
                ctx.set(rcv.rx.payload, line[0] if send else 0)
                if send:
                    del line[0]
                    rx_wait = BYTE_CYCLES - 1
                elif rx_wait:
                    rx_wait -= 1
                # the chain: takes a vector's elements, then emits its outputs one a cycle
                taking = not hold and not outputs
                ctx.set(seq.chain_in.ready, taking)
                if outputs:
                    ctx.set(seq.chain_out.valid, 1)
                    ctx.set(seq.chain_out.payload, outputs.pop(0))
                else:
                    ctx.set(seq.chain_out.valid, 0)
                if taking and ctx.get(seq.chain_in.valid):
                    vector.append(ctx.get(seq.chain_in.payload))
                    if len(vector) == N_IN:
                        outputs, vector = chain_model(vector), []
                # the line from the device
                ctx.set(snd.tx.ready, tx_wait == 0)
                if tx_wait:
                    tx_wait -= 1
                elif ctx.get(snd.tx.valid):
                    raw.append(ctx.get(snd.tx.payload))
                    tx_wait = BYTE_CYCLES - 1
                if send or ctx.get(seq.busy) or ctx.get(snd.busy) or ctx.get(rcv.busy) or outputs:
                    last_activity = cycle
                await ctx.tick()
                cycle = bench.cycle = cycle + 1

    bench.cycle = 0
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(raw)


def batch_frame(seq, vectors):
    return P.encode_frame(P.CMD_BATCH, P.batch_payload(seq, vectors))


def _describe(frames):
    return [(chr(c), p.hex(), ok) for c, p, ok in frames]


def test_overwriting_a_pending_frames_last_vector_does_not_wedge_the_device():
    """Frame 1 (two vectors) is pending, its last vector waiting in slot 1 behind its first,
    which the chain has not finished taking, when frame 2 arrives: its vectors find both
    slots taken.  Frame 2 is refused (``E`` 4) and its vectors are dropped; frame 1 completes
    with its own outputs, and a frame sent afterwards is answered.  (Before the fix frame 2
    overwrote the slot and its (frame, vector) record, frame 1 never completed and every
    later data frame was dropped: no reply.)"""
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(-128, 128, size=(2, N_IN)) for _ in range(3))
    script = [("hold", True), ("send", batch_frame(1, a) + batch_frame(2, b)),
              ("wait", 40 * BYTE_CYCLES), ("hold", False), ("quiet",),
              ("send", batch_frame(3, c)), ("replies", 3), ("quiet",)]
    frames = _split(simulate(script, max_cycles=20_000))
    got = [(chr(cmd), p, ok) for cmd, p, ok in frames]
    assert ("B", 3) in [(cmd, p[0]) for cmd, p, _ in got], \
        f"the device is wedged: no reply to a well-formed frame after the overrun ({_describe(frames)})"
    outputs = {k: b"".join(bytes(chain_model(v)) for v in x) for k, x in ((1, a), (3, c))}
    # frame 2 is judged first (its reply queued at its CRC), frame 1 completes after it
    want = [("E", b"\x04", True), ("B", bytes([1, 0]) + outputs[1], True),
            ("B", bytes([3, 0]) + outputs[3], True)]
    assert [(cmd, p if cmd == "E" else p[:-4], ok) for cmd, p, ok in got] == want, _describe(frames)


def test_a_vector_left_from_eight_frames_before_is_not_taken_for_the_new_frames():
    """The device tells frames apart by a 3-bit tag.  Frame 0's vector (its CRC wrong, so
    no reply waits for it) stays in the held chain while seven frames are cut short after
    their header; frame 8 would get frame 0's tag, and the completion of frame 0's vector
    must not pass for frame 8's: no reply with frame 0's outputs goes out as frame 8's."""
    rng = np.random.default_rng(2)
    x = [rng.integers(-128, 128, size=(1, N_IN)) for _ in range(10)]
    first = bytearray(batch_frame(0, x[0]))
    first[-1] ^= 0x55
    script = [("hold", True), ("send", bytes(first)), ("wait", 20 * BYTE_CYCLES)]
    for k in range(1, 8):                       # a header, then nothing: timed out
        script += [("send", batch_frame(k, x[k])[:4]), ("wait", (P.TIMEOUT_BYTES + 8) * BYTE_CYCLES)]
    script += [("send", batch_frame(8, x[8])), ("wait", 40 * BYTE_CYCLES), ("hold", False),
               ("quiet",), ("send", batch_frame(9, x[9])), ("quiet",)]
    frames = _split(simulate(script, max_cycles=40_000))
    replies = {p[0]: p[2:-4] for cmd, p, ok in frames if ok and cmd == P.CMD_BATCH}
    if 8 in replies:
        assert replies[8] == bytes(chain_model(x[8][0])), _describe(frames)
    assert replies.get(9) == bytes(chain_model(x[9][0])), _describe(frames)


def _misbehaving_script(rng, frames, cut=0.1):
    """A host that ignores the window: frames back to back or after random gaps, some cut short
    (a share ``cut``), corrupted or preceded by junk, while the chain stalls at random.
    Returns the script and the vectors of each sequence number sent."""
    script, sent = [], {}
    for seq in range(frames):
        x = rng.integers(-128, 128, size=(int(rng.integers(1, MAX_BATCH + 1)), N_IN))
        frame = bytearray(batch_frame(seq, x))
        sent[seq] = x
        fault = rng.random()
        if fault < cut:                                     # cut short: the device times it out
            frame = frame[:int(rng.integers(1, len(frame)))]
        elif fault < cut + 0.1:                             # a corrupted byte: E 1
            frame[int(rng.integers(1, len(frame)))] ^= int(rng.integers(1, 256))
        elif fault < cut + 0.2:                             # junk before it
            frame[:0] = bytes(rng.integers(0, 256, size=int(rng.integers(1, 4))).tolist())
        if rng.random() < 0.4:
            script.append(("hold", bool(rng.random() < 0.6)))
        script.append(("send", bytes(frame)))
        if rng.random() < 0.3:
            script.append(("wait", int(rng.integers(1, 40)) * BYTE_CYCLES))
    return script, sent


@pytest.mark.parametrize("seed", range(6))
def test_a_misbehaving_host_never_wedges_the_device_nor_gets_a_wrong_output(seed):
    """Fourteen frames from :func:`_misbehaving_script`, then one well-formed frame to the
    quiet device: every reply the host driver would accept is right, and the last frame
    is answered.  (Seeds 0 and 3 wedged the device before the fix.)"""
    rng = np.random.default_rng(100 + seed)
    script, sent = _misbehaving_script(rng, 14)
    last = rng.integers(-128, 128, size=(2, N_IN))
    script += [("hold", False), ("quiet",), ("send", batch_frame(200, last)), ("quiet",)]
    frames = _split(simulate(script, max_cycles=60_000))
    sent[200] = last
    accepted = {}
    for cmd, p, ok in frames:
        # what the host driver accepts: a valid CRC, a B reply to a frame sent, of its length
        if not ok or cmd != P.CMD_BATCH or p[0] not in sent or \
                len(p) != 2 + len(sent[p[0]]) * N_OUT + 4:
            continue
        want = b"".join(bytes(chain_model(v)) for v in sent[p[0]])
        assert p[2:-4] == want, f"seed {seed}: batch {p[0]}: got {p[2:-4].hex()}, expected {want.hex()}"
        accepted[p[0]] = True
    assert 200 in accepted, (f"seed {seed}: the device is wedged: no reply to a well-formed frame "
                             f"sent to it quiet (replies {_describe(frames)[-6:]})")
