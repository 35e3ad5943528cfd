"""``sparrow generate``: write Verilog (and memory images) for a unit or a model.

    sparrow generate pe [--act-width 8] [--exp-bits 3] [--acc-width 20] --out DIR
    sparrow generate MODEL_DIR [--pes P] --out DIR

The first writes ``DIR/pe.v`` (top module ``pe``), one shift-add PE.  The
second writes, per layer of a model directory, the engine's Verilog with its
parameters built in and the coefficient/basis memory images (see
``docs/design-sd.md`` for the code layout).
"""

import json
from pathlib import Path

from .. import SparrowError


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
    from .pe import ShiftAddPE
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
    return _generate_model(target, out, args.pes)


def _generate_model(model_dir, out, pes):
    raise SparrowError("model generation is not available yet; use `sparrow generate pe`")
