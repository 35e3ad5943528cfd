"""The digits flow end to end: fp32 training, compression, export, checks, report.

Used by ``sparrow compress`` and ``bench/bench_compress.py``.
"""

import time

import numpy as np

from sparrow import SparrowError

__all__ = ["FP32_EPOCHS", "METHOD_CONFIGS", "BLOCK_CONFIGS", "train_fp32", "digits_config", "compress_digits",
           "golden_accuracy",
           "digits_data", "digits_search_setup", "compress_model", "quant_outputs", "save_compressed",
           "torch_quant_outputs"]

FP32_EPOCHS = 60

# The per-model settings measured by bench/bench_compress.py, over the defaults of each method's Config.
METHOD_CONFIGS = {
    ("digits-mlp", "dense-int8"): {"qat_epochs": 20},
    # fc2's 10 rows prune in blocks of 4, 4, 2 (a 4-PE array's row blocks): coarser than 2-row
    # blocks, so fc2 keeps more of them and fc1 fewer
    ("digits-mlp", "smartdeal"): {"prune_epochs": 60, "fix_epochs": 30, "qat_epochs": 10, "qat_lr": 1e-4, "levels": 4,
                                  "density": {"fc1": 0.11, "fc2": 0.45}, "freeze_window": True, "permute": True},
    # 4 exponent levels (3-bit codes) buy denser layers than 8 (4-bit codes) at the same storage
    ("digits-mlp", "admm"): {"admm_epochs": 60, "retrain_epochs": 60, "retrain_lr": 2e-3, "qat_epochs": 10,
                             "qat_lr": 1e-4, "levels": 4, "density": {"fc1": 0.09, "fc2": 0.47}, "rho": 1e-2,
                             "rho_growth": 1.1, "freeze_window": True, "permute": True},
    ("digits-mlp", "circulant"): {"epochs": 60, "qat_epochs": 20},
    ("digits-cnn", "dense-int8"): {"qat_epochs": 10},
    # k = 1 (a per-input basis): a k x k basis per group of 144 conv2 inputs would cost more than 1/30 of fp32
    # fc1 (10 rows) in 2-row blocks: in blocks of 4, 4, 2 it lost 1.53 pp on the mean of six seeds
    ("digits-cnn", "smartdeal"): {"prune_epochs": 40, "fix_epochs": 20, "qat_epochs": 10, "k": 1,
                                  "density": {"conv1": 1.0, "conv2": 0.115, "fc1": 0.5}, "block": {"fc1": 2}},
    ("digits-cnn", "admm"): {"admm_epochs": 40, "retrain_epochs": 60, "retrain_lr": 2e-3, "qat_epochs": 10,
                             "qat_lr": 1e-4, "levels": 4, "density": {"conv1": 1.0, "conv2": 0.115, "fc1": 0.35},
                             "rho": 1e-2, "rho_growth": 1.1, "freeze_window": True, "permute": True},
    ("digits-cnn", "circulant"): {"epochs": 60, "qat_epochs": 10, "k": 8},
}

# Settings measured for blocks P rows tall (``--block P``), over METHOD_CONFIGS, keyed (model, method, P).
# Blocks as tall as the PE count let one PE group (the UP5K's code layout: one code ROM, one z buffer per
# engine) store every block without padding: digits-mlp SmartDeal at 16 PEs holds 1.23x its encoding on
# chip against 2.4x with 4-row blocks.  Taller blocks prune coarser, so fc1 keeps more of them.
BLOCK_CONFIGS = {
    ("digits-mlp", "smartdeal", 16): {"density": {"fc1": 0.16, "fc2": 0.4}},
    # fc2 (10 rows: one block) kept denser than at 4 rows: 0.09 / 0.47 lost 1.11 pp on the mean of six seeds
    ("digits-mlp", "admm", 16): {"density": {"fc1": 0.11, "fc2": 0.6}},
}


def _bar(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def train_fp32(name, seed=0, epochs=FP32_EPOCHS, progress=True):
    """(fp32 model, fp32 test accuracy, data dict) for a digits model."""
    from sparrow.sw import digits
    digits.set_threads(1)
    xtr, ytr, xte, yte = digits.load_split()
    x, y = digits.tensors(name, xtr, ytr)
    xt, yt = digits.tensors(name, xte, yte)
    model = digits.make_model(name, seed=seed)
    bar = _bar(epochs, f"{name} fp32", progress)
    digits.train(model, x, y, epochs=epochs, lr=3e-3, seed=seed, progress=bar)
    if bar:
        bar.close()
    return model, digits.accuracy(model, xt, yt), {"x": x, "y": y, "xt": xt, "yt": yt,
                                                   "x_test_pixels": xte, "y_test": yte}


def torch_quant_outputs(qm, name, pixels):
    """int64 outputs of the fake-quantised torch forward run in float64 (what the golden model must equal)."""
    import copy
    import torch
    from sparrow.sw import digits
    q = copy.deepcopy(qm).double().set_quant(True).eval()
    with torch.no_grad():
        out = q(digits.tensors(name, pixels, dtype=torch.float64))
    exp = q.qlayers()[-1].last_out_exp
    return (out / 2.0 ** exp).numpy().round().astype(np.int64)


def golden_accuracy(model, pixels, labels):
    """(accuracy of the integer golden model, int8 outputs) on digits pixels."""
    from sparrow.sw import digits
    from sparrow.sw.golden import run_model
    x = digits.quantize_inputs(pixels).reshape((-1,) + tuple(model.input_shape))
    y = run_model(model, x)
    return float((y.argmax(1) == labels).mean()), y


def digits_config(name, method, overrides=None, seed=0):
    """The configuration of ``method`` for digits model ``name``: defaults, METHOD_CONFIGS, ``overrides``.

    An integer ``block`` among the overrides also applies BLOCK_CONFIGS' measured settings for
    that block height (options given in ``overrides`` win).

    Raises SparrowError for an unknown model or method, ValueError / TypeError
    (naming the option) for a bad or unknown option.
    """
    from sparrow.sw import digits
    from sparrow.sw.methods import METHODS
    if name not in digits.MODELS:
        raise SparrowError(f"unknown digits model {name!r} (known: {', '.join(digits.MODELS)})")
    if method not in METHODS:
        raise SparrowError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    base = METHODS[method].Config(input_shape=digits.input_shape(name), input_exp=digits.INPUT_SCALE_EXP, name=name,
                                  seed=seed)
    overrides = overrides or {}
    block = overrides.get("block")
    tall = BLOCK_CONFIGS.get((name, method, block), {}) if isinstance(block, int) else {}
    return base.replace(**METHOD_CONFIGS.get((name, method), {})).replace(**tall).replace(**overrides)


def compress_digits(name, method, overrides=None, seed=0, progress=True, fp32_epochs=FP32_EPOCHS):
    """Train, compress and export a digits model; returns (Model, report dict).

    ``overrides``: options of the method's Config over :func:`digits_config`'s.
    The manifest's ``meta.config`` is the configuration's record.
    """
    from sparrow.sw import digits
    from sparrow.sw.compressor import compress
    from sparrow.sw.storage import model_storage
    cfg = digits_config(name, method, overrides, seed)
    t0 = time.time()
    fp32, fp32_acc, d = train_fp32(name, seed=seed, epochs=fp32_epochs, progress=progress)
    bar = _bar(cfg.epochs, f"{name} {method}", progress)
    qm = compress(fp32, cfg, data=(d["x"], d["y"]), progress=bar)
    if bar:
        bar.close()
    seconds = time.time() - t0
    torch_acc = digits.accuracy(qm, d["xt"], d["yt"])
    model = qm.method.export(qm, name, meta={"method": method, "config": cfg.record(), "seed": seed})
    gold_acc, y_gold = golden_accuracy(model, d["x_test_pixels"], d["y_test"])
    ref = torch_quant_outputs(qm, name, d["x_test_pixels"])
    mismatches = int((ref != y_gold.astype(np.int64)).any(axis=1).sum())
    st = model_storage(model)
    report = {"model": name, "method": method, "fp32_accuracy": fp32_acc, "torch_quant_accuracy": torch_acc,
              "golden_accuracy": gold_acc, "delta_pp": 100 * (gold_acc - fp32_acc),
              "golden_vs_torch_mismatching_samples": mismatches, "test_samples": int(len(d["y_test"])),
              "storage_ratio": st["ratio"], "weight_bits": st["weight_bits"], "fp32_bits": st["fp32_bits"],
              "bias_bits": st["bias_bits"], "nonzero": st["nonzero"], "weights": st["weights"],
              "seconds": seconds}
    model.meta.update({k: v for k, v in report.items() if k not in ("model", "method")})
    from sparrow.sw.numerics import state
    model.meta["numerics"] = state()
    return model, report


# --------------------------------------------------------------------------- your own model

def digits_data(name="digits-mlp", val_fraction=0.2):
    """The digits split as a :class:`~sparrow.sw.data.Data` of real inputs (pixel / 16) shaped for model ``name``.

    Validation: a stratified ``val_fraction`` of the training split
    (``train_test_split(..., random_state=0)``), so the budget search never
    selects on the test split.
    """
    from sklearn.model_selection import train_test_split
    from sparrow.sw import digits
    from sparrow.sw.data import check_data
    xtr, ytr, xte, yte = digits.load_split()
    idx = np.arange(len(ytr))
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=0, stratify=ytr)
    shape = (-1,) + digits.input_shape(name)

    def real(p):
        x = digits.quantize_inputs(p).astype(np.float32) * np.float32(2.0 ** digits.INPUT_SCALE_EXP)
        return x.reshape(shape)
    return check_data({"x_train": real(xtr[tr]), "y_train": ytr[tr], "x_val": real(xtr[va]), "y_val": ytr[va],
                       "x_test": real(xte), "y_test": yte}, "digits")


SEARCHED = ("density", "levels", "k")


def digits_search_setup(name, method, seed=0, epochs=FP32_EPOCHS):
    """(fp32 model, Data, overrides, start) of the budget search on a built-in digits model.

    The fp32 model is trained on the search's training part of the split
    (:func:`digits_data`); METHOD_CONFIGS' epochs and learning rates are the
    overrides, its densities / levels / k the first trial.
    """
    import torch
    from sparrow.sw import digits
    digits.set_threads(1)
    data = digits_data(name)
    fp32 = digits.make_model(name, seed=seed)
    digits.train(fp32, torch.as_tensor(data.x_train), torch.as_tensor(data.y_train), epochs=epochs, lr=3e-3,
                 seed=seed)
    hand = METHOD_CONFIGS.get((name, method), {})
    return (fp32, data, {k: v for k, v in hand.items() if k not in SEARCHED},
            {k: v for k, v in hand.items() if k in SEARCHED})


def _accuracy(model, x, y, batch=1024):
    import torch
    model.eval()
    xs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with torch.no_grad():
        pred = np.concatenate([model(xs[i:i + batch]).reshape(len(xs[i:i + batch]), -1).argmax(1).numpy()
                               for i in range(0, len(xs), batch)])
    return float((pred == y).mean())


def quant_outputs(qm, x):
    """int64 outputs of the fake-quantised torch forward run in float64 on real inputs x."""
    import copy
    import torch
    q = copy.deepcopy(qm).double().set_quant(True).eval()
    with torch.no_grad():
        out = q(torch.as_tensor(np.asarray(x, dtype=np.float64)))
    exp = q.qlayers()[-1].last_out_exp
    return (out / 2.0 ** exp).numpy().round().astype(np.int64)


def compress_model(model, data, method, *, max_drop=None, seed=0, overrides=None, name=None, trials=20,
                   objective="storage", cost=None, start=None, timeout=None, progress=True, log=None):
    """Import (or take) an fp32 model, compress it with ``method`` and export it; returns (Model, report).

    Parameters
    ----------
    model : path or nn.Sequential
        A ``.pt2`` (torch.export) or ``.onnx`` file (:func:`sparrow.sw.importer.import_model`;
        the import is checked against the file's own program on the data), or an
        ``nn.Sequential`` of supported layers taking [N, *input shape of the data].
    data : path, mapping or Data
        ``DATA.npz`` (:func:`sparrow.sw.data.load_data`) or its arrays.
    method : str
        A method of :data:`sparrow.sw.methods.METHODS`.
    max_drop : float or None
        Accuracy budget in pp of golden validation accuracy below fp32: search the
        method's per-layer settings (:func:`sparrow.sw.search.search`).  None: one
        run with the method's defaults and ``overrides``.
    seed : int
        Seeds torch (training) and the search.
    overrides : dict or None
        Options of the method's Config laid over its defaults.
    trials, objective, cost, start, timeout
        Of the search: trial count, "storage" or "cycles" (the name recorded), the
        cost callable (``cost(model) -> float``, None: storage bits), starting
        options, a time limit.

    Everything (import, data, labels against the model's outputs, options) is
    checked before any training; a problem raises SparrowError with one line.
    """
    import torch
    from sparrow.sw import digits
    from sparrow.sw.compressor import compress
    from sparrow.sw.data import Data, check_data, input_exp_for, load_data
    from sparrow.sw.golden import run_model
    from sparrow.sw.importer import import_model
    from sparrow.sw.methods import METHODS
    from sparrow.sw.golden import real_input_accuracy
    from sparrow.sw.search import search, searchable
    from sparrow.sw.storage import model_storage
    from sparrow.arrays import quantize_real
    t0 = time.time()
    numerics = digits.set_threads(1)
    if method not in METHODS:
        raise SparrowError(f"compress: unknown method {method!r} (known: {', '.join(METHODS)})")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
                                 or not 0 <= max_drop <= 100):
        raise SparrowError(f"compress: max_drop must be a number of percentage points in [0, 100], not {max_drop!r}")
    imported, check = None, None
    if isinstance(model, torch.nn.Module):
        fp32 = model.eval()
        source = type(model).__name__
    else:
        imported = import_model(model)
        fp32, source = imported.model, imported.source
    shape = imported.input_shape if imported else None
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        where = data
        data = load_data(data, shape)
    elif isinstance(data, Data):
        where = data.source
        data = check_data({k: v for k, v in vars(data).items() if k != "source" and v is not None}, where, shape)
    else:
        where = "data"
        data = check_data(data, where, shape)
    with torch.no_grad():
        classes = int(fp32.eval()(torch.zeros((1,) + data.input_shape)).numel())
    data = check_data({k: v for k, v in vars(data).items() if k != "source" and v is not None}, where,
                      data.input_shape, classes)
    if name is None:
        from pathlib import Path
        name = "model" if imported is None else Path(imported.source).stem or "model"
    input_exp = input_exp_for(data.x_train)
    try:
        base = METHODS[method].Config(input_shape=data.input_shape, input_exp=input_exp, name=name, seed=seed)
        base = base.replace(**(overrides or {}))
    except (ValueError, TypeError) as exc:
        raise SparrowError(f"compress: {exc}")
    split, x_eval, y_eval = data.eval_split()
    if imported is not None:
        xs = np.concatenate([data.x_val] + ([data.x_test] if data.x_test is not None else []))[:4096]
        check = imported.check(xs)
    fp32_val = _accuracy(fp32, data.x_val, data.y_val)
    fp32_eval = _accuracy(fp32, x_eval, y_eval)
    train = (torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))
    found = None
    if max_drop is not None and searchable(method):
        found = search(fp32, base, train, (data.x_val, data.y_val), fp32_val, max_drop=max_drop, trials=trials,
                       cost=cost, start=start, seed=seed, timeout=timeout, progress=progress, log=log)
        qm, out = found.qm, found.model
        cfg = base.replace(**{k: v for k, v in found.settings.items()})
    else:
        cfg = base
        bar = _bar(cfg.epochs, f"{name} {method}", progress)
        qm = compress(fp32, cfg, data=train, progress=bar)
        if bar:
            bar.close()
        out = qm.method.export(qm, name)
    seconds = time.time() - t0
    meta = {"method": method, "config": cfg.record(), "seed": seed, "source": source, "numerics": numerics,
            "data": {"train": int(len(data.y_train)), "val": int(len(data.y_val)),
                     "test": int(len(data.y_test)) if data.y_test is not None else 0}}
    out.meta.update(meta)
    if check is not None:
        out.meta["import_check"] = check
    codes = quantize_real(x_eval.reshape(len(x_eval), -1), out.input_scale_exp)
    y_gold = run_model(out, codes)
    gold_eval = float((y_gold.argmax(1) == y_eval).mean())
    gold_val = real_input_accuracy(out, data.x_val, data.y_val)
    ref = quant_outputs(qm, x_eval)
    mismatches = int((ref != y_gold.astype(np.int64)).any(axis=1).sum())
    st = model_storage(out)
    report = {"model": name, "method": method, "split": split, "fp32_val_accuracy": fp32_val,
              "golden_val_accuracy": gold_val, "val_delta_pp": 100 * (gold_val - fp32_val),
              "fp32_accuracy": fp32_eval, "golden_accuracy": gold_eval, "delta_pp": 100 * (gold_eval - fp32_eval),
              "golden_vs_torch_mismatching_samples": mismatches, "test_samples": int(len(y_eval)),
              "storage_ratio": st["ratio"], "weight_bits": st["weight_bits"], "fp32_bits": st["fp32_bits"],
              "bias_bits": st["bias_bits"], "nonzero": st["nonzero"], "weights": st["weights"],
              "input_scale_exp": int(input_exp), "seconds": seconds}
    if found is not None:
        report["search"] = {"max_drop_pp": max_drop, "objective": objective, "trials": trials, "met": found.met,
                            "chosen": found.settings, "chosen_run": found.best_run, "cost": found.cost,
                            "seconds": found.seconds, "runs": len(found.trace)}
        report["search_trace"] = found.trace
    out.meta.update({k: v for k, v in report.items() if k not in ("model", "method", "search_trace")})
    if found is not None:
        out.meta["search"]["trace"] = found.trace
    return out, report


def save_compressed(model, report, out):
    """Write the model directory ``out`` and, after a search, ``out/search.json`` (the report and the trace)."""
    import json
    from pathlib import Path
    from sparrow.modeldir import save_model
    save_model(model, out)
    if report.get("search_trace") is not None:
        doc = {k: v for k, v in report.items() if k != "search_trace"}
        doc["trace"] = report["search_trace"]
        (Path(out) / "search.json").write_text(json.dumps(doc, indent=1) + "\n")
    return out
