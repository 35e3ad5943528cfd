"""Import a user's fp32 model: a ``torch.export`` program (``.pt2``) or an ONNX file (``.onnx``).

:func:`import_model` reads the file's graph node by node into the
``nn.Sequential`` of standard layers that the compression methods take:

* Linear (``aten.linear``; ONNX ``Gemm``, ``MatMul`` followed by ``Add`` of a
  constant bias), Conv2d (``aten.conv2d``; ONNX ``Conv``: groups 1, dilation 1,
  the same stride and symmetric padding in both directions), ReLU, MaxPool2d
  (square kernel and stride, no padding), Flatten / Reshape to [N, features];
* BatchNorm (``aten.batch_norm``; ONNX ``BatchNormalization``, inference
  statistics) folded into the Linear or Conv2d right before it;
* Dropout, Identity, clone/contiguous/detach dropped; a ReLU after a MaxPool2d
  or Flatten moves before it (they commute).

The graph must be one chain from the input to the output.  Anything else is
refused before any training, with one line naming the file, the node, its op
and its position (:class:`sparrow.SparrowError`)::

    model.onnx: node 'sig1' (op Sigmoid, node 3 of 5): unsupported operator (supported: Gemm, MatMul+Add, ...)

:meth:`Imported.check` runs the file's own program (the ``torch.export``
module, or onnxruntime) and the imported model on the same inputs and
refuses a difference beyond float tolerance.
"""

import operator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparrow import SparrowError

__all__ = ["Imported", "import_model", "SUPPORTED_TORCH", "SUPPORTED_ONNX"]

SUPPORTED_ONNX = ("Gemm", "MatMul+Add", "Conv", "Relu", "MaxPool", "Flatten", "Reshape", "BatchNormalization",
                  "Dropout", "Identity", "Constant")
SUPPORTED_TORCH = ("linear", "conv2d", "relu", "max_pool2d", "flatten", "view/reshape", "batch_norm", "dropout",
                   "clone/contiguous/detach")
# relative float tolerance of the import check (of the largest output magnitude)
RTOL = 1e-4


class _Refused(Exception):
    """A node that cannot be imported; the reason, completed with the node's place by the reader."""


@dataclass
class Imported:
    """An imported model: ``model`` (fp32 nn.Sequential), ``input_shape``, and the original program to check against.

    ``reference(x)`` runs the file's own program on float32 inputs [N, *input_shape]
    and returns its float outputs [N, outputs].
    """

    model: nn.Sequential
    input_shape: tuple
    source: str
    kind: str
    reference: object = field(repr=False, default=None)
    nodes: int = 0

    def outputs(self, x, batch=1024):
        """Float32 outputs [N, outputs] of the imported model."""
        self.model.eval()
        xs = torch.as_tensor(np.asarray(x, dtype=np.float32))
        with torch.no_grad():
            return np.concatenate([self.model(xs[i:i + batch]).reshape(len(xs[i:i + batch]), -1).numpy()
                                   for i in range(0, len(xs), batch)])

    def check(self, x):
        """Compare with the original program on ``x``; a dict (samples, max_abs_diff, tolerance, argmax_agree).

        Raises SparrowError when an output differs by more than ``RTOL`` times the
        largest output magnitude (at least RTOL).
        """
        ref = np.asarray(self.reference(np.asarray(x, dtype=np.float32)), dtype=np.float64)
        ref = ref.reshape(len(x), -1)
        got = self.outputs(x).astype(np.float64)
        if got.shape != ref.shape:
            raise SparrowError(f"{self.source}: the imported model gives outputs of shape {list(got.shape[1:])}, "
                               f"the {self.kind} program {list(ref.shape[1:])}")
        diff = float(np.abs(got - ref).max()) if got.size else 0.0
        tol = RTOL * max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
        res = {"samples": int(len(x)), "max_abs_diff": diff, "tolerance": tol,
               "argmax_agree": int((got.argmax(1) == ref.argmax(1)).sum()), "reference": self.kind}
        if not diff <= tol:
            raise SparrowError(f"{self.source}: the imported model differs from the {self.kind} program by up to "
                               f"{diff:.3g} (tolerance {tol:.3g}) on {len(x)} samples")
        return res

    @property
    def classes(self):
        """Output count of the model."""
        with torch.no_grad():
            return int(self.model.eval()(torch.zeros((1,) + tuple(self.input_shape))).numel())


class _Builder:
    """Accumulates the Sequential, tracking the activation shape [features] or [C, H, W]."""

    def __init__(self, input_shape, batch=None):
        self.batch = batch          # the program's fixed batch size, None when it is dynamic
        self.mods = []
        self.shape = tuple(input_shape)
        self.open_linear = None     # the last Linear/Conv2d while nothing else followed it (BN, bias Add)

    def _param_in(self, n_in):
        if len(self.shape) != 1:
            raise _Refused(f"a linear layer on a {list(self.shape)} activation (flatten it first)")
        if self.shape[0] != n_in:
            raise _Refused(f"a linear layer of {n_in} inputs on {self.shape[0]} features")

    def linear(self, w, b):
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 2:
            raise _Refused(f"weight of shape {list(w.shape)}, expected [out, in]")
        n_out, n_in = w.shape
        self._param_in(n_in)
        m = nn.Linear(n_in, n_out)
        with torch.no_grad():
            m.weight.copy_(torch.tensor(w))
            m.bias.copy_(torch.tensor(np.zeros(n_out, np.float32) if b is None else
                                          np.asarray(b, np.float32).reshape(n_out)))
        self.mods.append(m)
        self.shape = (n_out,)
        self.open_linear = m

    def conv(self, w, b, stride, padding, dilation=(1, 1), groups=1):
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 4:
            raise _Refused(f"a {w.ndim - 2}-D convolution (only 2-D)")
        if groups != 1:
            raise _Refused(f"groups {groups} (only 1)")
        if any(d != 1 for d in dilation):
            raise _Refused(f"dilation {list(dilation)} (only 1)")
        if len(set(stride)) != 1:
            raise _Refused(f"stride {list(stride)} differs between directions")
        if len(set(padding)) != 1:
            raise _Refused(f"padding {list(padding)} is not the same on every side")
        if len(self.shape) != 3:
            raise _Refused(f"a convolution on a {list(self.shape)} activation (needs [C, H, W])")
        out_ch, in_ch, kh, kw = w.shape
        c, h, wd = self.shape
        if c != in_ch:
            raise _Refused(f"a convolution of {in_ch} input channels on {c} channels")
        s, p = int(stride[0]), int(padding[0])
        oh, ow = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
        if oh < 1 or ow < 1:
            raise _Refused(f"a {kh}x{kw} kernel larger than its padded {h}x{wd} input")
        m = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=s, padding=p)
        with torch.no_grad():
            m.weight.copy_(torch.tensor(w))
            m.bias.copy_(torch.tensor(np.zeros(out_ch, np.float32) if b is None else
                                          np.asarray(b, np.float32).reshape(out_ch)))
        self.mods.append(m)
        self.shape = (out_ch, oh, ow)
        self.open_linear = m

    def add_bias(self, b):
        m = self.open_linear
        if not isinstance(m, nn.Linear) or not self.mods or self.mods[-1] is not m:
            raise _Refused("an Add that does not add a constant bias right after a MatMul")
        b = np.asarray(b, np.float32)
        if b.size != m.out_features:
            raise _Refused(f"a bias of shape {list(b.shape)} for {m.out_features} outputs")
        with torch.no_grad():
            m.bias.add_(torch.tensor(b.reshape(-1)))

    def batchnorm(self, gamma, beta, mean, var, eps):
        m = self.open_linear
        if m is None or not self.mods or self.mods[-1] is not m:
            raise _Refused("a batch norm that does not follow a Linear or Conv layer directly (cannot fold it)")
        n = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        mean = np.asarray(mean, np.float64).reshape(-1)
        if mean.size != n:
            raise _Refused(f"a batch norm of {mean.size} channels after a layer of {n}")
        var = np.asarray(var, np.float64).reshape(-1)
        gamma = np.ones(n) if gamma is None else np.asarray(gamma, np.float64).reshape(-1)
        beta = np.zeros(n) if beta is None else np.asarray(beta, np.float64).reshape(-1)
        scale = gamma / np.sqrt(var + float(eps))
        shift = beta - mean * scale
        with torch.no_grad():
            w = m.weight.double()
            m.weight.copy_((w * torch.from_numpy(scale).reshape((-1,) + (1,) * (w.ndim - 1))).float())
            m.bias.copy_((m.bias.double() * torch.from_numpy(scale) + torch.from_numpy(shift)).float())
        self.open_linear = m     # a second fold stays exact algebra; keep it open

    def relu(self):
        # ReLU commutes with MaxPool2d and Flatten: move it to the layer before them
        i = len(self.mods) - 1
        while i >= 0 and isinstance(self.mods[i], (nn.MaxPool2d, nn.Flatten)):
            i -= 1
        if i < 0 or not isinstance(self.mods[i], (nn.Linear, nn.Conv2d)):
            raise _Refused("a ReLU that does not follow a Linear or Conv layer")
        if i + 1 < len(self.mods) and isinstance(self.mods[i + 1], nn.ReLU):
            return          # relu(relu(x)) = relu(x)
        self.mods.insert(i + 1, nn.ReLU())
        self.open_linear = None

    def maxpool(self, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
        if len(set(kernel)) != 1 or len(set(stride)) != 1:
            raise _Refused(f"kernel {list(kernel)} / stride {list(stride)} not square")
        if any(p for p in padding) or any(d != 1 for d in dilation) or ceil_mode:
            raise _Refused("padding, dilation or ceil mode (only plain max pooling)")
        if len(self.shape) != 3:
            raise _Refused(f"max pooling of a {list(self.shape)} activation (needs [C, H, W])")
        k, s = int(kernel[0]), int(stride[0])
        c, h, w = self.shape
        if k > h or k > w:
            raise _Refused(f"a {k}x{k} pooling window larger than its {h}x{w} input")
        self.mods.append(nn.MaxPool2d(k, s))
        self.shape = (c, (h - k) // s + 1, (w - k) // s + 1)
        self.open_linear = None

    def flatten(self):
        if len(self.shape) == 3:
            self.mods.append(nn.Flatten())
            self.shape = (int(np.prod(self.shape)),)
            self.open_linear = None

    def reshape(self, target):
        target = [int(t) for t in target]
        size = int(np.prod(self.shape))
        firsts = {0, self.batch} | ({-1} if target[1:] == [size] else set())
        if len(target) != 2 or target[1] not in (-1, size) or target[0] not in firsts:
            raise _Refused(f"a reshape to {target} (only [N, -1] or [N, {size}]: flatten)")
        self.flatten()

    def finish(self):
        if not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in self.mods):
            raise _Refused("no Linear or Conv layer in the model")
        return nn.Sequential(*self.mods).eval()


def _where(path, name, op, i, n):
    return f"{path}: node {name!r} (op {op}, node {i} of {n})"


# --------------------------------------------------------------------------- torch.export

def _aten(name):
    return getattr(torch.ops.aten, name)


def _torch_ops():
    a = torch.ops.aten
    ident = {a.clone.default, a.contiguous.default, a.detach.default, a.alias.default, a.dropout.default,
             a.dropout_.default, a.feature_dropout.default, operator.getitem}
    return ident


def _pt2_reference(ep, batch):
    mod = ep.module()

    def run(x):
        outs = []
        with torch.no_grad():
            step = batch or 1024
            for i in range(0, len(x), step):
                xb = torch.from_numpy(x[i:i + step])
                n = len(xb)
                if batch and n < batch:
                    xb = torch.cat([xb, xb.new_zeros((batch - n,) + tuple(xb.shape[1:]))])
                y = mod(xb)
                if isinstance(y, (tuple, list)):
                    y = y[0]
                outs.append(y[:n].reshape(n, -1).numpy())
        return np.concatenate(outs)
    return run


def _import_pt2(path):
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:        # torch raises many types for a file that is not a program
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SparrowError(f"{path}: not a torch.export program ({msg})")
    sig = ep.graph_signature
    tensors = {}
    for ph, key in {**sig.inputs_to_parameters, **sig.inputs_to_buffers}.items():
        tensors[ph] = ep.state_dict[key] if key in ep.state_dict else ep.constants[key]
    for ph, key in getattr(sig, "inputs_to_lifted_tensor_constants", {}).items():
        tensors[ph] = ep.constants[key]
    users = list(sig.user_inputs)
    if len(users) != 1:
        raise SparrowError(f"{path}: the program takes {len(users)} inputs; sparrow models take one")
    nodes = list(ep.graph.nodes)
    inp = next(n for n in nodes if n.op == "placeholder" and n.name == users[0])
    val = inp.meta.get("val")
    if val is None or val.ndim not in (2, 4) or any(not isinstance(d, int) for d in val.shape[1:]):
        raise SparrowError(f"{path}: input {users[0]!r} must be [N, features] or [N, C, H, W] with fixed "
                           f"sizes, not {list(val.shape) if val is not None else 'unknown'}")
    if val.dtype != torch.float32:
        raise SparrowError(f"{path}: input {users[0]!r} is {val.dtype}; sparrow imports fp32 models")
    batch = val.shape[0] if isinstance(val.shape[0], int) else None
    input_shape = tuple(int(d) for d in val.shape[1:])
    b = _Builder(input_shape, batch)
    calls = [n for n in nodes if n.op == "call_function"]
    ident = _torch_ops()
    a = torch.ops.aten
    cur = inp

    def param(node, arg, what):
        if arg is None:
            return None
        if not hasattr(arg, "op") or arg.name not in tensors:
            raise _Refused(f"its {what} is computed in the graph, not a stored tensor")
        return tensors[arg.name].detach().float().numpy()

    for i, node in enumerate(calls, 1):
        t = node.target
        op = "getitem" if t is operator.getitem else str(t)
        try:
            if not node.args or node.args[0] is not cur:
                raise _Refused("the graph is not one chain (its first input is not the previous layer's output)")
            if len(cur.users) != 1:
                raise _Refused("the previous layer's output is used more than once (branches are not supported)")
            args = list(node.args) + [None] * 10
            if t is operator.getitem:
                if args[1] != 0:
                    raise _Refused(f"takes output {args[1]} of a multi-output op")
            elif t in ident:
                pass
            elif t is a.linear.default:
                b.linear(param(node, args[1], "weight"), param(node, args[2], "bias"))
            elif t is a.conv2d.default:
                b.conv(param(node, args[1], "weight"), param(node, args[2], "bias"), args[3] or [1, 1],
                       args[4] or [0, 0], args[5] or [1, 1], 1 if args[6] is None else args[6])
            elif t in (a.batch_norm.default, a._native_batch_norm_legit_no_training.default):
                if t is a.batch_norm.default:
                    if args[5]:
                        raise _Refused("a batch norm in training mode (export the model in eval mode)")
                    eps = args[7]
                else:
                    eps = args[6]
                b.batchnorm(param(node, args[1], "weight"), param(node, args[2], "bias"),
                            param(node, args[3], "running mean"), param(node, args[4], "running var"),
                            1e-5 if eps is None else eps)
            elif t in (a.relu.default, a.relu_.default):
                b.relu()
            elif t is a.max_pool2d.default:
                k = list(args[1])
                st = list(args[2]) if args[2] else k
                pad = args[3] if args[3] is not None else [0, 0]
                dil = args[4] if args[4] is not None else [1, 1]
                b.maxpool(k * (2 // len(k)), st * (2 // len(st)), list(pad) * (2 // len(list(pad))),
                          list(dil) * (2 // len(list(dil))), bool(args[5]))
            elif t is a.flatten.using_ints:
                start = 0 if args[1] is None else args[1]
                end = -1 if args[2] is None else args[2]
                if start != 1 or end not in (-1, len(b.shape)):
                    raise _Refused(f"flattens dimensions {start}..{end} (only 1..-1)")
                b.flatten()
            elif t in (a.view.default, a.reshape.default, a._unsafe_view.default):
                b.reshape(args[1])
            else:
                raise _Refused(f"unsupported operator (supported: {', '.join(SUPPORTED_TORCH)})")
        except _Refused as exc:
            raise SparrowError(f"{_where(path, node.name, op, i, len(calls))}: {exc}") from None
        cur = node
    out = next(n for n in nodes if n.op == "output")
    outs = out.args[0] if isinstance(out.args[0], (tuple, list)) else [out.args[0]]
    if len(outs) != 1 or outs[0] is not cur:
        raise SparrowError(f"{path}: the program's output is not the end of its layer chain "
                           f"({len(outs)} outputs)")
    try:
        model = b.finish()
    except _Refused as exc:
        raise SparrowError(f"{path}: {exc}") from None
    return Imported(model, input_shape, str(path), "torch.export", _pt2_reference(ep, batch), len(calls))


# --------------------------------------------------------------------------- ONNX

def _onnx_reference(path, batch):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x):
        outs = []
        step = batch or 1024
        for i in range(0, len(x), step):
            xb = x[i:i + step]
            n = len(xb)
            if batch and n < batch:
                xb = np.concatenate([xb, np.zeros((batch - n,) + xb.shape[1:], xb.dtype)])
            outs.append(np.asarray(sess.run(None, {name: xb})[0])[:n].reshape(n, -1))
        return np.concatenate(outs)
    return run


def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _import_onnx(path):
    import onnx
    from onnx import numpy_helper
    try:
        mp = onnx.load(str(path))
    except Exception as exc:        # protobuf decode errors have no common base
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SparrowError(f"{path}: not an ONNX model ({msg})")
    g = mp.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise SparrowError(f"{path}: the graph takes {len(inputs)} inputs; sparrow models take one")
    inp = inputs[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise SparrowError(f"{path}: input {inp.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}; "
                           "sparrow imports fp32 models")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if len(dims) not in (2, 4) or any(d is None or d < 1 for d in dims[1:]):
        raise SparrowError(f"{path}: input {inp.name!r} must be [N, features] or [N, C, H, W] with fixed sizes, "
                           f"not {[d if d is not None else '?' for d in dims]}")
    batch = dims[0] if dims[0] else None
    input_shape = tuple(dims[1:])
    if len(g.output) != 1:
        raise SparrowError(f"{path}: the graph has {len(g.output)} outputs; sparrow models have one")
    b = _Builder(input_shape, batch)
    nodes = list(g.node)
    uses = {}
    for n in nodes:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    cur = inp.name
    real = [n for n in nodes if n.op_type != "Constant"]

    def const(name, what):
        if name == "":
            return None
        if name not in consts:
            raise _Refused(f"its {what} ({name!r}) is computed in the graph, not a stored tensor")
        return consts[name]

    i = 0
    for node in nodes:
        op, a = node.op_type, None
        if op == "Constant":
            a = _attrs(node)
            if "value" in a:
                consts[node.output[0]] = numpy_helper.to_array(a["value"])
                continue
        i += 1
        name = node.name or (node.output[0] if node.output else op)
        try:
            if op == "Constant":
                raise _Refused("a Constant that is not a tensor")
            if not node.input or node.input[0] != cur:
                raise _Refused("the graph is not one chain (its first input is not the previous layer's output)")
            if uses.get(cur, 0) != 1:
                raise _Refused("the previous layer's output is used more than once (branches are not supported)")
            if len([o for o in node.output if o and uses.get(o)]) > 1:
                raise _Refused("more than one of its outputs is used")
            a = _attrs(node)
            if op == "Gemm":
                if a.get("transA", 0):
                    raise _Refused("transA = 1 (only x @ W)")
                w = const(node.input[1], "weight").astype(np.float64) * a.get("alpha", 1.0)
                w = w if a.get("transB", 0) else w.T
                c = const(node.input[2], "bias") if len(node.input) > 2 else None
                if c is not None:
                    c = np.broadcast_to(c.astype(np.float64) * a.get("beta", 1.0), (w.shape[0],))
                b.linear(w, c)
            elif op == "MatMul":
                w = const(node.input[1], "weight")
                if w.ndim != 2:
                    raise _Refused(f"a weight of shape {list(w.shape)} (only [in, out])")
                b.linear(w.T, None)
            elif op == "Add":
                b.add_bias(const(node.input[1], "addend"))
            elif op == "Conv":
                if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise _Refused(f"auto_pad {a['auto_pad']!r} (give explicit pads)")
                w = const(node.input[1], "weight")
                bias = const(node.input[2], "bias") if len(node.input) > 2 else None
                nsp = w.ndim - 2
                b.conv(w, bias, a.get("strides", [1] * nsp), a.get("pads", [0] * 2 * nsp),
                       a.get("dilations", [1] * nsp), a.get("group", 1))
            elif op == "BatchNormalization":
                if a.get("training_mode", 0):
                    raise _Refused("training_mode = 1 (export the model in eval mode)")
                b.batchnorm(const(node.input[1], "scale"), const(node.input[2], "bias"),
                            const(node.input[3], "mean"), const(node.input[4], "variance"), a.get("epsilon", 1e-5))
            elif op == "Relu":
                b.relu()
            elif op == "MaxPool":
                k = list(a.get("kernel_shape", []))
                if len(k) != 2:
                    raise _Refused(f"a {len(k)}-D pooling (only 2-D)")
                b.maxpool(k, a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0]), a.get("dilations", [1, 1]),
                          bool(a.get("ceil_mode", 0)))
            elif op == "Flatten":
                if a.get("axis", 1) != 1:
                    raise _Refused(f"axis {a.get('axis')} (only 1)")
                b.flatten()
            elif op == "Reshape":
                b.reshape(const(node.input[1], "shape").reshape(-1))
            elif op in ("Dropout", "Identity"):
                pass
            else:
                raise _Refused(f"unsupported operator (supported: {', '.join(SUPPORTED_ONNX)})")
        except _Refused as exc:
            raise SparrowError(f"{_where(path, name, op, i, len(real))}: {exc}") from None
        cur = node.output[0]
    if g.output[0].name != cur:
        raise SparrowError(f"{path}: the graph's output {g.output[0].name!r} is not the end of its layer chain")
    try:
        model = b.finish()
    except _Refused as exc:
        raise SparrowError(f"{path}: {exc}") from None
    return Imported(model, input_shape, str(path), "onnxruntime", _onnx_reference(path, batch), len(real))


def import_model(path):
    """The :class:`Imported` model of a ``.pt2`` or ``.onnx`` file (SparrowError, one line, if refused)."""
    path = Path(path)
    if not path.is_file():
        raise SparrowError(f"{path}: model file does not exist")
    if path.suffix == ".pt2":
        return _import_pt2(path)
    if path.suffix == ".onnx":
        return _import_onnx(path)
    raise SparrowError(f"{path}: unknown model file type {path.suffix!r} (.pt2 from torch.export, or .onnx)")
