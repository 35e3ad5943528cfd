"""Resource and timing reports, parsed from the tools' own machine-readable output.

nextpnr writes ``--report FILE`` (JSON: ``utilization`` per cell type with
``used``/``available``, ``fmax`` per clock with ``achieved``/``constraint`` in
MHz); that file is the only source of the numbers here.  Cell types are mapped
to the usual names: LUT4/logic cells, flip-flops, DSPs, block RAM.
"""

import json
from pathlib import Path

__all__ = ["parse_nextpnr_report", "summarise"]

# cell type -> report field, per family
_CELLS = {
    "ice40": {"ICESTORM_LC": "lc", "ICESTORM_DSP": "dsp", "ICESTORM_RAM": "bram",
              "ICESTORM_SPRAM": "spram", "SB_IO": "io", "SB_GB": "global"},
    "ecp5": {"TRELLIS_COMB": "lut", "TRELLIS_FF": "ff", "MULT18X18D": "dsp", "DP16KD": "bram",
             "TRELLIS_IO": "io", "DCCA": "global", "TRELLIS_RAMW": "lutram"},
}


def parse_nextpnr_report(path, family):
    """Read a nextpnr ``--report`` JSON file into ``{"utilization": {...}, "fmax_mhz": {...}}``.

    ``utilization`` maps our field names (``lc``/``lut``, ``ff``, ``dsp``,
    ``bram``...) to ``{"used": n, "available": n}``; ``fmax_mhz`` maps each clock
    net to ``{"achieved": MHz, "constraint": MHz}``.
    """
    data = json.loads(Path(path).read_text())
    util = {}
    for cell, field in _CELLS[family].items():
        if cell in data.get("utilization", {}):
            u = data["utilization"][cell]
            util[field] = {"used": int(u["used"]), "available": int(u["available"])}
    fmax = {clk: {"achieved": round(float(v["achieved"]), 2), "constraint": round(float(v["constraint"]), 2)}
            for clk, v in data.get("fmax", {}).items()}
    return {"utilization": util, "fmax_mhz": fmax}


def count_ice40_ffs(netlist_json):
    """Flip-flops in a Yosys JSON netlist of an iCE40 design (the SB_DFF* cells).

    nextpnr's iCE40 report counts logic cells, each a LUT4 plus an optional
    flip-flop, so the flip-flop count comes from the synthesised netlist.
    """
    data = json.loads(Path(netlist_json).read_text())
    return sum(1 for mod in data["modules"].values() for cell in mod.get("cells", {}).values()
               if cell["type"].startswith("SB_DFF"))


def summarise(report):
    """A short human-readable line: ``LC 812/5280 (15%), FF 640, DSP 0/8, BRAM 0/30, 61.3 MHz``."""
    parts = []
    for field, label in (("lc", "LC"), ("lut", "LUT4"), ("ff", "FF"), ("dsp", "DSP"),
                         ("bram", "BRAM"), ("spram", "SPRAM")):
        u = report["utilization"].get(field)
        if u is None:
            continue
        if u.get("available"):
            parts.append(f"{label} {u['used']}/{u['available']} ({100 * u['used'] / u['available']:.0f}%)")
        else:
            parts.append(f"{label} {u['used']}")
    for clk, f in report["fmax_mhz"].items():
        parts.append(f"{f['achieved']:.1f} MHz")
    return ", ".join(parts)


def weight_memory(onchip, family):
    """The build report's ``weight_memory``: bits the design's ROMs hold and the block RAMs
    their sizes imply.

    ``onchip`` is :func:`sparrow.hw.onchip.model_onchip` (or one layer's
    :func:`~sparrow.hw.onchip.engine_onchip` with ``name``); per ROM the
    entry gives its layer, name, role, width, depth, bits, and the primitive
    (EBR on iCE40, DP16KD on ECP5) with the count its size implies (nextpnr's own
    count for the whole design is ``utilization.bram``).
    """
    from sparrow.hw.onchip import memory_blocks
    layers = onchip.get("layers", [onchip])
    memories = []
    for layer in layers:
        for name, mem in layer["memories"].items():
            primitive, blocks = memory_blocks(mem["width"], mem["depth"], family)
            memories.append({"layer": layer.get("name"), "rom": name, **mem, "primitive": primitive,
                             "blocks": blocks})
    by_role = {role: sum(m["blocks"] for m in memories if m["role"] == role)
               for role in ("weight", "bias", "control")}
    return {"weight_bits": onchip["weight_bits"], "bias_bits": onchip["bias_bits"],
            "control_bits": onchip["control_bits"], "weight_blocks": by_role["weight"],
            "bias_blocks": by_role["bias"], "control_blocks": by_role["control"],
            "primitive": memories[0]["primitive"] if memories else None, "memories": memories}
