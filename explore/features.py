"""The structural features of a model and an engine configuration that the resource model reads.

A feature vector describes what the accelerator of a model holds, not the
values it computes: per layer kind, how many engines, their PEs, lanes,
broadcast stages, accumulator widths, and the bits of their parameter ROMs.
It comes from the engines themselves (through the registry,
:func:`sparrow.hw.engines.engine_for_layer`), without elaborating them, in
a few milliseconds.  :data:`FEATURES` names the entries in order; the fitted
coefficients of :mod:`sparrow.explore.estimate` follow the same order.
"""

from sparrow.hw.engines import engine_for_layer, multipliers

__all__ = ["FEATURES", "layer_features", "model_features", "rom_bits", "rom_blocks"]

#: Block RAM aspect ratios (width, depth) per family: iCE40 EBR 4 kbit (16 x 256 .. 2 x 2048),
#: ECP5 DP16KD 18 kbit (36 x 512 .. 1 x 16384).
_BRAM_MODES = {"ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),
               "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))}

#: ROMs of at most this many bits are left to logic by synthesis (counted as no block).
SMALL_ROM_BITS = 1024

#: Names of the feature vector's entries (all counts; ``one`` is the constant).
#: ``sd_k``: sum of the basis group sizes k (the basis unit's width);
#: ``sd_pe_bits``: sum over sd_linear engines of PEs x accumulator width, the
#: adders and registers of the PE array; ``sd_lane_bits``: output lanes x
#: accumulator width (the output stage's muxes); ``sd_bcast_bits``: broadcast
#: stages x PEs; ``rom_kbits``: parameter ROM bits / 1024 (block RAM, or logic
#: where a ROM is small); ``fifo_bytes``: bytes of the FIFOs between engines;
#: ``dense_lane_bits``, ``bc_k``: the dense MAC lanes x accumulator width and
#: the circulant block sizes.
FEATURES = ("one", "sd_engines", "sd_k", "sd_pe_bits", "sd_lane_bits", "sd_bcast_bits",
            "dense_engines", "dense_lane_bits", "bc_engines", "bc_k", "rom_kbits", "fifo_bytes")


def _mark_used(obj, seen=None):
    """Mark ``obj`` and the elaboratables it holds as used: they are read here, never elaborated
    (Amaranth would warn "created but never used" when they are collected)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or not hasattr(obj, "_MustUse__used"):
        return
    seen.add(id(obj))
    obj._MustUse__used = True
    for value in vars(obj).values():
        for item in (value if isinstance(value, (list, tuple)) else (value,)):
            _mark_used(item, seen)


def rom_bits(engine):
    """Bits of every parameter ROM of ``engine`` (width x words of its memory images)."""
    return sum(width * len(words) for width, words, _ in engine.memory_images().values())


def rom_blocks(engine, family):
    """Block RAMs the ROMs of ``engine`` take on ``family``: per ROM, the best aspect ratio's
    ceil(width / w) x ceil(depth / d); ROMs of at most :data:`SMALL_ROM_BITS` bits count none."""
    import math
    total = 0
    for width, words, _ in engine.memory_images().values():
        if width * len(words) <= SMALL_ROM_BITS:
            continue
        total += min(math.ceil(width / w) * math.ceil(len(words) / d) for w, d in _BRAM_MODES[family])
    return total


def layer_features(layer, config, family="ice40"):
    """``({feature: value}, {"kind", "dsp", "rom_bits", ...})`` of one layer's engine under ``config``.

    The second dict holds what the estimate reports per engine besides the
    features (DSP blocks from the registry, ROM bits, the engine's own
    description).
    """
    engine = engine_for_layer(layer, config)
    _mark_used(engine)
    f = dict.fromkeys(FEATURES, 0.0)
    acc = engine.acc_width
    bits = rom_bits(engine)
    if layer.kind == "sd_linear":
        f["sd_engines"] = 1
        f["sd_k"] = layer.attrs["k"]
        f["sd_pe_bits"] = config.pes * acc
        f["sd_lane_bits"] = config.out_lanes * acc
        f["sd_bcast_bits"] = config.bcast * config.pes
    elif layer.kind == "dense_linear":
        f["dense_engines"] = 1
        f["dense_lane_bits"] = engine.describe()["lanes"] * acc
    elif layer.kind == "bc_linear":
        f["bc_engines"] = 1
        f["bc_k"] = layer.attrs["k"]
    f["rom_kbits"] = bits / 1024
    f["fifo_bytes"] = layer.attrs["out"]
    info = {"name": layer.name, "kind": layer.kind, "in": layer.attrs["in"], "out": layer.attrs["out"],
            "dsp": multipliers(layer, config), "rom_bits": bits, "rom_blocks": rom_blocks(engine, family),
            "acc_width": acc,
            **{k: v for k, v in engine.describe().items() if isinstance(v, (int, float))}}
    return f, info


def model_features(model, config, family="ice40"):
    """``(feature vector as a list in FEATURES order, [per-layer info])`` of ``model``'s accelerator
    (``family`` sizes the block RAMs of the info's ``rom_blocks``; each info holds its layer's own
    ``features``, whose sum plus the constant is the model's)."""
    total = dict.fromkeys(FEATURES, 0.0)
    total["one"] = 1.0
    infos = []
    for layer in model.layers:
        f, info = layer_features(layer, config, family)
        for name, value in f.items():
            total[name] += value
        info["features"] = [float(f[name]) for name in FEATURES]
        infos.append(info)
    return [float(total[name]) for name in FEATURES], infos
