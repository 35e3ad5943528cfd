"""The place-and-route sweep behind the resource model, and its least-squares refit.

``data/sweep.json`` holds one record per whole-model accelerator placed and
routed: the compressed model (the ``sparrow compress`` command that makes it,
deterministic), the board, the engine configuration, the feature vector of
:mod:`sparrow.explore.features` and the measured LC/LUT, FF, DSP, block RAM
and fmax.  Each record is one place and route with the PLL at the board's
target clock (the run of ``sparrow build --model`` that learns fmax), so the
fmax is what a timing-driven placement achieves when asked for the most.  A
design that does not fit the device is recorded with the logic count
nextpnr reports over capacity (``failed``; no FF, block RAM or fmax): the
logic fit uses it, the others do not.

``data/fit.json`` holds, per board, the non-negative least-squares
coefficients of logic (LC on the iCE40, LUT4 on the ECP5) and flip-flops
over the features, and those of the clock period (ns) over the fmax
features.  Records marked ``held_out`` are left out of the fit; the benchmark
(``python -m sparrow.bench.bench_estimate``) compares the estimate with them.

Refit (no tools run)::

    python -m sparrow.explore.fit

Extend the sweep (one place and route per new configuration, a few minutes
each on the UP5K) and refit::

    python -m sparrow.explore.fit --sweep [--boards icebreaker ulx3s-85f] [--work build/explore-fit]

Add the confirming builds of explore folders (their models, trained by the
explorer, widen the fit beyond the sweep's five models) and refit::

    python -m sparrow.explore.fit --add-explore build/explore-mlp
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sparrow import SparrowError

__all__ = ["SWEEP", "DATA", "MODELS", "load_sweep", "fit_board", "refit", "refeature", "fmax_features", "run_point",
           "sweep_model_dir", "sweep", "add_explore"]

DATA = Path(__file__).resolve().parent / "data"
SWEEP_FILE = DATA / "sweep.json"
FIT_FILE = DATA / "fit.json"

#: Compressed digits-mlp models of the sweep: name -> ``sparrow compress`` arguments.
MODELS = {
    "sd": "--model digits-mlp --method smartdeal",
    "sd-d20": "--model digits-mlp --method smartdeal --density 0.2",
    "admm": "--model digits-mlp --method admm",
    "bc": "--model digits-mlp --method circulant",
    "dense": "--model digits-mlp --method dense-int8",
}

#: The sweep: (board, model, {EngineConfig fields}, held out).  Held-out points
#: are the benchmark's, never fitted.
SWEEP = [
    # (the PE-group limit is the board's default, as sparrow build --model uses it)
    ("icebreaker", "sd", {"pes": 16}, False),
    ("icebreaker", "sd", {"pes": 8}, False),
    ("icebreaker", "sd", {"pes": 4}, False),
    ("icebreaker", "admm", {"pes": 16}, False),
    ("icebreaker", "dense", {}, False),
    ("icebreaker", "bc", {}, False),
    ("icebreaker", "sd", {"pes": 16, "bcast": 1}, False),
    ("icebreaker", "sd-d20", {"pes": 8}, False),
    ("icebreaker", "sd", {"pes": 2}, False),
    ("icebreaker", "admm", {"pes": 8, "bcast": 2}, False),
    ("icebreaker", "admm", {"pes": 12}, True),
    ("icebreaker", "sd-d20", {"pes": 16, "bcast": 1}, True),
    ("icebreaker", "sd", {"pes": 12, "bcast": 2}, True),
    ("ulx3s-85f", "sd", {"pes": 16}, False),
    ("ulx3s-85f", "sd", {"pes": 64}, False),
    ("ulx3s-85f", "dense", {}, False),
    ("ulx3s-85f", "bc", {}, False),
    ("ulx3s-85f", "admm", {"pes": 32, "bcast": 1}, False),
    ("ulx3s-85f", "sd", {"pes": 128, "bcast": 2}, False),
    ("ulx3s-85f", "sd", {"pes": 32}, False),
    ("ulx3s-85f", "admm", {"pes": 16}, False),
    ("ulx3s-85f", "sd-d20", {"pes": 16}, False),
    ("ulx3s-85f", "admm", {"pes": 64}, False),
    ("ulx3s-85f", "admm", {"pes": 48}, True),
]


def load_sweep(path=SWEEP_FILE):
    """The sweep's records (a list; empty when the file does not exist)."""
    path = Path(path)
    return json.loads(path.read_text())["records"] if path.exists() else []


def _write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def fmax_features(features, config):
    """Features of the clock period (ns) from a feature vector and a configuration dict:
    ``[1, log2 P, bcast, log2 P x bcast, dense, bc]``.

    The PE array's broadcast net fans out to P PEs (a log-depth buffer tree),
    broadcast stages cut it; dense and circulant engines bring their own DSP
    paths.  P and the stages count only when the model has sd_linear engines.
    """
    import math
    from sparrow.explore.features import FEATURES
    f = dict(zip(FEATURES, features))
    has_sd = f["sd_engines"] > 0
    lp = math.log2(config.get("pes", 8)) if has_sd else 0.0
    b = config.get("bcast", 0) if has_sd else 0
    return [1.0, lp, float(b), lp * b, float(f["dense_engines"] > 0), float(f["bc_engines"] > 0)]


def _nnls(a, y, ridge=1e-3):
    """Non-negative least squares (scipy's), with a small ridge so that unused features stay 0."""
    from scipy.optimize import nnls
    a = np.asarray(a, float)
    y = np.asarray(y, float)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-9)
    a_s = a / scale
    reg = np.sqrt(ridge * len(y)) * np.eye(a.shape[1])
    reg[0, 0] = 0.0      # the constant is not shrunk
    coef, _ = nnls(np.vstack([a_s, reg]), np.concatenate([y, np.zeros(a.shape[1])]))
    return coef / scale


def _fit_signed(a, y, ridge=1e-2):
    """Ridge least squares (signed coefficients), the constant unshrunk."""
    a = np.asarray(a, float)
    y = np.asarray(y, float)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-9)
    a_s = a / scale
    reg = ridge * len(y) * np.eye(a.shape[1])
    reg[0, 0] = 0.0
    coef = np.linalg.solve(a_s.T @ a_s + reg, a_s.T @ y)
    return coef / scale


def fit_board(records):
    """``{"logic", "ff", "bram", "period_ns": coefficients, "points": n}`` fitted to one board's records."""
    from sparrow.explore.estimate import bram_features
    rows = [r for r in records if not r.get("held_out")]
    if not rows:
        return None
    full = [r for r in rows if not r.get("failed")]    # failed builds give their logic count only
    logic = _nnls([r["features"] for r in rows], [r["logic"] for r in rows])
    ff = _nnls([r["features"] for r in full], [r["ff"] for r in full])
    bram = _nnls([bram_features(r["layers"]) for r in full], [r["bram"] for r in full])
    timed = [r for r in full if not r.get("explore")]    # explore builds ran at their own clock
    pa = [fmax_features(r["features"], r["config"]) for r in timed]
    period = _fit_signed(pa, [1000.0 / r["fmax_mhz"] for r in timed])
    return {"logic": logic.round(6).tolist(), "ff": ff.round(6).tolist(), "bram": bram.round(6).tolist(),
            "period_ns": period.round(6).tolist(), "points": len(rows), "failed_points": len(rows) - len(full)}


def refeature(records, work):
    """Recompute each record's features and per-layer info from its model under ``work/models``
    (when there: the features may have changed since the record was measured)."""
    from sparrow.fpga.boards import get_board
    from sparrow.hw.engine import EngineConfig
    from sparrow.modeldir import load_model
    from sparrow.explore.estimate import effective_config
    from sparrow.explore.features import model_features
    for r in records:
        path = Path(r["model_dir"]) if r.get("model_dir") else Path(work) / "models" / r["model"]
        if not (path / "manifest.json").exists():
            continue
        model = load_model(path)
        config = effective_config(model, r["board"], EngineConfig(**r["config"]))
        r["features"], r["layers"] = model_features(model, config, get_board(r["board"]).family)
    return records


def refit(sweep_path=SWEEP_FILE, fit_path=FIT_FILE, work=None):
    """Fit every board of the sweep (features recomputed from ``work``'s models when given) and
    write ``fit.json``; return its dict."""
    from sparrow.explore.features import FEATURES
    records = load_sweep(sweep_path)
    if work is not None:
        records = refeature(records, work)
        _write_json(sweep_path, {"records": records})
    boards = sorted({r["board"] for r in records})
    fit = {"features": list(FEATURES),
           "period_features": ["one", "log2_pes", "bcast", "log2_pes_x_bcast", "dense", "bc"],
           "command": "python -m sparrow.explore.fit",
           "boards": {b: fit_board([r for r in records if r["board"] == b]) for b in boards}}
    _write_json(fit_path, fit)
    return fit


def sweep_model_dir(work, name):
    """The sweep model ``name`` under ``work/models`` (compressed once, deterministically)."""
    out = Path(work) / "models" / name
    if not (out / "manifest.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "sparrow", "compress", *shlex.split(MODELS[name]),
               "--out", str(out), "--quiet"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def run_point(model_dir, board, config, out_dir, seed=1):
    """One place and route of ``model_dir``'s accelerator on ``board`` with the PLL at the board's
    target clock; returns the sweep record (features, measured resources, fmax)."""
    from sparrow.fpga.accel_top import accelerator_design
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.build import build_design, design_fmax
    from sparrow.explore.estimate import effective_config
    from sparrow.explore.features import model_features
    from sparrow.modeldir import load_model
    spec = get_board(board)
    model = load_model(model_dir)
    top, name, extra, mhz = accelerator_design(model, board, spec.max_baud, config,
                                               clock_mhz=spec.target_mhz, check_baud=False)
    report = build_design(top, board, out_dir, name=name, seed=seed, target_mhz=mhz, extra=extra)
    features, layers = model_features(model, effective_config(model, board, config), spec.family)
    util = report["utilization"]
    logic = util.get("lc", util.get("lut"))["used"]
    return {"board": board, "config": asdict(config), "features": features, "layers": layers,
            "logic": logic, "ff": util["ff"]["used"], "dsp": util.get("dsp", {}).get("used", 0),
            "bram": util.get("bram", {}).get("used", 0), "fmax_mhz": design_fmax(report),
            "target_mhz": mhz, "seed": seed, "build_seconds": report["build_seconds"],
            "tools": report["tools"]}


def _failed_record(message, model_dir, board, config):
    """The record of a design that did not fit: its logic count from nextpnr's over-capacity
    line (``ICESTORM_LC 5866/5280``, ``TRELLIS_COMB ...``), no fmax; None without one."""
    import re
    from sparrow.fpga.boards import get_board
    from sparrow.modeldir import load_model
    from sparrow.explore.estimate import effective_config
    from sparrow.explore.features import model_features
    m = re.search(r"(ICESTORM_LC|TRELLIS_COMB) (\d+)/(\d+)", message)
    if not m:
        return None
    spec = get_board(board)
    model = load_model(model_dir)
    features, layers = model_features(model, effective_config(model, board, config), spec.family)
    return {"board": board, "config": asdict(config), "features": features, "layers": layers,
            "logic": int(m.group(2)), "ff": None, "dsp": None, "bram": None, "fmax_mhz": None,
            "failed": message.split(" (full log")[0]}


def sweep(boards, work, sweep_path=SWEEP_FILE):
    """Place and route every :data:`SWEEP` point of ``boards`` not yet in ``sweep_path`` (stored after each)."""
    from sparrow.fpga.boards import get_board
    from sparrow.hw.engine import EngineConfig
    data = {"records": load_sweep(sweep_path)}
    done = {(r["board"], r["model"], json.dumps(r["config"], sort_keys=True)) for r in data["records"]}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=DATA).stdout.strip()
    # the hardware measured is the work tree's: say so when it differs from the commit
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw", "fpga", "sparrow"], capture_output=True,
                           text=True, cwd=DATA.parent.parent).stdout.strip()
    if commit and dirty:
        commit += "+dirty"
    for board, name, fields, held_out in SWEEP:
        if board not in boards:
            continue
        config = EngineConfig(**{"max_groups": get_board(board).max_groups, **fields})
        key = (board, name, json.dumps(asdict(config), sort_keys=True))
        if key in done:
            continue
        model_dir = sweep_model_dir(work, name)
        tag = "-".join(f"{k}{v}" for k, v in fields.items()) or "default"
        start = time.monotonic()
        try:
            record = run_point(model_dir, board, config, Path(work) / "pnr" / f"{board}-{name}-{tag}")
        except SparrowError as exc:
            record = _failed_record(str(exc), model_dir, board, config)
            print(f"[sweep] {board} {name} {tag}: {exc}", file=sys.stderr, flush=True)
            if record is None:
                continue
        record.update(model=name, compress=f"sparrow compress {MODELS[name]}", held_out=held_out,
                      commit=commit)
        data["records"].append(record)
        _write_json(sweep_path, data)
        if not record.get("failed"):
            print(f"[sweep] {board} {name} {tag}: logic {record['logic']}, FF {record['ff']}, "
                  f"fmax {record['fmax_mhz']:.1f} MHz ({time.monotonic() - start:.0f} s)", flush=True)


def add_explore(folder, sweep_path=SWEEP_FILE):
    """Add the confirming builds of an explore folder (``pareto.json``) to the sweep as records
    (``explore``: their place and route ran at the chosen clock, so their fmax is left out of the
    period fit; a build that did not fit gives its logic count); returns how many were added."""
    from sparrow.fpga.boards import get_board
    from sparrow.hw.engine import EngineConfig
    from sparrow.modeldir import load_model
    from sparrow.explore.estimate import effective_config
    from sparrow.explore.features import model_features
    res = json.loads((Path(folder) / "pareto.json").read_text())
    data = {"records": load_sweep(sweep_path)}
    have = {(r.get("model_dir"), r["board"], json.dumps(r["config"], sort_keys=True)) for r in data["records"]}
    added = 0
    for p in res["confirmed"]:
        config = EngineConfig(**p["config"])
        key = (p["model_dir"], res["board"], json.dumps(asdict(config), sort_keys=True))
        if key in have:
            continue
        real = p["real"]
        if real.get("error"):
            record = _failed_record(real["error"], p["model_dir"], res["board"], config)
            if record is None:
                continue
        else:
            model = load_model(p["model_dir"])
            features, layers = model_features(model, effective_config(model, res["board"], config),
                                              get_board(res["board"]).family)
            record = {"board": res["board"], "config": asdict(config), "features": features, "layers": layers,
                      "logic": real["logic"], "ff": real["ff"], "dsp": real["dsp"], "bram": real["bram"],
                      "fmax_mhz": real["fmax_mhz"], "target_mhz": real["clock_mhz"], "seed": 1,
                      "tools": real.get("tools")}
        record.update(model=f"explore:{Path(p['model_dir']).name}", model_dir=p["model_dir"], explore=True,
                      compress=f"sparrow explore trial {json.dumps(p['params'], sort_keys=True)}",
                      held_out=False)
        data["records"].append(record)
        have.add(key)
        added += 1
    _write_json(sweep_path, data)
    return added


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sparrow.explore.fit", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", action="store_true", help="place and route the missing sweep points first")
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s-85f"])
    parser.add_argument("--work", default="build/explore-fit", help="models and build folders of the sweep")
    parser.add_argument("--add-explore", metavar="DIR", nargs="+", default=[],
                        help="also add the confirming builds of these explore folders to the sweep")
    args = parser.parse_args(argv)
    if args.sweep:
        sweep(args.boards, args.work)
    for folder in args.add_explore:
        print(f"{folder}: {add_explore(folder)} builds added to {SWEEP_FILE}")
    fit = refit(work=args.work)
    for board, f in fit["boards"].items():
        print(f"{board}: {f['points']} points fitted -> {FIT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
