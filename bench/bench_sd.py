"""Benchmark: the sd_linear engine against the dense int8 engine on the same board.

For each board: one realistic sparse SmartDeal layer and a dense layer of the
same shape; each engine is

* simulated in Verilator (bit-exact against the golden model, cycles per
  vector measured over a batch, inputs back to back),
* placed and routed with ``sparrow.fpga.build.build_design`` (resources, fmax),

and the table prints dense-equivalent throughput
``in * out * fmax / cycles_per_vector`` (MAC/s, steady state: vectors back to
back, the pipeline fill excluded; the batch figure includes it) and the
SD/dense ratio, plus
the Verilator speed of the SD engine (cycles/s, clock from cocotb, no Python
per cycle).

    python -m sparrow.bench.bench_sd [--boards icebreaker,ulx3s-85f] [--pes-ice40 56]
                                     [--pes-ecp5 768] [--lanes-ice40 2] [--lanes-ecp5 16]
                                     [--bcast-ecp5 2] [--placer heap] [--no-build] [--out build/bench/sd]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sparrow.modeldir import Layer

# board -> layer shape and engine sizes
CONFIGS = {
    "icebreaker": {"in": 96, "out": 112, "k": 4, "dense_lanes": 8},
    "ulx3s-85f": {"in": 128, "out": 1536, "k": 4, "dense_lanes": 128},
}
# board -> option names of the SD engine's output lanes and broadcast stages
SD_OPTS = {
    "icebreaker": ("lanes_ice40", "bcast_ice40"),
    "ulx3s-85f": ("lanes_ecp5", "bcast_ecp5"),
}
BLOCK_DENSITY = 0.25     # fraction of P x 1 coefficient blocks kept (block-pruned C)
INNER_DENSITY = 0.6      # nonzeros inside a kept block


def realistic_sd_layer(rng, n_in, n_out, k, pes):
    """A SmartDeal layer as the compressor produces it: C pruned in P x 1 blocks, pow2 values."""
    blocks = -(-n_out // pes)
    keep = rng.random((blocks, n_in)) < BLOCK_DENSITY
    mask = np.repeat(keep, pes, axis=0)[:n_out] & (rng.random((n_out, n_in)) < INNER_DENSITY)
    sign = (rng.choice([-1, 1], size=(n_out, n_in)) * mask).astype(np.int8)
    exp = np.minimum(rng.geometric(0.45, size=(n_out, n_in)) - 1, 7).astype(np.uint8)
    basis = rng.integers(-128, 128, size=(1, n_in // k, k, k)).astype(np.int8)
    return Layer("sd", "sd_linear",
                 {"in": n_in, "out": n_out, "k": k, "basis_shift": 8, "out_shift": 9, "relu": True,
                  "z_bits": 8},
                 {"basis": basis, "coef_sign": sign, "coef_exp": exp,
                  "bias": rng.integers(-2000, 2000, size=n_out).astype(np.int32)})


def dense_layer(rng, n_in, n_out):
    return Layer("dense", "dense_linear", {"in": n_in, "out": n_out, "out_shift": 12, "relu": True},
                 {"weight": rng.integers(-128, 128, size=(n_out, n_in)).astype(np.int8),
                  "bias": rng.integers(-2000, 2000, size=n_out).astype(np.int32)})


def _cycles(make_engine, layer, x, forward, simulator="verilator"):
    """(steady-state cycles per vector, cycles of the whole batch / N): :func:`steady_cycles`."""
    from sparrow.tb.model_sim import steady_cycles
    return steady_cycles(make_engine, x, lambda xs: forward(layer, xs), simulator,
                         label=layer.name, name=f"bench_{layer.name}")


def _fmt_util(report, field):
    u = report["utilization"].get(field)
    return f"{u['used']}/{u['available']}" if u else "-"


def run_board(board, pes, args, rng, dense_row=None):
    from sparrow.hw.dense_engine import DenseEngine
    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.sd_engine import SDEngine, sd_program
    from sparrow.sw import golden
    cfg = CONFIGS[board]
    n_in, n_out = cfg["in"], cfg["out"]
    sd = realistic_sd_layer(rng, n_in, n_out, cfg["k"], pes)
    dn = dense_layer(rng, n_in, n_out)
    x = rng.integers(-128, 128, size=(args.vectors, n_in)).astype(np.int8)
    lanes, bcast = (getattr(args, o) for o in SD_OPTS[board])
    row = {"board": board, "in": n_in, "out": n_out, "pes": pes, "dense_lanes": cfg["dense_lanes"],
           "out_lanes": lanes, "bcast": bcast, "placer": args.placer,
           "nonzeros": int((sd.params["coef_sign"] != 0).sum())}
    sd_config = EngineConfig(pes=pes, out_lanes=lanes, bcast=bcast)
    dense_config = EngineConfig(dense_lanes=cfg["dense_lanes"])

    def make_sd():
        return SDEngine.from_layer(sd, sd_config)

    row["sd_entries"] = sum(sd_program(sd.params["coef_sign"], sd.params["coef_exp"], 1, pes).block_entries)
    row["sd_cycles"], row["sd_batch_cycles"] = _cycles(make_sd, sd, x,
                                                       golden.sd_linear_forward, args.simulator)
    if dense_row is None:
        row["dense_cycles"], row["dense_batch_cycles"] = _cycles(
            lambda: DenseEngine.from_layer(dn, dense_config), dn, x, golden.dense_linear_forward,
            args.dense_simulator or args.simulator)
    else:
        for key in ("dense_cycles", "dense_batch_cycles", "dense_report", "dense_fmax", "dense_error"):
            if key in dense_row:
                row[key] = dense_row[key]
    if args.speed:
        from sparrow.tb.model_sim import engine_speed
        row["verilator_cycles_per_s"] = engine_speed(make_sd(), "verilator",
                                                     cycles=args.speed, name="bench_sd_speed")
    if args.build:
        from sparrow.fpga.build import build_design
        out = Path(args.out) / board
        todo = [("sd", make_sd())]
        if dense_row is None:
            todo.append(("dense", DenseEngine.from_layer(dn, dense_config)))
        for name, eng in todo:
            sd_tag = f"{pes}" + (f"c{lanes}" if lanes > 1 else "") + (f"b{bcast}" if bcast else "")
            tag = f"{name}{sd_tag if name == 'sd' else ''}_{board.replace('-', '_')}"
            old = out / tag / f"{tag}.report.json"
            try:
                if args.reuse and old.exists():
                    rep = json.loads(old.read_text())
                else:
                    rep = build_design(eng, board, out / tag, name=tag, placer=args.placer,
                                       extra={"pes": pes, "out_lanes": lanes, "bcast": bcast}
                                       if name == "sd" else {"lanes": cfg["dense_lanes"]},
                                       progress=True)
            except Exception as exc:        # a design that does not fit is a result too
                row[f"{name}_error"] = str(exc)
                continue
            row[f"{name}_report"] = {"utilization": rep["utilization"], "fmax_mhz": rep["fmax_mhz"]}
            row[f"{name}_fmax"] = min(f["achieved"] for f in rep["fmax_mhz"].values())
    macs = n_in * n_out
    for name in ("sd", "dense"):
        f = row.get(f"{name}_fmax")
        if f:
            row[f"{name}_gmacs"] = macs * f * 1e6 / row[f"{name}_cycles"] / 1e9
    if row.get("sd_gmacs") and row.get("dense_gmacs"):
        row["ratio"] = row["sd_gmacs"] / row["dense_gmacs"]
    row["ratio_per_cycle"] = row["dense_cycles"] / row["sd_cycles"]
    return row


def print_table(rows):
    print()
    print("| board | engine | layer | units | LC/LUT | FF | DSP | BRAM | fmax MHz | cycles/vector "
          "(steady / batch of N) | dense-equiv GMAC/s | SD/dense |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    seen = set()
    for r in rows:
        for name in ("sd", "dense"):
            if name == "dense":
                if r["board"] in seen:
                    continue
                seen.add(r["board"])
            rep = r.get(f"{name}_report")
            lut = "-"
            if rep:
                lut = _fmt_util(rep, "lc") if "lc" in rep["utilization"] else _fmt_util(rep, "lut")
            units = (f"{r['pes']} PEs, {r.get('out_lanes', 1)} out lanes"
                     + (f", {r['bcast']} bcast stages" if r.get("bcast") else "")
                     if name == "sd" else f"{r['dense_lanes']} MACs")
            fmax = f"{r[f'{name}_fmax']:.1f}" if r.get(f"{name}_fmax") else (
                "does not fit" if r.get(f"{name}_error") else "-")
            gm = f"{r[f'{name}_gmacs']:.3f}" if r.get(f"{name}_gmacs") else "-"
            ratio = (f"{r['ratio']:.1f}x" if r.get("ratio") else "-") if name == "sd" else ""
            print(f"| {r['board']} | {name} | {r['in']}x{r['out']} | {units} | {lut} | "
                  f"{_fmt_util(rep, 'ff') if rep else '-'} | {_fmt_util(rep, 'dsp') if rep else '-'} | "
                  f"{_fmt_util(rep, 'bram') if rep else '-'} | {fmax} | {r[f'{name}_cycles']:.1f} / "
                  f"{r[f'{name}_batch_cycles']:.1f} | "
                  f"{gm} | {ratio} |")
    for r in rows:
        print(f"\n{r['board']}: SD layer {r['in']}x{r['out']}, {r['nonzeros']} nonzeros "
              f"({100 * r['nonzeros'] / (r['in'] * r['out']):.1f}%), {r['sd_entries']} code entries; "
              f"cycle ratio dense/SD {r['ratio_per_cycle']:.1f}x"
              + (f"; Verilator {r['verilator_cycles_per_s'] / 1e3:.0f} k cycles/s (SD engine, "
                 f"{r['pes']} PEs)" if r.get("verilator_cycles_per_s") else ""))
        for name in ("sd", "dense"):
            if r.get(f"{name}_error"):
                print(f"  {name} build: {r[f'{name}_error']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", default="icebreaker")
    ap.add_argument("--pes-ice40", default="56", help="comma-separated PE counts")
    ap.add_argument("--pes-ecp5", default="768", help="comma-separated PE counts")
    ap.add_argument("--lanes-ice40", type=int, default=2, help="SD output lanes (int8 per beat)")
    ap.add_argument("--lanes-ecp5", type=int, default=16, help="SD output lanes (int8 per beat)")
    ap.add_argument("--bcast-ice40", type=int, default=0, help="SD broadcast register stages")
    ap.add_argument("--bcast-ecp5", type=int, default=2, help="SD broadcast register stages")
    ap.add_argument("--placer", choices=["heap", "sa"], default=None,
                    help="nextpnr placer (default: nextpnr's; heap is much faster for big ECP5 designs)")
    ap.add_argument("--vectors", type=int, default=16)
    ap.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                    help="simulator of the cycle counts (icarus: no C++ compile, for very large arrays)")
    ap.add_argument("--dense-simulator", choices=["verilator", "icarus"], default=None,
                    help="simulator of the dense engine's cycle counts (default: --simulator)")
    ap.add_argument("--speed", type=int, default=200_000, help="cycles of the Verilator speed run (0: skip)")
    ap.add_argument("--no-build", dest="build", action="store_false")
    ap.add_argument("--reuse", action="store_true",
                    help="take resources/fmax from reports of an earlier run when present")
    ap.add_argument("--out", default="build/bench/sd")
    args = ap.parse_args(argv)
    rows = []
    for board in args.boards.split(","):
        pes_list = args.pes_ice40 if board == "icebreaker" else args.pes_ecp5
        first = None
        for pes in [int(p) for p in pes_list.split(",")]:
            t = time.time()
            # The same layer (same rng state) for every PE count of a board.
            row = run_board(board, pes, args, np.random.default_rng(2024), first)
            first = first or row
            rows.append(row)
            print(f"[bench_sd] {board}, {pes} PEs done in {time.time() - t:.0f} s",
                  file=sys.stderr, flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
