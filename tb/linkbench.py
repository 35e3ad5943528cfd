"""The link bench: the whole accelerator behind its UART, simulated without per-bit Python.

``sparrow run --sim``, the demo's host stage, the accelerator, host and
link-fault tests and ``bench/bench_link.py`` run here; the per-bit
cocotbext-uart host (:class:`~sparrow.tb.accel_tb.UartHost`) stays as the
unit check of the UART line with an independent UART model, on the same
build (the wrapper's ``rx``/``tx`` are the accelerator's pins).

The wrapper puts the host's end of the serial line in HDL, at the
accelerator's own divisor, so the line between the two ends is still
bit-accurate 8N1 serial (the same :class:`~sparrow.hw.uart.UARTTx` and
:class:`~sparrow.hw.uart.UARTRx` as on the device side)::

    Python ──chunk of up to W bytes──> [h2d buffer] ─> UARTTx ──rx──> Accelerator
    Python <──chunk of up to W bytes── [d2h buffer] <─ UARTRx <──tx──┘
           raw bits (a malformed byte), the rx pin ─────┘ (ANDed onto rx)

and the clock and the reset are made in HDL (a delay loop: Verilator
``--timing``), so Python runs once per chunk (``W`` = :data:`CHUNK` bytes,
about ``10 * W * divisor`` clock cycles of line time) or when it polls the
host, never per bit or per cycle.  The cocotb side is
:mod:`sparrow.tb.link_tb`.

Ports of the wrapper's top module ``sparrow_link_tb`` (read and written by
:class:`~sparrow.tb.link_tb.ChunkHost`):

* ``h2d_data`` [8 W] (byte 0 in the low bits), ``h2d_count`` (0..W) and
  ``h2d_req`` (toggled by Python) offer a chunk; ``h2d_ack`` follows
  ``h2d_req`` once the wrapper has taken it (double-buffered: the next chunk
  may be offered while this one is sent);
* ``raw_bits`` [16] (sent LSB first, one bit time each), ``raw_len`` (1..16)
  and ``raw_req``/``raw_ack`` the same way, for bytes a UART transmitter
  cannot make (a low stop bit);
* ``d2h_data`` [8 W] (the first byte in the low bits), ``d2h_count`` and
  ``d2h_seq`` (incremented by one per chunk): a chunk is published when it is
  full or when no byte has followed the last for 1.2 byte times;
* ``h2d_idle`` (nothing left to send and the last stop bit has ended),
  ``quiet`` (h2d idle, no received byte held, the accelerator not busy and
  its line idle for :data:`QUIET_BYTES` byte times: nothing will happen until
  the host sends), ``host_frame_error`` (sticky: a byte from the device had a
  low stop bit), and the accelerator's ``busy`` and ``error``;
* ``rx`` and ``tx``: the accelerator's pins (``rx`` ANDed into its line), for
  the per-bit unit check with cocotbext-uart on the same build;
* ``cycle`` (clock cycles since reset), ``alarm`` (written by Python) and
  ``wake``, which counts up one cycle after any of: a chunk taken or
  published, ``h2d_idle`` or ``quiet`` rising, ``cycle`` equal to
  ``alarm``.  Python waits on ``wake`` alone (one trigger, no timer):
  :class:`~sparrow.tb.link_tb.ChunkHost` sets ``alarm`` to bound its wait.

As in the stream bench, the contents of the ``sparrow_rom`` memories load at
run time (:func:`run_link`): an accelerator built with
``EngineConfig(generic=True)`` (``sparrow run --sim``) holds its engines'
parameters and its identify reply (the model id) in such ROMs, so a model
that differs only in its parameter values (a retrained model of the same
shapes, whatever its sparsity: the sd_linear code layout is the structure's and
its code ROM's depth one of two, :func:`~sparrow.hw.sd_program.generic_code_depth`)
runs on the cached simulator.
"""

import re

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparrow.hw.uart import UARTRx, UARTTx
from sparrow.tb.bench import CLOCK_NS
from sparrow.validate import check_int

__all__ = ["CHUNK", "QUIET_BYTES", "TOPLEVEL", "BUILD_ARGS", "LinkHarness", "link_verilog",
           "run_link"]

#: Bytes per chunk (each direction).
CHUNK = 128

#: Byte times the device's line must be idle (and nothing else happening) for ``quiet``.
QUIET_BYTES = 2

#: Top module of the generated Verilog.
TOPLEVEL = "sparrow_link_tb"

#: Compile arguments (as :mod:`sparrow.tb.streambench`: the clock is a delay loop, and only the
#: signals marked public stay visible, so Verilator optimises the design as a whole).  -O2:
#: the model's C++ is otherwise built -Os (verilated.mk's OPT_FAST); measured on digits-mlp,
#: -O2 simulates 1.4x the cycles per processor second for ~15% more compile time.
BUILD_ARGS = {"verilator": ["--timing", "--no-public-flat-rw",
                            "-CFLAGS", "-std=gnu++20 -fcoroutines -O2"],
              "icarus": []}


class LinkHarness(wiring.Component):
    """An :class:`~sparrow.hw.accel.Accelerator` with the host's end of its UART line in HDL.

    Parameters
    ----------
    accel : sparrow.hw.accel.Accelerator
        The device; its ``divisor`` is also the host side's.
    chunk : int
        Bytes per chunk in each direction, 1..1024.

    Members
    -------
    h2d_data : In(8 * chunk); h2d_count : In(range(chunk + 1)); h2d_req : In(1); h2d_ack : Out(1)
        A chunk of bytes to send (first byte in bits 0..7), offered by toggling ``h2d_req``.
    raw_bits : In(16); raw_len : In(5); raw_req : In(1); raw_ack : Out(1)
        Raw line levels to send once nothing else is being sent (LSB first, ``raw_len`` bits).
    d2h_data : Out(8 * chunk); d2h_count : Out(range(chunk + 1)); d2h_seq : Out(16)
        The last chunk of bytes received (first byte in bits 0..7), numbered.
    h2d_idle, quiet, host_frame_error, busy, error : Out(1)
        See the module documentation.
    rx : In(1, init=1); tx : Out(1)
        The accelerator's own pins: ``rx`` is ANDed into its line (idle high), ``tx`` is its
        line, so a per-bit bench (:class:`~sparrow.tb.accel_tb.UartHost`) can drive them.
    cycle : Out(48); alarm : In(48); wake : Out(8)
        Clock cycles since reset; ``wake`` counts up one cycle after a chunk was taken or
        published, ``h2d_idle`` or ``quiet`` rose, or ``cycle`` equalled ``alarm``.
    """

    def __init__(self, accel, chunk=CHUNK):
        self._chunk = check_int(chunk, "Chunk size", 1, 1024)
        self._accel = accel
        self._divisor = accel.divisor
        super().__init__({
            "h2d_data": In(8 * chunk), "h2d_count": In(range(chunk + 1)), "h2d_req": In(1),
            "h2d_ack": Out(1),
            "raw_bits": In(16), "raw_len": In(5), "raw_req": In(1), "raw_ack": Out(1),
            "d2h_data": Out(8 * chunk), "d2h_count": Out(range(chunk + 1)), "d2h_seq": Out(16),
            "h2d_idle": Out(1), "quiet": Out(1), "host_frame_error": Out(1),
            "busy": Out(1), "error": Out(1),
            "cycle": Out(48), "alarm": In(48), "wake": Out(8),
            "rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def chunk(self):
        return self._chunk

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = self._accel
        m.submodules.host_tx = tx = UARTTx(self._divisor)
        m.submodules.host_rx = rx = UARTRx(self._divisor)
        raw_line = self._send(m, tx)
        m.d.comb += [accel.rx.eq(tx.tx & raw_line & self.rx), rx.rx.eq(accel.tx), self.tx.eq(accel.tx),
                     self.busy.eq(accel.busy), self.error.eq(accel.error),
                     self.host_frame_error.eq(rx.frame_error)]
        self._receive(m, rx, accel)
        self._events(m)
        return m

    def _events(self, m):
        """``cycle``, and ``wake``: counts the cycles after which Python has something to do."""
        m.d.sync += self.cycle.eq(self.cycle + 1)
        seq, ack, idle, quiet = Signal(16), Signal(), Signal(), Signal()
        m.d.sync += [seq.eq(self.d2h_seq), ack.eq(self.h2d_ack), idle.eq(self.h2d_idle),
                     quiet.eq(self.quiet)]
        # Compared with last cycle's values, so that the event comes a cycle after the change
        # and every port Python reads on waking is settled (Icarus reports a change during
        # the edge's other updates).
        news = ((seq != self.d2h_seq) | (ack != self.h2d_ack) | (~idle & self.h2d_idle)
                | (~quiet & self.quiet) | (self.cycle == self.alarm))
        with m.If(news):
            m.d.sync += self.wake.eq(self.wake + 1)

    def _send(self, m, tx):
        """The host-to-device chunk buffer and the raw-bit shifter; returns the raw line level."""
        w, d = self._chunk, self._divisor
        buf = Signal(8 * w)
        left = Signal(range(w + 1))
        m.d.comb += [tx.i.valid.eq(left != 0), tx.i.payload.eq(buf[:8])]
        with m.If(tx.i.valid & tx.i.ready):
            m.d.sync += [buf.eq(buf >> 8), left.eq(left - 1)]
        with m.Elif((left == 0) & (self.h2d_req != self.h2d_ack)):
            m.d.sync += [buf.eq(self.h2d_data), left.eq(self.h2d_count), self.h2d_ack.eq(self.h2d_req)]

        raw, raw_left = Signal(16), Signal(5)
        line, timer = Signal(init=1), Signal(range(d))
        sending = (left != 0) | ~tx.i.ready | (self.h2d_req != self.h2d_ack)
        with m.If(raw_left != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [line.eq(raw[0]), raw.eq(raw >> 1), raw_left.eq(raw_left - 1),
                             timer.eq(d - 1)]
        with m.Elif(timer != 0):         # the last raw bit's time
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += line.eq(1)
            with m.If(~sending & (self.raw_req != self.raw_ack)):
                m.d.sync += [raw.eq(self.raw_bits), raw_left.eq(self.raw_len),
                             self.raw_ack.eq(self.raw_req)]
        raw_busy = (raw_left != 0) | (timer != 0) | (self.raw_req != self.raw_ack)
        m.d.comb += self.h2d_idle.eq(~sending & ~raw_busy)
        return line

    def _receive(self, m, rx, accel):
        """The device-to-host chunk buffer (bytes shift in from the top) and the quiet detector."""
        w, d = self._chunk, self._divisor
        acc = Signal(8 * w)
        held = Signal(range(w + 1))
        flush_after = 12 * d       # no byte for 1.2 byte times: the device paused (or ended a frame)
        since = Signal(range(flush_after + 1))
        published = Signal()
        m.d.comb += rx.o.ready.eq(1)
        with m.If(rx.o.valid):
            m.d.sync += [acc.eq((acc >> 8) | (rx.o.payload << (8 * (w - 1)))), held.eq(held + 1),
                         since.eq(0)]
        with m.Elif((held == w) | ((held != 0) & (since == flush_after))):
            # Publish: the bytes sit at the top of acc, so shift them down to bit 0.
            m.d.sync += [self.d2h_data.eq(acc >> ((w - held).as_unsigned() * 8)), self.d2h_count.eq(held),
                         published.eq(1), held.eq(0), since.eq(0)]
        with m.Elif(since != flush_after):
            m.d.sync += since.eq(since + 1)
        # The number changes a cycle after the data, so that a simulator that reports the
        # change before its other updates of the edge (Icarus) shows the data complete.
        with m.If(published):
            m.d.sync += [self.d2h_seq.eq(self.d2h_seq + 1), published.eq(0)]

        quiet_after = QUIET_BYTES * 10 * d
        idle = Signal(range(quiet_after + 1))
        active = accel.busy | ~accel.tx | (held != 0) | published | ~self.h2d_idle
        with m.If(active):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != quiet_after):
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += self.quiet.eq(~active & (idle == quiet_after))


_PORTS = (("h2d_data", "in"), ("h2d_count", "in"), ("h2d_req", "in"), ("h2d_ack", "out"),
          ("raw_bits", "in"), ("raw_len", "in"), ("raw_req", "in"), ("raw_ack", "out"),
          ("d2h_data", "out"), ("d2h_count", "out"), ("d2h_seq", "out"),
          ("h2d_idle", "out"), ("quiet", "out"), ("host_frame_error", "out"),
          ("busy", "out"), ("error", "out"), ("cycle", "out"), ("alarm", "in"), ("wake", "out"),
          ("rx", "in"), ("tx", "out"))


def link_verilog(accel, chunk=CHUNK):
    """Verilog of the wrapper ``sparrow_link_tb`` around ``accel`` (clock and reset made in HDL)."""
    from sparrow.tb.model_sim import sim_verilog
    harness = LinkHarness(accel, chunk)
    widths = {name: len(getattr(harness, name)) for name, _ in _PORTS}
    text = sim_verilog(harness, "sparrow_link")
    lines = [f"module {TOPLEVEL};",
             "  // The clock and the reset are made here, so no Python runs per edge.",
             "  reg clk = 1'b0;",
             f"  always #{CLOCK_NS // 2} clk = ~clk;",
             "  reg [1:0] rst_count = 2'd0;",
             "  wire rst = rst_count != 2'd3;",
             "  always @(posedge clk) if (rst) rst_count <= rst_count + 2'd1;"]
    for name, direction in _PORTS:
        vec = f"[{widths[name] - 1}:0] " if widths[name] > 1 else ""
        if direction == "in":
            init = int(getattr(harness, name).init)
            lines.append(f"  reg {vec}{name} /*verilator public_flat_rw*/ = {init};")
        else:
            lines.append(f"  wire {vec}{name} /*verilator public_flat_rd*/;")
    conns = ", ".join(f".{name}({name})" for name, _ in _PORTS)
    lines += [f"  sparrow_link u (.clk(clk), .rst(rst), {conns});", "endmodule"]
    return text + "\n" + "\n".join(lines) + "\n"


def _rom_arg(module, rom):
    """The plusarg of ROM ``rom`` in ``module`` (``sparrow_link.accel.chain.engine0.basis``):
    ``accel_chain_engine0_basis_<rom>``."""
    path = module.split(".", 1)[1] if "." in module else module
    return re.sub(r"\W", "_", f"{path}_{rom}")


def run_link(accel, simulator, testcase, *, extra_env=None, test_dir=None, log_file=None,
             chunk=CHUNK, stats=None, verilog=None):
    """Run ``testcase`` of :mod:`sparrow.tb.link_tb` on the wrapper around ``accel``.

    ``verilog``: the wrapper's text if already made (:func:`link_verilog` of
    ``accel``; runs on several simulators convert once).  The contents of its
    ``sparrow_rom`` memories load at run time
    (:func:`~sparrow.tb.runner.load_roms_at_run_time`, files under
    ``test_dir/roms``), so the accelerator of a generic build (``config.generic``:
    the engines' parameters, their shifts and the identify reply with the model
    id in ROMs) compiles once per model structure.  ``stats`` (a dict), if
    given, gets ``compile_seconds`` (0.0 when the build cache had the
    simulator) and ``runtime_roms`` (how many ROMs loaded at run time).
    Returns the results XML path; raises
    :class:`~sparrow.tb.runner.SimulationFailed` when the test fails.
    """
    from sparrow.tb.runner import compile_design, load_roms_at_run_time, run_cocotb, sim_test_dir
    verilog, roms = load_roms_at_run_time(verilog or link_verilog(accel, chunk), _rom_arg)
    _, seconds = compile_design(verilog, TOPLEVEL, simulator, log_file=log_file,
                                build_args=BUILD_ARGS[simulator])
    if stats is not None:
        stats["compile_seconds"] = seconds
        stats["runtime_roms"] = len(roms)
    test_dir = sim_test_dir(TOPLEVEL, simulator, test_dir)
    rom_dir = test_dir / "roms"
    rom_dir.mkdir(parents=True, exist_ok=True)
    return run_cocotb(verilog, TOPLEVEL, "sparrow.tb.link_tb", simulator,
                      build_args=BUILD_ARGS[simulator], extra_env=extra_env, testcase=testcase,
                      test_dir=test_dir, log_file=log_file,
                      plusargs=[rom.plusarg(rom_dir) for rom in roms])
