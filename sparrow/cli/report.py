"""``sparrow report [DIR]``: the explorer's report, one self-contained HTML page with its plots.

DIR is an explore folder (with ``pareto.json``, default ``build/explore``);
the page (``DIR/report.html``) embeds its figures as PNG: the Pareto front,
resources per engine and board, fmax and logic against the PE count, cycles
per layer, accuracy against storage per method, the estimate against
place and route, and the FFT error histogram (the circulant engine's
fixed-point FFT against the exact circulant product, in output LSBs); each
figure names the command, tool versions and seeds.
"""


def configure(parser):
    parser.add_argument("dir", metavar="DIR", nargs="?", default="build/explore",
                        help="explore folder holding pareto.json (default build/explore)")
    parser.add_argument("--out", default=None, help="HTML file to write (default DIR/report.html)")


def run(args):
    from sparrow.explore.report import write_report
    path = write_report(args.dir, args.out)
    print(f"report: {path}")
    return 0
