"""Measure the compression table: storage vs fp32 and accuracy vs fp32 for every model and method.

    python -m sparrow.bench.bench_compress            # digits (8 runs) + MiniLM
    python -m sparrow.bench.bench_compress --no-minilm
    python -m sparrow.bench.bench_compress --no-minilm --seeds 0 1 2 3 4 5 --json out.json
    python -m sparrow.bench.bench_compress --no-minilm --models digits-mlp --methods smartdeal --block 16 --seeds 0 1 2 3 4 5
    python -m sparrow.bench.bench_compress --search --methods smartdeal admm --trials 20

``--search``: the accuracy-budget search (``sparrow compress --max-drop``,
:mod:`sparrow.sw.search`) on the digits models and on a model of our own
making (a 48-64-32-5 MLP on a synthetic 5-class task, written to ONNX and
imported like a user's): storage, validation and test accuracy against fp32,
runs and search time.

Digits: each model is trained in fp32 (60 epochs, seed s), compressed by each
method with the settings of ``sparrow.sw.pipeline.METHOD_CONFIGS`` (with ``--block P``: blocks P
rows tall and the settings of ``BLOCK_CONFIGS`` for P, the demo's model at 16 PEs), exported,
and its accuracy measured with the integer golden model on the 360-sample
test split.  Storage counts every stored weight bit against fp32
(``sparrow.sw.storage``); biases are shown beside.  "golden==torch" counts
test samples whose int8 outputs differ between the golden model and the
fake-quantised torch forward (0 expected; for block-circulant layers the
golden model runs the fixed-point FFT datapath and torch the ideal product).
MiniLM: SmartDeal post-training decomposition of the 36 encoder linear layers
(k = 4, T = 4 tiles, float32 bases, power-of-two C) and distillation on
unlabeled text (sw/data/sentences.txt calibration half, texts generated from
it, standard-library docstrings); mean cosine of sentence embeddings to the
original on the 54 held-out sentences.
"""

import argparse
import json
import time

# (storage vs fp32 at least, accuracy drop in pp at most) per method; the table lists the methods in this order
TARGETS = {"dense-int8": (None, None), "smartdeal": (30.0, 1.0), "circulant": (16.0, 1.5), "admm": (40.0, 1.0)}


def main(argv=None):
    from sparrow.sw.methods import BLOCK_METHODS, METHODS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits-mlp", "digits-cnn"])
    ap.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=[m for m in TARGETS if m in METHODS])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--block", type=int, help="P x 1 pruning blocks P rows tall (smartdeal, admm), with the "
                    "settings measured for P where sparrow.sw.pipeline.BLOCK_CONFIGS has them")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--search", action="store_true", help="the accuracy-budget search instead of the fixed settings")
    ap.add_argument("--trials", type=int, default=20, help="--search: trials after the sensitivity probes")
    ap.add_argument("--max-drop", type=float, default=1.0, help="--search: budget in pp (default 1.0)")
    ap.add_argument("--own", nargs="*", default=None, help="--search: also (or, with --models none, only) the own model")
    args = ap.parse_args(argv)
    if args.search:
        return search_table(args)

    from sparrow.sw.pipeline import compress_digits
    rows = []
    hdr = (f"| {'model':<10} | {'method':<10} | seed | storage vs fp32 | weight bits | bias bits | nonzero | "
           f"fp32 acc | golden int8 acc | delta pp | golden==torch | time s | target |")
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for name in args.models:
        for method in args.methods:
            for seed in args.seeds:
                over = {"block": args.block} if args.block and method in BLOCK_METHODS else None
                _, r = compress_digits(name, method, over, seed=seed, progress=False)
                ratio_t, pp_t = TARGETS.get(method, (None, None))
                ok = "" if ratio_t is None else (
                    "met" if r["storage_ratio"] >= ratio_t and -r["delta_pp"] <= pp_t + 1e-9 else
                    f"MISSED (>= {ratio_t:.0f}x, <= {pp_t} pp)")
                r["seed"] = seed
                rows.append(r)
                print(f"| {name:<10} | {method:<10} | {seed:>4} | {r['storage_ratio']:>14.1f}x | "
                      f"{r['weight_bits']:>11} | {r['bias_bits']:>9} | {r['nonzero']:>7} | "
                      f"{100 * r['fp32_accuracy']:>7.2f}% | {100 * r['golden_accuracy']:>14.2f}% | "
                      f"{r['delta_pp']:>+8.2f} | {r['golden_vs_torch_mismatching_samples']:>9}/360 | "
                      f"{r['seconds']:>6.1f} | {ok} |", flush=True)
    if len(args.seeds) > 1:
        print_summary(rows, args.seeds)
    if not args.no_minilm:
        from sparrow.sw.minilm import DISTILL_STEPS, RECON_STEPS, TILES, compress_minilm
        t0 = time.time()
        m = compress_minilm(progress=False, distill_steps=DISTILL_STEPS, recon_steps=RECON_STEPS, tiles=TILES)
        m.pop("per_layer")
        rows.append(m)
        ok = "met" if m["storage_ratio"] >= 6 and m["mean_cosine"] >= 0.95 else "MISSED (>= 6x, cosine >= 0.95)"
        print(f"\nall-MiniLM-L6-v2 smartdeal: {m['layers']} encoder linear layers ({m['weights']} weights): "
              f"storage {m['storage_ratio']:.2f}x vs fp32 (biases {m['bias_bits']} bits beside), "
              f"mean cosine {m['mean_cosine']:.4f} (min {m['min_cosine']:.4f}) on {m['held_out_sentences']} "
              f"held-out sentences, {time.time() - t0:.0f} s: {ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def own_model(directory, seed=0):
    """(model.onnx path, data.npz path): a 48-64-32-5 MLP trained on a synthetic 5-class task, as a user brings it."""
    import numpy as np
    import torch
    from torch import nn
    from sparrow.sw.numerics import pin
    from sparrow.sw.randmodel import synthetic_task, train_float, write_onnx
    pin()       # the fp32 model's bits too depend on the CPU's kernels (sparrow.sw.numerics)
    data = synthetic_task(seed=seed, sizes=(2000, 500, 500), features=48, noise=2.2)
    torch.manual_seed(seed)
    model = train_float(nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)),
                        data, epochs=40, seed=seed)
    np.savez(f"{directory}/own.npz", **data)
    write_onnx(model, (48,), f"{directory}/own-mlp.onnx")
    return f"{directory}/own-mlp.onnx", f"{directory}/own.npz"


def search_table(args):
    """The budget search on each model and method: one table row each."""
    import tempfile
    from sparrow.sw.pipeline import compress_model, digits_search_setup
    rows = []
    print(f"| model | method | storage vs fp32 | val delta pp | test fp32 | test golden | test delta pp | runs "
          f"(pruned) | search s | budget |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    tmp = tempfile.mkdtemp(prefix="sparrow-bench-")
    models = [m for m in args.models if m != "none"] + (["own-mlp"] if args.own is not None else [])
    for name in models:
        for method in args.methods:
            for seed in args.seeds:
                if name == "own-mlp":
                    model, data = own_model(tmp, seed)
                    kw = {}
                else:
                    model, data, hand, start = digits_search_setup(name, method, seed)
                    kw = {"overrides": hand, "start": start, "name": name}
                _, r = compress_model(model, data, method, max_drop=args.max_drop, seed=seed, trials=args.trials,
                                      progress=False, **kw)
                s = r.get("search", {})
                trace = r.get("search_trace", [])
                pruned = sum(1 for t in trace if t["state"].startswith("pruned"))
                r.update(seed=seed, model=name)
                rows.append(r)
                print(f"| {name} | {method} | {r['storage_ratio']:.1f}x | {r['val_delta_pp']:+.2f} | "
                      f"{100 * r['fp32_accuracy']:.2f}% | {100 * r['golden_accuracy']:.2f}% | {r['delta_pp']:+.2f} | "
                      f"{len(trace)} ({pruned}) | {s.get('seconds', r['seconds']):.0f} | "
                      f"{'met' if s.get('met', True) else 'MISSED'} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def print_summary(rows, seeds):
    """One line per model and method: storage, mean and worst delta over the seeds, the target."""
    print(f"\nOver seeds {', '.join(map(str, seeds))} (target judged on the mean delta):\n")
    print("| model | method | storage vs fp32 | fp32 mean | int8 golden mean | delta mean | delta worst | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    for (name, method), rs in groups.items():
        n = len(rs)
        ratio = min(r["storage_ratio"] for r in rs)
        mean = sum(r["delta_pp"] for r in rs) / n
        worst = min(r["delta_pp"] for r in rs)
        ratio_t, pp_t = TARGETS.get(method, (None, None))
        ok = "" if ratio_t is None else (
            f">= {ratio_t:.0f}x, <= {pp_t} pp: " + ("met" if ratio >= ratio_t and -mean <= pp_t + 1e-9 else "MISSED"))
        print(f"| {name} | {method} | {ratio:.1f}x | {100 * sum(r['fp32_accuracy'] for r in rs) / n:.2f}% | "
              f"{100 * sum(r['golden_accuracy'] for r in rs) / n:.2f}% | {mean:+.2f} pp | {worst:+.2f} pp | {ok} |")


if __name__ == "__main__":
    raise SystemExit(main())
