"""``sparrow compress --model M --method X --out DIR``: train/compress a model and write a model directory.

Digits models are trained in fp32, compressed, exported and checked (golden
accuracy, golden == fake-quantised torch forward); the report goes into the
manifest's ``meta``.  ``--model minilm`` runs the SmartDeal post-training
decomposition of all-MiniLM-L6-v2 (sw only: it writes ``report.json`` and the
compressed weights into DIR, not a hardware model directory).
"""

import json

MODELS = ("digits-mlp", "digits-cnn", "minilm")
METHODS = ("smartdeal", "circulant", "admm", "dense-int8")


def _density(text):
    import argparse
    v = float(text)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"density must be in (0, 1], not {text}")
    return v


def configure(parser):
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to write (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=_density, help="fraction of P x 1 coefficient blocks kept (smartdeal, admm)")
    parser.add_argument("--block", type=int, help="P: rows per pruning block (the PE count of a tile)")
    parser.add_argument("--k", type=int, help="basis group size (smartdeal) or circulant block size (circulant)")
    parser.add_argument("--tiles", type=int, help="T: output-row tiles with their own basis (smartdeal)")
    parser.add_argument("--criterion", choices=("magnitude", "reweighted-l1"), help="block pruning criterion")
    parser.add_argument("--break-even", metavar="auto|JSON",
                        help='per-layer break-even pruning ratios, e.g. \'{"fc2": 0.6}\', or "auto" for those of '
                             "the hardware cycle model (P = --block PEs against --dense-lanes MACs): a layer whose "
                             "target sparsity is below its break-even stays unpruned (smartdeal, admm)")
    parser.add_argument("--dense-lanes", type=int, metavar="D",
                        help="with --break-even auto: MAC lanes of the dense engine compared against (default 8)")
    parser.add_argument("--sentences", type=int, default=64, help="minilm: held-out sentences to evaluate")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(args):
    from sparrow import SparrowError
    o = {}
    for key in ("density", "block", "k", "tiles", "criterion"):
        v = getattr(args, key)
        if v is not None:
            o[key] = v
    if args.dense_lanes is not None:
        if args.break_even != "auto":
            raise SparrowError("--dense-lanes: only used with --break-even auto")
        if args.dense_lanes < 1:
            raise SparrowError(f"--dense-lanes must be a positive integer, not {args.dense_lanes}")
        o["dense_lanes"] = args.dense_lanes
    if args.break_even == "auto":
        o["break_even"] = "auto"
    elif args.break_even:
        try:
            be = json.loads(args.break_even)
        except json.JSONDecodeError as exc:
            raise SparrowError(f"--break-even: not valid JSON ({exc})")
        if not isinstance(be, dict) or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in be.values()):
            raise SparrowError("--break-even: expected an object of layer name -> ratio in [0, 1]")
        o["break_even"] = be
    for key in ("block", "k", "tiles"):
        if key in o and o[key] < 1:
            raise SparrowError(f"--{key} must be a positive integer, not {o[key]}")
    return o


def run(args):
    from sparrow import SparrowError
    if args.model == "minilm":
        if args.method != "smartdeal":
            raise SparrowError("minilm: only --method smartdeal is supported (post-training decomposition)")
        from sparrow.sw.minilm import compress_minilm_cmd
        return compress_minilm_cmd(args, _overrides(args))
    from sparrow.modeldir import save_model
    from sparrow.sw.pipeline import compress_digits
    try:
        model, rep = compress_digits(args.model, args.method, _overrides(args), seed=args.seed,
                                     progress=not args.quiet)
    except ValueError as exc:
        raise SparrowError(f"compress: {exc}")
    save_model(model, args.out)
    print(f"{rep['model']} {rep['method']}: fp32 {100 * rep['fp32_accuracy']:.2f}%  "
          f"golden int8 {100 * rep['golden_accuracy']:.2f}% ({rep['delta_pp']:+.2f} pp)  "
          f"storage {rep['storage_ratio']:.1f}x vs fp32 ({rep['weight_bits']} weight bits, "
          f"biases {rep['bias_bits']} bits)  {rep['nonzero']}/{rep['weights']} nonzero  "
          f"{rep['seconds']:.1f} s")
    print(f"golden vs fake-quantised torch: {rep['golden_vs_torch_mismatching_samples']} of "
          f"{rep['test_samples']} test samples differ -> {args.out}")
    return 0
