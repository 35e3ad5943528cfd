"""The explorer's report: one self-contained HTML page, its figures embedded as PNG (matplotlib).

Figures (each captioned with the command, tool versions and seeds behind it):

1. the Pareto front: validation accuracy against estimated inferences/s,
   coloured by logic cells, every fitting point behind it, the confirmed
   points at their placed-and-routed clock;
2. logic per engine of the fastest front points (the estimate's share of
   each engine, the host interface beside), and resources per board: the
   utilisation of each accelerator of the place-and-route sweep
   (``data/sweep.json``), per board and engine kind;
3. fmax and logic against the PE count: measured (sweep) and estimated;
4. cycles per layer of the fastest front points (cycle model), and what the
   RTL simulation measured for the confirmed ones;
5. accuracy against storage, per method (every trial);
6. estimate against place and route for the confirmed points;
7. the FFT error histogram: the circulant engine's fixed-point FFT datapath
   against the exact circulant product, in output LSBs, on the explore's
   data (:mod:`sparrow.explore.ffterror`), for the bc layers of the circulant
   trials' models (random bc layers on the same inputs when no trial made one).
"""

import base64
import html
import io
import json
from pathlib import Path

from sparrow import SparrowError

__all__ = ["write_report", "figures", "fft_errors"]

_METHOD_COLOURS = {"smartdeal": "tab:blue", "admm": "tab:orange", "circulant": "tab:green",
                   "dense-int8": "tab:red", "given": "tab:purple"}


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _hw(c):
    lanes = f" C{c['out_lanes']}" if c.get("out_lanes", 1) != 1 else ""
    groups = f" G{c['max_groups']}" if "max_groups" in c else ""
    return f"P{c['pes']}{lanes} B{c['bcast']}{groups}"


def _fig_front(res, points):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter([p["inferences_per_s"] for p in points], [100 * p["val_accuracy"] for p in points],
               s=6, c="lightgrey", label="fitting points (estimate)")
    front = res["front"]
    sc = ax.scatter([p["inferences_per_s"] for p in front], [100 * p["val_accuracy"] for p in front],
                    c=[p["logic"] for p in front], cmap="viridis", s=30, edgecolors="k", linewidths=0.3,
                    label="Pareto front (estimate)")
    fig.colorbar(sc, ax=ax, label="logic cells (estimate)")
    conf = [p for p in res["confirmed"] if not p["real"].get("error")]
    if conf:
        ax.scatter([p["real_inferences_per_s"] for p in conf], [100 * p["val_accuracy"] for p in conf],
                   marker="*", s=160, c="red", edgecolors="k", label="confirmed (P&R clock, RTL bit-exact)")
    if res.get("fp32_val_accuracy") is not None:
        ax.axhline(100 * res["fp32_val_accuracy"], ls=":", c="k", lw=0.8, label="fp32 validation accuracy")
        ax.axhline(100 * (res["fp32_val_accuracy"] - res["max_drop_pp"] / 100), ls="--", c="grey", lw=0.8,
                   label=f"budget: {res['max_drop_pp']:g} pp below fp32")
    ax.set_xlabel("inferences/s (clock / cycles per vector)")
    ax.set_ylabel("golden validation accuracy (%)")
    ax.set_title(f"{res['model']} on {res['board']}: the Pareto front")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=2)
    return fig


def _fig_resources(sweep):
    import matplotlib.pyplot as plt
    from sparrow.fpga.boards import get_board
    boards = sorted({r["board"] for r in sweep})
    fig, axes = plt.subplots(len(boards), 1, figsize=(9, 3.2 * len(boards)), squeeze=False)
    for ax, b in zip(axes[:, 0], boards):
        spec = get_board(b)
        rows = [r for r in sweep if r["board"] == b]
        labels = [f"{r['model']}\n{_hw(r['config'])}" for r in rows]
        bram_total = 30 if spec.family == "ice40" else spec.bram_bits // 18432
        series = {"logic": [r["logic"] / spec.luts for r in rows], "FF": [r["ff"] / spec.luts for r in rows],
                  "DSP": [r["dsp"] / spec.dsps for r in rows], "BRAM": [r["bram"] / bram_total for r in rows]}
        w = 0.2
        for i, (name, vals) in enumerate(series.items()):
            ax.bar([x + (i - 1.5) * w for x in range(len(rows))], [100 * v for v in vals], w, label=name)
        ax.set_xticks(range(len(rows)), labels, fontsize=6)
        ax.set_ylabel("% of the device")
        ax.set_title(f"{spec.name} ({spec.device}): accelerators of the place-and-route sweep", fontsize=9)
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


def _fig_engines(res):
    import matplotlib.pyplot as plt
    top = [p for p in sorted(res["front"], key=lambda p: -p["inferences_per_s"]) if "engine_logic" in p][:8]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(top) + 1.5))
    labels = [f"{p['method']} {_hw(p['config'])} ({100 * p['val_accuracy']:.1f}%, {p['storage_ratio']:.0f}x)"
              for p in top]
    ys = list(range(len(top)))
    left = [p["host_logic"] for p in top]
    ax.barh(ys, left, color="lightgrey", label="host interface, sequencer, PLL (fitted constant)")
    engines = list(dict.fromkeys(n for p in top for n in p["engine_logic"]))
    for n in engines:
        vals = [p["engine_logic"].get(n, 0) for p in top]
        ax.barh(ys, vals, left=left, label=f"engine {n}")
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(ys, labels, fontsize=8)
    conf = {(p["model_dir"], json.dumps(p["config"], sort_keys=True)): p for p in res["confirmed"]}
    for i, p in enumerate(top):
        c = conf.get((p["model_dir"], json.dumps(p["config"], sort_keys=True)))
        if c and not c["real"].get("error"):
            ax.plot([c["real"]["logic"]], [i], "k|", ms=18, mew=2)
    ax.set_xlabel("logic cells (estimate; black bar: place and route)")
    ax.set_title(f"{res['board']}: estimated logic per engine, fastest front points", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.25), ncol=2)
    ax.invert_yaxis()
    return fig


def _fig_pes(sweep, fit):
    import matplotlib.pyplot as plt
    boards = sorted({r["board"] for r in sweep})
    fig, axes = plt.subplots(len(boards), 2, figsize=(9, 3.2 * len(boards)), squeeze=False)
    for row, b in zip(axes, boards):
        rows = [r for r in sweep if r["board"] == b and r["features"][1] > 0]   # with sd engines
        for ax, key, label in ((row[0], "logic", "logic cells"), (row[1], "fmax_mhz", "fmax (MHz)")):
            for model in sorted({r["model"] for r in rows}):
                rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["config"]["pes"])
                ax.plot([r["config"]["pes"] for r in rs], [r[key] for r in rs], "o", label=f"{model} (P&R)")
                if b in fit["boards"]:
                    est = [_estimate_record(r, fit, key) for r in rs]
                    ax.plot([r["config"]["pes"] for r in rs], est, "x", c="k", ms=5)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("PEs per sd_linear engine")
            ax.set_ylabel(label)
            ax.set_title(f"{b}: {label} vs PEs (x: the fitted estimate)", fontsize=9)
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _estimate_record(r, fit, key):
    from sparrow.explore.estimate import predict
    return predict(fit["boards"][r["board"]], r["features"], r.get("layers"), r["config"])[key]


def _fig_cycles(res):
    import matplotlib.pyplot as plt
    top = sorted(res["front"], key=lambda p: -p["inferences_per_s"])[:6]
    conf = {(p["model_dir"], json.dumps(p["config"], sort_keys=True)): p for p in res["confirmed"]}
    fig, ax = plt.subplots(figsize=(9, 4))
    layers = list(dict.fromkeys(l for p in top for l in p["cycles"]))
    w = 0.8 / max(1, len(top))
    for i, p in enumerate(top):
        xs = [j + (i - len(top) / 2 + 0.5) * w for j in range(len(layers))]
        ax.bar(xs, [p["cycles"].get(l, 0) for l in layers], w,
               label=f"{p['method']} {_hw(p['config'])} val {100 * p['val_accuracy']:.1f}%")
        c = conf.get((p["model_dir"], json.dumps(p["config"], sort_keys=True)))
        if c and not c["real"].get("error"):
            sim = c["real"]["sim"]["cycles"]
            n = c["real"]["sim"]["vectors"]
            ax.plot(xs, [sim.get(l, 0) / n for l in layers], "k_", ms=14, mew=2)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("cycles per vector")
    ax.set_title("cycles per layer: cycle model (bars), RTL simulation incl. fill (black marks)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _fig_storage(res):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for method in sorted({t["method"] for t in res["trials_detail"]}):
        ts = [t for t in res["trials_detail"] if t["method"] == method]
        ax.scatter([t["storage_ratio"] for t in ts], [100 * t["val_accuracy"] for t in ts],
                   c=_METHOD_COLOURS.get(method, "k"), label=method, s=25)
    if res.get("fp32_val_accuracy") is not None:
        ax.axhline(100 * res["fp32_val_accuracy"], ls=":", c="k", lw=0.8, label="fp32")
    ax.set_xscale("log")
    ax.set_xlabel("storage: fp32 weight bits / stored bits")
    ax.set_ylabel("golden validation accuracy (%)")
    ax.set_title("accuracy vs storage, every trial, per method", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _fig_estimate(res):
    import matplotlib.pyplot as plt
    conf = [p for p in res["confirmed"] if not p["real"].get("error")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [f"{p['method']}\n{_hw(p['config'])}" for p in conf]
    for ax, est, real, name in ((axes[0], "logic", "logic", "logic cells"),
                                (axes[1], "fmax_mhz", "fmax_mhz", "fmax (MHz)")):
        xs = range(len(conf))
        ax.bar([x - 0.2 for x in xs], [p[est] for p in conf], 0.4, label="estimate")
        ax.bar([x + 0.2 for x in xs], [p["real"][real] for p in conf], 0.4, label="place and route")
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


#: Block sizes of the random bc_linear layers measured when the explore made no circulant model.
_FALLBACK_KS = (4, 8, 16, 32, 64)


def _fft_inputs(res, model):
    """``(int8 codes [N, ...], what)``: the test split (else validation) of the explore's data,
    quantised for ``model``; random int8 vectors (seed 0) when the data cannot be loaded."""
    import numpy as np
    from sparrow.arrays import quantize_real
    from sparrow.sw import digits
    from sparrow.explore.trials import load_data
    # as the trials load it: a built-in model's split, --data, or a model directory's name (a built-in)
    name = res["model"] if res["model"] in digits.MODELS or res.get("data") else model.name
    try:
        _, data = load_data(name, res.get("data"))
    except SparrowError as exc:
        n = int(np.prod(model.input_shape))
        return (np.random.default_rng(0).integers(-128, 128, size=(256, n)),
                f"256 random int8 vectors, seed 0 (the data: {exc})")
    split, x = ("test", data.x_test) if data.x_test is not None else ("validation", data.x_val)
    codes = quantize_real(np.asarray(x).reshape(len(x), -1), model.input_scale_exp)
    src = f"{res['model']}'s digits split" if res["model"] in digits.MODELS else (res.get("data") or name)
    return codes, f"the {len(codes)} {split} inputs of {src}"


def fft_errors(res):
    """``(rows, source)``: :func:`~sparrow.explore.ffterror.model_fft_errors` rows (each with its
    ``model_dir``) of the explore's circulant models, or of random bc_linear layers (seed 0,
    k = 4..64, 32 outputs) on the explore's inputs when none was made; ``([], why)`` without models."""
    import numpy as np
    from sparrow.modeldir import load_model
    from sparrow.sw.randmodel import random_layer, random_model
    from sparrow.explore.ffterror import BC_KINDS, model_fft_errors
    dirs = list(dict.fromkeys(t["model_dir"] for t in res["trials_detail"] if Path(t["model_dir"]).exists()))
    models = [(d, load_model(d)) for d in dirs]
    bc = [(d, m) for d, m in models if any(l.kind in BC_KINDS for l in m.layers)]
    if not models:
        return [], "no model directory of this explore is left"
    rows = []
    if bc:
        codes, what = _fft_inputs(res, bc[0][1])
        for d, m in bc:
            rows += [{**r, "model_dir": d} for r in model_fft_errors(m, codes)]
        return rows, (f"the bc layers of the {len(bc)} circulant trial model(s), run by the golden model on "
                      f"{what}")
    codes, what = _fft_inputs(res, models[0][1])
    x = codes.reshape(len(codes), -1)
    rng = np.random.default_rng(0)
    for k in _FALLBACK_KS:
        if x.shape[1] % k:
            continue
        lay = random_layer("bc_linear", rng, name=f"bc{k}", in_=x.shape[1], out=max(k, 32), k=k)
        m = random_model([lay], (x.shape[1],), name="fft-error", input_scale_exp=models[0][1].input_scale_exp)
        rows += [{**r, "model_dir": None} for r in model_fft_errors(m, x)]
    return rows, (f"no trial made a circulant model: random bc_linear layers (numpy seed 0, "
                  f"{x.shape[1]} inputs, 32 or k outputs) on {what}")


def _fig_fft(rows):
    import numpy as np
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ks = sorted({r["k"] for r in rows})
    w = 0.8 / len(ks)
    for i, k in enumerate(ks):
        out = np.concatenate([r["output"] for r in rows if r["k"] == k])
        real = np.concatenate([r["real"] for r in rows if r["k"] == k])
        n_layers = sum(1 for r in rows if r["k"] == k)
        lo, hi = min(-2, int(out.min())), max(2, int(out.max()))
        vals = np.arange(lo, hi + 1)
        frac = np.array([(out == v).mean() for v in vals])
        axes[0].bar(vals + (i - len(ks) / 2 + 0.5) * w, 100 * frac, w,
                    label=f"k={k} ({n_layers} layer{'s' * (n_layers > 1)}, {out.size:,} outputs): "
                          f"{100 * (out == 0).mean():.2f}% exact, {100 * (np.abs(out) <= 1).mean():.2f}% "
                          f"within 1, max {int(np.abs(out).max())}")
        axes[1].hist(real, bins=np.linspace(-1, 1, 81), histtype="step", lw=1.2, density=True,
                     label=f"k={k}: mean {real.mean():+.3f}, sd {real.std():.3f}, max |e| {np.abs(real).max():.2f}")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("int8 output: fixed-point FFT - exact circulant product (LSB)")
    axes[0].set_ylabel("% of outputs")
    axes[0].set_title("output error (after rounding and saturation)", fontsize=9)
    axes[0].axvspan(-1.5, 1.5, color="tab:green", alpha=0.07, lw=0)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("before the final rounding: datapath - exact (output LSB)")
    axes[1].set_ylabel("density")
    axes[1].set_title("the FFT datapath's real-valued error", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.2))
    fig.tight_layout()
    return fig


def figures(res, points, sweep, fit):
    """``[(title, caption, base64 PNG)]`` of the report (sweep records of failed builds left out)."""
    sweep = [r for r in sweep if not r.get("failed")]
    import matplotlib
    matplotlib.use("Agg")
    tools = res.get("tools", {})
    tv = ", ".join(f"{k} {v}" for k, v in tools.items() if v)
    cmd = html.escape(res.get("command") or f"sparrow explore --model {res['model']} --board {res['board']}")
    seeds = f"training and search seed {res['seed']}, nextpnr seed 1"
    sweep_cap = (f"{html.escape(fit.get('command', 'python -m sparrow.explore.fit'))} (--sweep): one place "
                 f"and route per accelerator with the PLL at the board's target clock, nextpnr seed 1; "
                 f"tools: {html.escape(', '.join(f'{k} {v}' for k, v in (sweep[0]['tools'] if sweep else {}).items()))}")
    out = [("Pareto front", f"{cmd}; {seeds}; {tv}", _png(_fig_front(res, points)))]
    if any("engine_logic" in p for p in res["front"]):
        out.append(("Logic per engine", f"{cmd}; the estimate before synthesis: each engine's features "
                    f"times the fitted coefficients ({html.escape(res.get('fit_file', ''))}); {seeds}",
                    _png(_fig_engines(res))))
    if sweep:
        out.append(("Resources per board and engine kind", sweep_cap, _png(_fig_resources(sweep))))
        out.append(("fmax and logic against the PE count", sweep_cap + "; x: the estimate of the same "
                    "configuration from the fitted coefficients", _png(_fig_pes(sweep, fit))))
    sims = sorted({p["real"]["sim"]["simulator"] for p in res["confirmed"] if "sim" in p["real"]})
    if res["front"]:
        out.append(("Cycles per layer", f"{cmd}; the registry's cycle model (hw/engines.py) and the "
                    f"RTL simulation ({', '.join(sims) or 'none'}) of the confirmed points; {seeds}",
                    _png(_fig_cycles(res))))
    out.append(("Accuracy against storage per method", f"{cmd}; golden (integer) accuracy on the "
                f"validation split; {seeds}; {tv}", _png(_fig_storage(res))))
    if any(not p["real"].get("error") for p in res["confirmed"]):
        out.append(("Estimate against place and route", f"{cmd}; {seeds}; {tv}", _png(_fig_estimate(res))))
    rows, source = fft_errors(res)
    if rows:
        import numpy
        out.append(("FFT error histogram", f"{cmd}; the circulant engine's fixed-point FFT datapath "
                    f"(sparrow.fixedfft, the RTL bit for bit) against the exact integer circulant product "
                    f"(sparrow.sw.golden.bc_linear_ideal), in LSBs of the int8 output: "
                    f"{html.escape(source)}; left: int8 outputs after rounding, saturation and ReLU "
                    f"(docs/format.md's target: &ge; 99% within 1 LSB, none off by more than 2); right: "
                    f"the same before the final rounding; {seeds}; numpy {numpy.__version__}; "
                    f"{tv}", _png(_fig_fft(rows))))
    return out


def _table(res):
    rows = sorted(res["front"], key=lambda p: -p["inferences_per_s"])[:25]
    head = ("method", "hardware", "val %", "test %", "storage", "logic", "FF", "DSP", "BRAM", "fmax",
            "clock", "cycles", "inferences/s", "model directory")
    body = []
    for p in rows:
        t = "" if p["test_accuracy"] is None else f"{100 * p['test_accuracy']:.2f}"
        body.append((p["method"], _hw(p["config"]), f"{100 * p['val_accuracy']:.2f}", t,
                     f"{p['storage_ratio']:.1f}x", p["logic"], p["ff"], p["dsp"], p["bram"],
                     f"{p['fmax_mhz']:.1f}", f"{p['clock_mhz']:.3f}", p["cycles_per_vector"],
                     f"{p['inferences_per_s']:,}", p["model_dir"]))
    return _html_table(head, body)


def _confirmed_table(res):
    if not res["confirmed"]:
        return "<p>none (--builds 0, or no front point within the accuracy budget)</p>"
    head = ("method", "hardware", "val %", "test %", "logic est/real", "FF est/real", "BRAM est/real",
            "fmax est/real", "clock", "inferences/s", "RTL", "bitstream")
    body = []
    for p in res["confirmed"]:
        r = p["real"]
        t = "" if p["test_accuracy"] is None else f"{100 * p['test_accuracy']:.2f}"
        if r.get("error"):
            body.append((p["method"], _hw(p["config"]), f"{100 * p['val_accuracy']:.2f}", t, "", "", "", "",
                         "", "", "", r["error"]))
            continue
        sim = r["sim"]
        body.append((p["method"], _hw(p["config"]), f"{100 * p['val_accuracy']:.2f}", t,
                     f"{p['logic']} / {r['logic']}", f"{p['ff']} / {r['ff']}", f"{p['bram']} / {r['bram']}",
                     f"{p['fmax_mhz']:.1f} / {r['fmax_mhz']:.1f}", f"{r['clock_mhz']:.3f}",
                     f"{p['real_inferences_per_s']:,}",
                     f"{sim['simulator']}: {sim['vectors']} vectors "
                     f"{'bit-exact' if sim['bit_exact'] else 'MISMATCH'}", r["bitstream"]))
    return _html_table(head, body)


def _html_table(head, body):
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{h}</tr>{rows}</table>"


def write_report(folder, out=None):
    """Write the report of the explore folder ``folder`` (``pareto.json``) to ``out``
    (default ``folder/report.html``); returns its path.  SparrowError when there is no explore."""
    from sparrow.explore.estimate import load_fit
    from sparrow.explore.fit import load_sweep
    folder = Path(folder)
    src = folder / "pareto.json"
    if not src.exists():
        raise SparrowError(f"{folder}: no pareto.json (run sparrow explore --out {folder} first)")
    res = json.loads(src.read_text())
    pts_file = folder / "points.json"
    points = json.loads(pts_file.read_text()) if pts_file.exists() else res["front"]
    fit = load_fit()
    sweep = load_sweep()
    figs = figures(res, points, sweep, fit)
    title = f"sparrow explore: {res['model']} on {res['board']} ({res['device']})"
    summary = (f"{res['trials']} trials, {res['points']} hardware points that fit ({res['refused']} refused: "
               f"{', '.join(f'{k} {v}' for k, v in res['refused_by'].items()) or 'none'}), "
               f"{len(res['front'])} on the Pareto front, {res['builds']} confirmed; {res['seconds']:.0f} s "
               f"({'Ray' if res['ray'] else 'serial'}, {res['workers']} workers)")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p><code>{html.escape(res.get('command') or '')}</code></p><p>{html.escape(summary)}</p>",
             "<h2>Confirmed by place and route and RTL simulation</h2>", _confirmed_table(res),
             "<h2>Pareto front (fastest 25, estimates)</h2>", _table(res)]
    for title_, caption, png in figs:
        parts.append(f"<figure><h2>{html.escape(title_)}</h2><img src=\"data:image/png;base64,{png}\" "
                     f"alt=\"{html.escape(title_)}\"><figcaption>{caption}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1150px;margin:1em auto;color:#222}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 5px}"
             "figcaption{font-size:12px;color:#555}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    path = Path(out) if out else folder / "report.html"
    path.write_text(page)
    return path
