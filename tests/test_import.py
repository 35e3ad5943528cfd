"""Your own model: .pt2 and .onnx import (equal to the original), refused ops, data checks, compress -> golden -> sim."""


import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import sparrow
from sparrow import SparrowError
from sparrow.modeldir import load_model
from sparrow.sw.data import check_data, load_data
from sparrow.sw.importer import import_model
from sparrow.sw.randmodel import synthetic_task, train_float, write_onnx
from clirun import sparrow as _cli

FAST = {"prune_epochs": 3, "fix_epochs": 1, "qat_epochs": 2}


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """Data, a .pt2 MLP with BatchNorm1d and dropout, an .onnx MLP (MatMul+Add, BN), an .onnx CNN (BN, Reshape)."""
    d = tmp_path_factory.mktemp("user")
    data = synthetic_task(seed=0)
    np.savez(d / "data.npz", **data)
    torch.manual_seed(0)
    mlp = train_float(nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                                    nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)), data, epochs=15)
    ep = torch.export.export(mlp, (torch.zeros(4, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, d / "mlp.pt2")
    torch.manual_seed(1)
    omlp = train_float(nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                                     nn.Identity(), nn.Linear(16, 5)), data, epochs=15)
    write_onnx(omlp, (16,), d / "mlp.onnx", matmul_add=True)
    img = synthetic_task(seed=2, sizes=(300, 100, 100), image=(2, 6, 6))
    np.savez(d / "img.npz", **img)
    torch.manual_seed(2)
    cnn = train_float(nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.ReLU(),
                                    nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5)), img, epochs=5)
    write_onnx(cnn, (2, 6, 6), d / "cnn.onnx", flatten_as_reshape=True, batch=4)
    return {"dir": d, "data": data, "img": img, "mlp": mlp, "omlp": omlp, "cnn": cnn}


# --------------------------------------------------------------------------- import equals the original

def test_pt2_import_equals_the_exported_program(user):
    imp = import_model(user["dir"] / "mlp.pt2")
    assert [type(m).__name__ for m in imp.model] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]   # BN folded
    assert imp.input_shape == (16,)
    x = user["data"]["x_val"]
    with torch.no_grad():
        want = user["mlp"](torch.as_tensor(x)).numpy()       # the original module, independent of the importer
    got = imp.outputs(x)
    assert np.abs(got - want).max() < 1e-4
    res = imp.check(x)
    assert res["max_abs_diff"] <= res["tolerance"] and res["argmax_agree"] == len(x)


@pytest.mark.parametrize("name,split", [("mlp.onnx", "data"), ("cnn.onnx", "img")])
def test_onnx_import_equals_onnxruntime(user, name, split):
    import onnxruntime as ort
    imp = import_model(user["dir"] / name)
    x = user[split]["x_val"]
    sess = ort.InferenceSession(str(user["dir"] / name), providers=["CPUExecutionProvider"])
    fixed = name == "cnn.onnx"           # written with batch 4: run it 4 at a time
    n = len(x) - len(x) % 4 if fixed else len(x)
    want = np.concatenate([sess.run(None, {"input": x[i:i + 4]})[0] for i in range(0, n, 4)]) if fixed else \
        sess.run(None, {"input": x})[0]
    got = imp.outputs(x[:n])
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    assert imp.check(x)["samples"] == len(x)     # the reader's own check pads the last batch
    if name == "cnn.onnx":
        kinds = [type(m).__name__ for m in imp.model]
        # BN folded into conv1; the ReLU after the pool moved before it
        assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten", "Linear"]


def test_import_check_refuses_a_model_that_differs(user):
    imp = import_model(user["dir"] / "mlp.onnx")
    with torch.no_grad():
        imp.model[0].weight[0, 0] += 1.0
    with pytest.raises(SparrowError, match=r"mlp.onnx: the imported model differs from the onnxruntime program by "
                                           r"up to .* \(tolerance .*\) on 200 samples"):
        imp.check(user["data"]["x_val"])


# --------------------------------------------------------------------------- refused graphs: one line each

class _Op(nn.Module):
    """A module written to ONNX as one op (``write_onnx`` calls ``onnx_node``)."""

    def __init__(self, op, extra=None, **attrs):
        super().__init__()
        self.op, self.extra, self.attrs = op, extra or {}, attrs

    def forward(self, x):
        return x

    def onnx_node(self, name, x, y):
        ins = [x] + [f"{name}.{k}" for k in self.extra]
        return [helper.make_node(self.op, ins, [y], name=name, **self.attrs)], \
            {f"{name}.{k}": v for k, v in self.extra.items()}


def _onnx(tmp_path, seq, shape=(16,), **kw):
    return write_onnx(seq, shape, tmp_path / "m.onnx", **kw)


def _lin(i=16, o=8):
    return nn.Linear(i, o)


@pytest.mark.parametrize("seq,shape,message", [
    (lambda: nn.Sequential(_lin(), _Op("Sigmoid"), _lin(8, 4)), (16,),
     "m.onnx: node 'n1' (op Sigmoid, node 2 of 3): unsupported operator (supported: Gemm, MatMul+Add, Conv, Relu, "
     "MaxPool, Flatten, Reshape, BatchNormalization, Dropout, Identity, Constant)"),
    (lambda: nn.Sequential(_lin(), nn.ReLU(), nn.BatchNorm1d(8)), (16,),
     "m.onnx: node 'n2' (op BatchNormalization, node 3 of 3): a batch norm that does not follow a Linear or Conv "
     "layer directly (cannot fold it)"),
    (lambda: nn.Sequential(_lin(), nn.ReLU(), _Op("Add", {"b": np.ones(8, np.float32)})), (16,),
     "m.onnx: node 'n2' (op Add, node 3 of 3): an Add that does not add a constant bias right after a MatMul"),
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), _lin(16, 3)), (2, 4, 4),
     "m.onnx: node 'n0' (op Conv, node 1 of 3): groups 2 (only 1)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.Flatten(), _lin(16, 3)), (1, 6, 6),
     "m.onnx: node 'n0' (op Conv, node 1 of 3): dilation [2, 2] (only 1)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, stride=(1, 2)), nn.Flatten(), _lin(32, 3)), (1, 6, 6),
     "m.onnx: node 'n0' (op Conv, node 1 of 3): stride [1, 2] differs between directions"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), _Op("MaxPool", kernel_shape=[2, 2], strides=[2, 2],
                                                    pads=[1, 1, 1, 1]), nn.Flatten(), _lin(36, 3)), (1, 6, 6),
     "m.onnx: node 'n1' (op MaxPool, node 2 of 4): padding, dilation or ceil mode (only plain max pooling)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), _Op("Reshape", {"s": np.array([4, -1], np.int64)}), _lin(16, 3)),
     (1, 6, 6), "m.onnx: node 'n1' (op Reshape, node 2 of 3): a reshape to [4, -1] (only [N, -1] or [N, 64]: "
                "flatten)"),
    (lambda: nn.Sequential(_Op("Gemm", {"w": np.ones((16, 8), np.float32)}, transA=1)), (16,),
     "m.onnx: node 'n0' (op Gemm, node 1 of 1): transA = 1 (only x @ W)"),
    (lambda: nn.Sequential(_lin(), nn.MaxPool2d(2)), (16,),
     "m.onnx: node 'n1' (op MaxPool, node 2 of 2): max pooling of a [8] activation (needs [C, H, W])"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), _lin(4, 3)), (1, 6, 6),
     "m.onnx: node 'n1' (op Gemm, node 2 of 2): a linear layer on a [4, 4, 4] activation (flatten it first)"),
    (lambda: nn.Sequential(nn.ReLU(), _lin()), (16,),
     "m.onnx: node 'n0' (op Relu, node 1 of 2): a ReLU that does not follow a Linear or Conv layer"),
])
def test_onnx_refusals_are_one_line_naming_node_op_and_position(tmp_path, seq, shape, message):
    path = _onnx(tmp_path, seq(), shape)
    with pytest.raises(SparrowError) as exc:
        import_model(path)
    assert str(exc.value) == f"{path.parent}/{message}"
    assert "\n" not in str(exc.value)


def test_onnx_branch_and_input_type_are_refused(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.ones(16, np.float32))
    nodes = [helper.make_node("Gemm", ["x", "w"], ["a"], name="fc"),
             helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Add", ["a", "b"], ["c"], name="skip")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 4])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "res.onnx")
    with pytest.raises(SparrowError, match=r"res.onnx: node 'r' \(op Relu, node 2 of 3\): the previous layer's "
                                           r"output is used more than once \(branches are not supported\)"):
        import_model(tmp_path / "res.onnx")
    g = helper.make_graph(nodes[:1], "g", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 4])],
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "i8.onnx")
    with pytest.raises(SparrowError, match="i8.onnx: input 'x' is INT8; sparrow imports fp32 models"):
        import_model(tmp_path / "i8.onnx")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) + x


@pytest.mark.parametrize("module,message", [
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3)),
     "node 'sigmoid' (op aten.sigmoid.default, node 2 of 3): unsupported operator"),
    (lambda: nn.Sequential(_Residual(), nn.ReLU()),
     "node 'linear' (op aten.linear.default, node 1 of 3): the previous layer's output is used more than once "
     "(branches are not supported)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(8, 3)),
     "node 'conv2d' (op aten.conv2d.default, node 1 of 3): dilation [2, 2] (only 1)"),
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.Tanh()),
     "node 'tanh' (op aten.tanh.default, node 2 of 2): unsupported operator"),
])
def test_pt2_refusals_are_one_line(tmp_path, module, message):
    m = module().eval()
    shape = (1, 1, 6, 6) if isinstance(m[0], nn.Conv2d) else (2, 8)
    torch.export.save(torch.export.export(m, (torch.zeros(shape),)), tmp_path / "m.pt2")
    with pytest.raises(SparrowError) as exc:
        import_model(tmp_path / "m.pt2")
    assert str(exc.value).startswith(f"{tmp_path}/m.pt2: {message}")
    assert "\n" not in str(exc.value)


def test_unreadable_or_unknown_model_files(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    (tmp_path / "x.pt2").write_bytes(b"not a zip")
    (tmp_path / "x.h5").write_bytes(b"")
    for name, msg in (("x.onnx", "not an ONNX model"), ("x.pt2", "not a torch.export program"),
                      ("x.h5", "unknown model file type '.h5' (.pt2 from torch.export, or .onnx)"),
                      ("none.onnx", "model file does not exist")):
        with pytest.raises(SparrowError, match=f"{name}: {msg}".replace("(", r"\(").replace(")", r"\)")):
            import_model(tmp_path / name)


# --------------------------------------------------------------------------- data checks: one line each

def _bad(data, **change):
    d = dict(data)
    for k, v in change.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


@pytest.mark.parametrize("change,message", [
    ({"y_val": None}, "missing array 'y_val' (needs x_train, y_train, x_val, y_val; optional x_test, y_test)"),
    ({"z": np.zeros(3)}, "unknown array 'z' (known: x_train, y_train, x_val, y_val, x_test, y_test)"),
    ({"y_test": None}, "x_test without y_test"),
    ({"x_train": np.zeros((600, 16), bool)}, "x_train has dtype bool, expected float (or integer) input values"),
    ({"x_val": np.zeros(200, np.float32)}, "x_val has shape [200], expected [N, *input shape] with N >= 1"),
    ({"x_val": np.zeros((200, 15), np.float32)}, "x_val has samples of shape [15], expected [16] (the model's input "
                                                 "shape)"),
    ({"x_test": np.full((200, 16), np.nan, np.float32)}, "x_test holds NaN or infinite values (first in sample 0)"),
    ({"y_train": np.zeros(600, np.float32)}, "y_train has dtype float32, expected integer class labels"),
    ({"y_train": np.zeros(599, np.int64)}, "y_train has shape [599], expected [600] (one label per sample of x_train)"),
    ({"y_val": np.full(200, 5)}, "y_val has label 5 outside [0, 5) (the model has 5 outputs)"),
    ({"y_test": np.full(200, -1)}, "y_test has label -1 outside [0, 5) (the model has 5 outputs)"),
])
def test_bad_data_is_one_line(user, tmp_path, change, message):
    np.savez(tmp_path / "d.npz", **_bad(user["data"], **change))
    with pytest.raises(SparrowError) as exc:
        load_data(tmp_path / "d.npz", (16,), 5)
    assert str(exc.value) == f"{tmp_path}/d.npz: {message}"


def test_data_file_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.npz").write_bytes(b"garbage")
    with pytest.raises(SparrowError, match="a.npy: expected an .npz archive of arrays, got one .npy array"):
        load_data(tmp_path / "a.npy")
    with pytest.raises(SparrowError, match="b.npz: not a readable .npz archive"):
        load_data(tmp_path / "b.npz")
    with pytest.raises(SparrowError, match="c.npz: data file does not exist"):
        load_data(tmp_path / "c.npz")
    assert check_data(synthetic_task(sizes=(5, 3, 2))).eval_split()[0] == "test"


def test_cli_refuses_bad_model_and_data_before_training(user, tmp_path):
    np.savez(tmp_path / "bad.npz", **_bad(user["data"], y_val=np.full(200, 7)))
    out = tmp_path / "out"
    r = _cli("compress", "--model", user["dir"] / "mlp.onnx", "--data", tmp_path / "bad.npz", "--method",
             "smartdeal", "--out", out, "--quiet")
    assert r.returncode == 1 and r.stderr.strip() == (f"sparrow compress: error: {tmp_path}/bad.npz: y_val has "
                                                      "label 7 outside [0, 5) (the model has 5 outputs)")
    path = _onnx(tmp_path, nn.Sequential(_lin(), _Op("Softmax")))
    r = _cli("compress", "--model", path, "--data", user["dir"] / "data.npz", "--method", "admm", "--out", out)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "node 'n1' (op Softmax, node 2 of 2): unsupported operator" in r.stderr
    r = _cli("compress", "--model", user["dir"] / "mlp.onnx", "--method", "admm", "--out", out)
    assert r.returncode == 1 and "--data DATA.npz is needed with a model file" in r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- compress -> golden

def _codes(x, e):
    """docs/format.md "Inputs", written out: clamp(floor(x / 2^e + 1/2), -128, 127)."""
    return np.clip(np.floor(x.astype(np.float64) * 2.0 ** -e + 0.5), -128, 127).astype(np.int8)


def test_onnx_dense_int8_through_the_cli_golden_and_eval(user, tmp_path):
    out = tmp_path / "m"
    r = _cli("compress", "--model", user["dir"] / "mlp.onnx", "--data", user["dir"] / "data.npz", "--method",
             "dense-int8", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "mlp.onnx equals its onnxruntime program on 400 samples" in r.stdout
    assert "0 of 200 test samples differ" in r.stdout
    m = load_model(out)
    x = user["data"]["x_test"]
    assert m.input_scale_exp == -5        # max |x| < 2.5 <= 127 * 2^-5 = 3.97, > 127 * 2^-6
    assert m.meta["import_check"]["argmax_agree"] == 400
    np.save(tmp_path / "xf.npy", x[:16])
    np.save(tmp_path / "xi.npy", _codes(x[:16], m.input_scale_exp))
    for f in ("xf", "xi"):
        r = _cli("golden", out, "--inputs", tmp_path / f"{f}.npy", "--out", tmp_path / f"y{f}.npy")
        assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "yxf.npy"), np.load(tmp_path / "yxi.npy"))
    r = _cli("eval", out, "--data", user["dir"] / "data.npz")
    assert r.returncode == 0, r.stderr
    assert f"golden int8 {100 * m.meta['golden_accuracy']:.2f}%" in r.stdout and "test split (200 samples)" in r.stdout


@pytest.mark.parametrize("model,method", [("mlp.pt2", "smartdeal"), ("mlp.onnx", "admm"), ("mlp.pt2", "circulant")])
def test_user_models_compress_and_golden_equals_fake_quant_torch(user, tmp_path, model, method):
    options = {"smartdeal": {**FAST, "density": 0.3}, "admm": {"admm_epochs": 3, "retrain_epochs": 1,
                                                              "qat_epochs": 2, "density": 0.3},
               "circulant": {"epochs": 2, "qat_epochs": 2, "k": 8}}[method]
    m, rep = sparrow.compress(user["dir"] / model, user["dir"] / "data.npz", method, out=tmp_path / "m",
                              max_drop=None, **options)
    assert rep["golden_vs_torch_mismatching_samples"] == 0 and rep["test_samples"] == 200
    assert rep["golden_accuracy"] > 0.4      # 5 classes; a few epochs only: bit-exactness is the point
    back = load_model(tmp_path / "m")
    assert back.meta["method"] == method and back.meta["import_check"]["samples"] == 400
    kinds = {l.kind for l in back.layers}
    assert kinds <= ({"bc_linear", "dense_linear"} if method == "circulant" else {"sd_linear"})
    # the same model directory on the RTL: float inputs in, bit-exact with golden on both simulators
    np.save(tmp_path / "x.npy", user["data"]["x_test"][:12])
    r = _cli("golden", tmp_path / "m", "--inputs", tmp_path / "x.npy", "--out", tmp_path / "golden.npy")
    assert r.returncode == 0, r.stderr
    for simulator in ("verilator", "icarus"):
        r = _cli("sim", tmp_path / "m", "--inputs", tmp_path / "x.npy", "--out", tmp_path / f"{simulator}.npy",
                 "--simulator", simulator, "--pes", "4")
        assert r.returncode == 0, r.stderr
        assert np.array_equal(np.load(tmp_path / f"{simulator}.npy"), np.load(tmp_path / "golden.npy")), simulator


def test_cnn_onnx_compresses_with_bit_exact_golden(user, tmp_path):
    m, rep = sparrow.compress(user["dir"] / "cnn.onnx", user["dir"] / "img.npz", "smartdeal", max_drop=None,
                              k=1, density=0.5, **FAST)
    assert rep["golden_vs_torch_mismatching_samples"] == 0
    assert [l.kind for l in m.layers] == ["sd_conv2d", "maxpool2d", "sd_conv2d", "flatten", "sd_linear"]
