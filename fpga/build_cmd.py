"""``sparrow build``: place and route a design for a board and write its JSON report.

Designs: ``pe`` (one shift-add PE) and ``pe-array`` (``--pes`` PEs sharing one
activation stream).  The report (``<out>/<design>.report.json``) holds the
board, device, LUT/LC, FF, DSP, block RAM, fmax per clock, nextpnr seed and
tool versions, parsed from nextpnr's own ``--report`` output.
"""

DESIGNS = ("pe", "pe-array")


def configure(parser):
    from .boards import BOARDS
    parser.add_argument("--board", required=True, choices=list(BOARDS), metavar="BOARD",
                        help=f"target board: {', '.join(BOARDS)}")
    parser.add_argument("--design", default="pe-array", choices=DESIGNS,
                        help="what to build (default: pe-array)")
    parser.add_argument("--pes", type=int, default=32, help="PE count for pe-array (default 32)")
    parser.add_argument("--act-width", type=int, default=8, help="activation width (default 8)")
    parser.add_argument("--exp-bits", type=int, default=3, help="exponent code width (default 3)")
    parser.add_argument("--acc-width", type=int, default=20, help="accumulator width (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--out", default=None, help="build folder (default build/fpga/BOARD-DESIGN)")


def make_design(args):
    """The Amaranth component and report name for ``args`` (raises SparrowError on bad parameters)."""
    from .. import SparrowError
    pe_args = dict(act_width=args.act_width, exp_bits=args.exp_bits, acc_width=args.acc_width)
    try:
        if args.design == "pe":
            from ..hw.pe import ShiftAddPE
            return ShiftAddPE(**pe_args), "pe", {"params": pe_args}
        from .pe_array_bench import PEArrayBench
        return (PEArrayBench(args.pes, **pe_args), f"pe_array_{args.pes}",
                {"params": {"pes": args.pes, **pe_args}})
    except (TypeError, ValueError) as exc:
        raise SparrowError(f"--design {args.design}: {exc}") from None


def run(args):
    import json
    from pathlib import Path
    from .build import build_design
    from .report import summarise
    design, name, extra = make_design(args)
    out = Path(args.out or f"build/fpga/{args.board}-{name}")
    report = build_design(design, args.board, out, name=name, seed=args.seed, extra=extra)
    print(f"{name} on {report['board']} ({report['device']}), seed {report['seed']}: {summarise(report)}")
    print(f"report: {out / (name + '.report.json')}")
    return 0
