"""The estimate before synthesis against place and route and RTL simulation, on held-out configurations.

    python -m sparrow.bench.bench_estimate [--boards icebreaker ulx3s-85f] [--cycles] [--pnr] [--work build/explore-fit]

Logic, flip-flops, block RAM and fmax: the estimate (``explore/data/fit.json``)
against the place-and-route records of the sweep that the fit left out
(``held_out`` in ``explore/data/sweep.json``), and leave-one-out over the
fitted records (each refitted without itself).  ``--pnr`` places and routes
the held-out configurations again instead of reading their records.
``--cycles``: the cycle model against the RTL simulation (Verilator) of the
held-out configurations' models, steady state = (cycles of 2N vectors - of
N) / N.  Goal (issue 16): within 10% on logic and cycles, 15% on fmax.
"""

import argparse
import sys
from pathlib import Path

GOALS = {"logic": 10.0, "cycles": 10.0, "fmax_mhz": 15.0}


def _err(est, real):
    return 100.0 * (est - real) / real if real else float("nan")


def _predict(record, coef):
    from sparrow.explore.estimate import predict
    return predict(coef, record["features"], record.get("layers"), record["config"])


def _row(label, record, est):
    cells = [label]
    for key in ("logic", "ff", "bram", "fmax_mhz"):
        cells.append(f"{est[key]:.0f} / {record[key]:.0f} ({_err(est[key], record[key]):+.1f}%)"
                     if key != "fmax_mhz" else
                     f"{est[key]:.1f} / {record[key]:.1f} ({_err(est[key], record[key]):+.1f}%)")
    return "| " + " | ".join(cells) + " |"


def _hw(c):
    return f"P{c['pes']} B{c['bcast']}"


def resources(boards, pnr, work):
    from sparrow.explore.estimate import load_fit
    from sparrow.explore.fit import fit_board, load_sweep, refeature, run_point, sweep_model_dir
    from sparrow.hw.engine import EngineConfig
    fit = load_fit()
    records = refeature(load_sweep(), work)
    worst = {}
    for board in boards:
        rows = [r for r in records if r["board"] == board and not r.get("failed")]
        failed_held = [r for r in records if r["board"] == board and r.get("failed") and r.get("held_out")]
        if not rows or board not in fit["boards"]:
            print(f"{board}: no sweep records / no fit")
            continue
        coef = fit["boards"][board]
        print(f"\n{board}: estimate / place and route (error), nextpnr seed 1, the PLL at the board's target")
        print("| configuration | logic | FF | BRAM | fmax (MHz) |")
        print("| --- | --- | --- | --- | --- |")
        for r in (r for r in rows if r.get("held_out")):
            if pnr:
                r = {**r, **run_point(sweep_model_dir(work, r["model"]), board, EngineConfig(**r["config"]),
                                      Path(work) / "pnr-bench" / f"{board}-{r['model']}-{_hw(r['config'])}")}
            est = _predict(r, coef)
            print(_row(f"held out: {r['model']} {_hw(r['config'])}", r, est))
            for k in ("logic", "fmax_mhz"):
                worst[k] = max(worst.get(k, 0.0), abs(_err(est[k], r[k])))
        for r in failed_held:    # did not fit the device: logic only
            est = _predict(r, coef)
            e = _err(est["logic"], r["logic"])
            print(f"| held out, did not fit: {r['model']} {_hw(r['config'])} | {est['logic']:.0f} / {r['logic']} "
                  f"({e:+.1f}%) | | | |")
            worst["logic"] = max(worst.get("logic", 0.0), abs(e))
        fitted = [r for r in rows if not r.get("held_out")]
        loo = {k: [] for k in ("logic", "fmax_mhz")}
        for i, r in enumerate(fitted):
            rest = fitted[:i] + fitted[i + 1:] + [f for f in records if f["board"] == board and f.get("failed")]
            if len(rest) < 3:
                continue
            est = _predict(r, fit_board(rest))
            print(_row(f"leave-one-out: {r['model']} {_hw(r['config'])}", r, est))
            for k in loo:
                loo[k].append(abs(_err(est[k], r[k])))
        for k, errs in loo.items():
            if errs:
                print(f"{board} leave-one-out {k}: mean |error| {sum(errs) / len(errs):.1f}%, max {max(errs):.1f}%")
    return worst


def cycles(boards, work):
    import numpy as np
    from sparrow.explore.fit import load_sweep, sweep_model_dir
    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.engines import model_cycles
    from sparrow.modeldir import load_model
    from sparrow.tb.model_sim import simulate_model
    seen, worst = set(), 0.0
    print("\ncycles per vector: cycle model / RTL simulation (Verilator, steady state)")
    print("| model | configuration | per layer (model) | per layer (RTL) | total | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for r in load_sweep():
        key = (r["model"], r["config"]["pes"], r["config"]["bcast"])
        if not r.get("held_out") or r["board"] not in boards or key in seen:
            continue
        seen.add(key)
        model = load_model(sweep_model_dir(work, r["model"]))
        config = EngineConfig(**r["config"])
        x = rng.integers(-128, 128, size=(64, model.layers[0].attrs["in"])).astype(np.int8)
        runs = []
        for n in (32, 64):
            stats = {}
            simulate_model(model, x[:n], "verilator", config, stats=stats)
            runs.append(stats)
        rtl = {name: (runs[1]["cycles"][name] - runs[0]["cycles"][name]) / 32 for name in runs[0]["cycles"]}
        est = model_cycles(model, config)
        total_est, total_rtl = sum(est.values()), sum(rtl.values())
        e = _err(total_est, total_rtl)
        worst = max(worst, abs(e))
        print(f"| {r['model']} | {_hw(r['config'])} | {est} | {({k: round(v, 1) for k, v in rtl.items()})} | "
              f"{total_est} / {total_rtl:.1f} | {e:+.1f}% |")
    return worst


def hardware_changes_since_sweep(boards):
    """``{board: [commit subjects]}``: the commits that touched hw/ or fpga/ after the oldest commit
    the board's sweep records measured (empty: the data is current; None: git cannot tell)."""
    import subprocess
    from sparrow.explore.fit import DATA, load_sweep
    root = DATA.parent.parent
    records = load_sweep()
    out = {}
    for board in boards:
        commits = {r.get("commit", "").replace("+dirty", "") for r in records if r["board"] == board}
        commits.discard("")
        logs = []
        for c in commits:
            r = subprocess.run(["git", "log", "--format=%h %s", f"{c}..HEAD", "--", "hw", "fpga"],
                               capture_output=True, text=True, cwd=root)
            logs.append(r.stdout.split("\n")[:-1] if r.returncode == 0 else None)
        out[board] = None if not logs or None in logs else max(logs, key=len)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sparrow.bench.bench_estimate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s-85f"])
    parser.add_argument("--pnr", action="store_true", help="place and route the held-out points again")
    parser.add_argument("--cycles", action="store_true", help="also the cycle model against RTL simulation")
    parser.add_argument("--work", default="build/explore-fit", help="the sweep's models and builds")
    args = parser.parse_args(argv)
    for board, changes in hardware_changes_since_sweep(args.boards).items():
        if changes is None:
            print(f"{board}: git cannot tell whether the sweep measured the current hardware")
        elif changes:
            print(f"{board}: the sweep predates {len(changes)} commit(s) to hw/ or fpga/ (newest: "
                  f"{changes[0]}); re-measure with python -m sparrow.explore.fit --sweep")
        else:
            print(f"{board}: the sweep measured the current hw/ and fpga/")
    worst = resources(args.boards, args.pnr, args.work)
    if args.cycles:
        worst["cycles"] = cycles(args.boards, args.work)
    print("\nheld out, worst |error|: " + (", ".join(
        f"{k} {v:.1f}% (goal {GOALS[k]:g}%: {'met' if v <= GOALS[k] else 'NOT met'})" for k, v in worst.items()) or "no held-out records"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
