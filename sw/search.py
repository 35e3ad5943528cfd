"""Compression to an accuracy budget: per-layer sensitivity, then an Optuna search over per-layer settings.

:func:`search` finds the most compressed model of one method whose golden
(integer) accuracy on the validation split is within ``max_drop`` points of
the fp32 model's:

1. **Sensitivity.**  Each prunable layer alone is compressed to a few
   settings (density 0.05 / 0.12 / 0.3 for smartdeal and admm, each block
   size for circulant) with every other layer kept whole; the drop in
   validation accuracy bounds the range the search explores for that layer
   (a layer that loses more than the budget at density d is not searched
   below the next probe down).
2. **Search.**  Optuna's TPE sampler (seeded: the same seed gives the same
   trials) proposes per-layer settings (density per layer and the exponent
   levels, and with a ``cost`` such as cycles whether each layer stays dense
   int8; circulant block size per layer, 0 = dense).  The first trial is the
   starting point (the per-layer densities that passed the sensitivity probes,
   or the built-in models' hand-tuned settings).  Each trial compresses,
   exports and measures golden validation accuracy and cost (storage bits, or
   the ``cost`` callable given, e.g. hardware cycles).  Hopeless trials are
   pruned: before training when their estimated storage cannot beat the best
   model within budget, and during training (``optuna.pruners.ThresholdPruner``)
   when the float validation accuracy after a training phase is already
   further below fp32 than the budget plus a slack.

Every run (probe or trial) is in the trace (:attr:`SearchResult.trace`:
settings, storage, cost, validation accuracy, state, seconds); the best run
within budget is the result (the least cost, then the best accuracy, then the
first found).  When no run is within budget the most accurate one is
returned with ``met = False``.  Trials run one at a time, in order, so the
search is reproducible on one machine (see README "Determinism").
"""

import math
import time
from dataclasses import dataclass, field

import torch

from sparrow.sw.blocks import blocks_per_tile
from sparrow.sw.compressor import compress
from sparrow.sw.golden import real_input_accuracy
from sparrow.sw.methods import CIRCULANT_KS, METHODS
from sparrow.sw.storage import model_storage

__all__ = ["SearchResult", "search", "searchable", "PROBE_DENSITIES", "MIN_DENSITY"]

PROBE_DENSITIES = (0.05, 0.12, 0.3)
MIN_DENSITY = 0.02
LEVELS = (4, 8)
SLACK_PP = 3.0      # float accuracy after a phase may trail the budget by this much before a trial is pruned


def searchable(method):
    """Whether ``method`` has per-layer settings to search (dense-int8 has none)."""
    return method in ("smartdeal", "admm", "circulant")


@dataclass
class SearchResult:
    """The chosen model and how it was found."""

    model: object                 # sparrow.modeldir.Model of the chosen run
    qm: object                    # its QuantModel
    settings: dict                # the chosen per-layer options
    val_accuracy: float
    cost: float
    met: bool
    trace: list = field(default_factory=list)
    seconds: float = 0.0
    best_run: int = 0


def _plain(o):
    return {k: (dict(v) if hasattr(v, "items") else v) for k, v in o.items()}


class _BlockSpace:
    """smartdeal / admm: a density per block-pruned layer, the exponent levels."""

    def __init__(self, method, base, fp32, dense=False):
        self.method = method
        self.dense = dense          # also search which layers stay dense int8 (the cycles objective)
        self.shapes = METHODS[method](base).layer_shapes(fp32)
        self.names = [s.name for s in self.shapes]
        self.total = sum(s.in_features * s.out_features for s in self.shapes)
        self.lower = {n: MIN_DENSITY for n in self.names}
        self.base = base

    def probes(self):
        for n in self.names:
            for d in PROBE_DENSITIES:
                yield n, d, {"density": {n: d, "default": 1.0}}

    def learn(self, drops, max_drop):
        """Set each layer's lower density from the probe drops {(layer, d): drop pp}; the start densities."""
        start = {}
        for n in self.names:
            ok = [d for d in PROBE_DENSITIES if drops.get((n, d), math.inf) <= max_drop]
            if ok:
                best = min(ok)
                below = [d for d in PROBE_DENSITIES if d < best]
                self.lower[n] = max(below) if below else MIN_DENSITY
                start[n] = best
            else:
                self.lower[n] = max(PROBE_DENSITIES)
                start[n] = 1.0
        return start

    def suggest(self, trial):
        dens = {n: trial.suggest_float(f"density.{n}", self.lower[n], 1.0, log=True) for n in self.names}
        options = {"density": dens, "levels": trial.suggest_categorical("levels", LEVELS)}
        if self.dense:
            options["dense"] = {n: trial.suggest_categorical(f"dense.{n}", (False, True)) for n in self.names}
        return options

    def start_params(self, start, hint=None):
        dens = dict(start)
        levels = 8 if not isinstance(self.base.levels, int) else self.base.levels
        if hint:
            hd = hint.get("density")
            if isinstance(hd, dict):
                dens.update({n: hd.get(n, hd.get("default", dens[n])) for n in self.names})
            elif isinstance(hd, (int, float)):
                dens = {n: hd for n in self.names}
            if isinstance(hint.get("levels"), int):
                levels = hint["levels"]
        params = {f"density.{n}": min(1.0, max(self.lower[n], float(d))) for n, d in dens.items()}
        params["levels"] = levels if levels in LEVELS else 8
        if self.dense:
            params.update({f"dense.{n}": False for n in self.names})
        return params

    def estimate_bits(self, options):
        """Storage estimate (docs/format.md accounting) of the options, before training."""
        m = METHODS[self.method](self.base.replace(**options))
        levels = options["levels"]
        bits = 16
        for s in self.shapes:
            d = m.density(s, self.total)
            p = m.layer_params(s.in_features, s.out_features, s.name)
            k, t, blk = p["k"], p["tiles"], p["block"]
            block_rows = t * blocks_per_tile(s.out_features // t, blk)
            nblocks = block_rows * s.in_features
            kept = max(1, round(d * nblocks))
            code = math.ceil(math.log2(2 * levels + 1))
            index = min(nblocks, kept * max(1, math.ceil(math.log2(s.in_features)))
                        + block_rows * max(1, math.ceil(math.log2(s.in_features + 1))))
            basis = 8 * t * s.in_features * k if self.method == "smartdeal" else 0
            bits += kept * blk * code + index + basis + 16
        return bits


class _CirculantSpace:
    """circulant: a block size per layer (0: dense int8)."""

    def __init__(self, method, base, fp32, dense=False):
        from sparrow.sw.qmodel import PARAM_LAYERS, dims, fuse_relu, param_names
        seq = fuse_relu(fp32)
        names = param_names(seq)
        self.choices = {}
        for m, _ in seq:
            if isinstance(m, PARAM_LAYERS):
                n_in, n_out = dims(m)
                ks = [k for k in CIRCULANT_KS if n_in % k == 0 and n_out % k == 0]
                if ks:
                    self.choices[names[id(m)]] = tuple(ks) + (0,)
        self.names = list(self.choices)
        self.base = base

    def probes(self):
        for n in self.names:
            for k in self.choices[n][:-1]:
                yield n, k, {"k": {n: k, "default": 0}}

    def learn(self, drops, max_drop):
        start = {}
        for n in self.names:
            ok = [k for k in self.choices[n][:-1] if drops.get((n, k), math.inf) <= max_drop]
            start[n] = max(ok) if ok else 0
        return start

    def suggest(self, trial):
        return {"k": {n: trial.suggest_categorical(f"k.{n}", self.choices[n]) for n in self.names}}

    def start_params(self, start, hint=None):
        params = {f"k.{n}": k for n, k in start.items()}
        if hint and isinstance(hint.get("k"), int):
            params.update({f"k.{n}": hint["k"] for n in self.names if hint["k"] in self.choices[n]})
        return params

    def estimate_bits(self, options):
        return None


def _space(method, base, fp32, dense=False):
    return (_CirculantSpace if method == "circulant" else _BlockSpace)(method, base, fp32, dense)


def search(fp32, base, train, val, fp32_val, max_drop=1.0, trials=20, cost=None, objective="storage",
           start=None, seed=None, timeout=None, progress=True, log=None):
    """Search ``base``'s method for the most compressed model within ``max_drop`` pp of ``fp32_val``.

    Parameters
    ----------
    fp32 : nn.Sequential
        The fp32 model.
    base : MethodConfig
        The configuration the searched options are laid over (epochs, learning rates, ...).
    train : (Tensor, Tensor)
        Training inputs and labels.
    val : (ndarray, ndarray)
        Validation real inputs [N, *input_shape] and labels.
    fp32_val : float
        Validation accuracy of the fp32 model (fraction).
    max_drop : float
        Accuracy budget in percentage points.
    trials : int
        Search trials after the sensitivity probes.
    cost : callable or None
        ``cost(model) -> float`` to minimise (e.g. hardware cycles); None: storage bits.
    start : dict or None
        Starting options (a built-in model's hand-tuned settings) for the first trial.
    seed : int or None
        Sampler seed (default ``base.seed``).
    timeout : float or None
        Stop starting trials after this many seconds.
    progress : bool
        A tqdm bar over the runs.
    log : callable or None
        ``log(str)``: one line per run.
    """
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    method = base.method
    space = _space(method, base, fp32, dense=cost is not None)
    seed = base.seed if seed is None else seed
    xv, yv = val
    t0 = time.time()
    runs = []           # (trace row, model, qm)
    best = {"idx": None}
    probes = list(space.probes())
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(probes) + trials, desc=f"{base.name} {method} search", unit="run", leave=False)

    def measure(cost_fn, model):
        st = model_storage(model)
        c = float(st["weight_bits"]) if cost_fn is None else float(cost_fn(model))
        return st, c

    def feasible(acc):
        return 100.0 * (fp32_val - acc) <= max_drop + 1e-9

    def better(i, j):
        a, b = runs[i][0], runs[j][0]
        return (a["cost"], -a["val_accuracy"], i) < (b["cost"], -b["val_accuracy"], j)

    def record(phase, settings, model, qm, state, seconds, number=None):
        row = {"run": len(runs), "phase": phase, "trial": number, "settings": _plain(settings), "state": state,
               "seconds": round(seconds, 2)}
        if model is not None:
            st, c = measure(cost, model)
            acc = real_input_accuracy(model, xv, yv)
            row.update(storage_bits=int(st["weight_bits"]), storage_ratio=round(st["ratio"], 3), cost=c,
                       val_accuracy=acc, drop_pp=round(100.0 * (fp32_val - acc), 3), within_budget=feasible(acc))
        runs.append((row, model if state == "complete" else None, qm if state == "complete" else None))
        i = len(runs) - 1
        if state == "complete" and row["within_budget"]:
            if best["idx"] is None or better(i, best["idx"]):
                best["idx"] = i
        if bar is not None:
            b = runs[best["idx"]][0] if best["idx"] is not None else None
            bar.set_postfix_str(f"best {b['storage_ratio']:.1f}x {-b['drop_pp']:+.2f} pp" if b else "none in budget")
            bar.update(1)
        if log is not None:
            extra = (f"{row['storage_ratio']:.1f}x, val {100 * row['val_accuracy']:.2f}% "
                     f"({-row['drop_pp']:+.2f} pp)") if model is not None else state
            log(f"{phase} {row['run']}: {row['settings']}: {extra}, {seconds:.1f} s")
        return row

    def run(options):
        cfg = base.replace(**options)
        t = time.time()
        qm = compress(fp32, cfg, data=train)
        model = qm.method.export(qm, base.name)
        return model, qm, time.time() - t

    # 1. sensitivity
    drops = {}
    for layer, value, options in probes:
        model, qm, sec = run(options)
        row = record("sensitivity", options, model, qm, "complete", sec)
        drops[(layer, value)] = row["drop_pp"]
    first = space.learn(drops, max_drop)

    # 2. search
    lower = fp32_val - (max_drop + SLACK_PP) / 100.0
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.ThresholdPruner(lower=lower))
    study.enqueue_trial(space.start_params(first, start))

    def objective_fn(trial):
        options = space.suggest(trial)
        est = space.estimate_bits(options) if cost is None else None
        if est is not None and best["idx"] is not None and est > runs[best["idx"]][0]["cost"] * 1.05:
            record("search", options, None, None, "pruned (storage)", 0.0, trial.number)
            raise optuna.TrialPruned()
        cfg = base.replace(**options)
        t = time.time()

        def monitor(qm, phase):
            if phase + 1 >= len(cfg.EPOCH_FIELDS):
                return          # QAT: the final model is measured on the golden model
            was = qm.training
            qm.eval()
            with torch.no_grad():
                acc = float((qm(torch.as_tensor(xv, dtype=torch.float32)).argmax(1).numpy() == yv).mean())
            qm.train(was)
            trial.report(acc, phase)
            if trial.should_prune():
                raise optuna.TrialPruned(f"float val accuracy {100 * acc:.2f}% after phase {phase}")

        try:
            qm = compress(fp32, cfg, data=train, monitor=monitor)
        except optuna.TrialPruned:
            record("search", options, None, None, "pruned (accuracy)", time.time() - t, trial.number)
            raise
        model = qm.method.export(qm, base.name)
        row = record("search", options, model, qm, "complete", time.time() - t, trial.number)
        trial.set_user_attr("run", row["run"])
        if row["within_budget"]:
            return row["cost"]
        # out of budget: worse than any model within it, ordered by the excess
        return 1e12 * (1.0 + row["drop_pp"] - max_drop)

    remaining = None if timeout is None else max(0.0, timeout - (time.time() - t0))
    study.optimize(objective_fn, n_trials=trials, timeout=remaining, catch=())
    if bar is not None:
        bar.close()
    if best["idx"] is None:
        done = [i for i, r in enumerate(runs) if r[0]["state"] == "complete"]
        idx = max(done, key=lambda i: (runs[i][0]["val_accuracy"], -runs[i][0]["cost"], -i))
        met = False
    else:
        idx, met = best["idx"], True
    row, model, qm = runs[idx]
    return SearchResult(model=model, qm=qm, settings=row["settings"], val_accuracy=row["val_accuracy"],
                        cost=row["cost"], met=met, trace=[r for r, _, _ in runs], seconds=time.time() - t0,
                        best_run=idx)
