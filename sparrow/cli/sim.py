"""``sparrow sim DIR --inputs X.npy --out Y.npy [--simulator verilator|icarus] [--pes P]``.

Runs a model directory on the generated RTL (each layer on its engine, the
engines chained in one run of the stream bench under the chosen simulator,
int8 activations between layers), and writes int8 outputs [N, output size],
one row per input, like ``sparrow golden``.  The compiled simulator is cached
per model structure (``$SPARROW_CACHE``, default ``~/.cache/sparrow``): a model
with new weights of the same shapes starts without a compile.
"""

from sparrow.cli.common import add_model_io, engine_config


def configure(parser):
    add_model_io(parser)
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"),
                        help="RTL simulator (default verilator)")
    parser.add_argument("--pes", type=int, default=8, metavar="P",
                        help="PEs of each sd_linear engine, 1..1024 (default 8)")


def run(args):
    import sys
    from sparrow.arrays import load_model_inputs, save_npy_atomic
    from sparrow.modeldir import load_model
    from sparrow.tb.model_sim import simulate_model
    config = engine_config(args.pes)
    model = load_model(args.model)
    x = load_model_inputs(model, args.inputs)
    stats = {}
    y = simulate_model(model, x, args.simulator, config, stats=stats,
                       progress=lambda msg: print(f"sim: {msg}", file=sys.stderr, flush=True))
    save_npy_atomic(args.out, y)
    build = (f"compiled in {stats['compile_seconds']:.1f} s" if stats["compile_seconds"]
             else "cached build")
    print(f"sim: {model.name}: {y.shape[0]} samples on {args.simulator} -> {args.out} "
          f"(int8 {list(y.shape)}; {stats['total_cycles']} cycles in {stats['seconds']:.2f} s, "
          f"{stats['total_cycles'] / max(stats['seconds'], 1e-9) / 1e6:.2f} M cycles/s; {build})")
    return 0
