"""The digits flow end to end: fp32 training, compression, export, checks, report.

Used by ``sparrow compress`` and ``bench/bench_compress.py``.
"""

import time

import numpy as np

from sparrow import SparrowError

__all__ = ["FP32_EPOCHS", "METHOD_CONFIGS", "train_fp32", "digits_config", "compress_digits", "golden_accuracy",
           "torch_quant_outputs"]

FP32_EPOCHS = 60

# The per-model settings measured by bench/bench_compress.py, over the defaults of each method's Config.
METHOD_CONFIGS = {
    ("digits-mlp", "dense-int8"): {"qat_epochs": 20},
    ("digits-mlp", "smartdeal"): {"prune_epochs": 60, "fix_epochs": 30, "qat_epochs": 10, "qat_lr": 1e-4, "levels": 4,
                                  "density": {"fc1": 0.12, "fc2": 0.4}, "freeze_window": True, "permute": True},
    # 4 exponent levels (3-bit codes) buy denser layers than 8 (4-bit codes) at the same storage
    ("digits-mlp", "admm"): {"admm_epochs": 60, "retrain_epochs": 60, "retrain_lr": 2e-3, "qat_epochs": 10,
                             "qat_lr": 1e-4, "levels": 4, "density": {"fc1": 0.09, "fc2": 0.47}, "rho": 1e-2,
                             "rho_growth": 1.1, "freeze_window": True, "permute": True},
    ("digits-mlp", "circulant"): {"epochs": 60, "qat_epochs": 20},
    ("digits-cnn", "dense-int8"): {"qat_epochs": 10},
    # k = 1 (a per-input basis): a k x k basis per group of 144 conv2 inputs would cost more than 1/30 of fp32
    ("digits-cnn", "smartdeal"): {"prune_epochs": 40, "fix_epochs": 20, "qat_epochs": 10, "k": 1,
                                  "density": {"conv1": 1.0, "conv2": 0.115, "fc1": 0.5}},
    ("digits-cnn", "admm"): {"admm_epochs": 40, "retrain_epochs": 60, "retrain_lr": 2e-3, "qat_epochs": 10,
                             "qat_lr": 1e-4, "levels": 4, "density": {"conv1": 1.0, "conv2": 0.115, "fc1": 0.35},
                             "rho": 1e-2, "rho_growth": 1.1, "freeze_window": True, "permute": True},
    ("digits-cnn", "circulant"): {"epochs": 60, "qat_epochs": 10, "k": 8},
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
    return base.replace(**METHOD_CONFIGS.get((name, method), {})).replace(**(overrides or {}))


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
    return model, report
