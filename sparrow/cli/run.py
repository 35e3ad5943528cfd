"""``sparrow run DIR (--port PORT | --sim verilator|icarus) --inputs X.npy --out Y.npy``.

Checks that the board runs the model directory ``DIR`` (same sizes and model
id) and streams every input vector over the host protocol (``B`` batches, two
frames in flight), resending frames whose replies are lost or corrupted
(:mod:`sparrow.fpga.host`); reports inferences per second end to end and the
device cycles per vector.  ``--fault-rate P`` injects link faults (dropped,
corrupted, duplicated and inserted bytes, host stalls mid-frame) between the
driver and the link.
"""

from sparrow.cli.common import add_model_io, engine_config


def configure(parser):
    add_model_io(parser, "the model directory the board was built from")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB1, or a pyserial "
                                      "URL such as socket://host:port)")
    where.add_argument("--sim", choices=("verilator", "icarus"),
                       help="no board: run the accelerator's RTL in this simulator and drive it "
                            "over a local socket")
    parser.add_argument("--pes", type=int, default=8,
                        help="--sim: PEs of each sd_linear engine (default 8; a board runs what "
                             "it was built with)")
    parser.add_argument("--baud", type=int, default=3_000_000,
                        help="UART baud rate (default 3000000, what sparrow build uses)")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for each reply (default 1; 5 or more with --sim)")
    parser.add_argument("--batch", type=int, default=None,
                        help="vectors per frame (default: the device's capacity)")
    parser.add_argument("--retries", type=int, default=3,
                        help="recoveries in a row without progress before giving up (default 3)")
    parser.add_argument("--fault-rate", type=float, default=0.0, metavar="P",
                        help="inject a link fault at each byte, in both directions, with "
                             "probability P (default 0)")
    parser.add_argument("--fault-seed", type=int, default=0, metavar="S",
                        help="seed of the fault injector (default 0)")


def _progress(done, total):
    import sys
    if sys.stderr.isatty() or done == total or done % 100 == 0:
        print(f"\r[run] {done}/{total} vectors", end="" if done < total else "\n",
              file=sys.stderr, flush=True)


def run(args):
    import sys
    import numpy as np
    from sparrow.arrays import load_model_inputs, save_npy_atomic
    from sparrow.fpga.host import run_model_on_board
    from sparrow.modeldir import load_model
    from sparrow import SparrowError
    from sparrow.fpga.host import LinkStats
    config = engine_config(args.pes)
    if args.batch is not None and not 1 <= args.batch <= 255:
        raise SparrowError(f"--batch must be between 1 and 255, not {args.batch}")
    if not 0 <= args.fault_rate <= 1:
        raise SparrowError(f"--fault-rate must be between 0 and 1, not {args.fault_rate:g}")
    if args.retries < 0:
        raise SparrowError(f"--retries must be at least 0, not {args.retries}")
    model = load_model(args.model)
    x = load_model_inputs(model, args.inputs)
    if args.sim:
        print(f"[run] starting the {args.sim} simulation of {model.name}'s accelerator "
              f"(compiles on first use)", file=sys.stderr, flush=True)
    stats = LinkStats()
    y, cycles, seconds, ident = run_model_on_board(
        model, x, port=args.port, sim=args.sim, config=config, baud=args.baud,
        timeout=args.timeout, progress=_progress, batch=args.batch, fault_rate=args.fault_rate,
        fault_seed=args.fault_seed, retries=args.retries, stats=stats)
    save_npy_atomic(args.out, y)
    mean = float(np.mean(cycles)) if cycles else 0.0
    where = f"the {args.sim} simulation" if args.sim else args.port
    clock = f" = {1e6 * mean / ident['clk_hz']:.1f} us at {ident['clk_hz'] / 1e6:g} MHz" \
        if not args.sim else ""
    rate = len(y) / seconds if seconds > 0 else float("inf")
    print(f"run: {model.name}: {len(y)} vectors on {where} -> {args.out} (int8 {list(y.shape)}); "
          f"{mean:.0f} cycles per vector on the device{clock}; {seconds:.1f} s over the link, "
          f"{rate:.0f} inferences/s end to end")
    sim = getattr(stats, "sim", None)
    if sim and sim.get("run_seconds"):
        print(f"sim: {sim['cycles']:.0f} cycles simulated in {sim['run_seconds']:.2f} s "
              f"({sim['cycles'] / sim['run_seconds'] / 1e6:.2f} M cycles/s; "
              f"{sim['cycles'] / max(sim['cpu_seconds'], 1e-9) / 1e6:.2f} M per processor "
              f"second; {sim['wait_seconds']:.2f} s waiting for the host)")
    if stats.frames_sent:
        faults = getattr(stats, "faults", {})
        paced = (f" (one at a time: the device needs longer per vector than the link)"
                 if stats.window == 1 else f", {stats.window} in flight")
        print(f"link: protocol v{ident['version']}, {stats.batches} frames of up to "
              f"{stats.batch or ident['max_batch']} vectors{paced}, {stats.frames_sent} sent, "
              f"{stats.recoveries} "
              f"recoveries, {stats.repeats} repeats reported by the device"
              + (f"; {sum(faults.values())} faults injected "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})"
                 if args.fault_rate else ""))
    return 0
