"""One-call compression: ``compress(model, config, data)`` and export to a model directory.

``model`` is an ``nn.Sequential`` of standard layers (Linear, Conv2d, ReLU,
MaxPool2d, Flatten).  :func:`compress` swaps every Linear/Conv2d for the
method's drop-in layer (ReLU fused into the layer before it), wraps the result
in a :class:`QuantModel` and, when training data is given, runs the method's
recipe:

* ``dense-int8``: calibrate activation scales, then QAT (int8 weights and
  activations, power-of-two scales).
* ``smartdeal``: ALS decomposition W = C.B of every layer, finetuning with
  power-of-two C (STE) and gradual P x 1 block pruning to ``density``, QAT.
* ``admm``: ADMM-NN joint pruning + power-of-two quantisation of the dense
  weights (W / Z / U updates, Z = block-sparse power-of-two projection),
  masked retraining, QAT; exported as sd layers with k = 1 and B = 1.
* ``circulant``: projection of every layer whose sizes k divides onto
  block-circulant form (others stay dense int8), finetuning, QAT.

Options shared by the recipes (beside each method's DEFAULTS): ``density``,
``levels`` and ``block`` take one value or {layer name: value, "default": v}
(layer names fc1, conv1, ... as exported); every phase distils from the fp32
model (``distill``, ``kd_alpha``, ``kd_temp``); ``retrain_lr`` / ``fix_lr``
set the masked-retraining learning rate (default lr / 2), ``qat_lr`` the QAT
one; ``freeze_window`` fixes each layer's power-of-two exponent window once
the mask is final (otherwise a growing max|C| can shift every exponent at
once); ``permute`` reorders the output channels of each pruned layer that
feeds another one so that rows with large weights in the same columns share
P x 1 blocks (:func:`block_permutation`; the next layer's inputs follow, the
function is unchanged).

:func:`export_model` turns the trained :class:`QuantModel` into a
:class:`sparrow.modeldir.Model`; in float64 its quant forward equals the
golden model bit for bit.
"""

import copy
import math
from types import SimpleNamespace

import numpy as np

import torch
from torch import nn

from sparrow import SparrowError
from sparrow.modeldir import Layer, Model, validate_model
from sparrow.sw.layers import BCConv2d, BCLinear, QConv2d, QLayer, QLinear, SDConv2d, SDLinear
from sparrow.sw.prune import BlockMagnitude, ReweightedL1, block_mask, cubic_density
from sparrow.sw.quant import fake_quant

__all__ = ["METHODS", "DEFAULTS", "QuantModel", "compress", "export_model", "calibrate", "qat"]

METHODS = ("dense-int8", "smartdeal", "admm", "circulant")

DEFAULTS = {
    "dense-int8": {"qat_epochs": 10},
    "smartdeal": {"k": 4, "tiles": 1, "block": 4, "levels": 8, "z_bits": 8, "density": 0.12,
                  "prune_epochs": 30, "fix_epochs": 10, "qat_epochs": 10, "criterion": "magnitude",
                  "lr": 2e-3, "als_iters": 4},
    "admm": {"block": 4, "levels": 8, "density": 0.08, "admm_epochs": 30, "rho": 1e-3, "rho_growth": 1.1,
             "retrain_epochs": 20, "qat_epochs": 10, "lr": 2e-3, "break_even": None},
    "circulant": {"k": 16, "epochs": 30, "qat_epochs": 10, "lr": 2e-3},
}


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

def _fuse_relu(seq):
    """[(module, relu_after)] with ReLUs folded into the layer before them."""
    out = []
    for m in seq:
        if isinstance(m, nn.ReLU):
            if not out or not isinstance(out[-1][0], (nn.Linear, nn.Conv2d)) or out[-1][1]:
                raise SparrowError("compress: a ReLU must follow a Linear or Conv2d layer")
            out[-1] = (out[-1][0], True)
        elif isinstance(m, (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Identity)):
            out.append((m, False))
        else:
            raise SparrowError(f"compress: unsupported layer {type(m).__name__} "
                               "(Linear, Conv2d, ReLU, MaxPool2d, Flatten)")
    return out


def _conv_args(m):
    if m.groups != 1 or m.dilation not in ((1, 1), 1) or m.padding_mode != "zeros":
        raise SparrowError("compress: only plain Conv2d (groups=1, dilation=1, zero padding) is supported")
    sh, sw = m.stride
    ph, pw = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    if sh != sw or ph != pw:
        raise SparrowError("compress: Conv2d stride and padding must be the same in both directions")
    return dict(in_ch=m.in_channels, out_ch=m.out_channels, kernel_size=m.kernel_size, stride=sh, padding=ph)


def _dims(m):
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.in_channels * m.kernel_size[0] * m.kernel_size[1], m.out_channels


def _largest_divisor(n, limit):
    return max(d for d in range(1, max(1, limit) + 1) if n % d == 0)


def _per_layer(value, name, default):
    """A per-layer option: a plain value for every layer, or {layer name: value, "default": value}."""
    if isinstance(value, dict):
        return value.get(name, value.get("default", default))
    return default if value is None else value


def _sd_params(n_in, n_out, cfg, k=None, name=None):
    tiles = cfg.get("tiles", 1) if n_out % cfg.get("tiles", 1) == 0 else 1
    if k is None:
        # keep the basis (8 * T * in * k bits) at most 1/128 of the fp32 weights
        k = _largest_divisor(n_in, min(cfg.get("k", 4), n_out // (32 * tiles)))
    block = _largest_divisor(n_out // tiles, _per_layer(cfg.get("block"), name, 4))
    return dict(k=k, tiles=tiles, block=block, levels=_per_layer(cfg.get("levels"), name, 8),
                z_bits=cfg.get("z_bits", 8))


def _swap(m, relu, method, cfg, name=None):
    w = m.weight.detach()
    b = m.bias.detach() if m.bias is not None else None
    conv = isinstance(m, nn.Conv2d)
    n_in, n_out = _dims(m)
    if method == "dense-int8":
        q = QConv2d(**_conv_args(m), relu=relu) if conv else QLinear(n_in, n_out, relu=relu)
        with torch.no_grad():
            q.weight.copy_(w.reshape(n_out, n_in))
    elif method in ("smartdeal", "admm"):
        p = _sd_params(n_in, n_out, cfg, k=1 if method == "admm" else None, name=name)
        fixed = method == "admm"
        q = SDConv2d(**_conv_args(m), relu=relu, fixed_basis=fixed, **p) if conv else \
            SDLinear(n_in, n_out, relu=relu, fixed_basis=fixed, **p)
        with torch.no_grad():
            if fixed:
                q.coef.copy_(w.reshape(n_out, n_in))
            else:
                q.decompose_(w, iters=cfg.get("als_iters", 4))
    elif method == "circulant":
        k = next((k for k in (cfg.get("k", 16), 16, 8, 4) if n_in % k == 0 and n_out % k == 0), None)
        if k is None:
            q = QConv2d(**_conv_args(m), relu=relu) if conv else QLinear(n_in, n_out, relu=relu)
            with torch.no_grad():
                q.weight.copy_(w.reshape(n_out, n_in))
        else:
            q = BCConv2d(**_conv_args(m), relu=relu, k=k) if conv else BCLinear(n_in, n_out, k=k, relu=relu)
            q.project_(w)
    else:
        raise SparrowError(f"compress: unknown method {method!r} (known: {', '.join(METHODS)})")
    if b is not None:
        with torch.no_grad():
            q.bias.copy_(b)
    return q


def _kept_energy(a, block, keep):
    """Sum of the ``keep`` largest P x 1 block energies of a [out, in] (a = w**2)."""
    e = a.reshape(a.shape[0] // block, block, a.shape[1]).sum(axis=1).ravel()
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
    if block <= 1 or out // block < 2:
        return np.arange(out)
    keep = max(1, int(round(density * a.size / block)))
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


def _permute_for_blocks(seq, block_of):
    """Reorder the output channels of every Linear/Conv2d followed by another one (function kept)."""
    mods = [m for m, _ in seq]
    idx = [i for i, m in enumerate(mods) if isinstance(m, (nn.Linear, nn.Conv2d))]
    for a, b in zip(idx, idx[1:]):
        if not all(isinstance(m, (nn.MaxPool2d, nn.Flatten, nn.Identity)) for m in mods[a + 1:b]):
            continue
        m, nxt = mods[a], mods[b]
        n_in, n_out = _dims(m)
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


def convert(model, method, cfg, input_shape, input_exp, name="model"):
    """Swap the layers of an fp32 ``nn.Sequential`` for the method's layers (no training)."""
    if not isinstance(model, nn.Sequential):
        raise SparrowError("compress: the model must be an nn.Sequential")
    seq = _fuse_relu(copy.deepcopy(model))
    if cfg.get("permute") and method in ("smartdeal", "admm"):
        params = [m for m, _ in seq if isinstance(m, (nn.Linear, nn.Conv2d))]
        tw = sum(_dims(m)[0] * _dims(m)[1] for m in params)
        names, counts = {}, {}
        for m in params:
            p = "conv" if isinstance(m, nn.Conv2d) else "fc"
            counts[p] = counts.get(p, 0) + 1
            names[id(m)] = f"{p}{counts[p]}"

        def block_of(m, n_in, n_out):
            sp = _sd_params(n_in, n_out, cfg, k=1, name=names[id(m)])
            sizes = SimpleNamespace(in_features=n_in, out_features=n_out, block=sp["block"], tiles=sp["tiles"])
            return sp["block"], _layer_density(cfg, sizes, names[id(m)], tw)
        _permute_for_blocks(seq, block_of)
    mods, counts = [], {}
    for m, relu in seq:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            p = "conv" if isinstance(m, nn.Conv2d) else "fc"
            counts[p] = counts.get(p, 0) + 1
            mods.append(_swap(m, relu, method, cfg, f"{p}{counts[p]}"))
        elif not isinstance(m, nn.Identity):
            mods.append(m)
    return QuantModel(nn.Sequential(*mods), input_shape, input_exp, name)


# --------------------------------------------------------------------------- recipes

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


def _train_opts(cfg):
    """Options of :func:`sparrow.sw.digits.train` shared by every phase of a recipe."""
    opts = {"teacher": cfg.get("teacher"), "augment": cfg.get("augment")}
    for key in ("kd_alpha", "kd_temp"):
        if key in cfg:
            opts[key] = cfg[key]
    return opts


def _fit(qm, x, y, cfg, **kw):
    from sparrow.sw.digits import train
    return train(qm, x, y, **{**_train_opts(cfg), **kw})


def qat(qm, x, y, epochs, lr=5e-4, progress=None, seed=0, teacher=None, cfg=None):
    """Quantisation-aware finetuning with the integer-exact forward (float32 during training)."""
    calibrate(qm, x)
    qm.set_quant(True)
    if epochs:
        opts = {**(cfg or {}), "teacher": teacher if teacher is not None else (cfg or {}).get("teacher")}
        _fit(qm, x, y, opts, epochs=epochs, lr=lr, progress=progress, seed=seed)
    return qm


def _sd_layers(qm):
    return [m for m in qm.qlayers() if isinstance(m, SDLinear)]


def _criterion(cfg):
    name = cfg.get("criterion", "magnitude")
    if name == "magnitude":
        return BlockMagnitude()
    if name == "reweighted-l1":
        return ReweightedL1(lam=cfg.get("l1", 2e-4))
    raise SparrowError(f"compress: unknown criterion {name!r} (magnitude, reweighted-l1)")


def _layer_density(cfg, m, name, total_weights):
    """Target density of one layer.

    ``density`` is a float (all layers) or {layer name: density, "default": d}.
    Small layers (fewer than ``small_fraction`` of the model's weights) keep at
    least ``small_density``: they cost little storage and much accuracy.  A
    layer whose target sparsity 1 - d is below its break-even pruning ratio
    stays dense: ``break_even`` is {name: ratio}, or "auto" for the ratios of
    the hardware cycle model (:func:`sparrow.hw.cycle_model.break_even_ratio`:
    P = the layer's block, ``dense_lanes`` (default 8) MACs, ``out_lanes``
    (default 1); recorded in ``break_even_ratios``).
    """
    dens = cfg.get("density", 0.1)
    if isinstance(dens, dict):
        dens = dens.get(name, dens.get("default", 0.1))
    elif m.in_features * m.out_features < cfg.get("small_fraction", 0.1) * total_weights:
        dens = max(dens, cfg.get("small_density", 0.5))
    spec = cfg.get("break_even")
    if spec == "auto":
        from sparrow.hw.cycle_model import break_even_ratio
        from sparrow.hw.dense_engine import DENSE_LANES
        be = break_even_ratio(m.in_features, m.out_features, m.block, cfg.get("dense_lanes", DENSE_LANES),
                              cfg.get("out_lanes", 1), m.tiles)
        cfg.setdefault("break_even_ratios", {})[name] = be
    else:
        be = (spec or {}).get(name)
    if be is not None and 1.0 - dens < be:
        return 1.0
    return dens


def _smartdeal(qm, x, y, cfg, progress, seed):
    crit = _criterion(cfg)
    sds = _sd_layers(qm)
    names = _layer_names(qm)
    for m in sds:
        m.pow2 = True
    tw = sum(m.in_features * m.out_features for m in qm.qlayers())
    targets = {id(m): _layer_density(cfg, m, names[id(m)], tw) for m in sds}
    pe = cfg["prune_epochs"]

    def after(step, total):
        if step % 10 and step != total:
            return
        for m in sds:
            d = cubic_density(step, total, targets[id(m)])
            with torch.no_grad():
                m.mask.copy_(block_mask(crit.scores(m.coef * m.mask, m.block, m.tiles), d, m.block, m.tiles))
            if isinstance(crit, ReweightedL1):
                crit.update(m.coef, m.block, m.tiles)

    def penalty():
        return sum(crit.penalty(m.coef, m.block, m.tiles) for m in sds)

    _fit(qm, x, y, cfg, epochs=pe, lr=cfg["lr"], after_step=after, progress=progress, seed=seed,
         penalty=penalty if isinstance(crit, ReweightedL1) else None)
    if cfg.get("freeze_window"):
        for m in sds:
            m.cquant.freeze(m.coef, m.mask)
    _fit(qm, x, y, cfg, epochs=cfg["fix_epochs"], lr=cfg.get("fix_lr") or cfg["lr"] / 2, progress=progress,
         seed=seed + 1)


def _admm_project(w, density, block, tiles, quant):
    """Z-step: keep the top ``density`` P x 1 blocks of w, round them to powers of two."""
    mask = block_mask(BlockMagnitude().scores(w, block, tiles), density, block, tiles)
    return quant(w, mask)[0].detach(), mask


def _admm(qm, x, y, cfg, progress, seed):
    sds = _sd_layers(qm)
    names = _layer_names(qm)
    rho = cfg["rho"]
    tw = sum(m.in_features * m.out_features for m in qm.qlayers())
    dens = {id(m): _layer_density(cfg, m, names[id(m)], tw) for m in sds}
    state = {}
    for m in sds:
        z, _ = _admm_project(m.coef.detach(), dens[id(m)], m.block, m.tiles, m.cquant)
        state[id(m)] = [z, torch.zeros_like(z)]
    n = len(x)
    steps_per = (n + 63) // 64

    rho_now = [rho]

    def penalty():
        return sum(rho_now[0] / 2 * ((m.coef - state[id(m)][0] + state[id(m)][1]) ** 2).sum() for m in sds)

    def after(step, total):
        if step % steps_per:
            return
        rho_now[0] *= cfg.get("rho_growth", 1.1)           # rho grows so that W meets Z by the end
        for m in sds:                                  # Z and U updates once per epoch
            z, u = state[id(m)]
            z, _ = _admm_project(m.coef.detach() + u, dens[id(m)], m.block, m.tiles, m.cquant)
            state[id(m)] = [z, u + m.coef.detach() - z]

    _fit(qm, x, y, cfg, epochs=cfg["admm_epochs"], lr=cfg["lr"], penalty=penalty, after_step=after,
         progress=progress, seed=seed)
    for m in sds:                                      # hard prune to Z's support, masked retrain
        with torch.no_grad():
            _, mask = _admm_project(m.coef.detach(), dens[id(m)], m.block, m.tiles, m.cquant)
            m.mask.copy_(mask)
        m.pow2 = True
        if cfg.get("freeze_window"):
            m.cquant.freeze(m.coef, m.mask)
    _fit(qm, x, y, cfg, epochs=cfg["retrain_epochs"], lr=cfg.get("retrain_lr") or cfg["lr"] / 2, progress=progress,
         seed=seed + 1)


def _circulant(qm, x, y, cfg, progress, seed):
    _fit(qm, x, y, cfg, epochs=cfg["epochs"], lr=cfg["lr"], progress=progress, seed=seed)
    for m in qm.qlayers():
        if isinstance(m, BCLinear):
            m.int8_weights = True


def total_epochs(method, cfg):
    """Number of training epochs of the method's recipe (for progress bars)."""
    c = {**DEFAULTS[method], **(cfg or {})}
    keys = {"dense-int8": ("qat_epochs",), "smartdeal": ("prune_epochs", "fix_epochs", "qat_epochs"),
            "admm": ("admm_epochs", "retrain_epochs", "qat_epochs"), "circulant": ("epochs", "qat_epochs")}
    return sum(int(c[k]) for k in keys[method])


def compress(model, config, data=None, progress=None):
    """Compress an fp32 ``nn.Sequential``; returns a :class:`QuantModel`.

    ``config``: {"method": one of METHODS, "input_shape": tuple, "input_exp": int,
    "name": str, "seed": int, plus the method's options (see DEFAULTS)}.  With
    ``data = (x_train, y_train)`` the method's training recipe runs and the
    model ends calibrated, in quant mode, ready for :func:`export_model`.
    """
    config = dict(config)
    method = config.pop("method", None)
    if method not in METHODS:
        raise SparrowError(f"compress: unknown method {method!r} (known: {', '.join(METHODS)})")
    cfg = {**DEFAULTS[method], **config}
    for key in ("input_shape", "input_exp"):
        if key not in cfg:
            raise SparrowError(f"compress: config needs {key!r}")
    seed = cfg.get("seed", 0)
    torch.manual_seed(seed)
    qm = convert(model, method, cfg, cfg["input_shape"], cfg["input_exp"], cfg.get("name", "model"))
    qm.method, qm.config = method, cfg
    if data is None:
        return qm
    if cfg.get("distill", True) and cfg.get("teacher") is None:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        cfg["teacher"] = teacher
    x, y = data
    if method == "smartdeal":
        _smartdeal(qm, x, y, cfg, progress, seed)
    elif method == "admm":
        _admm(qm, x, y, cfg, progress, seed)
    elif method == "circulant":
        _circulant(qm, x, y, cfg, progress, seed)
    qat(qm, x, y, cfg["qat_epochs"], lr=cfg.get("qat_lr", 2e-4), progress=progress, seed=seed + 2, cfg=cfg)
    return qm


# --------------------------------------------------------------------------- export

def _layer_names(qm):
    names, counts = {}, {}
    for m in qm.net:
        prefix = {QLinear: "fc", SDLinear: "fc", BCLinear: "fc", nn.MaxPool2d: "pool", nn.Flatten: "flatten"}
        if isinstance(m, QLayer):
            p = "conv" if m.conv else "fc"
        else:
            p = next((v for k, v in prefix.items() if isinstance(m, k)), "layer")
        counts[p] = counts.get(p, 0) + 1
        names[id(m)] = f"{p}{counts[p]}"
    return names


@torch.no_grad()
def export_model(qm, name=None, meta=None):
    """The :class:`~sparrow.modeldir.Model` of a calibrated :class:`QuantModel` (validated)."""
    names = _layer_names(qm)
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
