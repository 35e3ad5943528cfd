"""``sparrow explore --model NAME|FILE|DIR --board B --out DIR``: compression and hardware chosen together.

Sweeps compression methods and their per-layer settings (Optuna trials)
together with the hardware parameters (PEs, output lanes, broadcast stages,
the clock from the estimated fmax), scores every point by the estimate
before synthesis, keeps the Pareto front of validation accuracy,
inferences/s and logic cells, refuses points that do not fit the board, and
confirms the ``--builds`` fastest front points within ``--max-drop`` by
place and route and RTL simulation (bit-exact against the golden model).
Writes ``DIR/pareto.json`` and ``DIR/report.html``.  Trials and builds run
in parallel on Ray (a local instance of ``--workers`` CPUs, or the cluster
at ``--address``), serially without it; everything is cached in DIR, so an
interrupted explore continues where it stopped.  ``--model DIR`` (a model
directory) explores the hardware of that one model.
"""

DEFAULT_METHODS = ("smartdeal", "admm", "circulant", "dense-int8")


def configure(parser):
    from sparrow.fpga.boards import BOARDS
    parser.add_argument("--model", required=True, metavar="NAME|FILE|DIR",
                        help="a built-in model (digits-mlp, digits-cnn), your .pt2/.onnx file (with --data), "
                             "or a model directory (hardware only)")
    parser.add_argument("--data", metavar="DATA.npz", default=None,
                        help="with a model file: x_train, y_train, x_val, y_val (optional x_test, y_test)")
    parser.add_argument("--board", required=True, choices=list(BOARDS), metavar="BOARD",
                        help=f"target board: {', '.join(BOARDS)}")
    parser.add_argument("--max-drop", type=float, default=1.0, metavar="PP",
                        help="confirm only points within PP points of fp32 validation accuracy (default 1.0)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"compression methods to sweep (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--trials", type=int, default=40, help="compression trials (default 40)")
    parser.add_argument("--builds", type=int, default=4,
                        help="front points confirmed by place and route and RTL simulation (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and the search (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--address", metavar="RAY", default=None,
                        help="an existing Ray cluster (e.g. ray://head:10001) instead of a local instance")
    parser.add_argument("--serial", action="store_true", help="run without Ray, one task after another")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"),
                        help="RTL simulator of the confirming runs (default verilator)")
    parser.add_argument("--out", required=True, metavar="DIR", help="explore folder (cache, pareto.json, report)")


def run(args):
    import shlex
    import sys
    from sparrow.explore.explorer import explore
    command = "sparrow " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["explore"] \
        else None
    result = explore(args.model, args.board, args.out, data=args.data, methods=tuple(args.methods),
                     max_drop=args.max_drop, trials=args.trials, builds=args.builds, seed=args.seed,
                     workers=args.workers, address=args.address, use_ray=False if args.serial else None,
                     simulator=args.simulator, command=command)
    print(f"{result['model']} on {result['board']}: {result['trials']} trials, {result['points']} points fit "
          f"({result['refused']} refused), {len(result['front'])} on the Pareto front, "
          f"{result['seconds']:.0f} s")
    for p in result["confirmed"]:
        r = p["real"]
        c = p["config"]
        hw = f"pes {c['pes']} bcast {c['bcast']} max_groups {c.get('max_groups')}"
        acc = f"val {100 * p['val_accuracy']:.2f}%" + (
            f" test {100 * p['test_accuracy']:.2f}%" if p["test_accuracy"] is not None else "")
        if r.get("error"):
            print(f"  {p['method']} {hw}: {acc}; build failed: {r['error']}")
            continue
        print(f"  {p['method']} {hw}: {acc}, {p['storage_ratio']:.1f}x storage; logic {r['logic']} "
              f"(est {p['logic']}), fmax {r['fmax_mhz']:.1f} MHz (est {p['fmax_mhz']:.1f}), clock "
              f"{r['clock_mhz']:.3f} MHz, {p['cycles_per_vector']} cycles -> {p['real_inferences_per_s']:,} "
              f"inferences/s; RTL {r['sim']['simulator']} {r['sim']['vectors']} vectors "
              f"{'bit-exact' if r['sim']['bit_exact'] else 'MISMATCH'} ({r['sim']['cycles_per_vector']} "
              f"cycles per vector with fill)")
    print(f"pareto: {args.out}/pareto.json  report: {args.out}/report.html")
    return 0
