"""``sparrow run DIR (--port PORT | --sim verilator|icarus) --inputs X.npy --out Y.npy``.

Checks that the board runs the model directory ``DIR`` (same sizes and model
id) and sends every input vector over the host protocol, resending a frame
whose reply is lost or corrupted (:mod:`sparrow.fpga.host`).
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
    parser.add_argument("--baud", type=int, default=115200, help="UART baud rate (default 115200)")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for each reply (default 1)")


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
    config = engine_config(args.pes)
    model = load_model(args.model)
    x = load_model_inputs(model, args.inputs)
    if args.sim:
        print(f"[run] starting the {args.sim} simulation of {model.name}'s accelerator "
              f"(compiles on first use)", file=sys.stderr, flush=True)
    y, cycles, seconds, ident = run_model_on_board(
        model, x, port=args.port, sim=args.sim, config=config, baud=args.baud,
        timeout=args.timeout, progress=_progress)
    save_npy_atomic(args.out, y)
    mean = float(np.mean(cycles)) if cycles else 0.0
    where = f"the {args.sim} simulation" if args.sim else args.port
    clock = f" = {1e6 * mean / ident['clk_hz']:.1f} us at {ident['clk_hz'] / 1e6:g} MHz" \
        if not args.sim else ""
    print(f"run: {model.name}: {len(y)} vectors on {where} -> {args.out} (int8 {list(y.shape)}); "
          f"{mean:.0f} cycles per vector on the device{clock}; {seconds:.1f} s over the link")
    return 0
