"""``sparrow sim DIR --inputs X.npy --out Y.npy [--simulator verilator|icarus] [--pes P]``.

Runs a model directory on the generated RTL, layer by layer (each layer on its
engine under the chosen simulator, int8 activations between layers), and
writes int8 outputs [N, output size], one row per input, like ``sparrow golden``.
"""


def configure(parser):
    parser.add_argument("model", metavar="DIR", help="model directory (manifest.json + .npz files)")
    parser.add_argument("--inputs", required=True, metavar="X.npy",
                        help="int8 inputs [N, *input shape] or [N, input size]")
    parser.add_argument("--out", required=True, metavar="Y.npy", help="where to write the int8 outputs")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"),
                        help="RTL simulator (default verilator)")
    parser.add_argument("--pes", type=int, default=8, metavar="P",
                        help="PEs of each sd_linear engine, 1..1024 (default 8)")


def check_inputs(model, x, path):
    """x reshaped to [N, input size]; a one-line SparrowError when its shape is wrong."""
    import numpy as np
    from .. import SparrowError
    shape = tuple(model.input_shape)
    size = int(np.prod(shape))
    if x.ndim >= 2 and x.shape[0] >= 1 and (x.shape[1:] == shape or x.shape[1:] == (size,)):
        return x.reshape(x.shape[0], size)
    raise SparrowError(f"{path}: inputs have shape {list(x.shape)}, expected [N, {size}] or "
                       f"[N, {', '.join(map(str, shape))}] with N >= 1 for model {model.name!r}")


def run(args):
    import sys
    from .. import SparrowError
    from ..modeldir import load_model
    from ..sw.golden_cmd import load_inputs, save_npy_atomic
    from .model_sim import simulate_model
    if not 1 <= args.pes <= 1024:
        raise SparrowError(f"--pes must be between 1 and 1024, not {args.pes}")
    model = load_model(args.model)
    x = check_inputs(model, load_inputs(args.inputs), args.inputs)
    y = simulate_model(model, x, args.simulator, args.pes,
                       progress=lambda msg: print(f"sim: {msg}", file=sys.stderr, flush=True))
    save_npy_atomic(args.out, y)
    print(f"sim: {model.name}: {y.shape[0]} samples on {args.simulator} -> {args.out} "
          f"(int8 {list(y.shape)})")
    return 0
