"""``sparrow demo``: the main job, end to end, with a report at the end.

Stages (each prints progress; a failing stage stops the demo with one line):

1. **pe**: generate the shift-add PE's Verilog, check it bit for bit against
   its reference on Verilator and Icarus with random and corner vectors, and
   place and route a PE array for iCEBreaker and ULX3S-85F.

Everything goes under ``--out`` (default ``build/demo``); the summary is also
written to ``<out>/demo.json``.
"""

import json
import sys
import time
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser):
    parser.add_argument("--out", default="build/demo", help="work folder (default build/demo)")
    parser.add_argument("--pes", type=int, default=32,
                        help="PE count of the array built for the boards (default 32)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    parser.add_argument("--boards", default="icebreaker,ulx3s-85f",
                        help="comma-separated boards to build for (default icebreaker,ulx3s-85f)")


def _say(msg):
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _pe_stimulus(rng, n_sums, act_width=8, exp_bits=3, max_terms=31):
    """Random sums (1..max_terms terms, a quarter of the codes zero) plus the worst case."""
    import numpy as np
    from .tb.pe_tb import STIM_FIELDS
    lo, hi, emax = -(1 << (act_width - 1)), (1 << (act_width - 1)) - 1, (1 << exp_bits) - 1
    rows = [(lo, 1, emax, 0, 1, int(i == 0), int(i == max_terms - 1)) for i in range(max_terms)]
    for _ in range(n_sums):
        n = int(rng.integers(1, max_terms + 1))
        for i in range(n):
            rows.append((int(rng.integers(lo, hi + 1)), int(rng.integers(2)),
                         int(rng.integers(emax + 1)), int(rng.random() < 0.25), 1, int(i == 0),
                         int(i == n - 1)))
    arr = np.array(rows, dtype=np.int64)
    return {f: arr[:, i] for i, f in enumerate(STIM_FIELDS)}


def stage_pe(out, pes, seed, boards):
    import numpy as np
    from .hw.pe import ShiftAddPE
    from .tb.pe_tb import pe_reference
    from .tb.runner import run_cocotb, to_verilog
    from .fpga.build import build_design
    from .fpga.pe_array_bench import PEArrayBench
    from .fpga.report import summarise

    pe = ShiftAddPE()
    verilog = to_verilog(pe, "pe")
    (out / "pe.v").write_text(verilog)
    _say(f"pe: wrote {out / 'pe.v'} (act 8 bit, exp 3 bit, acc 20 bit)")
    stim = _pe_stimulus(np.random.default_rng(2026), 200)
    sums = len(pe_reference(stim, pe.acc_width))
    np.savez(out / "pe_stim.npz", **stim, act_width=8, exp_bits=3, acc_width=20)
    result = {"sums_checked": sums, "simulators": {}, "builds": {}}
    for sim in ("verilator", "icarus"):
        t = time.monotonic()
        run_cocotb(verilog, "pe", "sparrow.tb.pe_tb", sim, extra_env={"PE_TB_DATA": out / "pe_stim.npz"},
                   test_dir=out / f"pe_{sim}", log_file=out / f"pe_{sim}.log")
        result["simulators"][sim] = "bit-exact"
        _say(f"pe: {sim}: {sums} sums ({len(stim['act'])} cycles) bit-exact with the reference "
             f"({time.monotonic() - t:.1f} s)")
    for board in boards:
        rep = build_design(PEArrayBench(pes), board, out / f"{board}-pe_array_{pes}",
                           name=f"pe_array_{pes}", seed=seed)
        result["builds"][board] = rep
    return result


def run(args):
    from . import SparrowError
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    boards = [b for b in args.boards.split(",") if b]
    from .fpga.boards import get_board
    for b in boards:
        get_board(b)
    start = time.monotonic()
    summary = {"pe": stage_pe(out, args.pes, args.seed, boards)}
    from .fpga.report import summarise
    print("\nsparrow demo report")
    print("===================")
    pe = summary["pe"]
    print(f"shift-add PE: {pe['sums_checked']} random + corner sums bit-exact on "
          f"{' and '.join(pe['simulators'])}")
    for board, rep in pe["builds"].items():
        print(f"{args.pes}-PE array on {board} ({rep['device']}, seed {rep['seed']}): {summarise(rep)}")
    print(f"total {time.monotonic() - start:.0f} s; details in {out / 'demo.json'}")
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0
