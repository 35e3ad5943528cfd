"""Measure the storage table: the model's encoded size beside what the chip holds, per method and PE count.

    python -m sparrow.bench.bench_storage                       # digits-mlp, seed 0, 16 and 4 PEs
    python -m sparrow.bench.bench_storage --models digits-mlp digits-cnn --pes 16 8 4
    python -m sparrow.bench.bench_storage --reuse               # models already in /tmp/st_<method>
    python -m sparrow.bench.bench_storage --reuse --max-groups 16 1   # also the single-group layout
    python -m sparrow.bench.bench_storage --methods smartdeal --block 16 --pes 16 --max-groups 16 1   # the demo's model

Each method compresses the model once (``sparrow compress --model M --method X
--seed S --out DIR``, DIR = ``<dir>/st_<method>`` for digits-mlp,
``<dir>/st_<model>_<method>`` otherwise; ``--reuse`` loads a directory that
exists).  "encoded" is the model's storage (:mod:`sparrow.sw.storage`, the
figure ``sparrow compress`` prints); "on chip" counts the bits of the ROMs
that ``sparrow generate`` writes for the bitstream at P PEs per sd engine
(:func:`sparrow.hw.onchip.model_onchip`: codes, bases, weight spectra, dense
weights; biases apart), both against 32 bits per fp32 weight.  "on chip /
encoded" is the goal's ratio (at most 1.25).  "groups" is the engines' PE-group
limit (``EngineConfig.max_groups``: 16, the default, the fewest ROM bits; 1, one
code ROM and z buffer per engine, what the iCE40UP5K fits for digits-mlp at 16
PEs).  A model with a layer kind that has no RTL engine gets "n/a".
"""

import argparse
import subprocess
import sys
from pathlib import Path

from sparrow.hw.onchip import ONCHIP_GOAL as GOAL

#: The compressed methods and the encoded storage each must reach (x fp32).
TARGETS = {"smartdeal": 30.0, "admm": 40.0, "circulant": 16.0}


def _model_dir(base, model, method, block=None):
    tail = f"_b{block}" if block else ""
    return Path(base) / (f"st_{method}{tail}" if model == "digits-mlp" else f"st_{model}_{method}{tail}")


def _compress(model, method, seed, out, block=None):
    cmd = [sys.executable, "-m", "sparrow", "compress", "--model", model, "--method", method,
           "--seed", str(seed), "--out", str(out), "--quiet"] + (["--block", str(block)] if block else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _row(model_name, method, model, st, pes, groups):
    """Print one table row; 1 when it misses the goal."""
    from sparrow import SparrowError
    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.onchip import model_onchip
    head = f"| {model_name} | {method} | {pes} | {groups} | {st['ratio']:.1f}x | {st['weight_bits']} "
    try:
        oc = model_onchip(model, EngineConfig(pes=pes, max_groups=groups))
    except SparrowError as exc:
        print(f"{head}| n/a | n/a | n/a | {exc} |")
        return 0
    over = oc["weight_bits"] / st["weight_bits"]
    layers = ", ".join(f"{l['name']} {l['weight_bits']}" for l in oc["layers"])
    print(f"{head}| {st['fp32_bits'] / oc['weight_bits']:.1f}x | {oc['weight_bits']} | {over:.2f} "
          f"| {layers} |", flush=True)
    return int(over > GOAL)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits-mlp"])
    ap.add_argument("--methods", nargs="+", choices=tuple(TARGETS), default=list(TARGETS))
    ap.add_argument("--pes", nargs="+", type=int, default=[16, 4])
    ap.add_argument("--max-groups", nargs="+", type=int, default=[16],
                    help="PE-group limits to measure (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block", type=int, help="compress with blocks this many rows tall (sparrow compress --block; "
                    "smartdeal and admm)")
    ap.add_argument("--dir", default="/tmp", help="where the model directories go (default /tmp)")
    ap.add_argument("--reuse", action="store_true", help="load a model directory that exists")
    args = ap.parse_args(argv)

    from sparrow.modeldir import load_model
    from sparrow.sw.methods import BLOCK_METHODS
    from sparrow.sw.storage import model_storage

    hdr = ("| model | method | PEs | groups | encoded | encoded bits | on chip | on-chip bits "
           "| on chip / encoded | per layer (on-chip weight bits) |")
    print(hdr)
    print("|" + "|".join(" --- " for _ in hdr.split("|")[1:-1]) + "|")
    misses = 0
    for model_name in args.models:
        for method in args.methods:
            block = args.block if method in BLOCK_METHODS else None
            out = _model_dir(args.dir, model_name, method, block)
            if not (args.reuse and (out / "manifest.json").is_file()):
                _compress(model_name, method, args.seed, out, block)
            model = load_model(out)
            st = model_storage(model)
            if st["ratio"] < TARGETS[method]:
                misses += 1
            for pes in args.pes:
                for groups in args.max_groups:
                    misses += _row(model_name, method, model, st, pes, groups)
    print(f"\ngoal: encoded storage at its target ({', '.join(f'{m} {t:g}x' for m, t in TARGETS.items())}) "
          f"and on chip / encoded <= {GOAL}: {misses} row(s) miss it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
