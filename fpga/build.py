"""Place and route a design for a board with Yosys and nextpnr, and report what it costs.

:func:`build_design` wraps any ``wiring.Component`` in a :class:`Harness`,
runs amaranth-boards' own build script (Yosys ``synth_ice40 -dsp`` /
``synth_ecp5``, nextpnr with a fixed ``--seed`` and ``--report``, then
icepack/ecppack), and returns the report as a dict, also written to
``<out_dir>/<name>.report.json``.  No board needs to be attached.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sparrow import SparrowError
from sparrow.toolchain import TOOLS, activate
from sparrow.fpga.boards import get_board
from sparrow.fpga.harness import Harness
from sparrow.fpga.report import parse_nextpnr_report, count_ice40_ffs, summarise

__all__ = ["build_design", "build_accelerator", "design_fmax", "pick_clock", "tool_versions"]


def tool_versions(family):
    """Versions of the tools a build for ``family`` runs (yosys, nextpnr, packer)."""
    wanted = {"yosys", f"nextpnr-{family}", "icepack" if family == "ice40" else "ecppack"}
    return {t.name: t.version() for t in TOOLS if t.name in wanted}


def _write_json_atomic(path, data):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _over_capacity(nextpnr_log):
    """``"ICESTORM_LC 6996/5280 (132%)"`` for each cell type nextpnr found over 100%, else ''."""
    import re
    if not nextpnr_log.exists():
        return ""
    over = []
    for m in re.finditer(r"^Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+(\d+)%", nextpnr_log.read_text(errors="replace"), re.M):
        if int(m.group(4)) > 100:
            over.append(f"{m.group(1)} {m.group(2)}/{m.group(3)} ({m.group(4)}%)")
    return ", ".join(dict.fromkeys(over))


def build_design(component, board, out_dir, *, name="top", seed=1, target_mhz=None,
                 extra=None, placer=None, progress=True):
    """Synthesise, place and route ``component`` for ``board``; return the report dict.

    Parameters
    ----------
    component : wiring.Component or Elaboratable
        The unit; it runs in the board clock's ``sync`` domain.  A
        ``wiring.Component`` is wrapped in the build harness; any other
        Elaboratable is the top itself and requests its own pins.
    board : str
        A name from :data:`sparrow.fpga.boards.BOARDS`.
    out_dir : path
        Build folder (created); holds the tools' files, ``build.log`` and the report.
    seed : int
        nextpnr placement seed, recorded in the report.
    target_mhz : float, optional
        Clock constraint for timing-driven placement (default: the board's).
    extra : dict, optional
        Extra fields copied into the report (e.g. the design's parameters).
    placer : str, optional
        nextpnr placer (``"heap"`` or ``"sa"``); default: nextpnr's own choice.
        Recorded in the report.

    Raises SparrowError (one line, naming the failing tool and the log) when a
    tool fails, e.g. when the design does not fit the device.
    """
    if not isinstance(seed, int) or seed < 0:
        raise SparrowError(f"seed must be a non-negative integer, not {seed!r}")
    if placer not in (None, "heap", "sa"):
        raise SparrowError(f"placer must be 'heap' or 'sa', not {placer!r}")
    spec = get_board(board)
    activate()
    from amaranth.build import Clock
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    platform = spec.platform_class()()
    target = float(target_mhz or spec.target_mhz)
    from amaranth.lib import wiring
    top = Harness(component) if isinstance(component, wiring.Component) else component
    if isinstance(top, Harness) or getattr(top, "pll", None) is None:
        # The unit runs at the board clock: constrain it to the target.  A top with a PLL
        # constrains the PLL's output itself, and the oscillator keeps its real frequency.
        platform.resources[platform.default_clk, 0].clock = Clock(target * 1e6)
    report_file = f"{name}.nextpnr.json"
    nextpnr_opts = f"--seed {seed} --report {report_file} --timing-allow-fail"
    if placer:
        nextpnr_opts += f" --placer {placer}"
    overrides = {"nextpnr_opts": nextpnr_opts}
    if spec.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    plan = platform.prepare(top, name=name, **overrides)
    plan.extract(out_dir)
    log = out_dir / "build.log"
    if progress:
        print(f"[build] {name} for {spec.name} ({spec.device}): yosys + nextpnr (seed {seed}), "
              f"log {log}", file=sys.stderr, flush=True)
    start = time.monotonic()
    with open(log, "w") as f:
        done = subprocess.run(["sh", f"build_{name}.sh"], cwd=out_dir, stdout=f,
                              stderr=subprocess.STDOUT, env=os.environ.copy())
    seconds = time.monotonic() - start
    if done.returncode != 0:
        lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("ERROR")] or lines[-1:] or ["no output"]
        over = _over_capacity(out_dir / f"{name}.tim")
        if over:
            errors = [f"the design does not fit the {spec.device}: {over}"]
        raise SparrowError(f"build of {name} for {spec.name} failed after {seconds:.0f} s: "
                           f"{errors[0]} (full log: {log})")

    parsed = parse_nextpnr_report(out_dir / report_file, spec.family)
    if spec.family == "ice40":
        parsed["utilization"]["ff"] = {"used": count_ice40_ffs(out_dir / f"{name}.json"),
                                       "available": spec.luts}
    report = {
        "design": name,
        "board": spec.name,
        "device": spec.device,
        "family": spec.family,
        "target_mhz": target,
        "seed": seed,
        "placer": placer or "default",
        **parsed,
        "harness": ({"input_bits": top.input_bits, "output_bits": top.output_bits,
                     "note": "counts include the harness: ~1 FF per input bit + 32, "
                             "~1 LUT4 per 3 output bits"} if isinstance(top, Harness) else None),
        "build_seconds": round(seconds, 1),
        "tools": tool_versions(spec.family),
        **(extra or {}),
    }
    _write_json_atomic(out_dir / f"{name}.report.json", report)
    if progress:
        print(f"[build] {name} on {spec.name}: {summarise(report)} ({seconds:.0f} s)",
              file=sys.stderr, flush=True)
    return report


def design_fmax(report):
    """The fmax (MHz) of a report's design clock: the lowest achieved over its clocks."""
    fmax = report["fmax_mhz"]
    if not fmax:
        raise SparrowError(f"nextpnr reported no clock for {report['design']}")
    return min(f["achieved"] for f in fmax.values())


def pick_clock(family, osc_mhz, limit_mhz, baud, tolerance=0.01):
    """The fastest PLL clock (MHz) at or below ``limit_mhz`` at which ``baud`` has a divisor within ``tolerance``.

    1% by default, half of what :func:`~sparrow.hw.uart.uart_divisor` accepts:
    the choice among PLL clocks is wide, so the link keeps its margin for the
    host bridge's own error.  Raises SparrowError (one line) when there is none.
    """
    from sparrow.fpga.pll import pll_clocks
    from sparrow.hw.uart import uart_divisor
    for mhz in pll_clocks(family, osc_mhz):
        if mhz > limit_mhz:
            continue
        try:
            divisor = uart_divisor(mhz * 1e6, baud)
        except ValueError:
            continue
        if abs(mhz * 1e6 / divisor - baud) <= tolerance * baud:
            return mhz
    raise SparrowError(f"no PLL clock up to {limit_mhz:.1f} MHz carries {baud} baud within "
                       f"{100 * tolerance:g}%")


def build_accelerator(model, board, out_dir, *, config, baud=None, clock_mhz=None, seed=1,
                      margin=0.03, progress=True):
    """Build ``model``'s accelerator for ``board`` with its PLL; return the report dict.

    With ``clock_mhz`` the PLL is set to the closest clock it makes, and a
    design that does not meet it after place and route is refused (one line).
    Without it a first place and route (the PLL at the board's target
    frequency) learns fmax; the final build runs at the fastest PLL clock at
    most ``fmax * (1 - margin)`` that carries ``baud`` within 2%, stepping
    down once more if the final placement misses it.  ``baud`` defaults to
    the board bridge's fastest rate (:attr:`Board.max_baud`).  The report
    adds ``clock_hz``, ``fmax_hz``, ``baud``, ``uart_divisor``, ``pll``,
    ``max_groups``, ``weight_memory`` (:func:`sparrow.fpga.report.weight_memory`)
    and, when learnt, ``learn_fmax_hz``.
    """
    from sparrow.fpga.accel_top import accelerator_design
    from sparrow.fpga.pll import pll_for
    spec = get_board(board)
    out_dir = Path(out_dir)
    baud = baud or spec.max_baud
    osc_mhz = float(spec.platform_class()().default_clk_frequency) / 1e6
    learnt = None
    if clock_mhz is None:
        top, name, extra, mhz = accelerator_design(model, board, baud, config,
                                                   clock_mhz=spec.target_mhz, check_baud=False)
        learn = build_design(top, board, out_dir / "learn", name=name, seed=seed, target_mhz=mhz,
                             extra=extra, progress=progress)
        learnt = design_fmax(learn)
        clock = pick_clock(spec.family, osc_mhz, learnt * (1 - margin), baud)
        tries = 2
    else:
        clock = pll_for(spec.family, osc_mhz, clock_mhz).f_out
        tries = 1
    while True:
        top, name, extra, mhz = accelerator_design(model, board, baud, config, clock_mhz=clock)
        report = build_design(top, board, out_dir, name=name, seed=seed, target_mhz=mhz,
                              extra=extra, progress=progress)
        fmax = design_fmax(report)
        tries -= 1
        if fmax >= mhz or tries == 0:
            break
        clock = pick_clock(spec.family, osc_mhz, min(fmax, mhz) * (1 - margin), baud)
    from sparrow.fpga.report import weight_memory
    from sparrow.hw.onchip import model_onchip
    report.update({"fmax_hz": round(fmax * 1e6), "learn_fmax_hz": learnt and round(learnt * 1e6),
                   "clock_margin": margin, "max_groups": config.max_groups,
                   "weight_memory": weight_memory(model_onchip(model, config), spec.family)})
    _write_json_atomic(out_dir / f"{name}.report.json", report)
    if fmax < mhz:
        for suffix in (".bin", ".bit"):
            (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
        asked = f"--clock {clock_mhz:g}" if clock_mhz is not None else "the clock picked from fmax"
        raise SparrowError(f"{asked}: {name} meets only {fmax:.1f} MHz on {spec.name} after place "
                           f"and route (PLL clock {mhz:.3f} MHz, seed {seed}); choose --clock "
                           f"{fmax * (1 - margin):.0f} or less (report: {out_dir / (name + '.report.json')})")
    return report
