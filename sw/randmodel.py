"""Random valid layers and models of every kind, for tests and hardware benches.

``random_layer("sd_linear", rng, in_=16, out=8, k=4)`` returns a
:class:`sparrow.modeldir.Layer` with parameters drawn from ``rng`` (a
``numpy.random.Generator``) inside the format's ranges; shifts are chosen so
outputs use the int8 range without saturating everything.
"""

import numpy as np

from sparrow.modeldir import Layer, Model, validate_model

__all__ = ["random_layer", "random_model", "synthetic_task", "train_float", "write_onnx"]


def _bias(rng, n, scale):
    return rng.integers(-scale, scale + 1, size=n).astype(np.int32)


def random_layer(kind, rng, *, name=None, in_=16, out=8, k=4, tiles=1, density=0.5, relu=False,
                 out_shift=None, basis_shift=6, z_bits=8, in_ch=2, out_ch=3, kh=3, kw=3, stride=1,
                 padding=1, kernel=2, pool_stride=2):
    """One random valid layer of ``kind`` (conv kinds use in_ch/out_ch/kh/kw/stride/padding)."""
    name = name or kind
    if kind == "maxpool2d":
        return Layer(name, kind, {"kernel": kernel, "stride": pool_stride})
    if kind == "flatten":
        return Layer(name, kind, {})
    conv = kind.endswith("conv2d")
    if conv:
        attrs = {"in_ch": in_ch, "out_ch": out_ch, "kh": kh, "kw": kw, "stride": stride, "padding": padding}
        n_in, n_out = in_ch * kh * kw, out_ch
    else:
        attrs = {"in": in_, "out": out}
        n_in, n_out = in_, out
    base = kind.replace("conv2d", "linear")
    if base == "dense_linear":
        params = {"weight": rng.integers(-128, 128, size=(n_out, n_in)).astype(np.int8),
                  "bias": _bias(rng, n_out, 2000)}
        default_shift = max(1, int(np.log2(128 * 64 * np.sqrt(n_in))) - 6)
    elif base == "sd_linear":
        attrs.update(k=k, basis_shift=basis_shift, z_bits=z_bits)
        sign = rng.integers(-1, 2, size=(n_out, n_in)) * (rng.random((n_out, n_in)) < density)
        params = {"basis": rng.integers(-128, 128, size=(tiles, n_in // k, k, k)).astype(np.int8),
                  "coef_sign": sign.astype(np.int8),
                  "coef_exp": rng.integers(0, 8, size=(n_out, n_in)).astype(np.uint8),
                  "bias": _bias(rng, n_out, 2000)}
        default_shift = max(1, int(np.log2((1 << (z_bits - 1)) * 32 * np.sqrt(n_in * density + 1))) - 6)
    elif base == "bc_linear":
        attrs.update(k=k)
        params = {"w": rng.integers(-128, 128, size=(n_out // k, n_in // k, k)).astype(np.int8),
                  "bias": _bias(rng, n_out, 2000)}
        default_shift = max(1, int(np.log2(128 * 64 * np.sqrt(n_in))) - 6)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    attrs.update(out_shift=default_shift if out_shift is None else out_shift, relu=relu)
    return Layer(name, kind, attrs, params)


def random_model(layers, input_shape, *, name="random", input_scale_exp=-4, output_scale_exp=-3):
    """A validated :class:`~sparrow.modeldir.Model` from a list of layers."""
    model = Model(name=name, input_shape=tuple(input_shape), input_scale_exp=input_scale_exp,
                  output_scale_exp=output_scale_exp, layers=list(layers))
    return validate_model(model)


# --------------------------------------------------------------------------- user models for tests and benches

def synthetic_task(seed=0, sizes=(600, 200, 200), features=16, classes=5, noise=1.6, image=None):
    """A synthetic classification data set as DATA.npz arrays {x_train, y_train, x_val, y_val, x_test, y_test}.

    Gaussian clusters around ``classes`` random centres in ``features``
    dimensions, squashed by 2.5 * tanh (so inputs lie in (-2.5, 2.5));
    ``image=(C, H, W)`` reshapes the samples (features = C*H*W).
    """
    rng = np.random.default_rng(seed)
    if image is not None:
        features = int(np.prod(image))
    centres = rng.normal(size=(classes, features)) * 1.2
    out = {}
    for split, n in zip(("train", "val", "test"), sizes):
        y = rng.integers(0, classes, size=n)
        x = 2.5 * np.tanh(centres[y] + noise * rng.normal(size=(n, features)))
        out[f"x_{split}"] = x.astype(np.float32).reshape((n,) + (tuple(image) if image else (features,)))
        out[f"y_{split}"] = y.astype(np.int64)
    return out


def train_float(model, data, epochs=30, lr=3e-3, seed=0):
    """Train an fp32 ``nn.Module`` on ``data`` (x_train, y_train) with Adam; returns it in eval mode."""
    import torch
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    x, y = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def write_onnx(seq, input_shape, path, matmul_add=False, flatten_as_reshape=False, batch="N", opset=17):
    """Write an fp32 ``nn.Sequential`` as an ONNX file with the ``onnx`` helper API (no torch.onnx).

    Linear -> Gemm (transB = 1), or MatMul + Add with ``matmul_add``; Conv2d ->
    Conv; BatchNorm1d/2d -> BatchNormalization (running statistics); ReLU ->
    Relu; MaxPool2d -> MaxPool; Flatten -> Flatten, or Reshape [0, -1] with
    ``flatten_as_reshape``; Dropout -> Dropout; Identity -> Identity.  Any other
    module ``m`` with an ``onnx_node(name, x, y) -> (nodes, initializers)``
    method is written by it (tests write unsupported ops that way).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from torch import nn
    nodes, inits = [], []
    cur = "input"

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    for i, m in enumerate(seq):
        y = f"t{i}"
        n = f"n{i}"
        if isinstance(m, nn.Linear):
            w = m.weight.detach().numpy().astype(np.float32)
            b = (m.bias.detach().numpy() if m.bias is not None else np.zeros(w.shape[0])).astype(np.float32)
            if matmul_add:
                nodes.append(helper.make_node("MatMul", [cur, const(f"{n}.w", w.T.copy())], [f"{y}.mm"], name=f"{n}.mm"))
                nodes.append(helper.make_node("Add", [f"{y}.mm", const(f"{n}.b", b)], [y], name=f"{n}.add"))
            else:
                nodes.append(helper.make_node("Gemm", [cur, const(f"{n}.w", w), const(f"{n}.b", b)], [y], name=n,
                                              transB=1))
        elif isinstance(m, nn.Conv2d):
            w = m.weight.detach().numpy().astype(np.float32)
            b = (m.bias.detach().numpy() if m.bias is not None else np.zeros(w.shape[0])).astype(np.float32)
            p = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
            nodes.append(helper.make_node("Conv", [cur, const(f"{n}.w", w), const(f"{n}.b", b)], [y], name=n,
                                          kernel_shape=list(m.kernel_size), strides=list(m.stride),
                                          pads=[p[0], p[1], p[0], p[1]], dilations=list(m.dilation), group=m.groups))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            f32 = [a.detach().numpy().astype(np.float32) for a in (m.weight, m.bias, m.running_mean, m.running_var)]
            names = [const(f"{n}.{k}", a) for k, a in zip(("scale", "bias", "mean", "var"), f32)]
            nodes.append(helper.make_node("BatchNormalization", [cur] + names, [y], name=n, epsilon=m.eps))
        elif isinstance(m, nn.ReLU):
            nodes.append(helper.make_node("Relu", [cur], [y], name=n))
        elif isinstance(m, nn.MaxPool2d):
            k, s = m.kernel_size, m.stride
            nodes.append(helper.make_node("MaxPool", [cur], [y], name=n, kernel_shape=[k, k], strides=[s, s]))
        elif isinstance(m, nn.Flatten):
            if flatten_as_reshape:
                nodes.append(helper.make_node("Reshape", [cur, const(f"{n}.shape", np.array([0, -1], np.int64))],
                                              [y], name=n))
            else:
                nodes.append(helper.make_node("Flatten", [cur], [y], name=n, axis=1))
        elif isinstance(m, nn.Dropout):
            nodes.append(helper.make_node("Dropout", [cur], [y], name=n))
        elif isinstance(m, nn.Identity):
            nodes.append(helper.make_node("Identity", [cur], [y], name=n))
        elif hasattr(m, "onnx_node"):
            more, consts = m.onnx_node(n, cur, y)
            nodes.extend(more)
            inits.extend(numpy_helper.from_array(np.asarray(a), k) for k, a in consts.items())
        else:
            raise ValueError(f"write_onnx: no ONNX form for {type(m).__name__}")
        cur = y
    import torch
    try:
        with torch.no_grad():
            out_shape = [batch, int(seq.eval()(torch.zeros((1,) + tuple(input_shape))).numel())]
    except RuntimeError:        # a module written by onnx_node whose torch forward is not the op
        out_shape = [batch, "classes"]
    graph = helper.make_graph(nodes, "sparrow-test", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [batch] + list(input_shape))],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="sparrow-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
