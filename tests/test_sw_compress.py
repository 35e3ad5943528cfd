"""Compression end to end on digits: golden == fake-quantised torch forward on the whole test split."""

import numpy as np
import pytest
import torch

from sparrow import SparrowError
from sparrow.modeldir import load_model, save_model
from sparrow.sw.pipeline import compress_digits
from clirun import sparrow as _cli

FAST = {
    "dense-int8": {"qat_epochs": 2},
    "smartdeal": {"prune_epochs": 4, "fix_epochs": 1, "qat_epochs": 2, "density": 0.3},
    "admm": {"admm_epochs": 3, "retrain_epochs": 1, "qat_epochs": 2, "density": 0.3},
    "circulant": {"epochs": 2, "qat_epochs": 2},
}


@pytest.mark.parametrize("name,method", [
    ("digits-mlp", "dense-int8"), ("digits-mlp", "smartdeal"), ("digits-mlp", "admm"),
    ("digits-cnn", "smartdeal"), ("digits-cnn", "dense-int8"),
])
def test_golden_equals_fake_quant_torch_on_whole_test_split(name, method, tmp_path):
    model, rep = compress_digits(name, method, FAST[method], progress=False, fp32_epochs=15)
    assert rep["test_samples"] == 360
    assert rep["golden_vs_torch_mismatching_samples"] == 0
    assert rep["golden_accuracy"] > 0.8
    save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    kinds = [l.kind for l in back.layers]
    if method in ("smartdeal", "admm"):
        assert {k for k in kinds if k not in ("maxpool2d", "flatten")} <= {"sd_linear", "sd_conv2d"}
    if name == "digits-cnn":
        assert kinds[1:3] == ["maxpool2d", kinds[2]] and "flatten" in kinds
    if method == "admm":
        for l in (l for l in back.layers if l.has_params):
            assert l.attrs["k"] == 1 and l.attrs["basis_shift"] == 6 and np.all(l.params["basis"] == 64)
    if method in ("smartdeal", "admm"):
        # P x 1 blocks from row 0 (a short last block when P does not divide the rows): few stored
        for l in (l for l in back.layers if l.has_params):
            p = back.meta["blocks"][l.name]
            nz = l.params["coef_sign"] != 0
            stored = np.array([nz[r:r + p].any(axis=0) for r in range(0, l.attrs["out"], p)])
            assert stored.shape == (-(-l.attrs["out"] // p), l.attrs["in"])
            assert stored.mean() < 0.75


def test_admm_options_keep_golden_equal_to_torch():
    # 4 exponent levels, per-layer density, frozen window and channel permutation (conv -> conv, conv -> fc)
    cfg = {**FAST["admm"], "levels": 4, "density": {"conv1": 0.5, "conv2": 0.2, "fc1": 0.5},
           "freeze_window": True, "permute": True, "retrain_lr": 2e-3, "qat_lr": 1e-4}
    model, rep = compress_digits("digits-cnn", "admm", cfg, progress=False, fp32_epochs=15)
    assert rep["golden_vs_torch_mismatching_samples"] == 0
    assert rep["golden_accuracy"] > 0.8
    for l in (l for l in model.layers if l.has_params):
        used = np.unique(l.params["coef_exp"][l.params["coef_sign"] != 0])
        assert used.size <= 4 and used.max() <= 3


def _ideal_circulant_layer(layer, x):
    """docs/format.md, bc_linear: the exact integer circulant product, shifted, saturated, ReLU.

    Block (i, j) row r col c holds w[i, j, (r - c) mod k]; y = sat8(rshift(bias + W x, out_shift)),
    rshift(v, s) = floor((v + 2^(s-1)) / 2^s).
    """
    a, w = layer.attrs, layer.params["w"].astype(np.int64)
    k, s = a["k"], a["out_shift"]
    dense = np.zeros((a["out"], a["in"]), np.int64)
    for i in range(a["out"] // k):
        for j in range(a["in"] // k):
            for r in range(k):
                for c in range(k):
                    dense[i * k + r, j * k + c] = w[i, j, (r - c) % k]
    acc = x.astype(np.int64) @ dense.T + layer.params["bias"].astype(np.int64)
    y = acc if s == 0 else np.floor_divide(acc + (1 << (s - 1)), 1 << s)
    y = np.clip(y, -128, 127)
    return np.maximum(y, 0) if a["relu"] else y


def test_circulant_mlp_golden_is_within_1_lsb_of_the_exact_circulant_product():
    from sparrow.sw import golden
    from sparrow.sw.digits import load_split, quantize_inputs
    model, rep = compress_digits("digits-mlp", "circulant", FAST["circulant"], progress=False, fp32_epochs=15)
    assert [l.kind for l in model.layers] == ["bc_linear", "dense_linear"]
    assert rep["golden_accuracy"] > 0.6
    _, _, xte, _ = load_split()
    x = quantize_inputs(xte).astype(np.int64)
    fc1 = model.layers[0]
    fft = golden.layer_forward(fc1, x).astype(np.int64)      # the fixed-point FFT datapath
    err = np.abs(fft - _ideal_circulant_layer(fc1, x))
    exact, within1 = (err == 0).mean(), (err <= 1).mean()
    print(f"bc fc1 on {x.shape[0]} test inputs: {100 * exact:.2f}% exact, {100 * within1:.2f}% within 1 LSB, "
          f"max error {err.max()} LSB")
    assert exact > 0.9 and within1 == 1.0


def test_compress_rejects_bad_config():
    from sparrow.sw import compress
    from sparrow.sw.methods import DenseInt8Config
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    with pytest.raises(SparrowError, match="unsupported layer Tanh"):
        compress(net, DenseInt8Config(input_shape=(4,), input_exp=-6))
    with pytest.raises(SparrowError, match="unsupported layer Tanh"):
        compress(net, {"method": "dense-int8", "input_shape": (4,), "input_exp": -6})
    with pytest.raises(SparrowError, match="unknown method 'pruned'"):
        compress(net, {"method": "pruned", "input_shape": (4,), "input_exp": -6})
    with pytest.raises(SparrowError, match="config needs 'input_exp'"):
        compress(net, {"method": "dense-int8", "input_shape": (4,)})
    with pytest.raises(ValueError, match="dense-int8 has no option 'density'"):
        compress(net, {"method": "dense-int8", "input_shape": (4,), "input_exp": -6, "density": 0.5})


def test_compress_one_call_with_a_method_config():
    from sparrow.sw import compress
    from sparrow.sw.methods import SmartDeal, SmartDealConfig
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    x, y = torch.rand(64, 8), torch.randint(0, 4, (64,))
    cfg = SmartDealConfig(input_shape=(8,), input_exp=-6, prune_epochs=2, fix_epochs=1, qat_epochs=1, density=0.5)
    qm = compress(net, cfg, data=(x, y))
    assert isinstance(qm.method, SmartDeal) and qm.config is cfg and qm.quant
    model = qm.method.export(qm)
    assert [l.kind for l in model.layers] == ["sd_linear", "sd_linear"]
    assert cfg.density == 0.5 and cfg.record()["density"] == 0.5      # the configuration is unchanged


def test_compress_eval_golden_cli(tmp_path):
    out = tmp_path / "mlp"
    r = _cli("compress", "--model", "digits-mlp", "--method", "dense-int8", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "0 of 360 test samples differ" in r.stdout
    model = load_model(out)
    r = _cli("eval", out)
    assert r.returncode == 0, r.stderr
    acc = 100 * model.meta["golden_accuracy"]
    assert f"golden int8 {acc:.2f}%" in r.stdout and "fp32" in r.stdout
    from sparrow.sw.digits import load_split, quantize_inputs
    _, _, xte, yte = load_split()
    np.save(tmp_path / "x.npy", quantize_inputs(xte[:20]))
    r = _cli("golden", out, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (20, 10) and y.dtype == np.int8
    r = _cli("compress", "--model", "digits-mlp", "--method", "admm", "--density", "1.5", "--out", out)
    assert r.returncode == 2 and "density must be in (0, 1]" in r.stderr
    r = _cli("compress", "--model", "digits-mlp", "--method", "admm", "--block", "5000", "--out", out)
    assert r.returncode == 1 and "compress: block must be between 1 and 4096, not 5000" in r.stderr
    r = _cli("compress", "--model", "digits-mlp", "--method", "admm", "--dense-lanes", "4", "--out", out)
    assert r.returncode == 1 and "--dense-lanes: only used with --break-even auto" in r.stderr
    (out / "fc1.npz").unlink()
    r = _cli("eval", out)
    assert r.returncode == 1 and "fc1.npz: layer 'fc1' (dense_linear): parameter file is missing" in r.stderr
    assert "Traceback" not in r.stderr


def test_break_even_auto_is_resolved_by_the_command_from_the_cycle_model():
    from sparrow.cli.compress import break_even_ratios
    from sparrow.hw.cycle_model import break_even_ratio
    cheap = break_even_ratios("digits-mlp", "admm", {"block": 8}, dense_lanes=4096)
    assert set(cheap) == {"fc1", "fc2"} and cheap["fc1"] == 1.0      # 4096 MACs: pruning fc1 never pays
    # fc1 is 64 -> 128 with P = 8; fc2 is 128 -> 10, P = the largest divisor of 10 at most 8
    assert cheap["fc1"] == break_even_ratio(64, 128, 8, 4096) and cheap["fc2"] == break_even_ratio(128, 10, 5, 4096)
    assert break_even_ratios("digits-mlp", "circulant") == {}
