"""``sparrow eval DIR [--data DATA.npz]``: accuracy of a model directory on the integer golden model, beside fp32's.

Without ``--data``: a digits model on the digits test split.  With
``--data``: the test split of DATA.npz (val when it has none), real inputs
quantised with the model's own input scale (docs/format.md "Inputs"); the
fp32 accuracy shown is the one the compressor recorded for that split.
"""


def configure(parser):
    parser.add_argument("model", metavar="DIR", help="model directory")
    parser.add_argument("--data", metavar="DATA.npz", help="your data (x_test/y_test, else x_val/y_val)")


def _fp32_text(fp32, acc):
    if isinstance(fp32, (int, float)) and not isinstance(fp32, bool):
        return f" ({100 * (acc - fp32):+.2f} pp)", f"{100 * fp32:.2f}%"
    return "", "n/a (not recorded)"


def _eval_data(model, path):
    from sparrow.sw.data import load_data
    from sparrow.sw.golden import real_input_accuracy
    data = load_data(path, tuple(model.input_shape), model.output_size)
    split, x, y = data.eval_split()
    acc = real_input_accuracy(model, x, y)
    meta = model.meta or {}
    key = "fp32_accuracy" if meta.get("split", "test") == split else f"fp32_{split}_accuracy"
    delta, fp32 = _fp32_text(meta.get(key), acc)
    print(f"{model.name}: {path} {split} split ({len(y)} samples): golden int8 {100 * acc:.2f}%{delta}, "
          f"fp32 {fp32}")
    _print_storage(model)
    return 0


def run(args):
    from sparrow import SparrowError
    from sparrow.modeldir import load_model
    model = load_model(args.model)
    if args.data:
        return _eval_data(model, args.data)
    from sparrow.sw import digits
    from sparrow.sw.pipeline import golden_accuracy
    if tuple(model.input_shape) not in ((64,), (1, 8, 8)) or model.output_size != 10:
        raise SparrowError(f"{model.path / 'manifest.json'}: model {model.name!r} is not a digits model "
                           f"(input shape {list(model.input_shape)}, {model.output_size} outputs; "
                           "expected [64] or [1, 8, 8] and 10); give its data with --data DATA.npz")
    if model.input_scale_exp != digits.INPUT_SCALE_EXP:
        raise SparrowError(f"{model.path / 'manifest.json'}: field 'input.scale_exp' is {model.input_scale_exp}; "
                           f"digits inputs are coded with {digits.INPUT_SCALE_EXP}")
    _, _, xte, yte = digits.load_split()
    acc, _ = golden_accuracy(model, xte, yte)
    delta, fp32 = _fp32_text(model.meta.get("fp32_accuracy"), acc)
    print(f"{model.name}: digits test split ({len(yte)} samples): golden int8 {100 * acc:.2f}%{delta}, "
          f"fp32 {fp32}")
    _print_storage(model)
    return 0


def _print_storage(model):
    """The model's encoded and on-chip storage (default PE count of the engines)."""
    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.onchip import storage_line
    from sparrow.sw.storage import model_storage
    st = model_storage(model)
    print(storage_line(model, EngineConfig(), st["ratio"], st["fp32_bits"]))
