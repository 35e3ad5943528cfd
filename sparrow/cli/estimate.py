"""``sparrow estimate DIR --board B [--pes P ...]``: resources, fmax and cycles of a model's accelerator before synthesis.

Logic cells, flip-flops and fmax come from the resource model fitted to
place-and-route results (:mod:`sparrow.explore.estimate`, refitted by
``python -m sparrow.explore.fit``); DSP blocks from the engine registry;
cycles per layer from the registry's cycle model.  Several values of
``--pes``, ``--out-lanes`` or ``--bcast`` print one estimate per
combination (those that are valid: the output lanes divide the PEs).
"""


def configure(parser):
    from sparrow.fpga.boards import BOARDS
    parser.add_argument("model", metavar="DIR", help="model directory")
    parser.add_argument("--board", required=True, choices=list(BOARDS), metavar="BOARD",
                        help=f"target board: {', '.join(BOARDS)}")
    parser.add_argument("--pes", type=int, nargs="+", default=[8], help="PEs per sd_linear engine (default 8)")
    parser.add_argument("--out-lanes", type=int, nargs="+", default=[1],
                        help="int8 outputs per beat of an sd_linear engine (default 1)")
    parser.add_argument("--bcast", type=int, nargs="+", default=[0],
                        help="broadcast register stages of the PE arrays (default 0)")
    parser.add_argument("--max-groups", type=int, default=None, metavar="G",
                        help="PE-group limit of the SmartDeal code layout (default: the board's, as sparrow "
                             "build --model uses it)")
    parser.add_argument("--json", action="store_true", help="print the estimates as JSON")


def run(args):
    import json
    from sparrow import SparrowError
    from sparrow.hw.engine import EngineConfig
    from sparrow.modeldir import load_model
    from sparrow.explore.estimate import estimate, format_estimate, load_fit
    from sparrow.fpga.boards import get_board
    model = load_model(args.model)
    fit = load_fit()
    groups = get_board(args.board).max_groups if args.max_groups is None else args.max_groups
    out = []
    for p in args.pes:
        for c in args.out_lanes:
            for b in args.bcast:
                try:
                    config = EngineConfig(pes=p, out_lanes=c, bcast=b, max_groups=groups)
                except (TypeError, ValueError) as exc:
                    if len(args.pes) * len(args.out_lanes) * len(args.bcast) == 1:
                        raise SparrowError(f"--pes {p} --out-lanes {c} --bcast {b} --max-groups {groups}: "
                                           f"{exc}") from None
                    continue
                out.append(estimate(model, args.board, config, fit=fit))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{model.name}: {', '.join(f'{l.name} {l.kind}' for l in model.layers)}")
    for e in out:
        print(format_estimate(e))
    return 0
