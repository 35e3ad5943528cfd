"""Host driver for a board running a sparrow accelerator (``sparrow run``).

:class:`Device` talks :mod:`sparrow.protocol` over a serial port
(pyserial; a device path or any pyserial URL such as ``socket://host:port``):
``identify()``, ``status()``, ``run(x)``.  ``sparrow run DIR --port PORT
--inputs X.npy --out Y.npy`` checks that the board runs the model directory
``DIR`` (same sizes and model id) and sends every input vector, resending a
frame whose reply is lost or corrupted.

``--sim verilator|icarus`` instead of ``--port`` runs the same driver against
the accelerator's RTL: the simulated board listens on a local TCP port
(``tb/accel_tb.py``'s bridge) and the driver connects with ``socket://``.
"""

import sys
import time

import numpy as np

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import check_engine_kinds

__all__ = ["Device", "SimulatedBoard", "run_model_on_board"]


class Device:
    """A sparrow accelerator on serial ``port`` at ``baud`` (8N1).

    ``link`` may be given instead of a port: any object with pyserial's
    ``write(bytes)``, ``read(n)`` (returning what came within its timeout) and
    ``reset_input_buffer()``.
    """

    def __init__(self, port=None, baud=115200, timeout=1.0, retries=3, link=None):
        if link is None:
            import serial
            try:
                link = serial.serial_for_url(port, baud, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise SparrowError(f"cannot open serial port {port}: {exc}") from None
        self.link, self.timeout, self.retries = link, timeout, retries
        self.port = port

    def close(self):
        close = getattr(self.link, "close", None)
        if close:
            close()

    def _exchange(self, cmd, payload=b""):
        last = None
        for _ in range(1 + self.retries):
            self.link.reset_input_buffer()
            self.link.write(P.encode_frame(cmd, payload))
            decoder, deadline = P.FrameDecoder(), time.monotonic() + self.timeout
            try:
                while time.monotonic() < deadline:
                    frames = decoder.feed(self.link.read(256))
                    if frames:
                        if frames[0][0] == P.CMD_ERROR and frames[0][1] == b"\x01":
                            raise P.ProtocolError("the device saw a CRC mismatch")
                        return frames[0]
                last = f"no reply within {self.timeout:g} s"
            except P.ProtocolError as exc:     # corrupted on the way: resend
                last = str(exc)
            # Let a half-received frame time out on the device before resending.
            time.sleep(self.timeout / 4)
        where = f" on {self.port}" if self.port else ""
        raise SparrowError(f"no valid reply to {chr(cmd)!r}{where} after {1 + self.retries} tries "
                           f"({last}); is the accelerator's bitstream loaded and the baud rate right?")

    def identify(self):
        """``dict(version, in_size, out_size, layers, model_id, clk_hz)``."""
        try:
            return P.parse_identify(self._exchange(P.CMD_IDENTIFY))
        except P.ProtocolError as exc:
            raise SparrowError(f"identify: {exc}") from None

    def status(self):
        """``dict(flags, vectors, cycles)``."""
        try:
            return P.parse_status(self._exchange(P.CMD_STATUS))
        except P.ProtocolError as exc:
            raise SparrowError(f"status: {exc}") from None

    def run(self, x, out_size):
        """One int8 vector -> ``(int8 outputs [out_size], cycles)``."""
        payload = (np.asarray(x, dtype=np.int64) & 0xFF).astype(np.uint8).tobytes()
        try:
            y, cycles = P.parse_run(self._exchange(P.CMD_RUN, payload), out_size)
        except P.ProtocolError as exc:
            raise SparrowError(f"run: {exc}") from None
        return np.array(y, dtype=np.int8), cycles


class SimulatedBoard:
    """The accelerator's RTL under cocotb in a background thread, reachable at :attr:`port`.

    Parameters
    ----------
    model : sparrow.modeldir.Model
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    config : sparrow.hw.engine.EngineConfig
        Engine parameters of the accelerator.
    """

    DIVISOR = 4            # UART clock cycles per bit in simulation
    CLK_HZ = 1_000_000     # nominal clock the simulated board reports

    def __init__(self, model, simulator, config=EngineConfig()):
        import tempfile
        import threading
        from pathlib import Path
        from sparrow.hw.accel import Accelerator
        from sparrow.tb.model_sim import sim_verilog
        from sparrow.tb.runner import project_build_dir, run_cocotb
        accel = Accelerator(model, self.CLK_HZ, self.DIVISOR, config=config)
        work = project_build_dir() / "sim"
        work.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-", dir=work))
        self.error = None
        env = {"ACCEL_TB_DIVISOR": self.DIVISOR, "ACCEL_TB_BRIDGE": self.dir / "port"}
        verilog = sim_verilog(accel, "accel")

        def simulate():
            try:
                run_cocotb(verilog, "accel", "sparrow.tb.accel_tb", simulator, extra_env=env,
                           testcase="accelerator_bridge", test_dir=self.dir / "run",
                           log_file=self.dir / "sim.log")
            except Exception as exc:        # reported by wait_port() or close()
                self.error = exc

        self.thread = threading.Thread(target=simulate, daemon=True)
        self.thread.start()

    def wait_port(self, timeout=900):
        """``socket://127.0.0.1:PORT`` once the simulation listens (it compiles first)."""
        port_file = self.dir / "port"
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if not self.thread.is_alive():
                raise SparrowError(f"the simulated board stopped before listening: {self.error}")
            if time.monotonic() > deadline:
                raise SparrowError(f"the simulated board did not start within {timeout} s")
            time.sleep(0.2)
        return f"socket://127.0.0.1:{port_file.read_text().strip()}"

    def close(self):
        """Stop the simulation (after its current connection ends) and wait for it."""
        (self.dir / "port.stop").write_text("")
        self.thread.join(timeout=120)
        if self.error is not None:
            raise SparrowError(f"simulated board: {self.error}")


def run_model_on_board(model, x, *, port=None, sim=None, config=EngineConfig(), baud=115200,
                       timeout=1.0, progress=None):
    """Run int8 vectors ``x`` [N, input size] on the board at ``port`` (or the RTL under ``sim``).

    ``config`` sizes the engines of the simulated accelerator (``sim`` only: a
    board runs what it was built with).  Checks first that the board runs ``model`` (sizes, layer count and model
    id).  Returns ``(y int8 [N, out], cycles per vector, seconds over the link,
    identity dict)``; ``progress(done, total)`` is called after each vector.
    """
    check_engine_kinds(model)
    n = len(x)
    x = np.asarray(x).reshape(n, -1)
    board = None
    if sim:
        board = SimulatedBoard(model, sim, config)
        port = board.wait_port()
        timeout = max(timeout, 30.0)       # simulated time runs far slower than a board's
    dev = Device(port, baud, timeout=timeout)
    try:
        ident = dev.identify()
        want = {"in_size": model.layers[0].attrs["in"], "out_size": model.layers[-1].attrs["out"],
                "layers": len(model.layers), "model_id": P.model_id(model)}
        diff = [f"{k} {ident[k]} (model {v})" for k, v in want.items() if ident[k] != v]
        if diff:
            raise SparrowError(f"the board on {port} runs another model: {', '.join(diff)}; "
                               f"build and flash {model.name} first")
        if x.shape[1] != ident["in_size"]:
            raise SparrowError(f"inputs are vectors of {x.shape[1]} values, the model takes "
                               f"{ident['in_size']}")
        y = np.zeros((n, ident["out_size"]), dtype=np.int8)
        cycles = []
        start = time.monotonic()
        for v in range(n):
            y[v], c = dev.run(x[v], ident["out_size"])
            cycles.append(c)
            if progress:
                progress(v + 1, n)
        seconds = time.monotonic() - start
    finally:
        dev.close()
        if board is not None:
            board.close()
    return y, cycles, seconds, ident

