"""``sparrow run``: the host driver against the accelerator's RTL (``--sim``), and its errors.

The simulated board is the link bench (:mod:`sparrow.tb.linkbench`): the
host's end of the UART line in HDL, bytes in chunks over a local TCP port.
"""


import numpy as np
import pytest

from sparrow.fpga.host import Device, SimulatedBoard
from sparrow.hw.engine import EngineConfig
from sparrow.modeldir import save_model
from sparrow.sw.golden import run_model
from sparrow.sw.randmodel import random_layer, random_model
from clirun import sparrow


def two_layer_model(seed, name="hand"):
    rng = np.random.default_rng(seed)
    return random_model([random_layer("sd_linear", rng, name="fc1", in_=12, out=8, k=3, relu=True),
                         random_layer("dense_linear", rng, name="fc2", in_=8, out=5)], [12],
                        name=name)


def test_run_on_the_simulated_board_equals_golden(tmp_path):
    model = two_layer_model(1)
    save_model(model, tmp_path / "m")
    x = np.random.default_rng(2).integers(-128, 128, size=(5, 12)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    r = sparrow("run", str(tmp_path / "m"), "--sim", "verilator", "--pes", "4",
                "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    assert "5 vectors on the verilator simulation" in r.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run_model(model, x))


def test_driver_refuses_a_board_running_another_model(tmp_path):
    board_model, other = two_layer_model(1), two_layer_model(9)
    save_model(other, tmp_path / "other")
    np.save(tmp_path / "x.npy", np.zeros((1, 12), dtype=np.int8))
    board = SimulatedBoard(board_model, "verilator", EngineConfig(pes=4))
    port = board.wait_port()
    dev = Device(port, timeout=30)
    assert dev.identify()["out_size"] == 5
    dev.close()
    r = sparrow("run", str(tmp_path / "other"), "--port", board.wait_port(),
                "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), "--timeout", "30")
    board.close()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "runs another model: model_id" in line and "build and flash" in line
    assert not (tmp_path / "y.npy").exists()


def test_run_errors_are_one_line(tmp_path):
    save_model(two_layer_model(1), tmp_path / "m")
    np.save(tmp_path / "x.npy", np.zeros((1, 12), dtype=np.int8))
    r = sparrow("run", str(tmp_path / "m"), "--port", str(tmp_path / "no-such-tty"),
                "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("sparrow run: error: cannot open serial port")
    r = sparrow("run", str(tmp_path / "m"), "--inputs", str(tmp_path / "x.npy"), "--out", "y.npy")
    assert r.returncode == 2 and "one of the arguments --port --sim is required" in r.stderr
    r = sparrow("run", str(tmp_path / "m"), "--sim", "verilator", "--pes", "0",
                "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "sparrow run: error: --pes must be between 1 and 1024, not 0"
