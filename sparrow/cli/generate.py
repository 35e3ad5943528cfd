"""``sparrow generate``: write Verilog (and memory images) for a unit or a model.

    sparrow generate pe [--act-width 8] [--exp-bits 3] [--acc-width 20] --out DIR
    sparrow generate MODEL_DIR [--pes P] --out DIR

The first writes ``DIR/pe.v`` (top module ``pe``), one shift-add PE, and
``pe.json``.  The second writes, per layer of a model directory (every layer
kind with an engine in :mod:`sparrow.hw.engines`), ``<layer>.v`` (top ``engine_<layer>``, parameters built into its
ROM initialisers) and the same ROM contents as ``$readmemh`` images
``<layer>.<rom>.hex``, plus ``generate.json`` describing every file, width,
depth and word layout, plus the engine's own fields (``describe()``; see
``docs/design-sd.md``).
"""

import json
import re
from pathlib import Path

from sparrow import SparrowError


def configure(parser):
    parser.add_argument("target", metavar="TARGET",
                        help="a unit name ('pe') or a model directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--act-width", type=int, default=8, help="pe: activation width (bits)")
    parser.add_argument("--exp-bits", type=int, default=3, help="pe: exponent code width (bits)")
    parser.add_argument("--acc-width", type=int, default=20, help="pe: accumulator width (bits)")
    parser.add_argument("--pes", type=int, default=8, help="model: PEs per sd_linear engine")


def _generate_pe(args, out):
    from amaranth.back import verilog
    from sparrow.hw.pe import ShiftAddPE
    try:
        pe = ShiftAddPE(args.act_width, args.exp_bits, args.acc_width)
    except (TypeError, ValueError) as exc:
        raise SparrowError(str(exc)) from None
    path = out / "pe.v"
    path.write_text(verilog.convert(pe, name="pe", emit_src=False))
    (out / "pe.json").write_text(json.dumps({
        "unit": "pe", "top": "pe", "act_width": pe.act_width, "exp_bits": pe.exp_bits,
        "acc_width": pe.acc_width, "max_terms": pe.max_terms}, indent=2) + "\n")
    print(f"wrote {path} (act_width={pe.act_width}, exp_bits={pe.exp_bits}, "
          f"acc_width={pe.acc_width}, max_terms={pe.max_terms})")
    return 0


UNITS = {"pe": _generate_pe}


def run(args):
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparrowError(f"cannot create output directory {out}: {exc.strerror}") from None
    if args.target in UNITS:
        return UNITS[args.target](args, out)
    target = Path(args.target)
    if not target.is_dir():
        raise SparrowError(f"{args.target!r} is neither a unit ({', '.join(UNITS)}) "
                           f"nor a model directory")
    from sparrow.cli.common import engine_config
    return _generate_model(target, out, engine_config(args.pes))


def _module_name(layer_name):
    return "engine_" + re.sub(r"[^A-Za-z0-9_]", "_", layer_name)


def _generate_model(model_dir, out, config):
    from amaranth.back import verilog
    from sparrow.modeldir import load_model
    from sparrow.hw.engines import check_engine_kinds, engine_for_layer
    from sparrow.hw.images import write_images
    model = load_model(model_dir)
    check_engine_kinds(model)
    doc = {"model": model.name, "pes": config.pes, "layers": []}
    for layer in model.layers:
        engine = engine_for_layer(layer, config)
        top = _module_name(layer.name)
        vfile = out / f"{layer.name}.v"
        images = write_images(engine.memory_images(), out, layer.name)
        vfile.write_text(verilog.convert(engine, name=top, emit_src=False))
        entry = {"name": layer.name, "kind": layer.kind, "top": top, "verilog": vfile.name,
                 "in": engine.in_features, "out": engine.out_features,
                 "acc_width": engine.acc_width, "memories": images, **engine.describe()}
        doc["layers"].append(entry)
        print(f"wrote {vfile} (top {top}) and {len(images)} memory images")
    from sparrow.hw.onchip import model_onchip, storage_line
    from sparrow.sw.storage import model_storage
    st = model_storage(model)
    oc = model_onchip(model, config)
    doc["storage"] = {"fp32_bits": st["fp32_bits"], "encoded_weight_bits": st["weight_bits"],
                      "encoded_ratio": st["ratio"], "onchip_weight_bits": oc["weight_bits"],
                      "onchip_bias_bits": oc["bias_bits"], "onchip_control_bits": oc["control_bits"],
                      "onchip_ratio": st["fp32_bits"] / oc["weight_bits"] if oc["weight_bits"] else None}
    (out / "generate.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(storage_line(model, config, st["ratio"], st["fp32_bits"]))
    return 0
