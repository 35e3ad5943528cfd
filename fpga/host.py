"""Host driver for a board running a sparrow accelerator (``sparrow run``).

:class:`Device` talks :mod:`sparrow.protocol` over a serial port
(pyserial; a device path or any pyserial URL such as ``socket://host:port``):
``identify()``, ``status()``, ``run(x)`` (one vector, ``R``) and
``stream(x)`` (protocol version 2: ``B`` batches, a window of two frames in
flight, sequence numbers, go-back-N recovery).  ``sparrow run DIR --port PORT
--inputs X.npy --out Y.npy`` checks that the board runs the model directory
``DIR`` (same sizes and model id) and sends every input vector, resending
frames whose replies are lost or corrupted.

``--sim verilator|icarus`` instead of ``--port`` runs the same driver against
the accelerator's RTL: the simulated board listens on a local TCP port
(``tb/link_tb.py``'s bridge: the link bench, no Python per bit or cycle) and
the driver connects with ``socket://``.
:class:`FaultyLink` between the driver and the link drops, corrupts,
duplicates and inserts bytes and stalls the host mid-frame
(``--fault-rate``).
"""

import collections
import random
import sys
import time

import numpy as np

from sparrow import SparrowError
from sparrow import protocol as P
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import check_engine_kinds

__all__ = ["Device", "FaultyLink", "LinkStats", "SimulatedBoard", "run_model_on_board"]


class FaultyLink:
    """A link that injects faults: wraps any object with ``write``, ``read`` and ``reset_input_buffer``.

    Every byte that crosses it, in either direction, meets a fault with
    probability ``rate``: it is dropped, corrupted (XOR with a random non-zero
    value), duplicated, or preceded by one to three random bytes; on the way
    out the host may also stall before it for ``stall_s`` seconds (longer than
    the device's frame timeout in simulation, so the frame is dropped).
    ``faults`` counts them by kind.
    """

    KINDS = ("drop", "corrupt", "duplicate", "insert", "stall")

    def __init__(self, link, rate, seed=0, stall_s=0.05):
        if not 0 <= rate <= 1:
            raise SparrowError(f"--fault-rate must be between 0 and 1, not {rate:g}")
        self.link, self.rate, self.stall_s = link, rate, stall_s
        self.rng = random.Random(seed)
        self.faults = collections.Counter()

    def _mangle(self, data, kinds):
        """``data`` with faults: a list of byte strings, a stall between each two."""
        parts, out = [], bytearray()
        for byte in data:
            if self.rng.random() >= self.rate:
                out.append(byte)
                continue
            kind = self.rng.choice(kinds)
            self.faults[kind] += 1
            if kind == "corrupt":
                out.append(byte ^ self.rng.randrange(1, 256))
            elif kind == "duplicate":
                out += bytes([byte, byte])
            elif kind == "insert":
                out += bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 4)))
                out.append(byte)
            elif kind == "stall":
                parts.append(bytes(out))
                out = bytearray([byte])
        return parts + [bytes(out)]

    def write(self, data):
        parts = self._mangle(data, self.KINDS)
        for k, part in enumerate(parts):
            if k:
                time.sleep(self.stall_s)
            self.link.write(part)
        return len(data)

    def read(self, n):
        return self._mangle(self.link.read(n), self.KINDS[:4])[0]

    def reset_input_buffer(self):
        self.link.reset_input_buffer()

    @property
    def in_waiting(self):
        return getattr(self.link, "in_waiting", 0)

    def close(self):
        close = getattr(self.link, "close", None)
        if close:
            close()


class LinkStats:
    """What a :meth:`Device.stream` call did: frames sent (first sends and resends), recoveries, repeats."""

    def __init__(self):
        self.frames_sent = self.recoveries = self.repeats = self.errors = 0
        self.batches = self.vectors = 0
        self.batch, self.window = None, None     # what sparrow run chose (_paced_stream)

    def as_dict(self):
        return dict(vars(self))


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
            try:
                # FTDI bridges hold received bytes up to their latency timer (16 ms by default
                # on Linux); low-latency mode sets it to 1 ms.
                link.set_low_latency_mode(True)
            except (AttributeError, NotImplementedError, ValueError, OSError, serial.SerialException):
                pass
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
                    # What has come, or wait for one byte: read(256) would wait out the
                    # link's whole read timeout (50 ms) for a reply shorter than 256 bytes.
                    frames = decoder.feed(self.link.read(max(1, getattr(self.link, "in_waiting", 0))))
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

    def stream(self, x, out_size, batch, window=P.WINDOW, pause=None, progress=None, stats=None,
               seq0=0):
        """Int8 vectors ``x`` [N, in] in ``B`` frames of ``batch`` -> ``(int8 outputs [N, out], cycles per frame)``.

        Keeps ``window`` frames in flight, frame k numbered ``(seq0 + k) mod 256``.
        A reply is accepted only if it has a valid CRC, is a ``B`` reply to a
        frame in flight and has the length of that frame's reply.  The device
        answers frames in the order they arrive, so a reply to a frame sent
        after one still waiting means the older reply was lost.  On that, or
        on anything else (an ``E`` reply, a corrupted frame, no reply within
        ``timeout``) the driver waits ``pause`` seconds for the device to drop
        partial frames and finish its replies, keeps the valid replies that
        came, and sends every frame in flight again (go-back-N), oldest
        first, so the frames in flight are always consecutive and their
        numbers distinct; a frame the device had already run comes back
        flagged as a repeat (counted in ``stats.repeats``).  After ``retries``
        recoveries in a row without a frame completing it stops with one line.
        """
        x = (np.asarray(x, dtype=np.int64) & 0xFF).astype(np.uint8)
        n = len(x)
        starts = list(range(0, n, batch))
        seqs = [(seq0 + k) % 256 for k in range(len(starts))]
        frames = [P.encode_frame(P.CMD_BATCH, P.batch_payload(seq, x[s:s + batch]))
                  for seq, s in zip(seqs, starts)]
        counts = [min(batch, n - s) for s in starts]
        pause = self.timeout / 4 if pause is None else pause
        stats = stats or LinkStats()
        y = np.zeros((n, out_size), dtype=np.int8)
        cycles = [0] * len(frames)
        done = [False] * len(frames)
        flight = collections.deque()         # frame numbers sent, replies not yet accepted
        todo = collections.deque(range(len(frames)))
        decoder = P.FrameDecoder()
        failures, completed = 0, 0
        deadline = time.monotonic() + self.timeout
        lost = []        # frames in flight whose replies a reply to a later frame shows lost

        def accept(frame):
            nonlocal completed, failures, deadline
            cmd, payload = frame
            if cmd != P.CMD_BATCH or not payload:
                return False
            k = next((k for k in flight if seqs[k] == payload[0]), None)
            if k is None:
                return True                      # a late reply to a frame already done
            try:
                ys, c, repeat = P.parse_batch(frame, seqs[k], counts[k], out_size)
            except P.ProtocolError:
                return False
            lost.extend(j for j in flight if j < k)
            y[starts[k]:starts[k] + counts[k]] = ys
            cycles[k], done[k] = c, True
            flight.remove(k)
            stats.repeats += repeat
            completed += 1
            failures, deadline = 0, time.monotonic() + self.timeout
            if progress:
                progress(min(n, sum(counts[:k + 1])), n)
            return True

        def read():
            # Whatever has come, or wait (up to the link's read timeout) for one byte.
            return self.link.read(max(1, getattr(self.link, "in_waiting", 0)))

        def drain():
            """Read what comes within ``pause``, keeping the valid replies."""
            nonlocal decoder
            end = time.monotonic() + pause
            while time.monotonic() < end:
                data = read()
                if not data:
                    continue
                try:
                    for frame in decoder.feed(data):
                        accept(frame)
                except P.ProtocolError:
                    decoder = P.FrameDecoder()
            decoder = P.FrameDecoder()

        self.link.reset_input_buffer()
        while completed < len(frames):
            while todo and len(flight) < window:
                k = todo.popleft()
                if done[k]:
                    continue
                self.link.write(frames[k])
                flight.append(k)
                stats.frames_sent += 1
            trouble = None
            data = read()
            try:
                for frame in decoder.feed(data):
                    if not accept(frame):
                        trouble = (f"device error {frame[1][0]}: {P.ERRORS.get(frame[1][0], '?')}"
                                   if frame[0] == P.CMD_ERROR and len(frame[1]) == 1
                                   else f"unexpected {chr(frame[0])!r} reply")
            except P.ProtocolError as exc:
                trouble, decoder = str(exc), P.FrameDecoder()
            if trouble is None and lost:
                trouble = f"no reply to batch {lost[0]} before the reply to a later one"
            if trouble is None and flight and time.monotonic() > deadline:
                trouble = f"no reply within {self.timeout:g} s"
            if trouble is None:
                continue
            stats.recoveries += 1
            stats.errors += trouble.startswith("device error")
            failures += 1
            if failures > self.retries:
                where = f" on {self.port}" if self.port else ""
                raise SparrowError(f"batch {flight[0] if flight else '?'}{where}: no valid reply after "
                                   f"{failures} tries ({trouble}); is the accelerator's bitstream "
                                   f"loaded and the baud rate right?")
            drain()
            todo.extendleft(reversed([k for k in flight if not done[k]]))   # the lost ones too
            flight.clear()
            lost.clear()
            deadline = time.monotonic() + self.timeout
        stats.batches += len(frames)
        stats.vectors += n
        return y, cycles

    def run(self, x, out_size):
        """One int8 vector -> ``(int8 outputs [out_size], cycles)``."""
        payload = (np.asarray(x, dtype=np.int64) & 0xFF).astype(np.uint8).tobytes()
        try:
            y, cycles = P.parse_run(self._exchange(P.CMD_RUN, payload), out_size)
        except P.ProtocolError as exc:
            raise SparrowError(f"run: {exc}") from None
        return np.array(y, dtype=np.int8), cycles


class SimulatedBoard:
    """The accelerator's RTL under cocotb in a background thread, reachable at :meth:`wait_port`.

    It runs in the link bench (:mod:`sparrow.tb.linkbench`): the host's end of
    the UART line is in HDL at the accelerator's divisor, bytes cross between
    it and the TCP socket in chunks, and simulated time stands still while
    the device is idle and waits for the host, so no Python runs per bit or
    per cycle.

    Parameters
    ----------
    model : sparrow.modeldir.Model
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    config : sparrow.hw.engine.EngineConfig
        Engine parameters of the accelerator (built as its simulation build,
        ``generic=True``: the ROM contents load at run time).
    """

    DIVISOR = 4            # UART clock cycles per bit in simulation
    CLK_HZ = 1_000_000     # nominal clock the simulated board reports
    MAX_BATCH = 16         # vectors per B frame

    def __init__(self, model, simulator, config=EngineConfig(), max_batch=MAX_BATCH):
        import tempfile
        import threading
        from pathlib import Path
        from sparrow.hw.accel import Accelerator
        from sparrow.tb.linkbench import run_link
        from sparrow.tb.runner import project_build_dir
        from dataclasses import replace
        # the simulation build: parameter ROMs (and the identify bytes) load at run time, so a model
        # of the same structure reuses the compiled simulator; its cycles are the board build's
        accel = Accelerator(model, self.CLK_HZ, self.DIVISOR, config=replace(config, generic=True),
                            max_batch=max_batch)
        work = project_build_dir() / "sim"
        work.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-", dir=work))
        self.error = None
        self.stats, self._compile = {}, {}
        env = {"ACCEL_TB_DIVISOR": self.DIVISOR, "ACCEL_TB_BRIDGE": self.dir / "port"}

        def simulate():
            try:
                run_link(accel, simulator, "link_bridge", extra_env=env, test_dir=self.dir / "run",
                         log_file=self.dir / "sim.log", stats=self._compile)
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
        """Stop the simulation (after its current connection ends) and wait for it.

        Then :attr:`stats` holds what the simulation did: ``cycles`` simulated,
        ``run_seconds`` (wall time while it ran), ``wait_seconds`` (waiting for
        the host, simulated time standing still), ``cpu_seconds`` (processor
        time of the simulator process), ``bytes_in``, ``bytes_out``,
        ``compile_seconds`` (0.0 when the build cache had the simulator).
        """
        import json
        import shutil
        (self.dir / "port.stop").write_text("")
        self.thread.join(timeout=120)
        if self.error is not None:
            raise SparrowError(f"simulated board: {self.error}")
        try:
            self.stats = json.loads((self.dir / "port.json").read_text())
        except (OSError, ValueError):
            self.stats = {}
        self.stats.update(self._compile)
        shutil.rmtree(self.dir, ignore_errors=True)      # kept only when the simulation failed


def _paced_stream(dev, x, out_size, batch, divisor, pause, progress, stats):
    """Stream ``x`` at the pace the device keeps: ``(int8 outputs [N, out], cycles per vector)``.

    The protocol has no flow control: vectors of a batch arrive back to back
    and a second frame arrives while the first runs, so a device whose engine
    chain needs longer per vector than the link takes to carry one would have
    its input slots and reply places overrun (``E`` 4) on every frame.  The
    first vector goes alone and measures the device's cycles per vector; if
    that exceeds the wire time of one vector (``in`` bytes of 10 bits at
    ``divisor`` clock cycles per bit), the rest go one vector per frame, one
    frame at a time (``stats.batch``, ``stats.window``), otherwise in frames
    of ``batch`` with :data:`~sparrow.protocol.WINDOW` in flight.
    """
    n = len(x)
    y = np.zeros((n, out_size), dtype=np.int8)
    if n == 0:
        return y, []
    y[:1], first = dev.stream(x[:1], out_size, 1, window=1, pause=pause, stats=stats)
    if progress:
        progress(1, n)
    wire = x.shape[1] * 10 * divisor
    stats.window, stats.batch = (1, 1) if first[0] > wire else (P.WINDOW, batch)
    cycles = [float(first[0])]
    if n > 1:
        step = (lambda done, total: progress(done + 1, n)) if progress else None
        y[1:], frame_cycles = dev.stream(x[1:], out_size, stats.batch, window=stats.window,
                                         pause=pause, progress=step, stats=stats, seq0=1)
        counts = [min(stats.batch, n - 1 - s) for s in range(0, n - 1, stats.batch)]
        cycles += [c / k for c, k in zip(frame_cycles, counts) for _ in range(k)]
    return y, cycles


def run_model_on_board(model, x, *, port=None, sim=None, config=EngineConfig(), baud=115200,
                       timeout=1.0, progress=None, batch=None, fault_rate=0.0, fault_seed=0,
                       retries=3, stats=None):
    """Run int8 vectors ``x`` [N, input size] on the board at ``port`` (or the RTL under ``sim``).

    ``config`` sizes the engines of the simulated accelerator (``sim`` only: a
    board runs what it was built with).  Checks first that the board runs
    ``model`` (sizes, layer count and model id).  A version 2 device gets ``B``
    frames of ``batch`` vectors (default: its capacity) streamed
    (:meth:`Device.stream`); a version 1 device one ``R`` frame per vector.
    ``fault_rate`` puts a :class:`FaultyLink` between the driver and the link.
    Returns ``(y int8 [N, out], cycles per vector, seconds over the link,
    identity dict)``; ``stats`` (a :class:`LinkStats`) collects frames, recoveries
    and repeats, and gets the injected ``faults`` and, with ``sim``, the
    simulation's ``sim`` dict (:attr:`SimulatedBoard.stats`);
    ``progress(done, total)`` is called as vectors complete.
    """
    check_engine_kinds(model)
    n = len(x)
    x = np.asarray(x).reshape(n, -1)
    board = None
    if sim:
        board = SimulatedBoard(model, sim, config)
        port = board.wait_port()
        timeout = max(timeout, 30.0 if not fault_rate else 2.0)  # simulated time runs slowly
    dev = Device(port, baud, timeout=timeout, retries=retries)
    link = None
    stats = stats if stats is not None else LinkStats()
    try:
        ident = dev.identify()
        if fault_rate:
            dev.link = link = FaultyLink(dev.link, fault_rate, fault_seed)
        want = {"in_size": model.layers[0].in_size, "out_size": model.layers[-1].out_size,
                "layers": len(model.layers), "model_id": P.model_id(model)}
        diff = [f"{k} {ident[k]} (model {v})" for k, v in want.items() if ident[k] != v]
        if diff:
            raise SparrowError(f"the board on {port} runs another model: {', '.join(diff)}; "
                               f"build and flash {model.name} first")
        if x.shape[1] != ident["in_size"]:
            raise SparrowError(f"inputs are vectors of {x.shape[1]} values, the model takes "
                               f"{ident['in_size']}")
        out_size = ident["out_size"]
        start = time.monotonic()
        if ident["max_batch"]:
            divisor = SimulatedBoard.DIVISOR if sim else ident["clk_hz"] / baud
            y, cycles = _paced_stream(dev, x, out_size, min(batch or ident["max_batch"],
                                                            ident["max_batch"]),
                                      divisor, pause=0.3 if sim else None, progress=progress,
                                      stats=stats)
        else:
            y = np.zeros((n, out_size), dtype=np.int8)
            cycles = []
            for v in range(n):
                y[v], c = dev.run(x[v], out_size)
                cycles.append(c)
                if progress:
                    progress(v + 1, n)
        seconds = time.monotonic() - start
    finally:
        if link is not None:
            stats.faults = dict(link.faults)
        dev.close()
        if board is not None:
            board.close()
            stats.sim = dict(board.stats)
    return y, cycles, seconds, ident
