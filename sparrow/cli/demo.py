"""``sparrow demo``: the main job, compress-to-board, with a report at the end.

Stages (each prints progress; a failing stage stops the demo with one line):

1. **compress**: train ``digits-mlp`` (or ``--model digits-cnn``, the CNN:
   convolutions and max-pooling on the accelerator too) on scikit-learn's
   digits (fixed split), compress it with SmartDeal (basis x sparse power-of-two coefficients, int8
   activations) and write the model directory ``<out>/model``.  Where settings were measured for
   blocks as tall as ``--pes`` (:data:`sparrow.sw.pipeline.BLOCK_CONFIGS`: digits-mlp at 16), the
   pruning blocks are ``--pes`` rows tall, so that the one-PE-group code layout of the UP5K holds
   the model as compactly as its encoding.
2. **golden**: run the integer golden model on the whole test split; its
   accuracy next to the fp32 model's and the storage ratio.
3. **sim**: run the model directory on the generated RTL, layer by layer, on
   Verilator (``--sim-samples`` test samples) and Icarus (``--icarus-samples``);
   every output must equal the golden model's bit for bit.
4. **host**: the whole accelerator (all layers behind the UART host
   interface) in Verilator, driven by the host driver over its framed,
   CRC-checked protocol (``--host-samples`` samples), again bit-exact.
5. **build**: place and route that accelerator (``--pes`` PEs per SmartDeal
   engine) for each board with Yosys + nextpnr: a first run learns fmax, the
   second builds with the board PLL at the fastest clock below it that carries
   the bridge's fastest UART rate (``sparrow build --model`` without
   ``--clock``); report LUTs, flip-flops, DSPs, block RAMs, fmax, the clock
   and the baud rate.  The bitstream is ready for ``sparrow flash`` and
   ``sparrow run --port``.

Everything goes under ``--out`` (default ``build/demo``); the summary is also
written to ``<out>/demo.json``.
"""

import json
import sys
import time
from pathlib import Path

__all__ = ["configure", "run"]

MODELS = ("digits-mlp", "digits-cnn")
METHOD = "smartdeal"
#: Boards built by default: the CNN accelerator does not fit the iCE40UP5K's 5280 LCs.
DEFAULT_BOARDS = {"digits-mlp": "icebreaker,ulx3s-85f", "digits-cnn": "ulx3s-85f"}


def configure(parser):
    parser.add_argument("--out", default="build/demo", help="work folder (default build/demo)")
    parser.add_argument("--model", default="digits-mlp", choices=MODELS,
                        help="the built-in model to take from compression to bitstream "
                             "(default digits-mlp; digits-cnn: the CNN, convolutions and pooling "
                             "on the accelerator)")
    parser.add_argument("--pes", type=int, default=16,
                        help="PEs of each SmartDeal engine, for simulation and the board builds "
                             "(default 16)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    parser.add_argument("--boards", default=None,
                        help="comma-separated boards to build for (default icebreaker,ulx3s-85f; "
                             "ulx3s-85f for digits-cnn; empty: no builds)")
    parser.add_argument("--sim-samples", type=int, default=360,
                        help="test samples run on Verilator (default 360: the whole test split)")
    parser.add_argument("--icarus-samples", type=int, default=16,
                        help="test samples run on Icarus (default 16; it is ~100x slower)")
    parser.add_argument("--host-samples", type=int, default=32,
                        help="test samples sent through the host driver to the simulated "
                             "accelerator (default 32)")


def _say(msg):
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def stage_compress(out, name, pes):
    from sparrow.modeldir import save_model
    from sparrow.sw.pipeline import BLOCK_CONFIGS, compress_digits
    tall = (name, METHOD, pes) in BLOCK_CONFIGS
    _say(f"compress: training {name} in fp32 and compressing it with {METHOD}"
         + (f" in blocks of {pes} rows (one per {pes}-PE group)" if tall else ""))
    model, rep = compress_digits(name, METHOD, overrides={"block": pes} if tall else None, seed=0,
                                 progress=True)
    save_model(model, out / "model")
    _say(f"compress: wrote {out / 'model'} ({rep['seconds']:.0f} s)")
    return model, rep


def stage_golden(model):
    import numpy as np
    from sparrow.sw import digits
    from sparrow.sw.golden import run_model
    _, _, pixels, labels = digits.load_split()
    x = digits.quantize_inputs(pixels).reshape(len(pixels), *model.input_shape)
    y = np.asarray(run_model(model, x))
    acc = float((y.argmax(axis=1) == labels).mean())
    _say(f"golden: {len(labels)} test samples, integer accuracy {100 * acc:.2f}%")
    return x, y, labels, acc


def stage_sim(model, x, y_gold, simulator, n, pes):
    import numpy as np
    from sparrow import SparrowError
    from sparrow.tb.model_sim import simulate_model
    from sparrow.hw.engine import EngineConfig
    t = time.monotonic()
    y = simulate_model(model, x[:n], simulator, EngineConfig(pes=pes), progress=lambda m: _say(f"sim: {m}"))
    bad = np.flatnonzero((y != y_gold[:n]).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise SparrowError(f"sim: {simulator} differs from the golden model on {len(bad)} of {n} "
                           f"samples; first: sample {i}: rtl {y[i].tolist()} golden "
                           f"{y_gold[i].tolist()}")
    seconds = time.monotonic() - t
    _say(f"sim: {simulator}: {n} samples bit-exact with the golden model ({seconds:.0f} s)")
    return {"samples": n, "bit_exact": True, "seconds": round(seconds, 1)}


def stage_host(model, x, y_gold, n, pes):
    """The accelerator RTL behind its UART, driven by the host driver; bit-exact with golden."""
    import numpy as np
    from sparrow import SparrowError
    from sparrow.fpga.host import Device, SimulatedBoard
    from sparrow.hw.engine import EngineConfig
    t = time.monotonic()
    _say(f"host: starting the accelerator's RTL in Verilator ({len(model.layers)} engines "
         f"behind the UART)")
    board = SimulatedBoard(model, "verilator", EngineConfig(pes=pes))
    try:
        dev = Device(board.wait_port(), timeout=30)
        ident = dev.identify()
        cycles = []
        for i in range(n):
            y, c = dev.run(x[i], ident["out_size"])
            if (y != y_gold[i]).any():
                raise SparrowError(f"host: sample {i}: accelerator {y.tolist()} golden "
                                   f"{y_gold[i].tolist()}")
            cycles.append(c)
        status = dev.status()
        dev.close()
    finally:
        board.close()
    seconds = time.monotonic() - t
    _say(f"host: {n} samples over the UART protocol bit-exact ({seconds:.0f} s)")
    return {"samples": n, "bit_exact": True, "cycles_per_vector": float(np.mean(cycles)),
            "status_flags": status["flags"], "seconds": round(seconds, 1)}


def stage_build(out, model_dir, pes, seed, boards):
    """Each board's bitstream at the fastest PLL clock the design meets (two place and routes:
    the first learns fmax), with the UART at the board bridge's fastest rate and the board's
    PE-group limit (:attr:`sparrow.fpga.boards.Board.max_groups`)."""
    from sparrow.hw.engine import EngineConfig
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.build import build_accelerator
    from sparrow.modeldir import load_model
    model = load_model(model_dir)
    builds = {}
    for board in boards:
        _say(f"build: {board}: a first place and route learns fmax, the second builds at the "
             f"fastest PLL clock below it")
        config = EngineConfig(pes=pes, max_groups=get_board(board).max_groups)
        builds[board] = build_accelerator(model, board, out / f"{board}-accel",
                                          config=config, seed=seed)
    return builds


def run(args):
    from sparrow import SparrowError
    from sparrow.fpga.boards import get_board
    from sparrow.fpga.report import summarise
    out = Path(args.out)
    boards = [b for b in (DEFAULT_BOARDS[args.model] if args.boards is None
                          else args.boards).split(",") if b]
    for b in boards:
        get_board(b)
    for flag, v, lo in (("--pes", args.pes, 1), ("--sim-samples", args.sim_samples, 1),
                        ("--icarus-samples", args.icarus_samples, 0),
                        ("--host-samples", args.host_samples, 0)):
        if v < lo:
            raise SparrowError(f"{flag} must be at least {lo}, not {v}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    model, crep = stage_compress(out, args.model, args.pes)
    x, y_gold, labels, gold_acc = stage_golden(model)
    n_ver = min(args.sim_samples, len(x))
    sims = {"verilator": stage_sim(model, x, y_gold, "verilator", n_ver, args.pes)}
    if args.icarus_samples:
        sims["icarus"] = stage_sim(model, x, y_gold, "icarus", min(args.icarus_samples, len(x)),
                                   args.pes)
    host = stage_host(model, x, y_gold, min(args.host_samples, len(x)), args.pes) \
        if args.host_samples else None
    builds = stage_build(out, out / "model", args.pes, args.seed, boards) if boards else {}

    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.onchip import model_onchip
    onchip = model_onchip(model, EngineConfig(pes=args.pes))
    onchip_ratio = crep["fp32_bits"] / onchip["weight_bits"]
    summary = {"model": args.model, "method": METHOD, "compress": crep, "golden_accuracy": gold_acc,
               "onchip": {k: onchip[k] for k in ("pes", "weight_bits", "bias_bits")} | {"ratio": onchip_ratio},
               "sim": sims, "host": host, "builds": builds}
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    print("\nsparrow demo report")
    print("===================")
    kinds = ", ".join(f"{l.name} {l.kind}" for l in model.layers)
    print(f"model      {args.model} compressed with {METHOD}: {kinds}")
    print(f"storage    {crep['storage_ratio']:.1f}x encoded, {onchip_ratio:.1f}x on chip "
          f"({args.pes} PEs: {onchip['weight_bits']} weight bits in ROM) smaller than fp32 weights "
          f"({crep['nonzero']}/{crep['weights']} coefficients nonzero; biases "
          f"{crep['bias_bits']} bits beside)")
    print(f"accuracy   fp32 {100 * crep['fp32_accuracy']:.2f}%  integer golden "
          f"{100 * gold_acc:.2f}% ({100 * (gold_acc - crep['fp32_accuracy']):+.2f} pp) "
          f"on {len(labels)} test digits")
    for sim, r in sims.items():
        print(f"rtl        {sim}: {r['samples']} samples bit-exact with the golden model "
              f"({args.pes} PEs per engine, {r['seconds']:.0f} s)")
    if host:
        print(f"host       accelerator RTL behind its UART: {host['samples']} samples through the "
              f"host driver bit-exact, {host['cycles_per_vector']:.0f} cycles per vector")
    for board, rep in builds.items():
        print(f"board      accelerator on {board} ({rep['device']}, PLL clock "
              f"{rep['clock_hz'] / 1e6:.3f} MHz, fmax {rep['fmax_hz'] / 1e6:.1f} MHz, UART "
              f"{rep['baud']} baud, nextpnr seed {rep['seed']}): {summarise(rep)}; "
              f"weights on chip {rep['weight_memory']['weight_bits']} bits "
              f"({crep['fp32_bits'] / rep['weight_memory']['weight_bits']:.1f}x, "
              f"{rep['max_groups']} PE group{'s' if rep['max_groups'] > 1 else ''})")
    print(f"total {time.monotonic() - start:.0f} s; details in {out / 'demo.json'}")
    return 0
