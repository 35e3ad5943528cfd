"""Benchmark: digits-cnn on the accelerator, per compression method, against the dense int8 engine.

For each method (SmartDeal, ADMM, circulant, dense int8) the digits-cnn model
directory (compressed here with the built-in settings when ``--dirs`` has no
directory for it) runs

* through the stream bench (``sparrow sim``'s path, Verilator): the test
  samples, checked bit for bit against the golden model, and every layer's
  cycles per vector measured (its phase's cycles / N: vectors back to back)
  beside the cycle model's steady state (:func:`sparrow.hw.engines.layer_cycles`)
  and its multipliers;
* optionally through the whole accelerator behind the UART (``sparrow run
  --sim verilator --batch 1``, ``--accel``): the device's cycles per vector
  (one vector per frame: the latency of one inference, the UART excluded).
  Larger batch frames overrun the device when its chain is slower than the
  UART delivers vectors (64 bytes take 2560 cycles at the simulation's
  divisor 4): the host protocol has no flow control inside a frame.

Two figures per inference: **latency-bound** (the layers one after the
other: the sum over layers) and **throughput-bound** (the accelerator's
engines overlap on consecutive vectors: the slowest layer).  The dense int8
reference runs 8 MAC lanes in every dense engine (``--dense-lanes``).  The
accelerator's measured latency is compared with the cycle model's sum over
layers of their steady-state cycles per vector.

The ESCALATE estimate (cycle model): an sd conv layer streams every patch into
its SD engine (``in`` cycles) and computes z = B x for it (T*in + 1 cycles);
computing z once per input element and letting the PE array read it by column
from a shared z buffer would leave max(out, array + 4T) cycles per patch
(:func:`_escalate`).  On digits-cnn (k = 1, array-bound) it saves nothing; on
the larger CNN (``--large``) it saves where the basis term is the maximum.

    python -m sparrow.bench.bench_cnn [--dirs smartdeal=/tmp/cnn_smartdeal,...] [--samples 360]
                                      [--pes 8] [--dense-lanes 8] [--accel] [--out build/bench/cnn]
    python -m sparrow.bench.bench_cnn --large [--density 0.15] [--save]   # the 32x32 CNN, SD vs dense
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

METHODS = ("smartdeal", "admm", "circulant", "dense-int8")


def _model(method, dirs, out):
    from sparrow.modeldir import load_model, save_model
    path = Path(dirs.get(method) or out / f"digits-cnn-{method}")
    if not (path / "manifest.json").exists():
        from sparrow.sw.pipeline import compress_digits
        print(f"compressing digits-cnn with {method} -> {path}", flush=True)
        model, _ = compress_digits("digits-cnn", method, progress=False)
        save_model(model, path)
    return path, load_model(path)


def large_cnn(kind, density=0.15, seed=0):
    """A larger CNN of the issue's second benchmark, random parameters (a structural stand-in:
    cycles depend on shapes and the sparsity pattern, not on trained values).

    [1, 32, 32] -> conv 1->16 3x3 pad 1 -> pool 2 -> conv 16->32 3x3 pad 1 -> pool 2 ->
    conv 32->64 3x3 pad 1 -> pool 2 -> flatten -> linear 1024->10: 2.5 M MACs per inference.
    ``kind`` is ``"sd"`` (SmartDeal layers, coefficients nonzero with probability ``density``)
    or ``"dense"``; SD coefficients are kept in P x 1 blocks (P = 8) as the compressor prunes.
    """
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(seed)
    conv, lin = f"{kind}_conv2d", f"{kind}_linear"

    def extra(k):
        return {"k": k, "density": density} if kind == "sd" else {}

    layers = []
    for n, (cin, cout, k) in enumerate([(1, 16, 3), (16, 32, 4), (32, 64, 4)], 1):
        layers += [random_layer(conv, rng, name=f"conv{n}", in_ch=cin, out_ch=cout, kh=3, kw=3,
                                padding=1, relu=True, **extra(k)),
                   random_layer("maxpool2d", rng, name=f"pool{n}")]
    layers += [random_layer("flatten", rng, name="flatten"),
               random_layer(lin, rng, name="fc", in_=1024, out=10, **extra(4))]
    if kind == "sd":        # the compressor prunes P x 1 blocks (P = 8): keep blocks, not elements
        for layer in layers:
            if layer.has_params:
                sign = layer.params["coef_sign"]
                out, n_in = sign.shape
                keep = rng.random((-(-out // 8), n_in)) < density
                sign[:] = np.where(np.repeat(keep, 8, axis=0)[:out],
                                   rng.choice(np.array([-1, 1], dtype=np.int8), sign.shape), 0)
    return random_model(layers, (1, 32, 32), name=f"cnn32-{kind}")


def _escalate(layer, config):
    """(cycles per vector now, with basis-first reuse) of an sd_conv2d layer, by the cycle model.

    The inner SD engine's cycles per patch are max(in, T*in + 1, out, array + 4T)
    (:func:`~sparrow.hw.cycle_model.sd_block_cycles`): the patch streams in (``in``),
    the basis unit computes z (T*in + 1), the PE array issues the nonzero columns.
    With z computed once per input element and kept in a z buffer that the
    array reads by column (ESCALATE), the first two terms go: max(out, array + 4T).
    """
    from dataclasses import replace as _replace
    from sparrow.hw.conv import conv_geometry, inner_layer
    from sparrow.hw.cycle_model import conv_cycles
    from sparrow.hw.engines import layer_cycles
    from sparrow.hw.sd_engine import SDEngine
    c, h, w, kh, kw, stride, padding, out_ch, oh, ow = conv_geometry(layer)
    inner = inner_layer(layer)
    # sd_block_cycles reads `in` only for the load and basis terms: in = 1 leaves the array's.
    array_only = _replace(inner, attrs={**inner.attrs, "in": 1})
    reuse = SDEngine.cycles(array_only, _replace(config, out_lanes=1))
    return layer_cycles(layer, config), conv_cycles(c * h * w, oh * ow, reuse, out_ch)


def _accelerator(path, x, pes):
    """The device's cycles per vector, one vector per frame (``sparrow run --sim verilator --batch 1``):
    the latency of one inference through the whole accelerator, UART excluded."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        res = subprocess.run([sys.executable, "-m", "sparrow", "run", str(path), "--sim", "verilator",
                              "--inputs", str(Path(tmp) / "x.npy"), "--out", str(Path(tmp) / "y.npy"),
                              "--pes", str(pes), "--timeout", "60", "--batch", "1"],
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"sparrow run failed: {res.stderr.strip()[-400:]}")
        y = np.load(Path(tmp) / "y.npy")
    cycles = re.search(r"(\d+) cycles per vector on the device", res.stdout)
    return y, int(cycles.group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dirs", default="", help="method=DIR,... (missing ones are compressed)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--samples", type=int, default=360, help="test samples through the stream bench")
    ap.add_argument("--pes", type=int, default=8)
    ap.add_argument("--dense-lanes", type=int, default=8)
    ap.add_argument("--accel", action="store_true", help="also run the whole accelerator (UART sim)")
    ap.add_argument("--accel-vectors", type=int, default=4)
    ap.add_argument("--large", action="store_true",
                    help="the larger CNN (32x32, 2.5 M MACs, random parameters): SD vs dense")
    ap.add_argument("--density", type=float, default=0.15, help="--large: SD coefficient density")
    ap.add_argument("--save", action="store_true", help="--large: write the model directories")
    ap.add_argument("--out", default="build/bench/cnn")
    args = ap.parse_args(argv)

    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.engines import layer_cycles, multipliers
    from sparrow.sw.digits import load_split, quantize_inputs
    from sparrow.sw.golden import run_model
    from sparrow.tb.model_sim import simulate_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.large:
        return _large(args, out)
    dirs = dict(kv.split("=", 1) for kv in args.dirs.split(",") if kv)
    _, _, xt, yt = load_split()
    x = quantize_inputs(xt).reshape(-1, 1, 8, 8)[:args.samples]
    labels = yt[:args.samples]
    config = EngineConfig(pes=args.pes, dense_lanes=args.dense_lanes)
    rows, results = [], {}
    for method in args.methods.split(","):
        path, model = _model(method, dirs, out)
        stats = {}
        y = simulate_model(model, x, "verilator", config, stats=stats)
        gold = run_model(model, x)
        mismatches = int((y != gold).sum())
        if mismatches:
            raise SystemExit(f"{method}: RTL differs from the golden model in {mismatches} outputs")
        per_layer = []
        for layer in model.layers:
            rtl = stats["cycles"][layer.name] / len(x)
            per_layer.append({"layer": layer.name, "kind": layer.kind, "rtl": rtl,
                              "model": layer_cycles(layer, config),
                              "multipliers": multipliers(layer, config)})
        res = {"dir": str(path), "bit_exact_samples": len(x),
               "accuracy": float((y.argmax(1) == labels).mean()), "layers": per_layer,
               "rtl_sum": sum(p["rtl"] for p in per_layer), "model_sum": sum(p["model"] for p in per_layer),
               "rtl_max": max(p["rtl"] for p in per_layer), "model_max": max(p["model"] for p in per_layer),
               "multipliers": sum(p["multipliers"] for p in per_layer)}
        res["escalate"] = {l.name: _escalate(l, config) for l in model.layers if l.kind == "sd_conv2d"}
        if args.accel:
            xa = x[:args.accel_vectors]
            ya, res["accel_cycles"] = _accelerator(path, xa, args.pes)
            if not np.array_equal(ya, gold[:len(xa)]):
                raise SystemExit(f"{method}: the accelerator differs from the golden model")
        results[method] = res
        for p in per_layer:
            print(f"{method:10s} {p['layer']:9s} {p['kind']:13s} rtl {p['rtl']:8.1f}  model "
                  f"{p['model']:6d}  multipliers {p['multipliers']}", flush=True)

    dense = results.get("dense-int8")
    print(f"\ndigits-cnn, {args.samples} test samples bit-exact on Verilator; PEs {args.pes}, "
          f"dense lanes {args.dense_lanes}; cycles per inference")
    print(f"| method | accuracy | latency-bound RTL (model) | throughput-bound RTL (model) | "
          f"accelerator, 1 vector/frame | multipliers | x fewer than dense (latency, throughput) |")
    print("|---|---|---|---|---|---|---|")
    for method, r in results.items():
        ratio = (f"{dense['rtl_sum'] / r['rtl_sum']:.2f}x, {dense['rtl_max'] / r['rtl_max']:.2f}x"
                 if dense else "-")
        acc = (f"{r['accel_cycles']} ({r['accel_cycles'] / r['model_sum']:.2f}x the model sum)"
               if "accel_cycles" in r else "-")
        print(f"| {method} | {100 * r['accuracy']:.2f}% | {r['rtl_sum']:.0f} ({r['model_sum']}) | "
              f"{r['rtl_max']:.0f} ({r['model_max']}) | {acc} | {r['multipliers']} | {ratio} |")
    for method, r in results.items():
        for name, (now, reuse) in r["escalate"].items():
            print(f"{method} {name}: basis-first reuse (ESCALATE) would take {now} -> {reuse} cycles "
                  f"per vector (saves {now - reuse})")
    (out / "bench_cnn.json").write_text(json.dumps(results, indent=1))
    print(f"results: {out / 'bench_cnn.json'}")
    return 0


def _large(args, out):
    """SD vs dense on :func:`large_cnn`: RTL cycles (bit-exact) and the cycle model per layer."""
    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.engines import layer_cycles, multipliers
    from sparrow.modeldir import save_model
    from sparrow.sw.golden import run_model
    from sparrow.tb.model_sim import simulate_model
    config = EngineConfig(pes=args.pes, dense_lanes=args.dense_lanes)
    x = np.random.default_rng(1).integers(-128, 128, size=(4, 1, 32, 32)).astype(np.int8)
    totals = {}
    for kind in ("sd", "dense"):
        model = large_cnn(kind, args.density)
        if args.save:
            save_model(model, out / model.name)
        runs = []
        for xs in (x[:2], x):           # steady state: (cycles of 4 - cycles of 2) / 2
            stats = {}
            y = simulate_model(model, xs, "verilator", config, stats=stats)
            if not np.array_equal(y, run_model(model, xs)):
                raise SystemExit(f"{model.name}: RTL differs from the golden model")
            runs.append(stats["cycles"])
        rtl = {l.name: (runs[1][l.name] - runs[0][l.name]) / 2 for l in model.layers}
        for l in model.layers:
            print(f"{model.name:12s} {l.name:8s} {l.kind:13s} rtl {rtl[l.name]:9.1f}  model "
                  f"{layer_cycles(l, config):7d}  multipliers {multipliers(l, config)}", flush=True)
        for l in model.layers:
            if l.kind == "sd_conv2d":
                now, reuse = _escalate(l, config)
                print(f"{model.name} {l.name}: basis-first reuse (ESCALATE) would take {now} -> "
                      f"{reuse} cycles per vector (saves {now - reuse})")
        totals[kind] = (sum(rtl.values()), max(rtl.values()),
                        sum(multipliers(l, config) for l in model.layers))
    (sd_sum, sd_max, sd_mul), (d_sum, d_max, d_mul) = totals["sd"], totals["dense"]
    print(f"\ncnn32 (2.5 M MACs), SD density {args.density}, PEs {args.pes}, dense lanes "
          f"{args.dense_lanes}: latency-bound {sd_sum:.0f} vs {d_sum:.0f} cycles ({d_sum / sd_sum:.2f}x), "
          f"throughput-bound {sd_max:.0f} vs {d_max:.0f} ({d_max / sd_max:.2f}x); multipliers "
          f"{sd_mul} vs {d_mul}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
