"""``sparrow eval DIR``: accuracy on the digits test split with the integer golden model, beside fp32's."""


def configure(parser):
    parser.add_argument("model", metavar="DIR", help="model directory of a digits model")


def run(args):
    from sparrow import SparrowError
    from sparrow.modeldir import load_model
    from sparrow.sw import digits
    from sparrow.sw.pipeline import golden_accuracy
    model = load_model(args.model)
    if tuple(model.input_shape) not in ((64,), (1, 8, 8)) or model.output_size != 10:
        raise SparrowError(f"{model.path / 'manifest.json'}: model {model.name!r} is not a digits model "
                           f"(input shape {list(model.input_shape)}, {model.output_size} outputs; "
                           "expected [64] or [1, 8, 8] and 10)")
    if model.input_scale_exp != digits.INPUT_SCALE_EXP:
        raise SparrowError(f"{model.path / 'manifest.json'}: field 'input.scale_exp' is {model.input_scale_exp}; "
                           f"digits inputs are coded with {digits.INPUT_SCALE_EXP}")
    _, _, xte, yte = digits.load_split()
    acc, _ = golden_accuracy(model, xte, yte)
    fp32 = model.meta.get("fp32_accuracy")
    fp32_txt = f"{100 * fp32:.2f}%" if isinstance(fp32, (int, float)) else "n/a (not recorded)"
    delta = f" ({100 * (acc - fp32):+.2f} pp)" if isinstance(fp32, (int, float)) else ""
    print(f"{model.name}: digits test split ({len(yte)} samples): golden int8 {100 * acc:.2f}%{delta}, "
          f"fp32 {fp32_txt}")
    return 0
