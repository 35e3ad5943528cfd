"""On-chip weight memory: the bits the accelerator's ROMs hold, counted from the engines' images.

The count reads the same layout description that ``sparrow generate`` writes
(each engine's ``memory_images()``: ``{name: (width, words, layout)}``), so it
is what the bitstream holds, not an ideal encoding.  A ROM of ``width`` bits
and ``depth`` words holds ``width * depth`` bits.  Each ROM has a role, from
its name:

* ``bias``: the per-row biases (reported apart, as the model's storage does);
* ``consts`` and ``tiles`` (``tiles<g>`` per PE group): shifts, flags and
  per-tile tables of the ``generic`` simulation builds (board builds hold
  them as logic constants);
* every other ROM (``codes`` or ``codes<g>`` per PE group, ``basis``,
  ``weight``, ``ws``...): weights.

:func:`memory_blocks` says how many block RAMs of a family a ROM takes as its
size implies (the primitive's aspect ratios; the build report also gives
nextpnr's own count of the whole design).
"""

from amaranth.hdl import Elaboratable

from sparrow import SparrowError
from sparrow.hw.component import discard
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import engine_for_layer
from sparrow.hw.sd_program import MAX_GROUPS

#: On-chip weight bits at most this times the encoded bits: the storage goal (bench_storage, the hint).
ONCHIP_GOAL = 1.25

__all__ = ["ROLES", "ONCHIP_GOAL", "rom_role", "image_bits", "engine_onchip", "model_onchip", "memory_blocks",
           "BLOCK_RAMS", "storage_line", "discard_units"]

#: ROM name -> role for the ROMs that do not hold weights.
ROLES = {"bias": "bias", "consts": "control", "tiles": "control"}

#: Block RAM primitives: family -> (name, [(width, depth) configurations]).
BLOCK_RAMS = {
    "ice40": ("EBR", [(16, 256), (8, 512), (4, 1024), (2, 2048)]),
    "ecp5": ("DP16KD", [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]),
}


def rom_role(name):
    """``"weight"``, ``"bias"`` or ``"control"``: the role of the ROM called ``name``
    (a group index at the end, ``codes3``/``tiles3``, does not change it)."""
    return ROLES.get(name.rstrip("0123456789"), "weight")


def image_bits(images):
    """``{name: {"width", "depth", "bits", "role"}}`` of an engine's ``memory_images()``."""
    return {name: {"width": int(width), "depth": len(words), "bits": int(width) * len(words),
                   "role": rom_role(name)}
            for name, (width, words, _) in images.items()}


def discard_units(unit, seen=None):
    """Mark ``unit`` and the units it holds as never elaborated (built only to count its ROMs)."""
    seen = set() if seen is None else seen
    if id(unit) in seen:
        return
    seen.add(id(unit))
    discard(unit)
    for value in vars(unit).values():
        if isinstance(value, Elaboratable):
            discard_units(value, seen)


def engine_onchip(engine):
    """Bits one engine holds: ``{"weight_bits", "bias_bits", "control_bits", "memories"}``."""
    mems = image_bits(engine.memory_images())
    totals = {f"{role}_bits": sum(m["bits"] for m in mems.values() if m["role"] == role)
              for role in ("weight", "bias", "control")}
    return {**totals, "memories": mems}


def model_onchip(model, config=EngineConfig()):
    """On-chip bits of every parameter layer of ``model`` with the engines of ``config``.

    Returns ``{"weight_bits", "bias_bits", "control_bits", "pes", "layers": [{"name",
    "kind", "weight_bits", "bias_bits", "control_bits", "memories"}]}``; layers
    without parameters (flatten, pooling) hold no ROM and are left out.

    Raises
    ------
    SparrowError
        A layer kind with no RTL engine (as :func:`sparrow.hw.engines.engine_for_layer`).
    """
    layers = []
    for layer in model.layers:
        if not layer.has_params:
            continue
        engine = engine_for_layer(layer, config)
        layers.append({"name": layer.name, "kind": layer.kind, **engine_onchip(engine)})
        discard_units(engine)
    totals = {key: sum(l[key] for l in layers) for key in ("weight_bits", "bias_bits", "control_bits")}
    return {**totals, "pes": config.pes, "layers": layers}


def memory_blocks(width, depth, family):
    """``(primitive, count)``: block RAMs of ``family`` (``"ice40"``, ``"ecp5"``) that a
    ``width`` x ``depth`` ROM takes, the cheapest configuration (no cascading logic counted).

    Raises
    ------
    ValueError
        An unknown family ("Unknown FPGA family 'x' (known: ice40, ecp5)").
    """
    if family not in BLOCK_RAMS:
        raise ValueError(f"Unknown FPGA family {family!r} (known: {', '.join(BLOCK_RAMS)})")
    name, configs = BLOCK_RAMS[family]
    return name, min(-(-width // w) * -(-depth // d) for w, d in configs)


def storage_line(model, config, encoded_ratio, fp32_bits):
    """One line for the CLI: ``storage: 30.5x encoded, 28.9x on chip (16 PEs: ...)``.

    ``encoded_ratio`` and ``fp32_bits`` are the model's ideal encoding
    (:func:`sparrow.sw.storage.model_storage`, passed in: hw does not import sw);
    the on-chip figure is ``fp32_bits`` over :func:`model_onchip`'s weight bits.
    A model with a layer that has no RTL engine gets ``on chip n/a`` and the reason.
    """
    try:
        oc = model_onchip(model, config)
    except SparrowError as exc:
        return f"storage: {encoded_ratio:.1f}x encoded, on chip n/a ({exc})"
    ratio = f"{fp32_bits / oc['weight_bits']:.1f}x" if oc["weight_bits"] else "n/a"
    line = (f"storage: {encoded_ratio:.1f}x encoded, {ratio} on chip ({config.pes} PEs: "
            f"{oc['weight_bits']} weight bits in ROM, biases {oc['bias_bits']} bits beside)")
    over = oc["weight_bits"] * encoded_ratio / fp32_bits if fp32_bits else 0.0
    rows = config.pes // config.max_groups
    sd = any(layer.kind.startswith("sd_") for layer in model.layers)
    if sd and over > ONCHIP_GOAL and config.max_groups < MAX_GROUPS and rows > 1:
        line += (f"; the chip holds {over:.2f}x the encoding: {config.max_groups} PE group"
                 f"{'s' if config.max_groups > 1 else ''} of {rows} rows store"
                 f"{'s' if config.max_groups == 1 else ''} a word per column of each {rows}-row "
                 f"block, so shorter pruning blocks cost more (compress with --block {rows})")
    return line
