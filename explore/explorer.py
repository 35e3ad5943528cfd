"""The co-design search: compression trials x hardware grid, the Pareto front, confirming builds.

1. **Trials** (:func:`~sparrow.explore.trials.run_trial`, in parallel on the
   runner): one Optuna study per method (TPE, seeded, constrained to the
   accuracy budget: :func:`make_sampler`), the methods
   taking the trials in turn (:class:`MethodStudies`), proposes the settings
   (:mod:`sparrow.explore.space`), each method's hand-set configuration
   first; a trial compresses the model, measures golden
   validation and test accuracy, and estimates the accelerator at every
   hardware grid point.  The search maximises the best estimated
   inferences/s among the grid points that fit the board, constrained to
   validation accuracy within ``max_drop`` of fp32: what the builds confirm.
   The front (2.) keeps every trade-off of the trials' points.
   Trials are asked in batches of ``batch`` (fixed, so that a rerun asks the
   same trials whatever the worker count, and finds them in the cache); the
   trials are distinct compressions (a proposal of settings already tried
   is told their result and not counted).
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

__all__ = ["explore", "OBJECTIVES", "front_points", "choose_builds", "accuracy_violation", "make_sampler",
           "MethodStudies"]

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


def accuracy_violation(val_accuracy, fp32_val, max_drop):
    """How far (as a fraction, > 0) ``val_accuracy`` falls below ``fp32_val - max_drop`` pp, else 0:
    the search's constraint, the same admission rule as the confirming builds' (:func:`choose_builds`)."""
    if fp32_val is None:
        return 0.0
    return max(0.0, fp32_val - max_drop / 100 - 1e-12 - val_accuracy)


def make_sampler(seed):
    """A method's sampler: TPE, seeded, constrained, multivariate.

    * The objective: the trial's best estimated inferences/s on the board
      (the fastest hardware point that fits); the front's other objectives,
      accuracy and logic, enter as the constraint below and through the
      hardware grid (every trial's model at every point).  A multi-objective
      TPE over accuracy and inferences/s spent most trials on accurate slow
      models beyond the budget, where no build goes (40 trials: two points
      within 1 pp above 100 k inferences/s).
    * Constraints (``Trial.set_constraint`` before each ``tell``): a trial whose
      validation accuracy falls more than ``--max-drop`` below fp32
      (:func:`accuracy_violation`), or whose model fits the board at no
      hardware point, is infeasible; TPE ranks feasible trials first, so it proposes
      settings near the fast points that the builds may confirm instead of
      spending trials on fast models that lost their accuracy.
    * ``multivariate``: the densities of a method's layers, its exponent
      levels and block are modelled jointly (they trade against one another:
      a sparser fc1 wants a denser fc2).
    * Four startup trials (the enqueued hand-set one, then random ones).
    """
    import warnings
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True, group=True)


class MethodStudies:
    """The search over the compression settings: one Optuna study per method, taking turns.

    The methods' spaces are disjoint and shaped differently (densities and
    exponent levels; block sizes); one TPE study over the method-conditional
    space locks onto the method of its first good trials (a 40-trial explore
    of digits-mlp gave SmartDeal 19 trials and ADMM 5).  Here every method has
    its own study (:func:`make_sampler`, seed ``seed + i``) starting from its
    hand-set configuration (enqueued), and the methods take the trials in
    turn, so each gets an equal share of them.

    A proposal with the settings of a trial already run is told that trial's
    result and not counted, so the trials are distinct compressions; after
    ``patience`` such proposals in a row a method's space is taken as
    exhausted (digits-mlp's circulant space holds six settings) and the
    method leaves the rotation: its share goes to the others.

    Parameters: ``methods`` (searched, in turn order), ``dims`` (``{layer:
    (in, out)}``), ``hand`` (``{method: Config overrides}`` of the hand-set
    configuration), ``seed``, ``max_drop`` (pp: the accuracy constraint).
    """

    def __init__(self, methods, dims, hand, seed, max_drop, patience=50):
        import optuna
        from sparrow.explore.space import hand_params
        self.dims, self.max_drop, self.patience = dims, max_drop, patience
        self.studies = {}
        for i, m in enumerate(methods):
            self.studies[m] = optuna.create_study(direction="maximize",
                                                  sampler=make_sampler(seed + i))
            self.studies[m].enqueue_trial(hand_params(m, hand.get(m, {}), dims))
        self.active = list(methods)
        self.exhausted = []
        self.outcome = {}       # canonical params -> (val accuracy, best inferences/s) of each trial run
        self._turn = 0
        self._fp32 = None       # the fp32 validation accuracy, once known
        self._asked, self._repeats = [], []

    @staticmethod
    def _key(t):
        return json.dumps(t.params, sort_keys=True)

    def ask(self, n):
        """Up to ``n`` new trials (Optuna ``Trial`` s with their ``params``), the methods in turn;
        fewer when every method's space is exhausted."""
        from sparrow.explore.space import suggest
        out, self._repeats = [], []
        while len(out) < n and self.active:
            m = self.active[self._turn % len(self.active)]
            for _ in range(self.patience):
                t = self.studies[m].ask()
                suggest(t, [m], self.dims)
                key = self._key(t)
                if key in self.outcome:           # already run: its result again
                    self._tell(m, t, *self.outcome[key], self._fp32)
                elif any(self._key(u) == key for _, u in out):
                    self._repeats.append((m, t))  # as one of this batch: told once that one is done
                else:
                    out.append((m, t))
                    self._turn += 1
                    break
            else:
                self.active.remove(m)
                self.exhausted.append(m)
        self._asked = out
        return [t for _, t in out]

    def _tell(self, method, t, val, best, fp32):
        t.set_constraint("accuracy", accuracy_violation(val, fp32, self.max_drop))
        t.set_constraint("fits", 0.0 if best else 1.0)
        self.studies[method].tell(t, float(best))

    def tell(self, trials, results, fp32_val):
        """Tell the trials of the last :meth:`ask` their ``(val accuracy, best inferences/s)``;
        ``fp32_val``: the fp32 validation accuracy (None: not known yet)."""
        self._fp32 = fp32_val
        assert [t for _, t in self._asked] == list(trials) and len(results) == len(trials)
        for (m, t), (val, best) in zip(self._asked, results):
            self.outcome[self._key(t)] = (val, best)
            self._tell(m, t, val, best, fp32_val)
        for m, t in self._repeats:
            self._tell(m, t, *self.outcome[self._key(t)], fp32_val)


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
    from sparrow.explore.space import hardware_grid, has_settings
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
            # a method without settings (dense-int8) has one model: one trial beside the studies
            searched = [m for m in methods if has_settings(m)]
            fixed = [{"method": m} for m in methods if not has_settings(m)]
            studies = MethodStudies(searched, dims, {m: METHOD_CONFIGS.get((model, m), {}) for m in searched},
                                    seed, max_drop)
            if not searched:
                trials = min(trials, len(fixed))
            asked = 0
            while asked < trials:
                n = min(batch, trials - asked)
                params = fixed[:n]
                fixed = fixed[n:]
                ts = studies.ask(n - len(params))
                if not params and not ts:
                    break
                tasks = [{**base, "params": p} for p in params + [dict(t.params) for t in ts]]
                before = len(records)
                results = runner.map(run_trial, tasks, on_result=done)
                assert len(records) == before + len(tasks)
                fp32 = max((r["fp32_val_accuracy"] for r in records if r.get("fp32_val_accuracy") is not None),
                           default=None)
                studies.tell(ts, [(r["val_accuracy"], max((p["inferences_per_s"] for p in r["points"]
                                                           if p["fits"]), default=0))
                                  for r in results[len(params):]], fp32)
                asked += len(tasks)
            for m in studies.exhausted:
                log(f"[explore] {m}: after {studies.patience} proposals in a row of settings already tried, "
                    f"its space is taken as exhausted; its share went to the other methods")
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
