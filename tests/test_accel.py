"""The whole-model accelerator behind its UART host protocol, on Verilator and Icarus.

The benches speak the host driver's protocol (framing, CRC, commands) and
check every run against the integer golden model: on both simulators through
the link bench (the host's end of the line in HDL, bytes in chunks, no Python
per bit), and once bit by bit with cocotbext-uart on the pins, an independent
UART model that checks the accelerator's bit timing and stop bits.
"""

import functools

import numpy as np
import pytest

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.accel import Accelerator
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import engine_class
from sparrow.hw.uart import uart_divisor
from sparrow.sw.golden import run_model
from sparrow.sw.randmodel import random_layer, random_model
from sparrow.tb.linkbench import link_verilog, run_link

CLK_HZ = 1_000_000
DIVISOR = 4


def three_engine_model():
    rng = np.random.default_rng(11)
    return random_model([random_layer("sd_linear", rng, name="fc1", in_=16, out=12, k=4, relu=True),
                         random_layer("dense_linear", rng, name="fc2", in_=12, out=8, relu=True),
                         random_layer("bc_linear", rng, name="fc3", in_=8, out=8, k=4)], [16],
                        name="chain")


def _accelerator():
    return Accelerator(three_engine_model(), CLK_HZ, DIVISOR, EngineConfig(pes=4), max_batch=17)


def _protocol_data(tmp_path, acc):
    """``$ACCEL_TB_DATA`` for the accelerator of :func:`three_engine_model`."""
    model = three_engine_model()
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(4, 16)).astype(np.int8)
    x[0] = -128                                         # full-scale corner
    expected = run_model(model, x)
    np.savez(tmp_path / "data.npz", x=x, expected=expected, divisor=DIVISOR,
             model_id=P.model_id(model), layers=len(model.layers), clk_hz=CLK_HZ,
             max_batch=acc.max_batch)
    return {"ACCEL_TB_DATA": tmp_path / "data.npz"}


@functools.cache
def _linked():
    """The accelerator and its link bench Verilog, converted once for both simulators."""
    acc = _accelerator()
    return acc, link_verilog(acc)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_accelerator_equals_golden_over_the_link(tmp_path, simulator):
    acc, verilog = _linked()
    run_link(acc, simulator, "link_host_protocol", extra_env=_protocol_data(tmp_path, acc),
             test_dir=tmp_path / "run", log_file=tmp_path / "sim.log", verilog=verilog)


def test_accelerator_uart_line_bit_by_bit(tmp_path):
    # On the link bench's build: cocotbext-uart drives and reads the accelerator's own pins.
    acc, verilog = _linked()
    run_link(acc, "verilator", "link_uart_line", extra_env=_protocol_data(tmp_path, acc),
             test_dir=tmp_path / "run", log_file=tmp_path / "sim.log", verilog=verilog)


def test_protocol_reference():
    # CRC-16/CCITT-FALSE check value of "123456789".
    assert P.crc16(b"123456789") == 0x29B1
    frame = P.encode_frame(P.CMD_RUN, bytes([1, 2, 255]))
    assert frame[:4] == bytes([0xA5, ord("R"), 3, 0])
    dec = P.FrameDecoder()
    assert dec.feed(b"\x00\x13" + frame[:5]) == []
    assert dec.feed(frame[5:]) == [(ord("R"), bytes([1, 2, 255]))]
    bad = bytearray(frame)
    bad[4] ^= 1
    with pytest.raises(P.ProtocolError, match="failed its CRC"):
        P.FrameDecoder().feed(bytes(bad))
    assert P.parse_run((ord("R"), bytes([255, 7]) + (1234).to_bytes(4, "little")), 2) == ([-1, 7], 1234)
    with pytest.raises(P.ProtocolError, match="device error 1: CRC mismatch"):
        P.parse_run((ord("E"), b"\x01"), 2)


def test_uart_divisor_and_model_checks():
    assert uart_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too high"):
        uart_divisor(12e6, 4_000_000)
    with pytest.raises(ValueError, match="off at 12 MHz"):
        uart_divisor(12e6, 1_800_000)
    # Every kind of the format has an engine now; the registry still refuses others.
    with pytest.raises(SparrowError, match="kind 'lstm' has no RTL engine"):
        engine_class("lstm")


def test_protocol_version_2_reference():
    import struct
    v2 = P.identify_payload(64, 10, 2, 0xDEADBEEF, 39e6, 16)
    assert len(v2) == P.IDENT_LEN == 20
    assert P.parse_identify((ord("I"), v2)) == {"version": 2, "in_size": 64, "out_size": 10, "layers": 2,
                                                "model_id": 0xDEADBEEF, "clk_hz": 39_000_000,
                                                "max_batch": 16}
    # a version 1 device: 18 bytes, no batch command
    v1 = b"SPRW" + struct.pack("<BHHBII", 1, 64, 10, 2, 7, 12_000_000)
    assert P.parse_identify((ord("I"), v1))["max_batch"] == 0
    with pytest.raises(P.ProtocolError, match="'I' reply has 18 bytes for protocol version 2"):
        P.parse_identify((ord("I"), b"SPRW\x02" + v1[5:]))
    assert P.batch_payload(258, [[1, -1], [127, -128]]) == bytes([2, 1, 255, 127, 128])
    reply = (ord("B"), bytes([7, 1, 1, 255, 3, 4]) + (99).to_bytes(4, "little"))
    assert P.parse_batch(reply, 7, 2, 2) == ([[1, -1], [3, 4]], 99, True)
    with pytest.raises(P.ProtocolError, match="'B' reply to batch 7, expected 8"):
        P.parse_batch(reply, 8, 2, 2)
    with pytest.raises(P.ProtocolError, match="'B' reply has 10 bytes, expected 12"):
        P.parse_batch(reply, 7, 3, 2)
    # digits-mlp at 3 Mbaud, 16 vectors a frame: 1031 request bytes carry 1024 input bytes
    req, rep, share = P.link_seconds(3_000_000, 64, 10, 16)
    assert req == pytest.approx(1031 * 10 / 3e6) and rep == pytest.approx(172 * 10 / 3e6)
    assert share == pytest.approx(1024 / 1031)


def test_batch_capacity_checked():
    model = three_engine_model()
    with pytest.raises(TypeError, match="Batch capacity must be a positive integer, not 0"):
        Accelerator(model, CLK_HZ, DIVISOR, max_batch=0)
    with pytest.raises(ValueError, match="Batch capacity must be between 1 and 255, not 256"):
        Accelerator(model, CLK_HZ, DIVISOR, max_batch=256)
    big = random_model([random_layer("dense_linear", np.random.default_rng(0), name="fc", in_=512,
                                     out=4)], [512], name="wide")
    with pytest.raises(SparrowError, match="model 'wide': a batch of 200 vectors exceeds the 65535-byte frame"):
        Accelerator(big, CLK_HZ, DIVISOR, max_batch=200)
