"""What the explorer sweeps: compression settings per method, and the hardware grid per board.

Compression (one Optuna trial = one compressed model): the method, then its
per-layer settings:

* ``smartdeal``, ``admm``: the density of kept P x 1 blocks per layer
  (log-uniform in [0.03, 1]), the exponent levels (4 or 8) and the pruning
  block P (4, 8 or 16: the PE count whose tiles the pruning serves);
* ``circulant``: the block size per layer (those that divide it, or 0: dense int8);
* ``dense-int8``: nothing (one model).

Each method's first trial is its hand-set configuration (the settings of
:data:`sparrow.sw.pipeline.METHOD_CONFIGS` for the built-in models, the
method's defaults otherwise).

Hardware (every compressed model is estimated at every grid point, a few
milliseconds each): PEs per sd_linear engine and broadcast stages (one output
lane: the accelerator chains engines with one); the dense lanes follow the board's DSPs
(:func:`sparrow.fpga.accel_top.fit_dense_lanes`), the PE-group limit of the
SmartDeal code layout is the board's (``Board.max_groups``: 1 on the
iCEBreaker, 16 on the ECP5 boards; the place-and-route sweep behind the
estimator, :mod:`sparrow.explore.fit`, builds with it, so another limit
would be an extrapolation: on the UP5K such estimates missed logic and block
RAM by 3% and 10-23%, and the builds did not fit) and the clock is the
fastest PLL clock the estimated fmax allows (a slower clock only loses
inferences/s at the same resources).
"""

from sparrow import SparrowError
from sparrow.sw.methods import BLOCK_METHODS, CIRCULANT_KS, METHODS

__all__ = ["DENSITY_RANGE", "LEVELS", "BLOCKS", "has_settings", "suggest", "hand_params", "options_of",
           "hardware_grid"]

DENSITY_RANGE = (0.03, 1.0)
LEVELS = (4, 8)
BLOCKS = (4, 8, 16)

#: PE counts tried per board family (the UP5K holds two engines of at most ~16 PEs).
_PES = {"ice40": (1, 2, 4, 5, 6, 8, 10, 12, 16, 20), "ecp5": (4, 8, 10, 16, 32, 64, 128, 256)}
#: The accelerator chains engines with one output lane (hw/accel.py); more lanes serve engines alone.
_OUT_LANES = (1,)
_BCAST = (0, 1, 2)


def layer_dims(fp32):
    """``{layer name: (in, out)}`` of the Linear/Conv2d layers of an fp32 ``nn.Sequential``."""
    from sparrow.sw.qmodel import PARAM_LAYERS, dims, fuse_relu, param_names
    seq = fuse_relu(fp32)
    names = param_names(seq)
    return {names[id(m)]: dims(m) for m, _ in seq if isinstance(m, PARAM_LAYERS)}


def has_settings(method):
    """Whether ``method`` has settings to search (dense-int8 has none: one model)."""
    return method in ("smartdeal", "admm", "circulant")


def suggest(trial, methods, dims):
    """Optuna parameters of one trial (define-by-run): ``method`` and its settings.

    A trial enqueued with its parameters (a hand-set configuration) keeps them,
    whatever ``methods`` holds."""
    method = trial.suggest_categorical("method", list(methods))
    if method in BLOCK_METHODS:
        for n in dims:
            trial.suggest_float(f"{method}.density.{n}", *DENSITY_RANGE, log=True)
        trial.suggest_categorical(f"{method}.levels", LEVELS)
        trial.suggest_categorical(f"{method}.block", BLOCKS)
    elif method == "circulant":
        for n, (n_in, n_out) in dims.items():
            ks = [k for k in CIRCULANT_KS if n_in % k == 0 and n_out % k == 0] + [0]
            trial.suggest_categorical(f"circulant.k.{n}", ks)
    return trial.params


def _default(method, field):
    """The default of ``field`` in ``method``'s Config."""
    import dataclasses
    return next(f.default for f in dataclasses.fields(METHODS[method].Config) if f.name == field)


def hand_params(method, hand, dims):
    """The Optuna parameters of ``method``'s hand-set configuration ``hand`` (a Config overrides dict)."""
    params = {"method": method}
    if method in BLOCK_METHODS:
        dens = hand.get("density", _default(method, "density"))
        for n in dims:
            d = dens.get(n, dens.get("default", 1.0)) if isinstance(dens, dict) else dens
            params[f"{method}.density.{n}"] = min(max(float(d), DENSITY_RANGE[0]), DENSITY_RANGE[1])
        levels = hand.get("levels", _default(method, "levels"))
        params[f"{method}.levels"] = levels if levels in LEVELS else 8
        block = hand.get("block", _default(method, "block"))
        params[f"{method}.block"] = block if block in BLOCKS else 8
    elif method == "circulant":
        k = hand.get("k", _default(method, "k"))
        for n, (n_in, n_out) in dims.items():
            kk = k.get(n, k.get("default", 16)) if isinstance(k, dict) else k
            params[f"circulant.k.{n}"] = kk if kk and n_in % kk == 0 and n_out % kk == 0 else 0
    return params


def options_of(params):
    """``(method, Config overrides)`` of a trial's parameters."""
    method = params["method"]
    options = {}
    for key, value in params.items():
        if key == "method":
            continue
        _, field, *layer = key.split(".")
        if layer:
            options.setdefault(field, {})[layer[0]] = value
        else:
            options[field] = value
    return method, options


def hardware_grid(board):
    """``[{pes, out_lanes, bcast, max_groups}]`` tried on ``board`` (a :class:`~sparrow.fpga.boards.Board`),
    at the board's PE-group limit (the one the estimator is fitted on)."""
    if board.family not in _PES:
        raise SparrowError(f"no hardware grid for board family {board.family!r}")
    return [{"pes": p, "out_lanes": c, "bcast": b, "max_groups": board.max_groups} for p in _PES[board.family]
            for c in _OUT_LANES for b in _BCAST if p % c == 0 and c <= p]
