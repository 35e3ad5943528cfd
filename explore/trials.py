"""The explorer's units of work, each a plain function of a JSON task, cached by its inputs.

* :func:`run_trial`: compress the model with one trial's settings, write the
  model directory, measure golden validation and test accuracy and storage
  (cached), then estimate the accelerator at every hardware grid point
  (:func:`estimate_points`, milliseconds, never cached).
* :func:`estimate_points`: the estimate of one model directory at a list of
  hardware configurations on a board (no tool runs).
* :func:`run_build`: confirm one point: place and route of the whole
  accelerator at the estimated clock (a full ``sparrow build --model`` when
  the design misses it), then the RTL simulation of test vectors, bit-exact
  against the golden model, with its cycles.

Tasks and results are JSON, so that Ray can ship them to any worker and the
cache (:mod:`sparrow.explore.cache`) can store them; a result found in the
cache is returned without running anything.
"""

import time
from pathlib import Path

from sparrow import SparrowError
from sparrow.explore.cache import Cache, dir_digest, input_key

__all__ = ["trial_key", "run_trial", "estimate_points", "build_key", "run_build", "load_data"]

#: Test vectors of a confirming RTL simulation.
SIM_VECTORS = 64


def trial_key(task):
    """The cache key of a trial's compression: model, data, method settings, seed, overrides.

    The estimates are not cached: they take milliseconds, and a refitted
    resource model or another board reuses the compressed models.
    """
    return input_key({k: task.get(k) for k in ("model", "model_digest", "model_dir", "data", "data_digest",
                                               "params", "seed", "overrides")})


def load_data(model, data):
    """``(name, Data)`` of a trial: the digits split of a built-in model, or ``data`` (DATA.npz;
    ``model`` a model file, or None where only the data matters: a build, a model directory)."""
    from sparrow.sw import digits
    from sparrow.sw.pipeline import digits_data
    from sparrow.sw.data import load_data as read
    if model in digits.MODELS:
        return model, digits_data(model)
    if data is None:
        raise SparrowError(f"--model {model}: a model file needs --data DATA.npz")
    return (Path(model).stem if model else "") or "model", read(data)


def _compress(task):
    """``(Model, report)`` of one trial's compression."""
    from sparrow.sw import digits
    from sparrow.sw.pipeline import METHOD_CONFIGS, compress_model, digits_search_setup
    from sparrow.explore.space import options_of
    method, options = options_of(task["params"])
    model = task["model"]
    if model in digits.MODELS:
        fp32, data, hand, _ = digits_search_setup(model, method, seed=task["seed"])
        name = model
    else:
        name, data = load_data(model, task["data"])
        fp32, hand = model, {}
    overrides = {**hand, **options, **(task.get("overrides") or {}).get(method, {})}
    return compress_model(fp32, data, method, seed=task["seed"], overrides=overrides, name=name,
                          progress=False)


def estimate_points(task):
    """Estimates of ``task["model_dir"]`` on ``task["board"]`` at every ``task["grid"]`` configuration.

    Returns ``[{config..., estimate fields}]``; ``fits`` also requires logic
    at most ``max_util`` of the device (place and route needs some room).
    """
    from sparrow.hw.engine import EngineConfig
    from sparrow.modeldir import load_model
    from sparrow.explore.estimate import estimate
    model = load_model(task["model_dir"])
    points = []
    for hw in task["grid"]:
        try:
            e = estimate(model, task["board"], EngineConfig(**hw), fit=task.get("fit"))
        except (TypeError, ValueError) as exc:   # e.g. output lanes that do not divide a layer's rows
            points.append({"hw": hw, "fits": False, "over": [f"invalid: {exc}"]})
            continue
        full = e["logic"] > task.get("max_util", 1.0) * e["logic_available"]
        if full and e["fits"]:
            e["over"] = [f"logic {e['logic']}/{e['logic_available']} above "
                         f"{100 * task.get('max_util', 1.0):.0f}%"]
        points.append({"hw": hw, "fits": e["fits"] and not full and e["clock_mhz"] is not None,
                       "over": e["over"], "logic": e["logic"], "ff": e["ff"], "dsp": e["dsp"],
                       "bram": e["bram"], "fmax_mhz": e["fmax_mhz"], "clock_mhz": e["clock_mhz"],
                       "cycles": e["cycles"], "cycles_per_vector": e["cycles_per_vector"],
                       "engine_logic": {l["name"]: l["logic"] for l in e["layers"]},
                       "host_logic": e["host_logic"],
                       "inferences_per_s": e["inferences_per_s"], "config": e["config"]})
    return points


def run_trial(task):
    """One trial: compress (or take ``task["model_dir"]``), measure, estimate; cached in ``task["out"]``.

    Returns the trial record: ``key``, ``params``, ``method``, ``model_dir``,
    ``val_accuracy``, ``test_accuracy``, ``fp32_val_accuracy``, ``storage_ratio``,
    ``weight_bits``, ``seconds``, ``points`` (:func:`estimate_points`), ``cached``.
    """
    cache = Cache(task["out"], "trials")
    key = trial_key(task)
    record = cache.get(key)
    if record is not None:
        return {**record, "points": estimate_points({**task, "model_dir": record["model_dir"]}), "cached": True}
    start = time.monotonic()
    out = Path(task["out"])
    if task.get("model_dir"):
        model_dir = task["model_dir"]
        record = _measure_dir(task)
    else:
        from sparrow.sw.pipeline import save_compressed
        model, report = _compress(task)
        model_dir = str(out / "models" / key)
        save_compressed(model, report, model_dir)
        record = {"method": report["method"], "val_accuracy": report["golden_val_accuracy"],
                  "test_accuracy": report["golden_accuracy"] if report["split"] == "test" else None,
                  "fp32_val_accuracy": report["fp32_val_accuracy"],
                  "fp32_test_accuracy": report["fp32_accuracy"] if report["split"] == "test" else None,
                  "storage_ratio": report["storage_ratio"], "weight_bits": report["weight_bits"],
                  "settings": model.meta.get("config", {})}
    record.update(key=key, params=task["params"], seed=task["seed"], model_dir=str(model_dir),
                  seconds=round(time.monotonic() - start, 2))
    cache.put(key, record)
    return {**record, "points": estimate_points({**task, "model_dir": model_dir}), "cached": False}


def _measure_dir(task):
    """Accuracy and storage of an existing model directory (``--model DIR``): the trial's record fields."""
    from sparrow.modeldir import load_model
    from sparrow.sw.golden import real_input_accuracy
    from sparrow.sw.storage import model_storage
    model = load_model(task["model_dir"])
    _, data = load_data(model.name if task["data"] is None else None, task["data"])
    st = model_storage(model)
    meta = model.meta or {}
    return {"method": meta.get("method", "given"), "settings": meta.get("config", {}),
            "val_accuracy": real_input_accuracy(model, data.x_val, data.y_val),
            "test_accuracy": (real_input_accuracy(model, data.x_test, data.y_test)
                              if data.x_test is not None else None),
            "fp32_val_accuracy": meta.get("fp32_val_accuracy"), "fp32_test_accuracy": meta.get("fp32_accuracy"),
            "storage_ratio": st["ratio"], "weight_bits": st["weight_bits"]}


def build_key(task):
    """The cache key of a build: the model directory's bytes, board, configuration, clock, seed."""
    return input_key({"model": dir_digest(task["model_dir"]), "board": task["board"],
                      "config": task["config"], "clock_mhz": task["clock_mhz"], "seed": task["seed"],
                      "data": task["data"], "simulator": task["simulator"]})


def run_build(task):
    """Confirm one point by place and route and RTL simulation; cached in ``task["out"]``.

    Returns ``key``, ``report`` (path), ``bitstream``, ``logic``, ``ff``, ``dsp``,
    ``bram``, ``fmax_mhz``, ``clock_mhz``, ``sim`` (``vectors``, ``bit_exact``,
    ``mismatches``, ``cycles`` per layer, ``cycles_per_vector``, ``simulator``),
    ``seconds``, ``cached``; or ``error`` (one line) when the build failed.
    """
    import numpy as np
    from sparrow.arrays import quantize_real
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.build import build_accelerator, design_fmax
    from sparrow.hw.engine import EngineConfig
    from sparrow.modeldir import load_model
    from sparrow.sw.golden import run_model
    from sparrow.tb.model_sim import simulate_model
    cache = Cache(task["out"], "builds")
    key = build_key(task)
    hit = cache.get(key)
    if hit is not None:
        return {**hit, "cached": True}
    start = time.monotonic()
    model = load_model(task["model_dir"])
    config = EngineConfig(**task["config"])
    out = Path(task["out"]) / "builds" / key
    record = {"key": key}
    try:
        try:
            report = build_accelerator(model, task["board"], out, config=config,
                                       clock_mhz=task["clock_mhz"], seed=task["seed"], progress=False)
        except SparrowError as exc:
            if "meets only" not in str(exc):
                raise
            # the estimate's clock was too fast: learn fmax, then build at what it allows
            report = build_accelerator(model, task["board"], out, config=config, seed=task["seed"],
                                       progress=False)
    except SparrowError as exc:
        record.update(error=str(exc), seconds=round(time.monotonic() - start, 1))
        return {**cache.put(key, record), "cached": False}
    util = report["utilization"]
    name = report["design"]
    suffix = ".bin" if get_board(task["board"]).family == "ice40" else ".bit"
    record.update(report=str(out / f"{name}.report.json"), bitstream=str(out / f"{name}{suffix}"),
                  logic=util.get("lc", util.get("lut"))["used"], ff=util["ff"]["used"],
                  dsp=util.get("dsp", {}).get("used", 0), bram=util.get("bram", {}).get("used", 0),
                  fmax_mhz=design_fmax(report), clock_mhz=report["clock_hz"] / 1e6,
                  tools=report["tools"], pnr_seconds=report["build_seconds"])
    _, data = load_data(model.name if task["data"] is None else None, task["data"])
    x = data.x_test if data.x_test is not None else data.x_val
    codes = quantize_real(np.asarray(x[:SIM_VECTORS]).reshape(min(len(x), SIM_VECTORS), -1),
                          model.input_scale_exp)
    stats = {}
    y_rtl = simulate_model(model, codes, task["simulator"], config, stats=stats)
    y_gold = run_model(model, codes)
    bad = int((y_rtl != y_gold).any(axis=1).sum())
    record["sim"] = {"simulator": task["simulator"], "vectors": int(len(codes)), "bit_exact": bad == 0,
                     "mismatches": bad, "cycles": stats["cycles"],
                     "cycles_per_vector": round(stats["total_cycles"] / len(codes), 1)}
    record["seconds"] = round(time.monotonic() - start, 1)
    return {**cache.put(key, record), "cached": False}
