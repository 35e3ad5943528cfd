"""Block-circulant (bc_linear) benchmarks: accuracy, RTL cycles, FPGA cost, software speed.

    python -m sparrow.bench.bench_bc [--parts error,cycles,fpga,sw] [--boards icebreaker,ulx3s-85f]

* ``error``: the fixed-point FFT datapath against the ideal (exact integer
  circulant product, shifted and saturated) over random layers, k = 4..64:
  histogram of |golden - ideal| per k.
* ``cycles``: cycles per vector of a 256x256 bc_linear layer with k = 16 on
  the BCEngine RTL (Verilator) and of the dense int8 engine (DenseEngine RTL,
  8 lanes) for the same shape.
* ``fpga``: resources and fmax of the FFT unit and of the 256x256 k=16 engine
  (and of the dense engine) per board, and time per vector = cycles / fmax.
* ``sw``: torch block-circulant matvec (rfft, multiply, irfft) against dense
  matmul, n = 256..8192, batch 1 and 64, k = 16 and 64.
Every number printed is measured here.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sparrow import SparrowError

PARTS = ("error", "cycles", "fpga", "sw")


def _bc_layer(rng, n_in, n_out, k, name="bc"):
    from sparrow.sw.randmodel import random_layer
    return random_layer("bc_linear", rng, name=name, in_=n_in, out=n_out, k=k)


def part_error(seed=0, layers=12, vectors=64):
    from sparrow import fixedfft as golden_bc
    from sparrow.sw import golden
    rng = np.random.default_rng(seed)
    print("\n## bc_linear fixed-point datapath vs ideal (|golden - ideal| in output LSB)\n")
    print("16-bit weight spectra (ws_shift 0), and the integer spectra round(DFT(w)) that the "
          "compressor writes (ws_shift 8 - L), on the same layers and inputs:\n")
    print("| k | outputs | exact | 1 LSB | 2 LSB | >2 LSB | within 1 LSB | saturated (ideal) "
          "| integer spectra: exact | within 1 LSB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = {}
    for k in (4, 8, 16, 32, 64):
        hist = np.zeros(256, np.int64)
        hist_int = np.zeros(256, np.int64)
        sat = 0
        for _ in range(layers):
            n_in = int(rng.choice([64, 128, 256, 512]))
            n_out = int(rng.choice([1, 2, 4])) * max(k, 32)
            lay = _bc_layer(rng, n_in, n_out, k)
            lay.attrs["relu"] = bool(rng.integers(2))
            x = rng.integers(-128, 128, size=(vectors, n_in))
            ideal = golden.bc_linear_ideal(lay, x)
            d = np.abs(golden_bc.bc_linear_forward(lay, x) - ideal).ravel()
            np.add.at(hist, d, 1)
            lay.attrs["ws_shift"] = golden_bc.max_ws_shift(k)
            np.add.at(hist_int, np.abs(golden_bc.bc_linear_forward(lay, x) - ideal).ravel(), 1)
            sat += int(((ideal == 127) | (ideal == -128)).sum())
        t = hist.sum()
        rows[k] = hist[:4].tolist() + [int(hist[3:].sum())]
        print(f"| {k} | {t} | {hist[0] / t:.2%} | {hist[1] / t:.2%} | {hist[2] / t:.3%} | "
              f"{hist[3:].sum()} | {hist[:2].sum() / t:.3%} | {sat / t:.1%} "
              f"| {hist_int[0] / t:.2%} | {hist_int[:2].sum() / t:.3%} |")
    return rows


def _dense_from_bc(lay):
    """A dense_linear layer with the same shape, weights (the expanded circulant), bias, shift."""
    from sparrow.modeldir import Layer
    from sparrow.sw.golden import bc_dense_weight
    a = lay.attrs
    return Layer("dense", "dense_linear", {"in": a["in"], "out": a["out"], "out_shift": a["out_shift"],
                                           "relu": a["relu"]},
                 {"weight": bc_dense_weight(lay.params["w"]).astype(np.int8), "bias": lay.params["bias"]})


def part_cycles(n=256, k=16, vectors=2, simulator="verilator"):
    from sparrow.hw.engines import engine_for_layer, layer_cycles
    from sparrow import fixedfft as golden_bc
    from sparrow.sw import golden
    from sparrow.tb.model_sim import run_engine
    rng = np.random.default_rng(1)
    lay = _bc_layer(rng, n, n, k)
    x = rng.integers(-128, 128, size=(vectors, n))
    _, bc_total = run_engine(engine_for_layer(lay), x, simulator,
                             expected=golden_bc.bc_linear_forward(lay, x), label="bc", name="bench_bc_engine")
    out = {"bc": bc_total / vectors, "bc_model": layer_cycles(lay)}
    dense = _dense_from_bc(lay)
    _, d_total = run_engine(engine_for_layer(dense), x, simulator,
                            expected=golden.dense_linear_forward(dense, x), label="dense",
                            name="bench_dense_engine")
    out["dense"] = d_total / vectors
    print(f"\n## cycles per vector, {n}x{n} layer ({simulator} RTL simulation, {vectors} vectors)\n")
    print(f"bc_linear k={k} (BCEngine): {out['bc']:.0f} cycles (model {out['bc_model']})")
    if out["dense"]:
        print(f"dense int8 (DenseEngine, 8 lanes): {out['dense']:.0f} cycles "
              f"({out['dense'] / out['bc']:.2f}x the bc cycles)")
    return out


def _flat_fft(k):
    """The FFT unit with its struct payloads flattened to plain bit vectors (for the build harness)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from sparrow.hw.fft import FFTUnit, load_layout, result_layout
    from sparrow.fixedfft import log2k, E_MAX

    class FlatFFT(wiring.Component):
        def __init__(self):
            super().__init__({"load_valid": In(1), "load_payload": In(load_layout(k).size),
                              "start_valid": In(1), "start_inverse": In(1), "rd_valid_in": In(1),
                              "rd_index": In(log2k(k)), "rd_valid": Out(1),
                              "rd_data": Out(result_layout().size), "busy": Out(1),
                              "exp": Out(range(E_MAX + 1))})

        def elaborate(self, platform):
            m = Module()
            m.submodules.fft = fft = FFTUnit(k)
            m.d.comb += [fft.load.valid.eq(self.load_valid), fft.load.payload.eq(self.load_payload),
                         fft.start.valid.eq(self.start_valid),
                         fft.start.payload.inverse.eq(self.start_inverse),
                         fft.rd_req.valid.eq(self.rd_valid_in), fft.rd_req.payload.eq(self.rd_index),
                         self.rd_valid.eq(fft.rd_valid), self.rd_data.eq(fft.rd_data),
                         self.busy.eq(fft.busy), self.exp.eq(fft.exp)]
            return m
    return FlatFFT()


def part_fpga(boards, n=256, k=16, seed=1, out_dir="build/bench/bc", cycles=None, dense=True):
    from sparrow.fpga.build import build_design
    from sparrow.hw.engines import engine_for_layer, layer_cycles
    rng = np.random.default_rng(1)
    lay = _bc_layer(rng, n, n, k)
    designs = [(f"fft{k}", lambda: _flat_fft(k)), (f"bc_engine_{n}_k{k}", lambda: engine_for_layer(lay))]
    if dense:
        designs.append((f"dense_engine_{n}", lambda: engine_for_layer(_dense_from_bc(lay))))
    cyc = cycles or {"bc": layer_cycles(lay), "dense": None}
    results = {}
    for board in boards:
        print(f"\n## {board}: resources and fmax (nextpnr seed {seed})\n")
        print("| design | LUT4/LC | FF | DSP | BRAM | fmax (MHz) | cycles/vector | us/vector |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, make in designs:
            try:
                rep = build_design(make(), board, Path(out_dir) / f"{board}-{name}", name=name,
                                   seed=seed, progress=False)
            except SparrowError as exc:
                print(f"| {name} | did not build: {exc} |")
                continue
            u = rep["utilization"]
            lut = u.get("lc") or u.get("lut") or {}
            f = min(v["achieved"] for v in rep["fmax_mhz"].values())
            c = cyc.get("bc") if name.startswith("bc") else cyc.get("dense") if name.startswith("dense") else None
            us = f"{c / f:.1f}" if c else "-"
            dsp = u.get("dsp", {}).get("used", "?")
            bram = u.get("bram", {}).get("used", "?")
            print(f"| {name} | {lut.get('used')} | {u.get('ff', {}).get('used')} | {dsp} | {bram} | "
                  f"{f:.1f} | {c if c else '-'} | {us} |")
            results[(board, name)] = {"fmax": f, "utilization": u, "cycles": c}
        bc = results.get((board, f"bc_engine_{n}_k{k}"))
        de = results.get((board, f"dense_engine_{n}"))
        if bc and de and bc["cycles"] and de["cycles"]:
            t_bc, t_de = bc["cycles"] / bc["fmax"], de["cycles"] / de["fmax"]
            print(f"\n{board}: bc_linear {t_bc:.1f} us vs dense {t_de:.1f} us per vector: "
                  f"{t_de / t_bc:.2f}x faster")
    return results


def part_sw(sizes=(256, 512, 1024, 2048, 4096, 8192), ks=(16, 64), batches=(1, 64), repeat=20):
    import torch
    torch.set_num_threads(1)
    print("\n## software: torch block-circulant matvec vs dense matmul (1 thread, float32, ms)\n")
    print("| n | batch | dense | bc k=" + " | bc k=".join(map(str, ks)) + " | speed-up (k="
          + ", k=".join(map(str, ks)) + ") |")
    print("| --- | --- | --- |" + " --- |" * len(ks) + " --- |")
    g = torch.Generator().manual_seed(0)

    def timeit(fn):
        fn()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeat):
                fn()
            best = min(best, (time.perf_counter() - t) / repeat)
        return best * 1e3

    rows = []
    for n in sizes:
        for b in batches:
            x = torch.randn(b, n, generator=g)
            w = torch.randn(n, n, generator=g)
            t_dense = timeit(lambda: x @ w.T)
            t_bc = []
            for k in ks:
                # precomputed weight spectra, laid out [H, in/k, out/k] for one batched matmul
                wf = torch.fft.rfft(torch.randn(n // k, n // k, k, generator=g)).permute(2, 1, 0).contiguous()

                def bc():
                    xf = torch.fft.rfft(x.view(b, n // k, k)).permute(2, 0, 1)     # [H, b, nb]
                    yf = torch.bmm(xf, wf)                                          # [H, b, nbo]
                    return torch.fft.irfft(yf.permute(1, 2, 0), n=k).reshape(b, n)
                t_bc.append(timeit(bc))
            rows.append((n, b, t_dense, t_bc))
            print(f"| {n} | {b} | {t_dense:.3f} | " + " | ".join(f"{t:.3f}" for t in t_bc) + " | "
                  + ", ".join(f"{t_dense / t:.1f}x" for t in t_bc) + " |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--boards", default="icebreaker,ulx3s-85f")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-dense", action="store_true", help="fpga: do not build the dense engine")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = p.parse_args(argv)
    parts = a.parts.split(",")
    out = {}
    cyc = None
    if "error" in parts:
        out["error"] = part_error()
    if "cycles" in parts:
        cyc = part_cycles()
        out["cycles"] = cyc
    if "fpga" in parts:
        res = part_fpga(a.boards.split(","), seed=a.seed, cycles=cyc, dense=not a.no_dense)
        out["fpga"] = {f"{b}/{n}": {"fmax": v["fmax"], "cycles": v["cycles"]} for (b, n), v in res.items()}
    if "sw" in parts:
        out["sw"] = part_sw()
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
