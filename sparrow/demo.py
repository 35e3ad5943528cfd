"""``sparrow demo``: the main job, compress-to-board, with a report at the end.

Stages (each prints progress; a failing stage stops the demo with one line):

1. **compress**: train ``digits-mlp`` on scikit-learn's digits (fixed split),
   compress it with SmartDeal (basis x sparse power-of-two coefficients, int8
   activations) and write the model directory ``<out>/model``.
2. **golden**: run the integer golden model on the whole test split; its
   accuracy next to the fp32 model's and the storage ratio.
3. **sim**: run the model directory on the generated RTL, layer by layer, on
   Verilator (``--sim-samples`` test samples) and Icarus (``--icarus-samples``);
   every output must equal the golden model's bit for bit.
4. **build**: place and route the SmartDeal engine of the model's largest
   layer (``--pes`` PEs) for each board with Yosys + nextpnr and report LUTs,
   flip-flops, DSPs, block RAMs and fmax.

Everything goes under ``--out`` (default ``build/demo``); the summary is also
written to ``<out>/demo.json``.
"""

import json
import sys
import time
from pathlib import Path

__all__ = ["configure", "run"]

MODEL = "digits-mlp"
METHOD = "smartdeal"


def configure(parser):
    parser.add_argument("--out", default="build/demo", help="work folder (default build/demo)")
    parser.add_argument("--pes", type=int, default=16,
                        help="PEs of each SmartDeal engine, for simulation and the board builds "
                             "(default 16)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    parser.add_argument("--boards", default="icebreaker,ulx3s-85f",
                        help="comma-separated boards to build for (default icebreaker,ulx3s-85f; "
                             "empty: no builds)")
    parser.add_argument("--sim-samples", type=int, default=360,
                        help="test samples run on Verilator (default 360: the whole test split)")
    parser.add_argument("--icarus-samples", type=int, default=16,
                        help="test samples run on Icarus (default 16; it is ~100x slower)")


def _say(msg):
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def stage_compress(out):
    from .modeldir import save_model
    from .sw.pipeline import compress_digits
    _say(f"compress: training {MODEL} in fp32 and compressing it with {METHOD}")
    model, rep = compress_digits(MODEL, METHOD, seed=0, progress=True)
    save_model(model, out / "model")
    _say(f"compress: wrote {out / 'model'} ({rep['seconds']:.0f} s)")
    return model, rep


def stage_golden(model):
    import numpy as np
    from .sw import digits
    from .sw.golden import run_model
    _, _, pixels, labels = digits.load_split()
    x = digits.quantize_inputs(pixels)
    y = np.asarray(run_model(model, x))
    acc = float((y.argmax(axis=1) == labels).mean())
    _say(f"golden: {len(labels)} test samples, integer accuracy {100 * acc:.2f}%")
    return x, y, labels, acc


def stage_sim(model, x, y_gold, simulator, n, pes):
    import numpy as np
    from . import SparrowError
    from .tb.model_sim import simulate_model
    t = time.monotonic()
    y = simulate_model(model, x[:n], simulator, pes=pes, progress=lambda m: _say(f"sim: {m}"))
    bad = np.flatnonzero((y != y_gold[:n]).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise SparrowError(f"sim: {simulator} differs from the golden model on {len(bad)} of {n} "
                           f"samples; first: sample {i}: rtl {y[i].tolist()} golden "
                           f"{y_gold[i].tolist()}")
    seconds = time.monotonic() - t
    _say(f"sim: {simulator}: {n} samples bit-exact with the golden model ({seconds:.0f} s)")
    return {"samples": n, "bit_exact": True, "seconds": round(seconds, 1)}


def stage_build(model, out, pes, seed, boards):
    from .hw.engines import engine_for_layer
    from .fpga.build import build_design
    sd = [l for l in model.layers if l.kind == "sd_linear"]
    layer = max(sd, key=lambda l: l.attrs["in"] * l.attrs["out"])
    builds = {}
    for board in boards:
        engine = engine_for_layer(layer, pes)
        name = f"sd_{layer.name}_{pes}pe"
        rep = build_design(engine, board, out / f"{board}-{name}", name=name, seed=seed,
                           extra={"layer": layer.name, "shape": [layer.attrs["in"], layer.attrs["out"]],
                                  "pes": pes})
        builds[board] = rep
    return layer.name, builds


def run(args):
    from . import SparrowError
    from .fpga.boards import get_board
    from .fpga.report import summarise
    out = Path(args.out)
    boards = [b for b in args.boards.split(",") if b]
    for b in boards:
        get_board(b)
    for flag, v, lo in (("--pes", args.pes, 1), ("--sim-samples", args.sim_samples, 1),
                        ("--icarus-samples", args.icarus_samples, 0)):
        if v < lo:
            raise SparrowError(f"{flag} must be at least {lo}, not {v}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    model, crep = stage_compress(out)
    x, y_gold, labels, gold_acc = stage_golden(model)
    n_ver = min(args.sim_samples, len(x))
    sims = {"verilator": stage_sim(model, x, y_gold, "verilator", n_ver, args.pes)}
    if args.icarus_samples:
        sims["icarus"] = stage_sim(model, x, y_gold, "icarus", min(args.icarus_samples, len(x)),
                                   args.pes)
    layer, builds = stage_build(model, out, args.pes, args.seed, boards) if boards else (None, {})

    summary = {"model": MODEL, "method": METHOD, "compress": crep, "golden_accuracy": gold_acc,
               "sim": sims, "build_layer": layer, "builds": builds}
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    print("\nsparrow demo report")
    print("===================")
    kinds = ", ".join(f"{l.name} {l.kind}" for l in model.layers)
    print(f"model      {MODEL} compressed with {METHOD}: {kinds}")
    print(f"storage    {crep['storage_ratio']:.1f}x smaller than fp32 weights "
          f"({crep['nonzero']}/{crep['weights']} coefficients nonzero; biases "
          f"{crep['bias_bits']} bits beside)")
    print(f"accuracy   fp32 {100 * crep['fp32_accuracy']:.2f}%  integer golden "
          f"{100 * gold_acc:.2f}% ({100 * (gold_acc - crep['fp32_accuracy']):+.2f} pp) "
          f"on {len(labels)} test digits")
    for sim, r in sims.items():
        print(f"rtl        {sim}: {r['samples']} samples bit-exact with the golden model "
              f"({args.pes} PEs per engine, {r['seconds']:.0f} s)")
    for board, rep in builds.items():
        print(f"board      {layer} engine, {args.pes} PEs, on {board} ({rep['device']}, "
              f"nextpnr seed {rep['seed']}): {summarise(rep)}")
    print(f"total {time.monotonic() - start:.0f} s; details in {out / 'demo.json'}")
    return 0
