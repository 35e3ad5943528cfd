"""``sparrow sim DIR --inputs X.npy --out Y.npy [--simulator verilator|icarus] [--pes P]``.

Runs a model directory on the generated RTL, layer by layer (each layer on its
engine under the chosen simulator, int8 activations between layers), and
writes int8 outputs [N, output size], one row per input, like ``sparrow golden``.
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
    y = simulate_model(model, x, args.simulator, config,
                       progress=lambda msg: print(f"sim: {msg}", file=sys.stderr, flush=True))
    save_npy_atomic(args.out, y)
    print(f"sim: {model.name}: {y.shape[0]} samples on {args.simulator} -> {args.out} "
          f"(int8 {list(y.shape)})")
    return 0
