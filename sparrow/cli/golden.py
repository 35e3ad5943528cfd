"""``sparrow golden DIR --inputs X.npy --out Y.npy``: run a model directory on the integer golden model.

X holds int8 codes or real values (float, quantised with the model's input
scale: docs/format.md "Inputs") of shape [N, *input_shape] or
[N, prod(input_shape)], one row per sample; Y is int8 [N, output size],
written atomically.
"""

from sparrow.cli.common import add_model_io


def configure(parser):
    add_model_io(parser)


def run(args):
    from sparrow import SparrowError
    from sparrow.arrays import load_model_inputs, save_npy_atomic
    from sparrow.modeldir import load_model
    from sparrow.sw.golden import run_model
    model = load_model(args.model)
    x = load_model_inputs(model, args.inputs)
    try:
        y = run_model(model, x)
    except SparrowError as exc:
        raise SparrowError(f"{args.inputs}: {exc}")
    save_npy_atomic(args.out, y)
    print(f"golden: {model.name}: {y.shape[0]} samples -> {args.out} (int8 {list(y.shape)})")
    return 0
