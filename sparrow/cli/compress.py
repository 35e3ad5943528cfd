"""``sparrow compress --model M --method X --out DIR``: train/compress a model and write a model directory.

``--model FILE --data DATA.npz``: your own model, a ``torch.export`` program
(``.pt2``) or an ONNX file (``.onnx``), imported and checked against the file's
own program (:mod:`sparrow.sw.importer`), with your data
(:mod:`sparrow.sw.data`); compressed to the accuracy budget ``--max-drop``
(default 1.0 pp of validation accuracy, :mod:`sparrow.sw.search`), the search
trace written beside the model as ``search.json``.  The built-in models search
the same way when ``--max-drop`` is given (their hand-tuned settings are the
first trial); without it they use those settings as before.

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
OBJECTIVES = ("storage", "cycles")


def _density(text):
    import argparse
    v = float(text)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"density must be in (0, 1], not {text}")
    return v


def configure(parser):
    parser.add_argument("--model", required=True, metavar="NAME|FILE",
                        help=f"a built-in model ({', '.join(MODELS)}) or your fp32 model: FILE.pt2 (torch.export) "
                             "or FILE.onnx")
    parser.add_argument("--data", metavar="DATA.npz",
                        help="with a model file: x_train, y_train, x_val, y_val (optional x_test, y_test)")
    parser.add_argument("--max-drop", type=float, metavar="PP",
                        help="accuracy budget: the most compressed model whose golden validation accuracy is within "
                             "PP points of fp32 (default 1.0 for a model file, unless --density or --k fix the "
                             "settings; built-in models search only when given)")
    parser.add_argument("--trials", type=int, default=20, help="search trials after the sensitivity probes (default 20)")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop starting search trials after S seconds")
    parser.add_argument("--objective", choices=OBJECTIVES, default="storage",
                        help="what the search minimises: stored weight bits (default) or hardware cycles per vector "
                             "(the cycle model for --pes and --board)")
    parser.add_argument("--pes", type=int, default=8, help="--objective cycles: PEs per sd_linear engine (default 8)")
    parser.add_argument("--board", help="--objective cycles: the board whose DSPs the dense engines share")
    parser.add_argument("--method", required=True, choices=tuple(METHODS))
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to write (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=_density, help="fraction of P x 1 coefficient blocks kept (smartdeal, admm)")
    parser.add_argument("--block", type=int, help="P: rows per pruning block, from each tile's first row (the PE "
                        "count of a PE group: 16 for a UP5K build at 16 PEs); a built-in model takes the settings "
                        "measured for P where there are some (digits-mlp smartdeal and admm: 16)")
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


def cycle_cost(pes=8, board=None, dense_lanes=None):
    """``cost(model) -> cycles per vector`` of a validated model directory on the hardware's cycle model.

    The sum over layers of :func:`sparrow.hw.engines.layer_cycles` with ``pes`` PEs
    per sd engine and, for dense engines, ``dense_lanes`` MAC lanes (default: the
    board's DSPs, at most 256, else the engine default); a convolution counts as
    its linear engine once per output position (its ``out_shape``).  Pooling and
    flatten cost nothing.
    """
    from sparrow.cli.common import engine_config
    from sparrow.hw.engines import layer_cycles
    from sparrow.modeldir import Layer
    if dense_lanes is None and board is not None:
        from sparrow.fpga.boards import get_board
        dense_lanes = max(1, min(256, get_board(board).dsps))
    config = dataclasses.replace(engine_config(pes), dense_lanes=dense_lanes or DEFAULT_DENSE_LANES)

    def cost(model):
        total = 0
        for layer in model.layers:
            a = layer.attrs
            if layer.kind.endswith("conv2d"):
                _, oh, ow = layer.out_shape
                lin = {k: v for k, v in a.items() if k not in ("in_ch", "out_ch", "kh", "kw", "stride", "padding")}
                lin.update({"in": a["in_ch"] * a["kh"] * a["kw"], "out": a["out_ch"]})
                total += oh * ow * layer_cycles(Layer(layer.name, layer.kind.replace("conv2d", "linear"), lin,
                                                      layer.params), config)
            elif layer.kind.endswith("linear"):
                total += layer_cycles(layer, config)
        return float(total)
    return cost


def _short(settings):
    """Settings for a line of text: floats to 3 digits."""
    if isinstance(settings, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in settings.items()) + "}"
    return f"{settings:.3g}" if isinstance(settings, float) else str(settings)


def _print_report(rep, out, pes=8):
    """The report lines of a compression (a digits run names no split: it is always the test split),
    with the on-chip storage of the written model at ``pes`` PEs (:func:`sparrow.hw.onchip.storage_line`)."""
    split = rep.get("split", "test")
    on_split = f" on the {split} split" if "split" in rep else ""
    print(f"{rep['model']} {rep['method']}: fp32 {100 * rep['fp32_accuracy']:.2f}%  "
          f"golden int8 {100 * rep['golden_accuracy']:.2f}% ({rep['delta_pp']:+.2f} pp){on_split}  "
          f"storage {rep['storage_ratio']:.1f}x vs fp32 ({rep['weight_bits']} weight bits, "
          f"biases {rep['bias_bits']} bits)  {rep['nonzero']}/{rep['weights']} nonzero  "
          f"{rep['seconds']:.1f} s")
    s = rep.get("search")
    if s:
        state = "within" if s["met"] else "NOT within (the most accurate run was kept)"
        print(f"search ({s['objective']}, budget {s['max_drop_pp']:g} pp): {s['runs']} runs in {s['seconds']:.0f} s, "
              f"chosen run {s['chosen_run']} {_short(s['chosen'])}: val {100 * rep['golden_val_accuracy']:.2f}% "
              f"({rep['val_delta_pp']:+.2f} pp vs fp32 {100 * rep['fp32_val_accuracy']:.2f}%), {state} budget")
    print(f"golden vs fake-quantised torch: {rep['golden_vs_torch_mismatching_samples']} of "
          f"{rep['test_samples']} {split} samples differ -> {out}")
    from sparrow.cli.common import engine_config
    from sparrow.hw.onchip import storage_line
    from sparrow.modeldir import load_model
    print(storage_line(load_model(out), engine_config(pes), rep["storage_ratio"], rep["fp32_bits"]))


def _run_search(args, o):
    """A model file with --data, or a built-in digits model with --max-drop: the budget search."""
    from sparrow.sw.pipeline import compress_model, digits_search_setup, save_compressed
    builtin = args.model in MODELS
    if args.trials < 1:
        raise SparrowError(f"--trials must be a positive integer, not {args.trials}")
    # a model file searches by default; settings the search would choose, given on their own, mean one run
    fixed = builtin is False and args.max_drop is None and any(k in o for k in ("density", "levels", "k"))
    max_drop = None if fixed else args.max_drop if args.max_drop is not None else 1.0
    if max_drop is not None and any(k in o for k in ("density", "k")):
        raise SparrowError("--density / --k: the budget search chooses them; give them without --max-drop for one "
                           "run with those settings")
    cost = cycle_cost(args.pes, args.board) if args.objective == "cycles" else None
    overrides, start, name = dict(o), None, None
    if builtin:
        fp32, data, hand, start = digits_search_setup(args.model, args.method, args.seed)
        overrides = {**hand, **overrides}
        model, name = fp32, args.model
    else:
        if not args.data:
            raise SparrowError("--data DATA.npz is needed with a model file")
        model, data = args.model, args.data
    try:
        m, rep = compress_model(model, data, args.method, max_drop=max_drop, seed=args.seed, overrides=overrides,
                                name=name, trials=args.trials, objective=args.objective, cost=cost, start=start,
                                timeout=args.timeout, progress=not args.quiet)
    except ValueError as exc:
        raise SparrowError(f"compress: {exc}")
    save_compressed(m, rep, args.out)
    if "import_check" in m.meta:
        c = m.meta["import_check"]
        print(f"import: {args.model} equals its {c['reference']} program on {c['samples']} samples "
              f"(max |difference| {c['max_abs_diff']:.2g}, tolerance {c['tolerance']:.2g}; "
              f"argmax agrees on {c['argmax_agree']})")
    _print_report(rep, args.out, args.pes)
    return 0


def run(args):
    if args.model == "minilm":
        if args.method != "smartdeal":
            raise SparrowError("minilm: only --method smartdeal is supported (post-training decomposition)")
        return _compress_minilm(args, _overrides(args))
    from sparrow.sw.numerics import pin
    pin()           # before the first torch operation of the process (sparrow.sw.numerics)
    if args.model not in MODELS and not args.model.endswith((".pt2", ".onnx")):
        raise SparrowError(f"--model: {args.model!r} is neither a built-in model ({', '.join(MODELS)}) "
                           "nor a .pt2 / .onnx file")
    if args.model in MODELS and args.data:
        raise SparrowError(f"--data: the built-in model {args.model} brings its own data")
    if args.max_drop is not None and not 0 <= args.max_drop <= 100:
        raise SparrowError(f"--max-drop must be in [0, 100] percentage points, not {args.max_drop:g}")
    options = {f.name for f in dataclasses.fields(METHODS[args.method].Config)}
    if args.model not in MODELS or args.max_drop is not None:
        if args.break_even:
            raise SparrowError("--break-even: not used by the budget search (use --objective cycles)")
        return _run_search(args, {k: v for k, v in _overrides(args).items() if k in options})
    from sparrow.modeldir import save_model
    from sparrow.sw.pipeline import compress_digits
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
    _print_report(rep, args.out, args.pes)
    return 0


def compress(model, data, method="smartdeal", *, out=None, max_drop=1.0, seed=0, trials=20, objective="storage",
             pes=8, board=None, timeout=None, progress=False, **options):
    """Compress your fp32 model to an accuracy budget and (with ``out``) write its model directory.

    ``sparrow.compress("model.onnx", "data.npz", "smartdeal", out="model-sd")``
    does what ``sparrow compress --model model.onnx --data data.npz --method
    smartdeal --out model-sd`` does: import ``model`` (a ``.pt2`` torch.export
    program, an ``.onnx`` file, or an ``nn.Sequential``) and check it against
    the file's own program; check ``data`` (``DATA.npz`` or a dict of its
    arrays); search the method's per-layer settings for the most compressed
    model whose golden validation accuracy is within ``max_drop`` points of
    fp32 (``max_drop=None``: one run with the method's defaults); ``options``
    are options of the method's configuration (``prune_epochs=20``, ...).
    ``objective="cycles"`` minimises the hardware cycle model's cycles for
    ``pes`` PEs (and ``board``'s DSPs) instead of storage.

    Returns ``(model, report)``: the :class:`sparrow.modeldir.Model` and a dict
    (accuracies, storage, the search and its trace).  Raises
    :class:`SparrowError` (one line) for a refused model, bad data or options.
    """
    from sparrow.sw.pipeline import compress_model, save_compressed
    cost = None
    if objective == "cycles":
        cost = cycle_cost(pes, board)
    elif objective != "storage":
        raise SparrowError(f"objective must be 'storage' or 'cycles', not {objective!r}")
    try:
        model, report = compress_model(model, data, method, max_drop=max_drop, seed=seed, overrides=options or None,
                                       trials=trials, objective=objective, cost=cost, timeout=timeout,
                                       progress=progress)
    except (ValueError, TypeError) as exc:
        raise SparrowError(f"compress: {exc}") from None
    if out is not None:
        save_compressed(model, report, out)
    return model, report
