"""The compressed model and what every method shares: conversion, calibration, training, export.

:class:`QuantModel` is an ``nn.Sequential`` of compressed layers
(:mod:`sparrow.sw.layers`) plus the input grid.  :func:`convert` swaps the
Linear/Conv2d layers of an fp32 ``nn.Sequential`` for a method's layers
(ReLU fused into the layer before it); :func:`calibrate` sets the power-of-two
output exponents; :class:`Trainer` runs the training phases of a recipe with
the options every phase shares; :func:`export_model` writes the model
directory contents.  In float64 the quant forward equals the golden model bit
for bit.
"""

import copy

import numpy as np
import torch
from torch import nn

from sparrow import SparrowError
from sparrow.modeldir import Layer, Model, validate_model
from sparrow.sw.blocks import blocks_per_tile, split_blocks
from sparrow.sw.digits import train
from sparrow.sw.layers import QLayer, SDLinear
from sparrow.sw.quant import fake_quant

__all__ = ["QuantModel", "fuse_relu", "conv_args", "dims", "param_names", "block_permutation",
           "permute_for_blocks", "convert", "calibrate", "Trainer", "layer_names", "export_model"]

PARAM_LAYERS = (nn.Linear, nn.Conv2d)


class QuantModel(nn.Module):
    """An ``nn.Sequential`` of compressed layers plus the input grid (``input_exp``).

    With ``set_quant(True)`` the forward is the integer-exact fake-quantised one:
    inputs are quantised to int8 * 2**input_exp and each layer's output grid is
    passed on as the next layer's input grid.
    """

    def __init__(self, net, input_shape, input_exp, name="model"):
        super().__init__()
        self.net = net
        self.input_shape = tuple(input_shape)
        self.input_exp = int(input_exp)
        self.model_name = name
        self.quant = False

    def qlayers(self):
        return [m for m in self.net if isinstance(m, QLayer)]

    def set_quant(self, on=True):
        self.quant = bool(on)
        for m in self.qlayers():
            m.quant = self.quant
        return self

    def forward(self, x):
        if not self.quant:
            return self.net(x)
        x = fake_quant(x, self.input_exp)
        cur = self.input_exp
        for m in self.net:
            if isinstance(m, QLayer):
                m.in_exp = cur
                x = m(x)
                cur = m.last_out_exp
            else:
                x = m(x)
        return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------- conversion

def fuse_relu(seq):
    """[(module, relu_after)] with ReLUs folded into the layer before them."""
    out = []
    for m in seq:
        if isinstance(m, nn.ReLU):
            if not out or not isinstance(out[-1][0], PARAM_LAYERS) or out[-1][1]:
                raise SparrowError("compress: a ReLU must follow a Linear or Conv2d layer")
            out[-1] = (out[-1][0], True)
        elif isinstance(m, (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Identity)):
            out.append((m, False))
        else:
            raise SparrowError(f"compress: unsupported layer {type(m).__name__} "
                               "(Linear, Conv2d, ReLU, MaxPool2d, Flatten)")
    return out


def conv_args(m):
    """Keyword arguments of the compressed convolutions for a plain ``nn.Conv2d``."""
    if m.groups != 1 or m.dilation not in ((1, 1), 1) or m.padding_mode != "zeros":
        raise SparrowError("compress: only plain Conv2d (groups=1, dilation=1, zero padding) is supported")
    sh, sw = m.stride
    ph, pw = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    if sh != sw or ph != pw:
        raise SparrowError("compress: Conv2d stride and padding must be the same in both directions")
    return dict(in_ch=m.in_channels, out_ch=m.out_channels, kernel_size=m.kernel_size, stride=sh, padding=ph)


def dims(m):
    """(in, out) of the linear map of a Linear or Conv2d (in = in_ch * kh * kw for a convolution)."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.in_channels * m.kernel_size[0] * m.kernel_size[1], m.out_channels


def param_names(seq):
    """{id(module): exported name} of the Linear/Conv2d modules of [(module, relu)]: fc1, conv1, ..."""
    names, counts = {}, {}
    for m, _ in seq:
        if isinstance(m, PARAM_LAYERS):
            p = "conv" if isinstance(m, nn.Conv2d) else "fc"
            counts[p] = counts.get(p, 0) + 1
            names[id(m)] = f"{p}{counts[p]}"
    return names


def _kept_energy(a, block, keep):
    """Sum of the ``keep`` largest P x 1 block energies of a [out, in] (a = w**2; the last block
    is shorter when P does not divide out)."""
    e = split_blocks(a, block)[0].sum(axis=1).ravel()
    return float(np.partition(e, e.size - keep)[e.size - keep:].sum()) if keep < e.size else float(e.sum())


def block_permutation(w, block, density, passes=3):
    """An order of the rows of w [out, in] grouping rows whose large weights share columns.

    P x 1 blocks are P consecutive rows of one column, so which rows sit together
    decides how much weight energy the top ``density`` blocks keep.  Greedy
    pairwise swaps between row groups that raise the kept energy (as channel
    permutations for structured sparsity do); the layer's function is unchanged
    once the next layer's inputs follow the same order.
    """
    a = np.asarray(w, dtype=np.float64) ** 2
    out = a.shape[0]
    perm = np.argsort(-a.sum(axis=1), kind="stable")
    if block <= 1 or blocks_per_tile(out, block) < 2:
        return np.arange(out)
    keep = max(1, int(round(density * blocks_per_tile(out, block) * a.shape[1])))
    best = _kept_energy(a[perm], block, keep)
    for _ in range(passes):
        improved = False
        for i in range(out):
            for j in range(i + 1, out):
                if i // block == j // block:
                    continue
                perm[[i, j]] = perm[[j, i]]
                v = _kept_energy(a[perm], block, keep)
                if v > best * (1 + 1e-12):
                    best, improved = v, True
                else:
                    perm[[i, j]] = perm[[j, i]]
        if not improved:
            break
    return perm


def permute_for_blocks(seq, block_of):
    """Reorder the output channels of every Linear/Conv2d followed by another one (function kept).

    ``block_of(module, n_in, n_out)`` gives (P, target density) of a layer; a
    layer kept whole (density 1) is left in order.
    """
    mods = [m for m, _ in seq]
    idx = [i for i, m in enumerate(mods) if isinstance(m, PARAM_LAYERS)]
    for a, b in zip(idx, idx[1:]):
        if not all(isinstance(m, (nn.MaxPool2d, nn.Flatten, nn.Identity)) for m in mods[a + 1:b]):
            continue
        m, nxt = mods[a], mods[b]
        n_in, n_out = dims(m)
        block, dens = block_of(m, n_in, n_out)
        if dens >= 1.0:
            continue
        w = m.weight.detach().reshape(n_out, n_in)
        perm = torch.as_tensor(block_permutation(w.numpy(), block, dens))
        with torch.no_grad():
            m.weight.copy_(m.weight[perm])
            if m.bias is not None:
                m.bias.copy_(m.bias[perm])
            if isinstance(nxt, nn.Conv2d):
                nxt.weight.copy_(nxt.weight[:, perm])
            else:
                wn = nxt.weight.reshape(nxt.out_features, n_out, -1)
                nxt.weight.copy_(wn[:, perm].reshape(nxt.out_features, -1))


def convert(model, method):
    """Swap the layers of an fp32 ``nn.Sequential`` for the layers of ``method`` (no training).

    ``method`` is a :class:`sparrow.sw.methods.Method`: its ``prepare(seq)`` may
    reorder channels first, its ``make_layer(module, relu, name)`` builds each
    compressed layer.  The fp32 model is not modified.
    """
    if not isinstance(model, nn.Sequential):
        raise SparrowError("compress: the model must be an nn.Sequential")
    seq = fuse_relu(copy.deepcopy(model))
    method.prepare(seq)
    names = param_names(seq)
    mods = []
    for m, relu in seq:
        if isinstance(m, PARAM_LAYERS):
            q = method.make_layer(m, relu, names[id(m)])
            if m.bias is not None:
                with torch.no_grad():
                    q.bias.copy_(m.bias.detach())
            mods.append(q)
        elif not isinstance(m, nn.Identity):
            mods.append(m)
    cfg = method.config
    return QuantModel(nn.Sequential(*mods), cfg.input_shape, cfg.input_exp, cfg.name)


# --------------------------------------------------------------------------- training

@torch.no_grad()
def calibrate(qm, x, batch=512):
    """Set every layer's output (and SD z) exponent from the float forward's maxima on ``x``."""
    qm.set_quant(False)
    qm.eval()
    for m in qm.qlayers():
        m.max_out = 0.0
        if isinstance(m, SDLinear):
            m.max_z = 0.0
    # z of layer i is measured on the float input of layer i, scaled like the quant one
    for i in range(0, len(x), batch):
        qm(x[i:i + batch])
    for m in qm.qlayers():
        m.calibrate_out()
        if isinstance(m, SDLinear):
            m.calibrate_z()
    return qm


class Trainer:
    """The training data and the options shared by every phase of a recipe.

    ``fit(qm, epochs, lr, seed, **kw)`` runs :func:`sparrow.sw.digits.train`
    (Adam, cosine learning rate) with distillation from ``teacher`` (None: plain
    cross-entropy), the configuration's ``kd_alpha``, ``kd_temp``, ``augment``,
    and ``progress`` (updated once per epoch).  ``monitor(qm, phase)``, when
    given, runs after every phase (0, 1, ...; QAT last) and may raise to stop
    the recipe (the budget search prunes hopeless trials this way).
    """

    def __init__(self, x, y, config, teacher=None, progress=None, monitor=None):
        self.x, self.y, self.progress, self.monitor = x, y, progress, monitor
        self.phase = 0
        self.opts = {"teacher": teacher, "augment": config.augment}
        for key in ("kd_alpha", "kd_temp"):
            if getattr(config, key) is not None:
                self.opts[key] = getattr(config, key)

    def fit(self, qm, epochs, lr, seed, **kw):
        train(qm, self.x, self.y, epochs=epochs, lr=lr, seed=seed, progress=self.progress, **self.opts, **kw)
        if self.monitor is not None:
            self.monitor(qm, self.phase)
        self.phase += 1
        return qm

    def qat(self, qm, epochs, lr, seed):
        """Calibrate, switch to the integer-exact forward, finetune ``epochs`` (float32 during training)."""
        calibrate(qm, self.x)
        qm.set_quant(True)
        if epochs:
            self.fit(qm, epochs, lr, seed)
        return qm


# --------------------------------------------------------------------------- export

def layer_names(qm):
    """{id(module): exported layer name} of every module of a QuantModel: fc1, conv1, pool1, flatten1."""
    names, counts = {}, {}
    for m in qm.net:
        if isinstance(m, QLayer):
            p = "conv" if m.conv else "fc"
        else:
            p = "pool" if isinstance(m, nn.MaxPool2d) else "flatten" if isinstance(m, nn.Flatten) else "layer"
        counts[p] = counts.get(p, 0) + 1
        names[id(m)] = f"{p}{counts[p]}"
    return names


@torch.no_grad()
def export_model(qm, name=None, meta=None):
    """The :class:`~sparrow.modeldir.Model` of a calibrated :class:`QuantModel` (validated).

    ``meta`` goes into the manifest; ``meta["blocks"]`` defaults to the P of every sd layer.
    """
    names = layer_names(qm)
    layers, blocks = [], {}
    cur = qm.input_exp
    for m in qm.net:
        lname = names[id(m)]
        if isinstance(m, QLayer):
            m.in_exp = cur
            layer = m.export(lname)
            cur = m.last_out_exp
            if isinstance(m, SDLinear):
                blocks[lname] = m.block
        elif isinstance(m, nn.MaxPool2d):
            ks, st, pad = m.kernel_size, m.stride, m.padding
            if isinstance(ks, tuple) or isinstance(st, tuple) or pad != 0 or m.dilation != 1 or m.ceil_mode:
                raise SparrowError(f"layer {lname!r}: only square MaxPool2d without padding is supported")
            layer = Layer(lname, "maxpool2d", {"kernel": int(ks), "stride": int(st)})
        elif isinstance(m, nn.Flatten):
            layer = Layer(lname, "flatten", {})
        else:
            raise SparrowError(f"layer {lname!r}: cannot export {type(m).__name__}")
        layers.append(layer)
    meta = dict(meta or {})
    meta.setdefault("blocks", blocks)
    model = Model(name=name or qm.model_name, input_shape=qm.input_shape, input_scale_exp=qm.input_exp,
                  output_scale_exp=int(cur), layers=layers, meta=meta)
    return validate_model(model)
