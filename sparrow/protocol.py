"""The host protocol of the sparrow accelerator: framed, CRC-checked bytes over a UART.

Both directions use the same frame (docs/host.md)::

    0xA5  CMD  LEN_LO LEN_HI  PAYLOAD[LEN]  CRC_LO CRC_HI

CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection,
no final XOR) over CMD, LEN and PAYLOAD.  Commands (ASCII letters):

* ``I`` identify, LEN 0 -> ``I`` with :data:`IDENT_LEN` bytes: magic "SPRW",
  protocol version, input size (LE16), output size (LE16), layer count, the
  model id (LE32, :func:`model_id`), the clock in Hz (LE32).
* ``S`` status, LEN 0 -> ``S`` with 9 bytes: flags (:data:`FLAGS`), vectors
  run (LE32), cycles of the last run (LE32).
* ``R`` run, LEN = input size, the int8 input vector -> ``R`` with the int8
  output vector followed by the cycles it took (LE32): from the first input
  element entering the first layer to the last output leaving the last one.
* ``B`` batch (protocol version 2), LEN = 1 + K * input size, a sequence
  number (u8) then K input vectors, 1 <= K <= the device's batch capacity
  (reported by ``I``) -> ``B`` with the sequence number, a flags byte (bit 0:
  the previous batch had the same sequence number, so this one was run again),
  the K output vectors and the device cycles of the K runs together (LE32).
* Any error -> ``E`` with one byte: :data:`ERRORS`.

The device ignores bytes until 0xA5, drops a frame whose bytes stop coming
for :data:`TIMEOUT_BYTES` byte times, and answers nothing else, so a host
recovers from any corruption by waiting and resending.  In version 2 the
device receives while it computes and replies: the vectors of a ``B`` frame
run as they arrive, and the reply of one frame leaves while the next one
arrives (a window of :data:`WINDOW` frames).  Pure Python: the host driver,
the RTL (constants) and the testbench all use this module.
"""

import hashlib
import struct

__all__ = ["SYNC", "CMD_IDENTIFY", "CMD_STATUS", "CMD_RUN", "CMD_BATCH", "CMD_ERROR", "MAGIC",
           "VERSION", "IDENT_LEN", "IDENT_LEN_V1", "STATUS_LEN", "WINDOW", "ERRORS", "FLAGS",
           "BATCH_FLAGS", "TIMEOUT_BYTES", "ProtocolError", "crc16", "encode_frame",
           "FrameDecoder", "model_id", "identify_payload", "parse_identify", "parse_status",
           "parse_run", "batch_payload", "parse_batch", "link_seconds"]

SYNC = 0xA5
CMD_IDENTIFY, CMD_STATUS, CMD_RUN, CMD_ERROR = b"I"[0], b"S"[0], b"R"[0], b"E"[0]
CMD_BATCH = b"B"[0]
MAGIC = b"SPRW"
VERSION = 2
IDENT_LEN_V1 = 4 + 1 + 2 + 2 + 1 + 4 + 4
#: Version 2 adds the batch capacity (u16) to the ``I`` reply.
IDENT_LEN = IDENT_LEN_V1 + 2
STATUS_LEN = 1 + 4 + 4
#: Frames a host may have in flight (sent, reply not yet received) with the version 2 device.
WINDOW = 2
#: ``E`` payload codes.
ERRORS = {1: "CRC mismatch", 2: "wrong payload length for the command", 3: "unknown command",
          4: "overrun: a vector found both input slots taken, so the frame did not run "
             "(frames sent faster than the device runs them); send it again"}
#: ``B`` reply flag bits.
BATCH_FLAGS = {0: "repeat: the previous batch had the same sequence number and was run again"}
#: Status flag bits (sticky until the device is reset).
FLAGS = {0: "an engine lost an output (engine error)", 1: "UART receive overrun",
         2: "UART framing error (wrong baud rate?)", 3: "a frame failed its CRC",
         4: "a frame got no reply: its reply place was taken"}
#: A frame whose next byte does not come within this many byte times is dropped.
TIMEOUT_BYTES = 64


class ProtocolError(Exception):
    """A reply that is malformed or reports an error."""


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (bytes), continuing from ``crc``."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_frame(cmd, payload=b""):
    """The bytes of one frame: sync, command, length, payload, CRC."""
    payload = bytes(payload)
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes exceeds 65535")
    body = bytes([cmd]) + struct.pack("<H", len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


class FrameDecoder:
    """Collect bytes into frames: ``feed(data)`` returns the complete ``(cmd, payload)`` frames.

    Bytes before a sync byte are skipped; a frame with a bad CRC raises
    :class:`ProtocolError`.
    """

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(bytes([SYNC]))
            if start < 0:
                self._buf.clear()
                return frames
            del self._buf[:start]
            if len(self._buf) < 4:
                return frames
            n = struct.unpack_from("<H", self._buf, 2)[0]
            if len(self._buf) < 6 + n:
                return frames
            body, (crc,) = bytes(self._buf[1:4 + n]), struct.unpack_from("<H", self._buf, 4 + n)
            del self._buf[:6 + n]
            if crc16(body) != crc:
                raise ProtocolError(f"reply frame {chr(body[0])!r} failed its CRC "
                                    f"({crc:#06x}, computed {crc16(body):#06x})")
            frames.append((body[0], body[3:]))


def model_id(model):
    """A 32-bit id of a model directory's contents (manifest and parameters), as the device reports it."""
    import numpy as np
    h = hashlib.sha256()
    h.update(model.name.encode())
    h.update(repr(tuple(model.input_shape)).encode())
    for layer in model.layers:
        h.update(layer.name.encode() + layer.kind.encode())
        h.update(repr(sorted((k, v) for k, v in layer.attrs.items() if k != "params")).encode())
        for key in sorted(layer.params or {}):
            a = np.ascontiguousarray(layer.params[key])
            h.update(key.encode() + str(a.dtype).encode() + repr(a.shape).encode() + a.tobytes())
    return int.from_bytes(h.digest()[:4], "little")


def identify_payload(in_size, out_size, layers, ident, clk_hz, max_batch):
    """The ``I`` reply payload the device sends (version 2)."""
    return MAGIC + struct.pack("<BHHBIIH", VERSION, in_size, out_size, layers, ident, int(clk_hz),
                               max_batch)


def _expect(frame, cmd, length=None):
    got, payload = frame
    if got == CMD_ERROR and len(payload) == 1:
        raise ProtocolError(f"device error {payload[0]}: {ERRORS.get(payload[0], 'unknown code')}")
    if got != cmd:
        raise ProtocolError(f"expected a {chr(cmd)!r} reply, got {chr(got)!r}")
    if length is not None and len(payload) != length:
        raise ProtocolError(f"{chr(cmd)!r} reply has {len(payload)} bytes, expected {length}")
    return payload


def parse_identify(frame):
    """``dict(version, in_size, out_size, layers, model_id, clk_hz, max_batch)`` from an ``I`` reply.

    A version 1 device (18 bytes, no batch command) reports ``max_batch`` 0.
    """
    p = _expect(frame, CMD_IDENTIFY)
    if p[:4] != MAGIC:
        raise ProtocolError(f"not a sparrow accelerator (magic {p[:4]!r})")
    if len(p) not in (IDENT_LEN_V1, IDENT_LEN) or p[4] != (1 if len(p) == IDENT_LEN_V1 else 2):
        raise ProtocolError(f"'I' reply has {len(p)} bytes for protocol version {p[4]}, "
                            f"expected {IDENT_LEN_V1} (version 1) or {IDENT_LEN} (version 2)")
    version, in_size, out_size, layers, ident, clk = struct.unpack("<BHHBII", p[4:IDENT_LEN_V1])
    max_batch = struct.unpack("<H", p[IDENT_LEN_V1:])[0] if version >= 2 else 0
    return {"version": version, "in_size": in_size, "out_size": out_size, "layers": layers,
            "model_id": ident, "clk_hz": clk, "max_batch": max_batch}


def parse_status(frame):
    """``dict(flags: [messages], vectors, cycles)`` from an ``S`` reply."""
    p = _expect(frame, CMD_STATUS, STATUS_LEN)
    flags, vectors, cycles = struct.unpack("<BII", p)
    return {"flags": [msg for bit, msg in FLAGS.items() if flags >> bit & 1], "vectors": vectors,
            "cycles": cycles}


def parse_run(frame, out_size):
    """``(outputs: list of int8, cycles)`` from an ``R`` reply."""
    p = _expect(frame, CMD_RUN, out_size + 4)
    outputs = [b - 256 if b > 127 else b for b in p[:out_size]]
    return outputs, struct.unpack("<I", p[out_size:])[0]


def batch_payload(seq, vectors):
    """The ``B`` request payload: ``seq`` (0..255) then the int8 vectors (a 2-D array or list of rows)."""
    import numpy as np
    x = (np.asarray(vectors, dtype=np.int64) & 0xFF).astype(np.uint8)
    return bytes([seq & 0xFF]) + x.tobytes()


def parse_batch(frame, seq, count, out_size):
    """``(outputs: count lists of int8, cycles, repeat)`` from a ``B`` reply to batch ``seq``.

    Raises ProtocolError when the reply is of another batch or has the wrong length.
    """
    p = _expect(frame, CMD_BATCH, 2 + count * out_size + 4)
    if p[0] != seq & 0xFF:
        raise ProtocolError(f"'B' reply to batch {p[0]}, expected {seq & 0xFF}")
    ys = [[b - 256 if b > 127 else b for b in p[2 + v * out_size:2 + (v + 1) * out_size]]
          for v in range(count)]
    return ys, struct.unpack("<I", p[-4:])[0], bool(p[1] & 1)


def link_seconds(baud, in_size, out_size, batch, bits_per_byte=10):
    """Wire time of one ``B`` batch: ``(request s, reply s, payload share)``.

    The request carries 6 frame bytes, the sequence number and ``batch``
    input vectors; the reply 6 frame bytes, 2 header bytes, the outputs and
    4 cycle bytes.  ``payload share`` is the input bytes over all request
    bytes, the part of the host-to-device bit rate that carries vectors.
    """
    request = 6 + 1 + batch * in_size
    reply = 6 + 2 + batch * out_size + 4
    byte_s = bits_per_byte / baud
    return request * byte_s, reply * byte_s, batch * in_size / request
