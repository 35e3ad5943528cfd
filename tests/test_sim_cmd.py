"""``sparrow sim``: hand-written model directories on the RTL == ``sparrow golden``."""

import json

import numpy as np
import pytest

from sparrow.cli import main
from sparrow.modeldir import save_model
from sparrow.sw.randmodel import random_layer, random_model


def _write_model(path, rng):
    """A two-layer model (sd_linear T=2 relu -> dense_linear) written by hand as numpy arrays."""
    path.mkdir()
    n_in, hid, n_out, k = 12, 10, 8, 3
    sign = rng.integers(-1, 2, size=(hid, n_in)) * (rng.random((hid, n_in)) < 0.4)
    np.savez(path / "fc1.npz",
             basis=rng.integers(-128, 128, size=(2, n_in // k, k, k)).astype(np.int8),
             coef_sign=sign.astype(np.int8),
             coef_exp=rng.integers(0, 8, size=(hid, n_in)).astype(np.uint8),
             bias=rng.integers(-3000, 3000, size=hid).astype(np.int32))
    np.savez(path / "fc2.npz",
             weight=rng.integers(-128, 128, size=(n_out, hid)).astype(np.int8),
             bias=rng.integers(-3000, 3000, size=n_out).astype(np.int32))
    layers = [
        {"name": "fc1", "kind": "sd_linear", "in": n_in, "out": hid, "k": k, "basis_shift": 6,
         "out_shift": 8, "relu": True, "params": "fc1.npz"},
        {"name": "fc2", "kind": "dense_linear", "in": hid, "out": n_out, "out_shift": 8,
         "relu": False, "params": "fc2.npz"},
    ]
    (path / "manifest.json").write_text(json.dumps({
        "format": "sparrow-model", "version": 1, "name": "hand", "input": {"shape": [n_in], "scale_exp": -4},
        "layers": layers, "output": {"scale_exp": -3}}))
    return n_in


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_sim_equals_golden(tmp_path, simulator, capsys):
    rng = np.random.default_rng(5)
    n_in = _write_model(tmp_path / "m", rng)
    x = rng.integers(-128, 128, size=(30, n_in)).astype(np.int8)
    x[0], x[1] = -128, 127
    np.save(tmp_path / "x.npy", x)
    assert main(["golden", str(tmp_path / "m"), "--inputs", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "g.npy")]) == 0
    args = ["sim", str(tmp_path / "m"), "--inputs", str(tmp_path / "x.npy"),
            "--out", str(tmp_path / "y.npy"), "--pes", "3"]
    if simulator != "verilator":
        args += ["--simulator", simulator]
    assert main(args) == 0
    y, g = np.load(tmp_path / "y.npy"), np.load(tmp_path / "g.npy")
    assert y.dtype == np.int8 and y.shape == (30, 8)
    np.testing.assert_array_equal(y, g)
    assert len(np.unique(y)) > 5          # not a constant output


def _one_line_error(capsys, argv):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_sim_errors(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n_in = _write_model(tmp_path / "m", rng)
    m = str(tmp_path / "m")
    np.save(tmp_path / "f.npy", np.zeros((2, n_in), np.int32))
    np.save(tmp_path / "s.npy", np.zeros((2, n_in + 1), np.int8))
    np.save(tmp_path / "ok.npy", np.zeros((2, n_in), np.int8))
    err = _one_line_error(capsys, ["sim", m, "--inputs", str(tmp_path / "f.npy"), "--out", str(tmp_path / "y.npy")])
    assert "dtype int32, expected int8" in err
    err = _one_line_error(capsys, ["sim", m, "--inputs", str(tmp_path / "s.npy"), "--out", str(tmp_path / "y.npy")])
    assert "inputs have shape [2, 13], expected [N, 12]" in err
    err = _one_line_error(capsys, ["sim", m, "--inputs", str(tmp_path / "ok.npy"), "--out",
                                   str(tmp_path / "y.npy"), "--pes", "0"])
    assert "--pes must be between 1 and 1024, not 0" in err
    assert not (tmp_path / "y.npy").exists()


def test_sim_unsupported_kind(tmp_path, capsys, monkeypatch):
    """A valid model with a layer kind that no engine runs is refused up front (every kind has
    an engine now: remove one from the registry)."""
    from sparrow.hw.engines import ENGINES
    monkeypatch.delitem(ENGINES, "dense_conv2d")
    rng = np.random.default_rng(2)
    layers = [random_layer("dense_conv2d", rng, name="conv", in_ch=2, out_ch=3),
              random_layer("flatten", rng, name="flat"),
              random_layer("dense_linear", rng, name="fc", in_=48, out=4)]
    save_model(random_model(layers, (2, 4, 4)), tmp_path / "m")
    np.save(tmp_path / "ok.npy", np.zeros((2, 2, 4, 4), np.int8))
    err = _one_line_error(capsys, ["sim", str(tmp_path / "m"), "--inputs", str(tmp_path / "ok.npy"),
                                   "--out", str(tmp_path / "y.npy")])
    assert "layer 'conv': kind 'dense_conv2d' has no RTL engine (supported: sd_linear, dense_linear, " \
        "bc_linear, sd_conv2d, bc_conv2d, maxpool2d, flatten)" in err
    assert not (tmp_path / "y.npy").exists()


def test_sim_new_weights_reuse_the_build(tmp_path, capsys):
    """A model with new values of the same structure runs on the cached simulator (no compile)."""
    rng = np.random.default_rng(5)
    n_in = _write_model(tmp_path / "a", rng)
    x = rng.integers(-128, 128, size=(8, n_in)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text((tmp_path / "a" / "manifest.json").read_text())
    fc1, fc2 = np.load(tmp_path / "a" / "fc1.npz"), np.load(tmp_path / "a" / "fc2.npz")
    np.savez(tmp_path / "b" / "fc1.npz", basis=-fc1["basis"].clip(-127, 127),
             coef_sign=-fc1["coef_sign"], coef_exp=(7 - fc1["coef_exp"]).astype(np.uint8),
             bias=fc1["bias"] // 3)
    np.savez(tmp_path / "b" / "fc2.npz", weight=fc2["weight"][::-1].copy(), bias=-fc2["bias"])
    outs = []
    for name in ("a", "b"):
        args = ["sim", str(tmp_path / name), "--inputs", str(tmp_path / "x.npy"),
                "--out", str(tmp_path / f"y{name}.npy"), "--pes", "3"]
        assert main(args) == 0
        outs.append(capsys.readouterr().out)
        assert main(["golden", str(tmp_path / name), "--inputs", str(tmp_path / "x.npy"),
                     "--out", str(tmp_path / f"g{name}.npy")]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / f"y{name}.npy"),
                                      np.load(tmp_path / f"g{name}.npy"))
    assert "cached build" in outs[1], outs[1]
    assert not np.array_equal(np.load(tmp_path / "ya.npy"), np.load(tmp_path / "yb.npy"))
