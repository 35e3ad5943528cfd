"""``sparrow compress --model M --method X --out DIR``: train/compress a model and write a model directory.

Digits models are trained in fp32, compressed, exported and checked (golden
accuracy, golden == fake-quantised torch forward); the report goes into the
manifest's ``meta``.  ``--model minilm`` runs the SmartDeal post-training
decomposition of all-MiniLM-L6-v2 (sw only: it writes ``report.json`` and the
compressed weights into DIR, not a hardware model directory).

``--break-even auto`` is resolved here, not in sw/ (which never imports hw/):
the per-layer ratios of :func:`sparrow.hw.cycle_model.break_even_ratio` go into
the method's configuration as plain numbers and, as before, into the
manifest's ``meta.config`` (``break_even: "auto"``, ``break_even_ratios``).
Options that the chosen method does not have (``--tiles`` for circulant, ...)
do not change the model and are not recorded.
"""

import dataclasses
import json

from sparrow import SparrowError
from sparrow.hw.cycle_model import break_even_ratio
from sparrow.hw.engine import DEFAULT_DENSE_LANES
from sparrow.sw.methods import METHODS

MODELS = ("digits-mlp", "digits-cnn", "minilm")


def _density(text):
    import argparse
    v = float(text)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"density must be in (0, 1], not {text}")
    return v


def configure(parser):
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--method", required=True, choices=tuple(METHODS))
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
                        help="with --break-even auto: MAC lanes of the dense engine compared against "
                             f"(default {DEFAULT_DENSE_LANES})")
    parser.add_argument("--sentences", type=int, default=64, help="minilm: held-out sentences to evaluate")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(args):
    """{option: value} of the flags given; ``break_even`` is a {layer: ratio} dict or "auto"."""
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


def break_even_ratios(name, method, overrides=None, seed=0, dense_lanes=DEFAULT_DENSE_LANES):
    """{layer: break-even pruning ratio} of the block-pruned layers of digits model ``name`` under ``method``.

    Each ratio is :func:`sparrow.hw.cycle_model.break_even_ratio` of the layer's
    sizes, P and T as the method sets them (:meth:`sparrow.sw.methods.Method.layer_shapes`)
    against a dense engine of ``dense_lanes`` MACs, one output lane; empty for
    a method that does not prune blocks.
    """
    from sparrow.sw import digits
    from sparrow.sw.pipeline import digits_config
    cfg = digits_config(name, method, overrides, seed)
    shapes = METHODS[method](cfg).layer_shapes(digits.make_model(name, seed=seed))
    return {s.name: break_even_ratio(s.in_features, s.out_features, s.block, dense_lanes, 1, s.tiles)
            for s in shapes}


def _compress_minilm(args, o):
    from sparrow.sw.minilm import TILES, compress_minilm_to
    rep, path = compress_minilm_to(args.out, k=o.get("k", 4), density=o.get("density", 1.0), block=o.get("block", 4),
                                   tiles=o.get("tiles", TILES), sentences=args.sentences, progress=not args.quiet)
    print(f"all-MiniLM-L6-v2 smartdeal: {rep['layers']} encoder linear layers, {rep['weights']} weights: "
          f"storage {rep['storage_ratio']:.2f}x vs fp32 (biases {rep['bias_bits']} bits beside), "
          f"mean cosine {rep['mean_cosine']:.4f} (min {rep['min_cosine']:.4f}) on {rep['held_out_sentences']} "
          f"held-out sentences, {rep['seconds']:.0f} s -> {path}")
    return 0


def run(args):
    if args.model == "minilm":
        if args.method != "smartdeal":
            raise SparrowError("minilm: only --method smartdeal is supported (post-training decomposition)")
        return _compress_minilm(args, _overrides(args))
    from sparrow.modeldir import save_model
    from sparrow.sw.pipeline import compress_digits
    options = {f.name for f in dataclasses.fields(METHODS[args.method].Config)}
    o = {k: v for k, v in _overrides(args).items() if k in options}
    auto = o.get("break_even") == "auto"
    lanes = DEFAULT_DENSE_LANES if args.dense_lanes is None else args.dense_lanes
    try:
        if auto:
            o["break_even"] = break_even_ratios(args.model, args.method, {**o, "break_even": None}, args.seed, lanes)
        model, rep = compress_digits(args.model, args.method, o, seed=args.seed, progress=not args.quiet)
    except ValueError as exc:
        raise SparrowError(f"compress: {exc}")
    if auto:
        record = model.meta["config"]
        record["break_even"] = "auto"
        if args.dense_lanes is not None:
            record["dense_lanes"] = args.dense_lanes
        record["break_even_ratios"] = o["break_even"]
    save_model(model, args.out)
    print(f"{rep['model']} {rep['method']}: fp32 {100 * rep['fp32_accuracy']:.2f}%  "
          f"golden int8 {100 * rep['golden_accuracy']:.2f}% ({rep['delta_pp']:+.2f} pp)  "
          f"storage {rep['storage_ratio']:.1f}x vs fp32 ({rep['weight_bits']} weight bits, "
          f"biases {rep['bias_bits']} bits)  {rep['nonzero']}/{rep['weights']} nonzero  "
          f"{rep['seconds']:.1f} s")
    print(f"golden vs fake-quantised torch: {rep['golden_vs_torch_mismatching_samples']} of "
          f"{rep['test_samples']} test samples differ -> {args.out}")
    return 0
