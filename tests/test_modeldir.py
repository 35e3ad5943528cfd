"""Model directory: round trip, validation messages, atomic save, and the golden CLI."""

import json

import numpy as np
import pytest

from sparrow import SparrowError
from sparrow.modeldir import load_model, save_model
from sparrow.sw.randmodel import random_layer, random_model
from clirun import sparrow as _cli


def _every_kind_model():
    rng = np.random.default_rng(0)
    layers = [
        random_layer("dense_conv2d", rng, name="c1", in_ch=1, out_ch=4, kh=3, kw=3, padding=1, relu=True),
        random_layer("sd_conv2d", rng, name="c2", in_ch=4, out_ch=8, kh=3, kw=3, padding=1, k=4, tiles=2),
        random_layer("bc_conv2d", rng, name="c3", in_ch=8, out_ch=8, kh=1, kw=1, padding=0, k=8),
        random_layer("maxpool2d", rng, name="p1"),
        random_layer("flatten", rng, name="f"),
        random_layer("sd_linear", rng, name="fc1", in_=32, out=16, k=4, z_bits=10, relu=True),
        random_layer("bc_linear", rng, name="fc2", in_=16, out=16, k=4),
        random_layer("dense_linear", rng, name="fc3", in_=16, out=10),
    ]
    return random_model(layers, (1, 4, 4), name="every-kind")


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model"
    save_model(_every_kind_model(), path)
    return path


def test_round_trip_every_kind(saved):
    orig = _every_kind_model()
    m = load_model(saved)
    assert m.name == "every-kind" and m.input_shape == (1, 4, 4) and m.path == saved
    assert [l.kind for l in m.layers] == [l.kind for l in orig.layers]
    assert [l.out_shape for l in m.layers] == [(4, 4, 4), (8, 4, 4), (8, 4, 4), (8, 2, 2), (32,), (16,), (16,), (10,)]
    for a, b in zip(m.layers, orig.layers):
        assert a.attrs == b.attrs
        assert sorted(a.params) == sorted(b.params)
        for key in a.params:
            assert a.params[key].dtype == b.params[key].dtype
            assert np.array_equal(a.params[key], b.params[key])
    assert m.layer("c2").attrs["in"] == 36 and m.layer("c2").attrs["out"] == 8
    assert m.layer("fc1").in_size == 32 and m.output_size == 10
    doc = json.loads((saved / "manifest.json").read_text())
    assert doc["format"] == "sparrow-model" and doc["version"] == 1
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        ["manifest.json", "c1.npz", "c2.npz", "c3.npz", "fc1.npz", "fc2.npz", "fc3.npz"])


def _edit_manifest(path, fn):
    doc = json.loads((path / "manifest.json").read_text())
    fn(doc)
    (path / "manifest.json").write_text(json.dumps(doc))


def _edit_npz(path, name, fn):
    with np.load(path / name) as f:
        arrays = {k: f[k] for k in f.files}
    fn(arrays)
    np.savez(path / name, **arrays)


def _layer(doc, name):
    return next(l for l in doc["layers"] if l["name"] == name)


MANIFEST_CASES = [
    (lambda d: d.update(format="onnx"), r"manifest.json: field 'format' is 'onnx'"),
    (lambda d: d.update(version=2), r"manifest.json: field 'version' is 2; this reader knows version 1"),
    (lambda d: _layer(d, "fc1").update(kind="sd_lstm"), r"layer 'fc1': field 'kind' has unknown value 'sd_lstm'"),
    (lambda d: _layer(d, "fc1").update(k=5), r"layer 'fc1' \(sd_linear\): field 'k' \(5\) does not divide in \(32\)"),
    (lambda d: _layer(d, "fc2").update(k=6), r"layer 'fc2' \(bc_linear\): field 'k' has value 6, not a power of two"),
    (lambda d: _layer(d, "fc2").update(ws_shift=7), r"layer 'fc2' \(bc_linear\): field 'ws_shift' has value 7 outside \[0, 6\]"),
    (lambda d: _layer(d, "c3").update(ws_shift=6), r"layer 'c3' \(bc_conv2d\): field 'ws_shift' has value 6 outside \[0, 5\]"),
    (lambda d: _layer(d, "fc3").update(out_shift=32), r"layer 'fc3' \(dense_linear\): field 'out_shift' has value 32 outside \[0, 31\]"),
    (lambda d: _layer(d, "fc1").update(basis_shift=-1), r"field 'basis_shift' has value -1 outside \[0, 31\]"),
    (lambda d: _layer(d, "fc1").update(z_bits=17), r"field 'z_bits' has value 17 outside \[8, 16\]"),
    (lambda d: _layer(d, "fc3").pop("relu"), r"layer 'fc3' \(dense_linear\): missing field 'relu'"),
    (lambda d: _layer(d, "fc3").update(relu=1), r"field 'relu' must be true or false"),
    (lambda d: _layer(d, "fc3").update(out=11), r"fc3.npz: layer 'fc3' \(dense_linear\): weight has shape \[10, 16\], expected \[11, 16\]"),
    (lambda d: _layer(d, "fc3").update(out_shfit=3), r"layer 'fc3' \(dense_linear\): unknown field 'out_shfit'"),
    (lambda d: _layer(d, "fc3").update(params="nope.npz"), r"nope.npz: layer 'fc3' \(dense_linear\): parameter file is missing"),
    (lambda d: _layer(d, "fc3").update(params="../x.npz"), r"field 'params' '../x.npz' must be a plain file name"),
    (lambda d: _layer(d, "fc2").update(name="fc1"), r"field 'name' 'fc1' is used twice"),
    (lambda d: _layer(d, "c1").update(in_ch=2), r"layer 'c1' \(dense_conv2d\): field 'in' is 9 but in_ch\*kh\*kw is 18"),
    (lambda d: [_layer(d, "c1").update(in_ch=2), _layer(d, "c1").pop("in")], r"layer 'c1' \(dense_conv2d\): field 'in_ch' is 2 but the input has 1 channels"),
    (lambda d: d["layers"].pop(4), r"layer 'fc1' \(sd_linear\): field 'in' is 32 but the layer's input has shape \[8, 2, 2\]"),
    (lambda d: d["input"].update(shape=[1, 4]), r"field 'input.shape' must be a list \[in\] or \[C, H, W\]"),
    (lambda d: d["input"].pop("scale_exp"), r"missing field 'input.scale_exp'"),
]


@pytest.mark.parametrize("edit,message", MANIFEST_CASES)
def test_bad_manifest_rejected_with_one_line(saved, edit, message):
    _edit_manifest(saved, edit)
    with pytest.raises(SparrowError, match=message) as info:
        load_model(saved)
    assert "\n" not in str(info.value)
    assert "manifest.json" in str(info.value) or ".npz" in str(info.value)


NPZ_CASES = [
    ("fc1.npz", lambda a: a["coef_exp"].__setitem__((3, 5), 9),
     r"fc1.npz: layer 'fc1' \(sd_linear\): coef_exp has value 9 outside \[0, 7\]"),
    ("fc1.npz", lambda a: a["coef_sign"].__setitem__((0, 0), 2), r"fc1.npz: layer 'fc1' \(sd_linear\): coef_sign has value 2 outside \[-1, 1\]"),
    ("fc1.npz", lambda a: a.update(bias=a["bias"].astype(np.int64)), r"fc1.npz: layer 'fc1' \(sd_linear\): bias has dtype int64, expected int32"),
    ("fc1.npz", lambda a: a.update(basis=np.zeros((3, 8, 4, 4), np.int8)), r"basis has 3 tiles, which does not divide out \(16\)"),
    ("fc1.npz", lambda a: a.pop("coef_exp"), r"fc1.npz: layer 'fc1' \(sd_linear\): missing array 'coef_exp'"),
    ("fc3.npz", lambda a: a.update(extra=np.zeros(3)), r"fc3.npz: layer 'fc3' \(dense_linear\): unknown array 'extra'"),
    ("c2.npz", lambda a: a.update(coef_sign=a["coef_sign"][:, :-1]), r"c2.npz: layer 'c2' \(sd_conv2d\): coef_sign has shape \[8, 35\], expected \[8, 36\]"),
    ("fc2.npz", lambda a: a.update(w=a["w"].astype(np.int16)), r"fc2.npz: layer 'fc2' \(bc_linear\): w has dtype int16, expected int8"),
]


@pytest.mark.parametrize("file,edit,message", NPZ_CASES)
def test_bad_params_rejected(saved, file, edit, message):
    _edit_npz(saved, file, edit)
    with pytest.raises(SparrowError, match=message):
        load_model(saved)


def test_missing_and_corrupt_files(saved, tmp_path):
    (saved / "c1.npz").write_bytes(b"not a zip")
    with pytest.raises(SparrowError, match=r"c1.npz: layer 'c1' \(dense_conv2d\): cannot read parameters"):
        load_model(saved)
    (saved / "manifest.json").write_text("{oops")
    with pytest.raises(SparrowError, match=r"manifest.json: not valid JSON"):
        load_model(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(SparrowError, match=r"manifest.json: file is missing"):
        load_model(saved)
    with pytest.raises(SparrowError, match=r"model directory does not exist"):
        load_model(tmp_path / "nowhere")


def test_save_validates_first_and_is_atomic(saved):
    before = sorted(p.name for p in saved.iterdir())
    bad = _every_kind_model()
    bad.layers[5].params["coef_exp"][0, 0] = 8
    with pytest.raises(SparrowError, match=r"fc1.npz: layer 'fc1' \(sd_linear\): coef_exp has value 8"):
        save_model(bad, saved)
    assert sorted(p.name for p in saved.iterdir()) == before
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".")] == []
    load_model(saved)


def test_golden_cli_hand_written_model(tmp_path):
    """A tiny model written by hand (plain json + numpy, no sparrow) through `sparrow golden`."""
    d = tmp_path / "hand"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({
        "format": "sparrow-model", "version": 1, "name": "hand",
        "input": {"shape": [4], "scale_exp": -4},
        "layers": [
            {"name": "fc1", "kind": "sd_linear", "in": 4, "out": 2, "k": 2, "basis_shift": 1,
             "out_shift": 1, "relu": True, "params": "fc1.npz"},
            {"name": "fc2", "kind": "dense_linear", "in": 2, "out": 2, "out_shift": 0, "relu": False,
             "params": "fc2.npz"}],
        "output": {"scale_exp": -3}}))
    np.savez(d / "fc1.npz",
             basis=np.array([[[[2, 0], [1, 1]], [[1, -1], [0, 2]]]], np.int8),      # [1, 2, 2, 2]
             coef_sign=np.array([[1, 0, -1, 1], [0, 1, 1, -1]], np.int8),
             coef_exp=np.array([[0, 7, 1, 2], [3, 0, 0, 1]], np.uint8),
             bias=np.array([3, -2], np.int32))
    np.savez(d / "fc2.npz", weight=np.array([[1, 2], [-3, 1]], np.int8), bias=np.array([0, 100], np.int32))
    x = np.array([[10, 20, 30, -40], [-1, -2, 3, 4]], np.int8)
    np.save(tmp_path / "x.npy", x)
    r = _cli("golden", d, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    # by hand, sample 0: z = rshift([20, 30, 30-(-40)... ]) computed below step by step
    # group 0: x=(10,20): b rows (2,0)->20, (1,1)->30 ; >>1 round: 10, 15
    # group 1: x=(30,-40): (1,-1)->70 ->35, (0,2)->-80 -> -40
    # acc0 = 3 + 10 - 35*2 + (-40)*4 = -217 -> rshift 1 = -108 (round half up of -108.5) -> relu 0
    # acc1 = -2 + 15 + 35 - (-40)*2 = 128 -> 64
    # fc2: [0*1 + 64*2, 0*-3 + 64 + 100] = [128 -> 127, 164 -> 127]
    # sample 1: group0 x=(-1,-2): -2 -> -1, -3 -> -1 (rounds -1.5 up to -1); group1 x=(3,4): -1 -> 0, 8 -> 4
    # acc0 = 3 + (-1) - 0 + 4*4 = 18 -> 9 ; acc1 = -2 + (-1) + 0 - 4*2 = -11 -> rshift(-11,1) = -5 -> relu 0
    # fc2: [9, -27 + 100 = 73]
    assert np.load(tmp_path / "y.npy").tolist() == [[127, 127], [9, 73]]
    assert np.load(tmp_path / "y.npy").dtype == np.int8


def test_golden_cli_errors_are_one_line(saved, tmp_path):
    np.save(tmp_path / "x64.npy", np.zeros((2, 16), np.int64))
    r = _cli("golden", saved, "--inputs", tmp_path / "x64.npy", "--out", tmp_path / "y.npy")
    assert r.returncode == 1 and "dtype int64, expected int8" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    np.save(tmp_path / "xbad.npy", np.zeros((2, 15), np.int8))
    r = _cli("golden", saved, "--inputs", tmp_path / "xbad.npy", "--out", tmp_path / "y.npy")
    assert r.returncode == 1 and "expected [N, 16] or [N, 1, 4, 4]" in r.stderr
    _edit_npz(saved, "fc1.npz", lambda a: a["coef_exp"].__setitem__((0, 0), 9))
    r = _cli("golden", saved, "--inputs", tmp_path / "xbad.npy", "--out", tmp_path / "y.npy")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "fc1.npz: layer 'fc1' (sd_linear): coef_exp has value 9 outside [0, 7]" in r.stderr
    assert not (tmp_path / "y.npy").exists()
