"""``sparrow build``: place and route a design for a board and write its JSON report.

Designs: ``pe`` (one shift-add PE), ``pe-array`` (``--pes`` PEs sharing one
activation stream), ``--model DIR``: the whole-model accelerator (every
layer's engine behind the UART host interface, clocked by the board's PLL at
``--clock MHZ`` or, without it, at the fastest PLL clock the design meets (a
first place and route learns fmax, the final build keeps a 3% margin); a
``--clock`` the design misses is refused; flash it with ``sparrow flash`` and
drive it with ``sparrow run``), and ``--model DIR
--layer NAME``: one layer's engine alone in the build harness, constrained to
the board's target frequency (for resource and fmax studies).  The report (``<out>/<design>.report.json``) holds the
board, device, LUT/LC, FF, DSP, block RAM, fmax per clock, nextpnr seed and
tool versions, parsed from nextpnr's own ``--report`` output.
"""

DESIGNS = ("pe", "pe-array")


def configure(parser):
    from sparrow.fpga.boards import BOARDS
    parser.add_argument("--board", required=True, choices=list(BOARDS), metavar="BOARD",
                        help=f"target board: {', '.join(BOARDS)}")
    parser.add_argument("--design", default="pe-array", choices=DESIGNS,
                        help="what to build (default: pe-array)")
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="build the accelerator of this model directory instead of --design")
    parser.add_argument("--layer", default=None,
                        help="with --model: build only this layer's engine (in the build harness)")
    parser.add_argument("--baud", type=int, default=None,
                        help="with --model: UART baud rate of the host link (default: the "
                             "board bridge's fastest, 3000000 on the iCEBreaker and ULX3S)")
    parser.add_argument("--clock", type=float, default=None, metavar="MHZ",
                        help="with --model: the PLL clock (default: the fastest the design meets)")
    parser.add_argument("--pes", type=int, default=None,
                        help="PE count for pe-array (default 32) or for each sd_linear engine "
                             "of --model (default 8)")
    parser.add_argument("--max-groups", type=int, default=None, metavar="G",
                        help="with --model: most PE groups of an sd_linear engine's code layout "
                             "(1..16; 16: the fewest ROM bits; 1: the least logic and block RAM; "
                             "default: the board's, 1 on the iCEBreaker, 16 on the ECP5 boards)")
    parser.add_argument("--act-width", type=int, default=8, help="activation width (default 8)")
    parser.add_argument("--exp-bits", type=int, default=3, help="exponent code width (default 3)")
    parser.add_argument("--acc-width", type=int, default=20, help="accumulator width (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--out", default=None,
                        help="build folder (default build/fpga/BOARD-NAME, NAME: pe, pe_array_N, "
                             "MODEL_accel or MODEL_LAYER)")


def make_design(args):
    """The Amaranth component and report name for ``args`` (raises SparrowError on bad parameters)."""
    from sparrow import SparrowError
    pe_args = dict(act_width=args.act_width, exp_bits=args.exp_bits, acc_width=args.acc_width)
    try:
        if args.design == "pe":
            from sparrow.hw.pe import ShiftAddPE
            return ShiftAddPE(**pe_args), "pe", {"params": pe_args}
        from sparrow.fpga.pe_array_bench import PEArrayBench
        pes = 32 if args.pes is None else args.pes
        return (PEArrayBench(pes, **pe_args), f"pe_array_{pes}", {"params": {"pes": pes, **pe_args}})
    except (TypeError, ValueError) as exc:
        raise SparrowError(f"--design {args.design}: {exc}") from None


def model_design(args):
    """``(component, name, extra, target_mhz)`` for ``--model --layer``: one layer's engine;
    ``(model, config)`` for the whole accelerator."""
    from sparrow import SparrowError
    from sparrow.modeldir import load_model
    from sparrow.cli.common import engine_config
    from sparrow.hw.engines import engine_for_layer
    pes = 8 if args.pes is None else args.pes
    from sparrow.fpga.boards import get_board
    groups = get_board(args.board).max_groups if args.max_groups is None else args.max_groups
    if not 1 <= groups <= 16:
        raise SparrowError(f"--max-groups must be between 1 and 16, not {groups}")
    import dataclasses
    config = dataclasses.replace(engine_config(pes), max_groups=groups)
    model = load_model(args.model)
    if args.layer is None:
        return model, config
    layer = next((l for l in model.layers if l.name == args.layer), None)
    if layer is None:
        raise SparrowError(f"--layer {args.layer!r}: {args.model} has no such layer "
                           f"(layers: {', '.join(l.name for l in model.layers)})")
    extra = {"model": model.name, "pes": pes, "design_kind": "layer", "layer": layer.name,
             "kind": layer.kind, "shape": [layer.in_size, layer.out_size]}
    engine = engine_for_layer(layer, config)
    extra["weight_memory"] = _weight_memory(args.board, {"name": layer.name, **_engine_onchip(engine)})
    return engine, f"{model.name}_{layer.name}", extra, None


def _engine_onchip(engine):
    from sparrow.hw.onchip import engine_onchip
    return engine_onchip(engine)


def _weight_memory(board, onchip):
    """The report's ``weight_memory`` (:func:`sparrow.fpga.report.weight_memory`) on ``board``."""
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.report import weight_memory
    return weight_memory(onchip, get_board(board).family)


def run(args):
    from pathlib import Path
    from sparrow import SparrowError
    from sparrow.fpga.build import build_design
    from sparrow.fpga.report import summarise
    if args.model is None:
        if args.layer is not None:
            raise SparrowError("--layer needs --model DIR")
        design, name, extra = make_design(args)
        target = None
    else:
        made = model_design(args)
        if args.layer is None:
            return _build_accelerator(args, *made)
        design, name, extra, target = made
    if args.clock is not None or args.baud is not None:
        raise SparrowError("--clock and --baud apply to the accelerator (--model DIR without --layer)")
    out = Path(args.out or f"build/fpga/{args.board}-{name}")
    report = build_design(design, args.board, out, name=name, seed=args.seed, extra=extra,
                          target_mhz=target)
    print(f"{name} on {report['board']} ({report['device']}), seed {report['seed']}: "
          f"{summarise(report)}")
    print(f"report: {out / (name + '.report.json')}")
    return 0


def _build_accelerator(args, model, config):
    from pathlib import Path
    from sparrow import SparrowError
    from sparrow.fpga.build import build_accelerator
    from sparrow.fpga.report import summarise
    if args.clock is not None and not args.clock > 0:
        raise SparrowError(f"--clock must be a positive frequency in MHz, not {args.clock:g}")
    name = f"{model.name}_accel"
    out = Path(args.out or f"build/fpga/{args.board}-{name}")
    report = build_accelerator(model, args.board, out, config=config, baud=args.baud,
                               clock_mhz=args.clock, seed=args.seed)
    _print_weight_memory(report, model, config)
    print(f"{name} on {report['board']} ({report['device']}), seed {report['seed']}: "
          f"{summarise(report)}")
    learnt = (f", fmax learnt {report['learn_fmax_hz'] / 1e6:.1f} MHz"
              if report.get("learn_fmax_hz") else "")
    print(f"clock {report['clock_hz'] / 1e6:.3f} MHz from the PLL (fmax {report['fmax_hz'] / 1e6:.1f} "
          f"MHz{learnt}), UART {report['baud']} baud (divisor {report['uart_divisor']})")
    print(f"report: {out / (name + '.report.json')}")
    return 0


def _print_weight_memory(report, model, config):
    """Print the report's ``weight_memory`` beside the model's encoded storage."""
    from sparrow.hw.onchip import storage_line
    from sparrow.sw.storage import model_storage
    st = model_storage(model)
    wm = report["weight_memory"]
    print(f"{storage_line(model, config, st['ratio'], st['fp32_bits'])}; "
          f"{wm['weight_blocks']} {wm['primitive']} by size")
