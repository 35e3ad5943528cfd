"""Resources and fmax of the shift-add PE and PE arrays on each board (real Yosys/nextpnr).

    python -m sparrow.bench.bench_pe [--boards icebreaker,ulx3s-85f] [--pes 8,24,40] [--seed 1]

Prints one row per (board, design): logic cells or LUT4s, flip-flops, fmax.
The marginal cost of one PE is the slope between the two largest arrays, so
the harness's fixed part (LFSR, XOR tree root) cancels out.
"""

import argparse
from pathlib import Path

from sparrow import SparrowError
from sparrow.fpga.boards import get_board

DEFAULT_PES = {"ice40": "8,24,40", "ecp5": "64,128,256"}


def measure(board, pes_list, seed, out):
    from sparrow.fpga.build import build_design
    from sparrow.fpga.pe_array_bench import PEArrayBench
    from sparrow.hw.pe import ShiftAddPE
    rows = []
    spec = get_board(board)
    lut = "lc" if spec.family == "ice40" else "lut"
    pe = build_design(ShiftAddPE(), board, out / f"{board}-pe", name="pe", seed=seed, progress=False)
    rows.append(("1 PE (alone)", pe))
    for n in pes_list:
        try:
            rep = build_design(PEArrayBench(n), board, out / f"{board}-pe_array_{n}",
                               name=f"pe_array_{n}", seed=seed, progress=False)
        except SparrowError as exc:
            print(f"{n}-PE array on {board}: {exc}")
            continue
        rows.append((f"{n}-PE array", rep))
    print(f"\n{spec.name} ({spec.device}), nextpnr seed {seed}")
    print(f"| design | {lut.upper()} used | of device | FF | fmax (MHz) |")
    print("| --- | --- | --- | --- | --- |")
    for label, rep in rows:
        u = rep["utilization"]
        f = min(v["achieved"] for v in rep["fmax_mhz"].values())
        print(f"| {label} | {u[lut]['used']} | {100 * u[lut]['used'] / u[lut]['available']:.0f}% "
              f"| {u['ff']['used']} | {f:.1f} |")
    arrays = [(int(label.split("-")[0]), rep) for label, rep in rows[1:]]
    if len(arrays) >= 2:
        (n0, r0), (n1, r1) = arrays[-2], arrays[-1]
        slope = (r1["utilization"][lut]["used"] - r0["utilization"][lut]["used"]) / (n1 - n0)
        print(f"marginal cost: {slope:.1f} {lut.upper()} per PE (between {n0} and {n1} PEs, "
              f"incl. ~{(5 + 21 / 3):.0f} of harness per PE)")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", default="icebreaker,ulx3s-85f")
    p.add_argument("--pes", default=None, help="PE counts (default: per family, "
                   + ", ".join(f"{k}: {v}" for k, v in DEFAULT_PES.items()) + ")")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="build/bench/pe")
    a = p.parse_args(argv)
    for board in a.boards.split(","):
        pes = a.pes or DEFAULT_PES[get_board(board).family]
        measure(board, [int(n) for n in pes.split(",")], a.seed, Path(a.out))


if __name__ == "__main__":
    main()
