"""``sparrow flash PATH [--board B] [--flash] [--dry-run]``: load a bitstream onto a board.

PATH is a build report (``<name>.report.json``) or a bitstream with
``--board``; :mod:`sparrow.fpga.flash` says how each board is programmed.
"""


def configure(parser):
    from sparrow.fpga.boards import BOARDS
    parser.add_argument("path", metavar="PATH",
                        help="a build report (<name>.report.json) or a bitstream (.bin iCE40, .bit ECP5)")
    parser.add_argument("--board", default=None, metavar="BOARD",
                        help=f"target board when PATH is a bitstream: {', '.join(BOARDS)}")
    parser.add_argument("--flash", action="store_true",
                        help="ULX3S: write the SPI flash (kept at power-off) instead of SRAM")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the openFPGALoader command instead of running it")


def run(args):
    from sparrow import SparrowError
    from sparrow.fpga.flash import flash_command, program, resolve_target
    spec, bitstream = resolve_target(args.path, args.board)
    if args.flash and not spec.name.startswith("ulx3s"):
        raise SparrowError(f"--flash: {spec.name} is always programmed into its flash; drop --flash")
    if args.dry_run:
        print(" ".join(flash_command(spec, bitstream, args.flash)))
        return 0
    program(spec, bitstream, args.flash)
    print(f"flashed {bitstream} onto the {spec.name} ({spec.device})")
    return 0
