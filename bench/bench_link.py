"""Benchmark: the host link at full speed, end to end, and under faults.

For digits-mlp on each board (iCEBreaker, ULX3S-85F), at the clock its build
picked (the build report's ``clock_hz``, or ``--clocks``) and 3 Mbaud:

* **RTL, bit-accurate** (short run): the whole accelerator under Verilator
  with the UART at its real divisor; the host streams ``B`` batches of 16 with
  two frames in flight and answers at once (the link bench,
  ``tb/link_tb.py``'s ``link_stream``: the host's end of the serial line in
  HDL at the same divisor, bytes in chunks, no Python per bit; a reply is
  seen 1.2 byte times after its last stop bit).  Gives device cycles per vector, inferences/s at
  the real clock and the share of time the host-to-device line is busy.
* **Protocol, computed** (short and long run): the same frames timed from the
  protocol (bytes on the wire, the last vector's compute, the window of two
  frames), first for the RTL run's frames (the two must agree), then for
  100 000 vectors, with no host latency and with ``--latency-ms`` (an FTDI
  latency timer of 1 ms: the driver asks for low-latency mode).

The goals: at least 90% of what the link's bit rate allows (every bit on the
host-to-device line an input bit: ``baud / 10 / input size`` vectors/s), and
at least 20x today's 128 inferences/s on the iCEBreaker.

``--faults`` (on by default) also runs the long fault test: at least 1000
frames through the fault injector on a small model's RTL; every output checked
against the golden model; prints frames sent, faults, recoveries, repeats.

    python -m sparrow.bench.bench_link [--model DIR] [--pes 16] [--clocks icebreaker=27,ulx3s-85f=75]
                                       [--rtl-vectors 48] [--no-faults] [--fault-frames 1000]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BOARDS = ("icebreaker", "ulx3s-85f")
BAUD = 3_000_000
BATCH = 16
TODAY = 128          # inferences/s at main before the issue: 115200 baud, one vector per request


def protocol_time(n, batch, in_size, out_size, bit_s, compute_s, latency_s=0.0):
    """Seconds from the first request byte to the last reply byte for ``n`` vectors, and the line busy share.

    Window of two frames: frame k+2 is sent when the reply of frame k has
    arrived (plus ``latency_s``) and frame k+1 has left.  A reply starts when
    the frame's CRC is in and its last vector has been computed (the others
    computed while later vectors arrived), and after the previous reply.
    """
    byte_s = 10 * bit_s
    counts = [min(batch, n - s) for s in range(0, n, batch)]
    ends, reply_end = [], []
    line_free, tx_free = 0.0, 0.0
    for k, c in enumerate(counts):
        start = line_free if k < 2 else max(line_free, reply_end[k - 2] + latency_s)
        end = start + (7 + c * in_size) * byte_s
        line_free = end
        ready = max(end, end - 2 * byte_s + compute_s) + 4 * byte_s / 10
        rstart = max(ready, tx_free)
        tx_free = rstart + (12 + c * out_size) * byte_s
        ends.append(end)
        reply_end.append(tx_free)
    total = reply_end[-1]
    busy = sum((7 + c * in_size) * byte_s for c in counts) / total
    return total, busy


def _clocks(args):
    clocks = {}
    for item in filter(None, (args.clocks or "").split(",")):
        board, mhz = item.split("=")
        clocks[board] = float(mhz) * 1e6
    for board in BOARDS:
        if board in clocks:
            continue
        report = Path(args.reports) / f"{board}-digits-mlp_accel" / "digits-mlp_accel.report.json"
        if report.exists():
            clocks[board] = float(json.loads(report.read_text())["clock_hz"])
        else:
            sys.exit(f"bench_link: no clock for {board}: build it first (sparrow build --board {board} "
                     f"--model DIR --pes {args.pes}) or pass --clocks {board}=MHZ")
    return clocks


def rtl_stream(model, x, expected, clk_hz, divisor, pes, out_dir):
    """Run the link bench's ``link_stream`` on Verilator; its result dict."""
    from sparrow.hw.accel import Accelerator
    from sparrow.hw.engine import EngineConfig
    from sparrow.tb.linkbench import run_link
    accel = Accelerator(model, clk_hz, divisor, EngineConfig(pes=pes), max_batch=BATCH)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "data.npz", x=x, expected=expected, divisor=divisor, batch=BATCH)
    run_link(accel, "verilator", "link_stream",
             extra_env={"ACCEL_TB_DATA": out_dir / "data.npz",
                        "ACCEL_TB_RESULT": out_dir / "result.json"},
             test_dir=out_dir / "run", log_file=out_dir / "sim.log")
    return json.loads((out_dir / "result.json").read_text())


def fault_run(frames, rate, seed):
    from sparrow.fpga.host import LinkStats, run_model_on_board
    from sparrow.hw.engine import EngineConfig
    from sparrow.sw.golden import run_model
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(1)
    model = random_model([random_layer("sd_linear", rng, name="fc1", in_=12, out=8, k=3, relu=True),
                          random_layer("dense_linear", rng, name="fc2", in_=8, out=5)], [12],
                         name="hand")
    x = np.random.default_rng(seed).integers(-128, 128, size=(frames, 12)).astype(np.int8)
    stats = LinkStats()
    start = time.monotonic()
    y, _, _, _ = run_model_on_board(model, x, sim="verilator", config=EngineConfig(pes=4), batch=1,
                                    fault_rate=rate, fault_seed=seed, retries=8, stats=stats)
    seconds = time.monotonic() - start
    wrong = int((y != run_model(model, x)).any(axis=1).sum())
    return stats, wrong, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="digits-mlp model directory (default: compress it)")
    parser.add_argument("--pes", type=int, default=16, help="PEs per sd_linear engine (default 16)")
    parser.add_argument("--clocks", default=None, help="board=MHz,... (default: the build reports')")
    parser.add_argument("--reports", default="build/fpga", help="folder of the builds (default build/fpga)")
    parser.add_argument("--rtl-vectors", type=int, default=48, help="vectors of the RTL run (default 48)")
    parser.add_argument("--long-vectors", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=1.0,
                        help="host turnaround per reply for the board estimate (default 1 ms)")
    parser.add_argument("--no-faults", action="store_true", help="skip the long fault run")
    parser.add_argument("--fault-frames", type=int, default=1000)
    parser.add_argument("--fault-rate", type=float, default=0.002)
    parser.add_argument("--fault-seed", type=int, default=1)
    parser.add_argument("--out", default="build/bench/link")
    args = parser.parse_args(argv)

    from sparrow.hw.uart import uart_divisor
    from sparrow.modeldir import load_model, save_model
    from sparrow.sw.golden import run_model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clocks = _clocks(args)
    if args.model:
        model = load_model(args.model)
    else:
        from sparrow.sw.pipeline import compress_digits
        model, _ = compress_digits("digits-mlp", "smartdeal", seed=0, progress=False)
        save_model(model, out / "model")
    from sparrow.sw import digits
    _, _, pixels, _ = digits.load_split()
    x = digits.quantize_inputs(pixels)[:args.rtl_vectors]
    expected = np.asarray(run_model(model, x))
    n_in, n_out = model.layers[0].in_size, model.layers[-1].out_size

    rows = []
    for board in BOARDS:
        clk = clocks[board]
        div = uart_divisor(clk, BAUD)
        bit_s = div / clk
        rtl = rtl_stream(model, x, expected, clk, div, args.pes, out / board)
        cyc = sum(rtl["frame_cycles"]) / rtl["vectors"]
        rtl_s = rtl["cycles"] / clk
        rtl_rate = rtl["vectors"] / rtl_s
        calc_s, _ = protocol_time(rtl["vectors"], BATCH, n_in, n_out, bit_s, cyc / clk)
        long_s, busy = protocol_time(args.long_vectors, BATCH, n_in, n_out, bit_s, cyc / clk)
        lat_s, lat_busy = protocol_time(args.long_vectors, BATCH, n_in, n_out, bit_s, cyc / clk,
                                        args.latency_ms / 1e3)
        bound = 1 / (bit_s * 10 * n_in)
        rows.append({"board": board, "clock_mhz": clk / 1e6, "baud": round(1 / bit_s), "divisor": div,
                     "cycles_per_vector": cyc, "rtl_vectors": rtl["vectors"], "rtl_rate": rtl_rate,
                     "rtl_busy": rtl["line_busy_cycles"] / rtl["cycles"], "calc_rate_short": rtl["vectors"] / calc_s,
                     "agreement": calc_s / rtl_s, "long_rate": args.long_vectors / long_s, "long_busy": busy,
                     "lat_rate": args.long_vectors / lat_s, "lat_busy": lat_busy, "bound": bound})
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")

    print(f"\nhost link, digits-mlp ({n_in} in, {n_out} out), {args.pes} PEs per engine, "
          f"B frames of {BATCH} vectors, window 2")
    print("| board | clock (MHz) | baud | cycles/vector | RTL run: inf/s, line busy | protocol, same frames | "
          f"protocol, {args.long_vectors} vectors: inf/s, line busy | with {args.latency_ms:g} ms host latency "
          "| of the link bound | vs 128/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['board']} | {r['clock_mhz']:.3f} | {r['baud']} (div {r['divisor']}) | "
              f"{r['cycles_per_vector']:.0f} | {r['rtl_rate']:.0f}, {100 * r['rtl_busy']:.1f}% "
              f"({r['rtl_vectors']} vectors) | {r['calc_rate_short']:.0f} ({100 * r['agreement']:.1f}% of "
              f"the RTL time) | {r['long_rate']:.0f}, {100 * r['long_busy']:.1f}% | {r['lat_rate']:.0f}, "
              f"{100 * r['lat_busy']:.1f}% | {100 * r['long_rate'] / r['bound']:.1f}% "
              f"({100 * r['lat_rate'] / r['bound']:.1f}%) | {r['long_rate'] / TODAY:.1f}x "
              f"({r['lat_rate'] / TODAY:.1f}x) |")

    if not args.no_faults:
        stats, wrong, seconds = fault_run(args.fault_frames, args.fault_rate, args.fault_seed)
        faults = getattr(stats, "faults", {})
        print(f"\nfaults: {stats.batches} frames ({stats.frames_sent} sent), {sum(faults.values())} faults "
              f"injected at {args.fault_rate:g} per byte ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}), "
              f"{stats.recoveries} recoveries, {stats.repeats} repeats reported, {stats.vectors} outputs "
              f"checked against the golden model, {wrong} wrong; {seconds:.0f} s")
        if wrong:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
