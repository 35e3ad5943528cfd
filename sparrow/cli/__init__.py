"""The ``sparrow`` command line: one program, one subcommand per job.

The command layer: it sits above every other package (docs/design.md) and is
the only place that joins them (for example the hardware's break-even ratios
passed into compression).  Each subcommand is one module of this package with
``configure(parser)`` (add arguments; must import nothing heavy) and
``run(args) -> int``.  User
mistakes raise :class:`sparrow.SparrowError`; they are printed here as one line
with a non-zero exit status and no traceback.
"""

import argparse
import importlib
import sys

from sparrow import SparrowError, __version__

# name -> (module, one-line help).  Modules are imported only when needed.
COMMANDS = {
    "doctor":   ("sparrow.cli.doctor",   "list every tool of the flow with version and path"),
    "demo":     ("sparrow.cli.demo",     "run the main job end to end and print the report"),
    "compress": ("sparrow.cli.compress", "train/compress a model and write a model directory"),
    "golden":   ("sparrow.cli.golden",   "run a model directory on the integer golden model"),
    "eval":     ("sparrow.cli.eval",     "accuracy of a model directory on the digits test split"),
    "embed":    ("sparrow.cli.embed",    "sentence embeddings of a compressed MiniLM directory (or the original)"),
    "generate": ("sparrow.cli.generate", "generate Verilog (and memory images) for a unit or model"),
    "sim":      ("sparrow.cli.sim",      "run a model directory on the generated RTL (Verilator/Icarus)"),
    "build":    ("sparrow.cli.build",    "place and route for a board and write a JSON report"),
    "flash":    ("sparrow.cli.flash",    "load a built bitstream onto a board with openFPGALoader"),
    "run":      ("sparrow.cli.run",      "run inputs on a board's accelerator over its UART (or --sim)"),
    "estimate": ("sparrow.cli.estimate", "resources, fmax and cycles of a model's accelerator before synthesis"),
    "explore":  ("sparrow.cli.explore",  "sweep compression and hardware together: Pareto front, confirming builds"),
    "report":   ("sparrow.cli.report",   "the explorer's HTML report with its plots"),
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _load(name):
    module, _ = COMMANDS[name]
    return importlib.import_module(module)


def build_parser(names=None):
    parser = _Parser(prog="sparrow", description="Compress neural networks and generate FPGA accelerators.")
    parser.add_argument("--version", action="version", version=f"sparrow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if names is None or name in names:
            _load(name).configure(p)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # Configure only the chosen subcommand, so `sparrow doctor` never imports torch.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser({chosen} if chosen in COMMANDS else set())
        args = parser.parse_args(argv)
        return _load(args.command).run(args) or 0
    except SparrowError as exc:
        print(f"sparrow {chosen}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sparrow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
