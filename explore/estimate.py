"""Resources, fmax and cycles of a model's accelerator on a board, before synthesis.

Logic (LC on the iCE40, LUT4 on the ECP5) and flip-flops are linear in the
features of :mod:`sparrow.explore.features`; the clock period (ns) is linear
in :func:`sparrow.explore.fit.fmax_features`; the coefficients are fitted to
place-and-route results (``data/fit.json``, refitted by
``python -m sparrow.explore.fit``).  DSP blocks come from the engine registry
(exact); block RAM linear in the blocks the ROMs take
(:func:`sparrow.explore.features.rom_blocks`) and the engine count, fitted too.  Cycles come from the registry's
cycle model (:func:`sparrow.hw.engines.model_cycles`): a vector costs the
sum of its engines' steady-state cycles (``cycles_per_vector``, what the RTL
simulation of the model measures, engine after engine: ``sparrow sim``), and
``inferences_per_s`` is the clock over it.  The accelerator's chain overlaps
its engines (FIFOs between them), so its throughput can reach the slowest
engine's cycles (``chain_bound_cycles``); the estimate keeps the sum, the
bound that the simulation confirms.

Estimates are rounded to whole cells; fmax to 0.1 MHz.  ``clock_mhz`` is the
fastest PLL clock at or below ``fmax x (1 - margin)`` that carries the host
link's baud rate (what ``sparrow build --model`` picks).
"""

import json
from dataclasses import replace
from pathlib import Path

from sparrow import SparrowError

__all__ = ["FIT_FILE", "load_fit", "effective_config", "estimate", "predict", "bram_features",
           "format_estimate"]

FIT_FILE = Path(__file__).resolve().parent / "data" / "fit.json"

#: Bits of one block RAM: iCE40 EBR 4 kbit, ECP5 DP16KD 18 kbit.
_BRAM_BITS = {"ice40": 4096, "ecp5": 18432}


def load_fit(path=FIT_FILE):
    """The fitted coefficients (``data/fit.json``); SparrowError when missing."""
    path = Path(path)
    if not path.exists():
        raise SparrowError(f"no fitted resource model at {path}; run: python -m sparrow.explore.fit --sweep")
    return json.loads(path.read_text())


def effective_config(model, board, config):
    """``config`` as the accelerator builds it: dense lanes fitted to the board's DSPs."""
    from sparrow.fpga.accel_top import fit_dense_lanes
    from sparrow.fpga.boards import get_board
    lanes = fit_dense_lanes(model, get_board(board), config)
    return replace(config, dense_lanes=lanes) if lanes else config


def bram_features(layers):
    """Features of the block RAM count: ``[1, ROM blocks, engines]`` (the constant holds the host
    interface's buffers, the engines their FIFOs and activation banks)."""
    return [1.0, float(sum(l["rom_blocks"] for l in layers)), float(len(layers))]


def _dot(coef, x):
    return float(sum(c * v for c, v in zip(coef, x)))


def predict(coef, features, layers, config):
    """``{"logic", "ff", "bram", "fmax_mhz"}`` (unrounded) of one board's coefficients ``coef`` at a
    feature vector, its per-layer info (:func:`~sparrow.explore.features.model_features`) and the
    configuration as a dict (``layers`` None: no block RAM estimate, NaN)."""
    from sparrow.explore.fit import fmax_features
    period = _dot(coef["period_ns"], fmax_features(features, config))
    return {"logic": max(0.0, _dot(coef["logic"], features)), "ff": max(0.0, _dot(coef["ff"], features)),
            "bram": max(0.0, _dot(coef["bram"], bram_features(layers))) if layers is not None else float("nan"),
            "fmax_mhz": 1000.0 / max(period, 1.0)}


def estimate(model, board, config, fit=None, margin=0.03):
    """The estimate of ``model``'s accelerator on ``board`` with ``config`` (a dict).

    Keys: ``board``, ``device``, ``logic`` (LC or LUT4) and ``logic_available``,
    ``ff``, ``dsp``, ``bram`` (with ``*_available``), ``fits`` (bool) and
    ``over`` (what does not fit), ``fmax_mhz``, ``clock_mhz``,
    ``cycles`` (per layer), ``cycles_per_vector``, ``chain_bound_cycles``,
    ``inferences_per_s``, ``layers`` (per-engine info, with each engine's
    share of the logic, ``logic``; the rest, ``host_logic``, is the fitted
    constant: host interface, sequencer, PLL), ``config``.
    """
    from dataclasses import asdict
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.build import pick_clock
    from sparrow.hw.engines import model_cycles
    from sparrow.explore.features import model_features
    spec = get_board(board)
    fit = fit or load_fit()
    coef = fit["boards"].get(spec.name)
    if coef is None:
        raise SparrowError(f"the resource model has no fit for {spec.name} "
                           f"(fitted: {', '.join(fit['boards'])})")
    config = effective_config(model, board, config)
    features, layers = model_features(model, config, spec.family)
    p = predict(coef, features, layers, asdict(config))
    logic, ff, bram, fmax = round(p["logic"]), round(p["ff"]), round(p["bram"]), round(p["fmax_mhz"], 1)
    dsp = sum(l["dsp"] for l in layers)
    for l in layers:    # each engine's share of the logic: its own features (the constant is the host's)
        l["logic"] = round(_dot(coef["logic"], l["features"]))
    bram_available = spec.bram_bits // _BRAM_BITS[spec.family] if spec.family == "ecp5" else 30
    over = [f"{what} {used}/{avail}" for what, used, avail in
            (("logic", logic, spec.luts), ("DSP", dsp, spec.dsps), ("BRAM", bram, bram_available))
            if used > avail]
    cycles = model_cycles(model, config)
    steady = sum(cycles.values())
    osc = float(spec.platform_class()().default_clk_frequency) / 1e6
    try:
        clock = pick_clock(spec.family, osc, fmax * (1 - margin), spec.max_baud)
    except SparrowError:
        clock = None
    return {"board": spec.name, "device": spec.device, "logic": logic, "logic_available": spec.luts,
            "logic_name": "LC" if spec.family == "ice40" else "LUT4",
            "host_logic": round(coef["logic"][0]), "ff": ff, "dsp": dsp, "dsp_available": spec.dsps, "bram": bram,
            "bram_available": bram_available, "fits": not over, "over": over,
            "fmax_mhz": fmax, "clock_mhz": clock, "cycles": cycles, "cycles_per_vector": steady,
            "chain_bound_cycles": max(cycles.values()),
            "inferences_per_s": round(clock * 1e6 / steady) if clock else 0,
            "layers": layers, "config": asdict(config)}


def format_estimate(e):
    """The estimate as a few lines of text (``sparrow estimate``)."""
    c = e["config"]
    lines = [f"{e['board']} ({e['device']}), pes {c['pes']}, out_lanes {c['out_lanes']}, "
             f"bcast {c['bcast']}, dense_lanes {c['dense_lanes']}: estimate before synthesis",
             f"  {e['logic_name']} {e['logic']}/{e['logic_available']} "
             f"({100 * e['logic'] / e['logic_available']:.0f}%), FF {e['ff']}, "
             f"DSP {e['dsp']}/{e['dsp_available']}, BRAM {e['bram']}/{e['bram_available']}"
             + ("" if e["fits"] else f"  DOES NOT FIT: {', '.join(e['over'])}"),
             f"  fmax {e['fmax_mhz']:.1f} MHz -> PLL clock "
             + (f"{e['clock_mhz']:.3f} MHz" if e["clock_mhz"] else "none carries the UART"),
             "  cycles per layer: " + ", ".join(f"{k} {v}" for k, v in e["cycles"].items()),
             f"  {e['cycles_per_vector']} cycles per vector (the chain's overlap could reach "
             f"{e['chain_bound_cycles']}) -> {e['inferences_per_s']:,} inferences/s at the clock"]
    return "\n".join(lines)
