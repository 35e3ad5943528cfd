"""The whole-model accelerator behind its UART host protocol, on Verilator and Icarus.

The bench speaks the host driver's protocol (framing, CRC, commands) bit by
bit on the UART pins and checks every run against the integer golden model.
"""

import numpy as np
import pytest

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.accel import Accelerator
from sparrow.hw.engine import EngineConfig
from sparrow.hw.uart import uart_divisor
from sparrow.sw.golden import run_model
from sparrow.sw.randmodel import random_layer, random_model
from sparrow.tb.model_sim import sim_verilog
from sparrow.tb.runner import run_cocotb

CLK_HZ = 1_000_000
DIVISOR = 4


def three_engine_model():
    rng = np.random.default_rng(11)
    return random_model([random_layer("sd_linear", rng, name="fc1", in_=16, out=12, k=4, relu=True),
                         random_layer("dense_linear", rng, name="fc2", in_=12, out=8, relu=True),
                         random_layer("bc_linear", rng, name="fc3", in_=8, out=8, k=4)], [16],
                        name="chain")


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_accelerator_equals_golden_over_uart(tmp_path, simulator):
    model = three_engine_model()
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(4, 16)).astype(np.int8)
    x[0] = -128                                         # full-scale corner
    expected = run_model(model, x)
    acc = Accelerator(model, CLK_HZ, DIVISOR, EngineConfig(pes=4))
    np.savez(tmp_path / "data.npz", x=x, expected=expected, divisor=DIVISOR,
             model_id=P.model_id(model), layers=len(model.layers), clk_hz=CLK_HZ)
    run_cocotb(sim_verilog(acc, "accel"), "accel", "sparrow.tb.accel_tb", simulator,
               extra_env={"ACCEL_TB_DATA": tmp_path / "data.npz"}, test_dir=tmp_path / "run",
               testcase="accelerator_host_protocol",
               log_file=tmp_path / "sim.log")


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
    rng = np.random.default_rng(0)
    conv = random_model([random_layer("sd_conv2d", rng, name="c1", in_ch=1, out_ch=2, k=3)], [1, 4, 4])
    with pytest.raises(SparrowError, match="layer 'c1': kind 'sd_conv2d' has no RTL engine"):
        Accelerator(conv, CLK_HZ, DIVISOR)
