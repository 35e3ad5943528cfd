"""Benchmark: property-based fuzzing of RTL == golden, long profile.

Random small models of every engine kind (:mod:`sparrow.tb.fuzz`), with
random structures as well as values (so new structures compile; the build
cache keeps them for the next run), checked on Verilator until the time is
up.  A mismatch is shrunk by hypothesis to a minimal model, whose model
directory (under ``build/fuzz/``) is printed.  Prints models tried and
mismatches found per kind.

    python -m sparrow.bench.bench_fuzz [--minutes 10] [--kinds sd_linear,dense_linear,bc_linear]
                                       [--simulator verilator]
"""

import argparse
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis.errors import HypothesisException

from sparrow.tb.fuzz import KINDS, check, models, structures


def fuzz_kind(kind, deadline, simulator):
    """``(models tried, [failure messages])`` for ``kind`` until ``deadline`` (time.monotonic)."""
    tried, failures = 0, []
    while time.monotonic() < deadline:
        @settings(max_examples=10, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        @given(models(kind, structures(kind)))
        def rtl_equals_golden(case):
            nonlocal tried
            tried += 1
            check(*case, simulator=simulator)

        try:
            rtl_equals_golden()
        except AssertionError as exc:        # shrunk: the minimal failing model
            failures.append(str(exc))
            print(f"[bench_fuzz] {kind}: MISMATCH\n{exc}", file=sys.stderr, flush=True)
        except HypothesisException as exc:
            failures.append(f"hypothesis: {exc}")
    return tried, failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="total time (default 10), split over the kinds")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    rows = []
    for i, kind in enumerate(kinds):
        share = args.minutes * 60 / len(kinds)
        t = time.monotonic()
        tried, failures = fuzz_kind(kind, t + share, args.simulator)
        rows.append((kind, tried, len(failures), time.monotonic() - t))
        print(f"[bench_fuzz] {kind}: {tried} models, {len(failures)} mismatches", file=sys.stderr,
              flush=True)
    print()
    print("| kind | simulator | models tried | mismatches | minutes |")
    print("| --- | --- | --- | --- | --- |")
    for kind, tried, bad, seconds in rows:
        print(f"| {kind} | {args.simulator} | {tried} | {bad} | {seconds / 60:.1f} |")
    return 1 if any(r[2] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
