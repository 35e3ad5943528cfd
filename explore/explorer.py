"""The co-design search: compression trials x hardware grid, the Pareto front, confirming builds.

1. **Trials** (:func:`~sparrow.explore.trials.run_trial`, in parallel on the
   runner): an Optuna study (multi-objective TPE, seeded) proposes the method
   and its settings (:mod:`sparrow.explore.space`), each method's hand-set
   configuration first; a trial compresses the model, measures golden
   validation and test accuracy, and estimates the accelerator at every
   hardware grid point.  Its objectives are validation accuracy and the best
   estimated inferences/s among the grid points that fit the board.
   Trials are asked in batches of ``batch`` (fixed, so that a rerun asks the
   same trials whatever the worker count, and finds them in the cache).
2. **Front**: every (trial, hardware point) that fits the board is a point;
   the Pareto front keeps those that no other beats in validation accuracy,
   inferences/s and logic cells at once.  Points that do not fit are refused
   (counted, with the reason, in ``pareto.json``).
3. **Builds**: ``builds`` front points within ``max_drop`` points of the
   fp32 validation accuracy, one per model, alternately the fastest and the
   most accurate (:func:`choose_builds`), are placed and routed and
   simulated (:func:`~sparrow.explore.trials.run_build`); each gets its real
   numbers beside the estimate.
4. ``DIR/pareto.json`` and ``DIR/report.html`` (:mod:`sparrow.explore.report`).
"""

import json
import os
import sys
import time
from pathlib import Path

from sparrow import SparrowError
from sparrow.validate import check_int, check_number, check_range

__all__ = ["explore", "OBJECTIVES", "front_points", "choose_builds"]

#: The front's objectives.
OBJECTIVES = (("val_accuracy", "max"), ("inferences_per_s", "max"), ("logic", "min"))


def _model_source(model, data):
    """``("builtin"|"file"|"dir", digest)`` of ``--model``; SparrowError when it is none of them."""
    from sparrow.sw import digits
    from sparrow.explore.cache import dir_digest, file_digest
    if model in digits.MODELS:
        return "builtin", None
    p = Path(model)
    if p.is_dir():
        if not (p / "manifest.json").exists():
            raise SparrowError(f"--model {model}: a folder without manifest.json is no model directory")
        return "dir", dir_digest(p)
    if p.suffix in (".pt2", ".onnx"):
        if not p.exists():
            raise SparrowError(f"--model {model}: no such file")
        if data is None:
            raise SparrowError(f"--model {model}: a model file needs --data DATA.npz")
        return "file", file_digest(p)
    raise SparrowError(f"--model {model}: not a built-in model ({', '.join(digits.MODELS)}), "
                       f"a .pt2/.onnx file or a model directory")


def _layer_dims(model, kind):
    from sparrow.sw import digits
    from sparrow.explore.space import layer_dims
    if kind == "builtin":
        return layer_dims(digits.make_model(model))
    from sparrow.sw.importer import import_model
    return layer_dims(import_model(model).model)


def front_points(trials):
    """``(points that fit, refused count, {reason: count})`` of the trial records."""
    points, refused, reasons = [], 0, {}
    for t in trials:
        for p in t["points"]:
            if not p["fits"]:
                refused += 1
                for r in p["over"] or ["no PLL clock carries the UART"]:
                    reasons[r.split(" ")[0]] = reasons.get(r.split(" ")[0], 0) + 1
                continue
            points.append({"trial": t["key"], "method": t["method"], "params": t["params"],
                           "settings": t.get("settings", {}), "model_dir": t["model_dir"],
                           "storage_ratio": t["storage_ratio"], "weight_bits": t["weight_bits"],
                           "val_accuracy": t["val_accuracy"], "test_accuracy": t["test_accuracy"],
                           **{k: p[k] for k in ("config", "logic", "ff", "dsp", "bram", "fmax_mhz",
                                                "clock_mhz", "cycles", "cycles_per_vector",
                                                "inferences_per_s", "engine_logic", "host_logic")}})
    return points, refused, reasons


def choose_builds(front, fp32_val, max_drop, builds):
    """The ``builds`` front points to confirm.

    Candidates: the front points within ``max_drop`` pp of ``fp32_val``, one
    per model (its fastest).  Picks alternate between the fastest candidate
    left and the most accurate one left (validation accuracy; ties go to the
    faster, then the smaller), so that the confirmed points span the front's
    trade-off rather than one corner.
    """
    ok = [p for p in front if fp32_val is None or p["val_accuracy"] >= fp32_val - max_drop / 100 - 1e-12]
    ok.sort(key=lambda p: (-p["inferences_per_s"], -p["val_accuracy"], p["logic"]))
    per_model = {}
    for p in ok:
        per_model.setdefault(p["model_dir"], p)
    left = list(per_model.values())
    chosen = []
    while left and len(chosen) < builds:
        if len(chosen) % 2 == 0:
            pick = left[0]
        else:
            pick = max(left, key=lambda p: (p["val_accuracy"], p["inferences_per_s"], -p["logic"]))
        chosen.append(pick)
        left.remove(pick)
    return chosen


def _write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def explore(model, board, out, *, data=None, methods=("smartdeal", "admm", "circulant", "dense-int8"),
            max_drop=1.0, trials=40, builds=4, seed=0, workers=2, address=None, use_ray=None,
            batch=4, simulator="verilator", max_util=0.95, overrides=None, command=None, log=None,
            report=True, on_trial=None):
    """Run the explorer; returns the ``pareto.json`` dict (also written to ``out``).

    ``overrides`` ({method: Config overrides}) is laid over every trial's
    settings (tests use it to shorten training).  ``on_trial(record)`` is
    called after each finished trial.  Every argument is checked before any
    work (SparrowError, one line).
    """
    import optuna
    from sparrow.fpga.boards import get_board
    from sparrow.sw.methods import METHODS
    from sparrow.sw.pipeline import METHOD_CONFIGS
    from sparrow.explore.estimate import load_fit
    from sparrow.explore.runner import Runner
    from sparrow.explore.space import hand_params, hardware_grid, has_settings, suggest
    from sparrow.explore.trials import run_build, run_trial
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    t0 = time.monotonic()
    spec = get_board(board)
    try:
        check_int(trials, "--trials", 1, 100000)
        check_range(builds, "--builds", 0, 1000)
        check_int(batch, "batch", 1, 1024)
        check_int(workers, "--workers", 1, 1024)
        check_range(seed, "--seed", 0, 2**32 - 1)
        check_number(max_drop, "--max-drop", 0, 100)
        check_number(max_util, "max_util", 0, 1, lo_open=True)
    except (TypeError, ValueError) as exc:
        raise SparrowError(str(exc)) from None
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise SparrowError(f"--methods: unknown method {bad[0] if bad else '(none)'} "
                           f"(known: {', '.join(METHODS)})")
    if data is not None and not Path(data).exists():
        raise SparrowError(f"--data {data}: no such file")
    fit = load_fit()
    if spec.name not in fit["boards"]:
        raise SparrowError(f"--board {board}: the resource model has no fit for it "
                           f"(fitted: {', '.join(fit['boards'])})")
    kind, digest = _model_source(model, data)
    if ("uart", 0) not in spec.platform_class()().resources:
        raise SparrowError(f"--board {board}: no UART for the host link (boards with one: icebreaker, "
                           f"ulx3s-12f, ulx3s-85f)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(workers=workers, address=address, use_ray=use_ray, log=log)
    grid = hardware_grid(spec)
    base = {"out": str(out.resolve()), "model": model if kind != "dir" else None, "model_digest": digest,
            "data": str(Path(data).resolve()) if data else None, "data_digest": None, "seed": seed,
            "overrides": overrides, "board": spec.name, "grid": grid, "fit": fit,
            "max_util": max_util}
    if data:
        from sparrow.explore.cache import file_digest
        base["data_digest"] = file_digest(data)
    records = []

    def done(i, record):
        best = max((p["inferences_per_s"] for p in record["points"] if p["fits"]), default=0)
        took = "cached" if record["cached"] else f"{record['seconds']:.0f} s"
        log(f"[explore] trial {len(records) + 1}: {record['method']} val {100 * record['val_accuracy']:.2f}% "
            f"storage {record['storage_ratio']:.1f}x, best {best:,} inferences/s ({took})")
        records.append(record)
        if on_trial:
            on_trial(record)

    try:
        if kind == "dir":
            runner.map(run_trial, [{**base, "model_dir": str(Path(model).resolve()), "params": {"method": "given"}}],
                       on_result=done)
        else:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            dims = _layer_dims(model, kind)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, len(methods)))
            study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
            # a method without settings (dense-int8) has one model: one trial beside the study
            searched = [m for m in methods if has_settings(m)]
            fixed = [{"method": m} for m in methods if not has_settings(m)]
            for m in searched:
                study.enqueue_trial(hand_params(m, METHOD_CONFIGS.get((model, m), {}), dims))
            if not searched:
                trials = min(trials, len(fixed))
            asked = 0
            while asked < trials:
                n = min(batch, trials - asked)
                params = fixed[:n]
                fixed = fixed[n:]
                ts = [study.ask() for _ in range(n - len(params))]
                for t in ts:
                    suggest(t, searched, dims)
                tasks = [{**base, "params": p} for p in params + [dict(t.params) for t in ts]]
                before = len(records)
                results = runner.map(run_trial, tasks, on_result=done)
                assert len(records) == before + n
                for t, r in zip(ts, results[len(params):]):
                    best = max((p["inferences_per_s"] for p in r["points"] if p["fits"]), default=0)
                    study.tell(t, [r["val_accuracy"], float(best)])
                asked += n
        results = sorted(records, key=lambda r: r["key"])
        from sparrow.explore.pareto import pareto_front
        points, refused, reasons = front_points(records)
        front = pareto_front(points, OBJECTIVES)
        fp32_val = max((r["fp32_val_accuracy"] for r in records if r.get("fp32_val_accuracy") is not None),
                       default=None)
        chosen = choose_builds(front, fp32_val, max_drop, builds)
        if chosen:
            log(f"[explore] {len(front)} front points of {len(points)}; confirming {len(chosen)} by place "
                f"and route and RTL simulation")
        build_tasks = [{"out": base["out"], "model_dir": p["model_dir"], "board": spec.name,
                        "config": p["config"], "clock_mhz": p["clock_mhz"], "seed": 1,
                        "data": base["data"], "simulator": simulator} for p in chosen]

        def built(i, b):
            p = chosen[i]
            if b.get("error"):
                log(f"[explore] build {i + 1}: {b['error']}")
            else:
                log(f"[explore] build {i + 1}: {p['method']} pes {p['config']['pes']} bcast {p['config']['bcast']} "
                    f"max_groups {p['config'].get('max_groups')}: logic {b['logic']} "
                    f"(est {p['logic']}), fmax {b['fmax_mhz']:.1f} MHz (est {p['fmax_mhz']:.1f}), clock "
                    f"{b['clock_mhz']:.3f} MHz, RTL {'bit-exact' if b['sim']['bit_exact'] else 'MISMATCH'}"
                    f"{' (cached)' if b['cached'] else ''}")

        real = runner.map(run_build, build_tasks, on_result=built)
    finally:
        runner.shutdown()
    for p, b in zip(chosen, real):
        p["real"] = b
        if not b.get("error"):
            p["real_inferences_per_s"] = round(b["clock_mhz"] * 1e6 / p["cycles_per_vector"])
    from sparrow.explore.estimate import FIT_FILE
    result = {"command": command, "model": model, "data": data, "board": spec.name, "device": spec.device,
              "methods": list(methods), "max_drop_pp": max_drop, "trials": len(records), "builds": len(chosen),
              "seed": seed, "batch": batch, "workers": workers, "ray": runner.use_ray,
              "fp32_val_accuracy": fp32_val,
              "objectives": [list(o) for o in OBJECTIVES], "grid": grid, "fit_file": str(FIT_FILE),
              "points": len(points), "refused": refused, "refused_by": reasons,
              "front": front, "confirmed": chosen,
              "trials_detail": [{k: v for k, v in r.items() if k != "points"} for r in results],
              "tools": _tools(spec.family), "seconds": round(time.monotonic() - t0, 1)}
    _write_json(out / "pareto.json", result)
    _write_json(out / "points.json", points)
    if report:
        from sparrow.explore.report import write_report
        write_report(out)
    return result


def _tools(family):
    from importlib.metadata import version, PackageNotFoundError
    from sparrow.fpga.build import tool_versions
    out = {}
    for pkg in ("sparrow", "torch", "optuna", "ray", "amaranth", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    try:
        out.update(tool_versions(family))
    except Exception as exc:  # a missing tool is named, not fatal, in the record
        out["tools_error"] = str(exc).splitlines()[0]
    return out
