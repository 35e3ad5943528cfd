"""Benchmark: simulation speed of the stream bench, per engine and for ``sparrow sim`` of digits-mlp.

For each design (one engine of each kind alone, and the digits-mlp model of
``sparrow compress --model digits-mlp --method smartdeal`` on the 360 test
samples) and each simulator:

* **cold**: wall time of the first run in an empty build cache (conversion,
  compile, run) and the compile time alone;
* **new weights**: wall time of a run of a model of the same structure and
  its compile time (0.0: the cached build is used).  For the engines alone
  every parameter value is redrawn (exponents, bases, weights and biases
  new; sd_linear: a new sparsity pattern of the same density); for
  digits-mlp it is the model retrained and compressed with another seed
  (``sparrow compress --model digits-mlp --method smartdeal --seed 1`` after
  ``--seed 0``: another sparsity pattern, board layout and calibration);
* simulated **cycles/s** and **vectors/s** of that run (simulation time only,
  the simulator's start-up excluded).

The last row per simulator is ``sparrow run --sim`` of the same model and
samples: the host driver (``fpga/host.py``) streams ``B`` frames of 16 to the
whole accelerator (UART receiver, framer, sequencer, engine chain, sender,
UART transmitter at divisor 4) in the link bench (``tb/linkbench.py``: the
host's end of the serial line in HDL, bytes in chunks, no Python per bit).
Its cycles count every simulated clock cycle, bytes on the line included; its
sim s is the wall time while the simulation ran (not the time it stood still
waiting for the host), and a line after the table gives the end-to-end time
over the link.  The simulated accelerator is a generic build: its
parameters, shifts and identify reply (the model id) are ROMs loaded at run
time (``tb/linkbench.py``), so, as for ``sparrow sim``, a model with new
weights reuses the compiled simulator when its structure is the same (for
sd_linear the code layout is the structure's and the code ROM's depth one of
two per structure, so a retrained model with another sparsity pattern, group
size or delta width in its board layout reuses it too:
:func:`sparrow.hw.sd_program.generic_code_depth`).

    python -m sparrow.bench.bench_sim [--simulators verilator,icarus] [--vectors 256]
                                      [--no-digits] [--only TEXT] [--json build/bench/sim.json]

Each run uses a fresh temporary ``$SPARROW_CACHE``, so "cold" is cold.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sparrow.modeldir import Model, validate_model

#: The engines alone: kind -> random_layer arguments and engine parameters.
ENGINES = {
    "sd_linear": ({"in_": 64, "out": 128, "k": 4, "density": 0.15, "relu": True}, {"pes": 8}),
    "dense_linear": ({"in_": 64, "out": 32, "relu": True}, {"dense_lanes": 8}),
    "bc_linear": ({"in_": 64, "out": 64, "k": 16}, {}),
}


def _redraw(model, rng):
    """The same structure with new parameter values (sd_linear: a new sparsity pattern)."""
    layers = []
    for layer in model.layers:
        p = {k: np.array(v) for k, v in layer.params.items()}
        if layer.kind == "sd_linear":          # another pattern of the same density
            shape = p["coef_sign"].shape
            nonzero = rng.random(shape) < np.count_nonzero(p["coef_sign"]) / p["coef_sign"].size
            p["coef_sign"] = (nonzero * rng.choice(np.array([-1, 1], np.int8), size=shape)).astype(np.int8)
            p["coef_exp"] = rng.integers(0, 8, size=p["coef_exp"].shape).astype(np.uint8)
            p["basis"] = rng.integers(-128, 128, size=p["basis"].shape).astype(np.int8)
        elif layer.kind == "dense_linear":
            p["weight"] = rng.integers(-128, 128, size=p["weight"].shape).astype(np.int8)
        elif layer.kind == "bc_linear":
            p["w"] = rng.integers(-128, 128, size=p["w"].shape).astype(np.int8)
        p["bias"] = rng.integers(-2000, 2001, size=p["bias"].shape).astype(np.int32)
        layers.append(type(layer)(layer.name, layer.kind, dict(layer.attrs), p))
    return validate_model(Model(name=model.name, input_shape=model.input_shape,
                                input_scale_exp=model.input_scale_exp,
                                output_scale_exp=model.output_scale_exp, layers=layers))


def _timed_sim(model, x, simulator, config):
    from sparrow.sw.golden import run_model
    from sparrow.tb.model_sim import simulate_model
    stats = {}
    t = time.perf_counter()
    y = simulate_model(model, x, simulator, config, stats=stats)
    wall = time.perf_counter() - t
    if not np.array_equal(y, run_model(model, x)):
        raise AssertionError(f"{model.name} on {simulator}: RTL != golden")
    return wall, stats


def _timed_run(model, x, simulator, config):
    """``sparrow run --sim``'s path: the host driver against the whole accelerator in the link bench."""
    from sparrow.fpga.host import LinkStats, run_model_on_board
    from sparrow.sw.golden import run_model
    stats = LinkStats()
    t = time.perf_counter()
    y, _, link_s, _ = run_model_on_board(model, x, sim=simulator, config=config, stats=stats)
    wall = time.perf_counter() - t
    if not np.array_equal(y, run_model(model, x)):
        raise AssertionError(f"{model.name} over the link on {simulator}: RTL != golden")
    sim = stats.sim
    return wall, {"compile_seconds": sim.get("compile_seconds", 0.0), "total_cycles": sim["cycles"],
                  "seconds": sim["run_seconds"], "link_seconds": link_s,
                  "wait_seconds": sim["wait_seconds"], "cpu_seconds": sim["cpu_seconds"]}


def measure(name, model, x, simulator, config, rng, new_model=None, timed=_timed_sim):
    """One row: cold and new-weights runs of ``model`` on ``x`` (``new_model``, default
    :func:`_redraw` of ``model``) by ``timed`` (:func:`_timed_sim` or :func:`_timed_run`)."""
    with tempfile.TemporaryDirectory(prefix="sparrow-bench-sim-") as cache:
        old = os.environ.get("SPARROW_CACHE")
        os.environ["SPARROW_CACHE"] = cache
        try:
            cold_wall, cold = timed(model, x, simulator, config)
            new_wall, new = timed(new_model or _redraw(model, rng), x, simulator, config)
        finally:
            if old is None:
                del os.environ["SPARROW_CACHE"]
            else:
                os.environ["SPARROW_CACHE"] = old
    return {"design": name, "simulator": simulator, "vectors": len(x),
            "cold_wall_s": round(cold_wall, 2), "cold_compile_s": round(cold["compile_seconds"], 2),
            "new_weights_wall_s": round(new_wall, 2),
            "new_weights_compile_s": round(new["compile_seconds"], 2),
            "cycles": new["total_cycles"], "sim_s": round(new["seconds"], 3),
            "cycles_per_s": round(new["total_cycles"] / max(new["seconds"], 1e-9)),
            "vectors_per_s": round(len(x) / max(new["seconds"], 1e-9)),
            **({"link_s": round(new["link_seconds"], 2), "wait_s": round(new["wait_seconds"], 2),
                "cpu_s": round(new["cpu_seconds"], 3)}
               if "link_seconds" in new else {})}


def print_table(rows):
    print()
    print("| design | simulator | vectors | cold: wall s (compile s) | new weights: wall s (compile s) "
          "| cycles | sim s | cycles/s | vectors/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['design']} | {r['simulator']} | {r['vectors']} | {r['cold_wall_s']:.1f} "
              f"({r['cold_compile_s']:.1f}) | {r['new_weights_wall_s']:.1f} "
              f"({r['new_weights_compile_s']:.1f}) | {r['cycles']} | {r['sim_s']:.3f} | "
              f"{r['cycles_per_s'] / 1e6:.2f} M | {r['vectors_per_s']:,} |")
    for r in rows:
        if "link_s" in r:
            print(f"\n{r['design']} on {r['simulator']}: {r['vectors']} vectors in {r['link_s']:.2f} s "
                  f"over the link end to end ({r['vectors'] / max(r['link_s'], 1e-9):,.0f} vectors/s); "
                  f"the simulation ran {r['sim_s']:.2f} s ({r['cpu_s']:.2f} s of processor time: "
                  f"{r['cycles'] / max(r['cpu_s'], 1e-9) / 1e6:.2f} M cycles per processor second) "
                  f"and waited {r['wait_s']:.2f} s for the host (simulated time standing still)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simulators", default="verilator,icarus")
    ap.add_argument("--vectors", type=int, default=256, help="vectors per engine run (default 256)")
    ap.add_argument("--no-digits", action="store_true",
                    help="skip digits-mlp (sparrow sim and sparrow run --sim)")
    ap.add_argument("--only", default=None, metavar="TEXT",
                    help="only the designs whose name contains TEXT (e.g. 'run --sim')")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    from sparrow.hw.engine import EngineConfig
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(0)
    designs = []
    for kind, (layer_args, engine) in ENGINES.items():
        layer = random_layer(kind, rng, name=kind.split("_")[0], **layer_args)
        model = random_model([layer], (layer.attrs["in"],), name=kind)
        x = rng.integers(-128, 128, size=(args.vectors, layer.attrs["in"])).astype(np.int8)
        label = f"{kind} {layer.attrs['in']}x{layer.attrs['out']}" + (
            f" k={layer.attrs['k']}" if "k" in layer.attrs else "")
        designs.append((label, model, x, EngineConfig(**engine), None))
    if not args.no_digits:
        from sparrow.sw import digits
        from sparrow.sw.pipeline import compress_digits
        print("[bench_sim] compressing digits-mlp (smartdeal)", file=sys.stderr, flush=True)
        model, _ = compress_digits("digits-mlp", "smartdeal", seed=0, progress=False)
        retrained, _ = compress_digits("digits-mlp", "smartdeal", seed=1, progress=False)
        _, _, pixels, _ = digits.load_split()
        designs.append(("sparrow sim digits-mlp", model, digits.quantize_inputs(pixels),
                        EngineConfig(pes=8), retrained))
        designs.append(("sparrow run --sim digits-mlp (whole accelerator, UART)", model,
                        digits.quantize_inputs(pixels), EngineConfig(pes=8), retrained, _timed_run))
    if args.only:
        designs = [d for d in designs if args.only in d[0]]
    rows = []
    for simulator in args.simulators.split(","):
        for name, model, x, config, new_model, *timed in designs:
            t = time.time()
            rows.append(measure(name, model, x, simulator, config, np.random.default_rng(1),
                                new_model, *timed))
            print(f"[bench_sim] {name} on {simulator} done in {time.time() - t:.0f} s",
                  file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
