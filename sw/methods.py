"""The compression methods: one registered class each, with its configuration, recipe and export.

:data:`METHODS` maps a method name to its :class:`Method` class; the command
line's choices, :func:`sparrow.sw.compressor.compress`, the digits pipeline
and the benchmarks all read it.  A method class holds

* ``Config``: its frozen, validated configuration (:mod:`sparrow.sw.config`),
  whose defaults are the method's defaults;
* ``make_layer``: the drop-in layer that replaces each Linear/Conv2d;
* ``recipe``: the training and compression steps run before the final QAT;
* ``export``: the model directory contents of the trained model.

Methods (the recipes of the seed papers):

* ``smartdeal``: ALS decomposition W = C.B of every layer, finetuning with
  power-of-two C (STE) and gradual P x 1 block pruning to ``density``, QAT.
* ``circulant``: projection of every layer whose sizes k divides onto
  block-circulant form (others stay dense int8), finetuning, QAT.
* ``admm``: ADMM-NN joint pruning + power-of-two quantisation of the dense
  weights (W / Z / U updates, Z = block-sparse power-of-two projection),
  masked retraining, QAT; exported as sd layers with k = 1 and B = 1.
* ``dense-int8``: calibrate activation scales, then QAT (int8 weights and
  activations, power-of-two scales).
"""

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from sparrow.sw.config import (MethodConfig, check_block, check_density, check_levels, check_ratio,
                               layer_value, per_layer)
from sparrow.sw.layers import BCConv2d, BCLinear, QConv2d, QLinear, SDConv2d, SDLinear
from sparrow.sw.prune import CRITERIA, block_mask, cubic_density, make_criterion
from sparrow.sw.qmodel import (PARAM_LAYERS, conv_args, dims, export_model, fuse_relu, layer_names, param_names,
                               permute_for_blocks)
from sparrow.validate import check_bool, check_choice, check_int, check_number, check_range

__all__ = ["METHODS", "BLOCK_METHODS", "register", "Method", "SmartDeal", "Circulant", "ADMM", "DenseInt8", "LayerShape",
           "SmartDealConfig", "CirculantConfig", "ADMMConfig", "DenseInt8Config"]

METHODS = {}


def register(cls):
    """Class decorator: enter a :class:`Method` subclass in :data:`METHODS` under ``cls.Config.method``."""
    METHODS[cls.Config.method] = cls
    return cls


class LayerShape(NamedTuple):
    """The geometry of one block-pruned layer: sizes of its linear map, P and T as the method sets them."""
    name: str
    in_features: int
    out_features: int
    block: int
    tiles: int


def _largest_divisor(n, limit):
    return max(d for d in range(1, max(1, limit) + 1) if n % d == 0)


def _dense_int8(m, relu):
    n_in, n_out = dims(m)
    q = QConv2d(**conv_args(m), relu=relu) if isinstance(m, nn.Conv2d) else QLinear(n_in, n_out, relu=relu)
    with torch.no_grad():
        q.weight.copy_(m.weight.detach().reshape(n_out, n_in))
    return q


class Method:
    """Base of the compression methods: bound to one configuration (``self.config``).

    Subclasses set ``Config`` and override :meth:`make_layer`, and :meth:`recipe`
    where they train before QAT.
    """

    Config: ClassVar[type] = MethodConfig

    def __init__(self, config):
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, not {type(config).__name__}")
        self.config = config

    def prepare(self, seq):
        """Rework the fused fp32 layers [(module, relu)] in place before conversion (default: nothing)."""

    def make_layer(self, module, relu, name):
        """The compressed layer replacing ``module`` (a Linear or Conv2d, ReLU fused when ``relu``)."""
        raise NotImplementedError

    def recipe(self, qm, trainer):
        """Train/compress ``qm`` with ``trainer`` (:class:`sparrow.sw.qmodel.Trainer`) before the final QAT."""

    def layer_shapes(self, model):
        """[LayerShape] of the layers this method prunes in P x 1 blocks (none by default)."""
        return []

    def export(self, qm, name=None, meta=None):
        """The :class:`~sparrow.modeldir.Model` of the trained, calibrated ``qm``."""
        return export_model(qm, name, meta)


# --------------------------------------------------------------------------- block pruning

@dataclasses.dataclass(frozen=True)
class _BlockConfig(MethodConfig):
    """Options of the methods that prune P x 1 blocks (smartdeal, admm); see their classes."""

    density: object = 0.1
    block: object = 4
    levels: object = 8
    lr: float = 2e-3
    tiles: int | None = None
    z_bits: int | None = None
    freeze_window: bool | None = None
    permute: bool | None = None
    small_fraction: float | None = None
    small_density: float | None = None
    break_even: object = None
    dense: object = None

    def check(self):
        object.__setattr__(self, "density", per_layer(self.density, "density", check_density))
        if self.dense is not None:
            object.__setattr__(self, "dense", per_layer(self.dense, "dense", check_bool))
        object.__setattr__(self, "block", per_layer(self.block, "block", check_block))
        object.__setattr__(self, "levels", per_layer(self.levels, "levels", check_levels))
        if self.tiles is not None:
            check_int(self.tiles, "tiles", 1, 4096)
        if self.z_bits is not None:
            check_range(self.z_bits, "z_bits", 8, 16)
        if self.small_fraction is not None:
            check_ratio(self.small_fraction, "small_fraction")
        if self.small_density is not None:
            check_density(self.small_density, "small_density")
        if self.break_even is not None:
            if not isinstance(self.break_even, Mapping):
                raise ValueError(f"break_even must map layer names to ratios in [0, 1], not {self.break_even!r}")
            object.__setattr__(self, "break_even", per_layer(self.break_even, "break_even", check_ratio))
        crit = getattr(self, "criterion", None)
        if crit is not None:
            check_choice(crit, "criterion", tuple(CRITERIA))


class _BlockPruned(Method):
    """What smartdeal and admm share: per-layer P, T and density, break-even, channel permutation."""

    BASIS_K = None      # k of every layer (None: the method chooses per layer)

    def _params(self, n_in, n_out, name, k=None):
        """(k, tiles, block, levels, z_bits) of one layer as SDLinear keyword arguments."""
        c = self.config
        t = 1 if c.tiles is None else c.tiles
        tiles = t if n_out % t == 0 else 1
        if k is None:
            # keep the basis (8 * T * in * k bits) at most 1/128 of the fp32 weights
            k = _largest_divisor(n_in, min(c.k, n_out // (32 * tiles)))
        block = min(n_out // tiles, layer_value(c.block, name, 4))     # a short last block when P does not divide
        return dict(k=k, tiles=tiles, block=block, levels=layer_value(c.levels, name, 8),
                    z_bits=8 if c.z_bits is None else c.z_bits)

    def layer_params(self, n_in, n_out, name):
        """(k, tiles, block, levels, z_bits) of one layer as this method builds it (SDLinear keyword arguments)."""
        return self._params(n_in, n_out, name, k=self.BASIS_K)

    def density(self, layer, total_weights):
        """Target density of one layer (a :class:`LayerShape`) in a model of ``total_weights`` weights.

        ``density`` is one value or per layer; without a per-layer mapping, a layer
        of fewer than ``small_fraction`` (default 0.1) of the model's weights keeps
        at least ``small_density`` (default 0.5): it costs little storage and much
        accuracy.  A layer whose target sparsity 1 - d is below its ``break_even``
        ratio stays dense (1.0): pruning it would not make it faster.
        """
        c, name = self.config, layer.name
        dens = c.density
        if isinstance(dens, Mapping):
            dens = dens.get(name, dens.get("default", 0.1))
        elif layer.in_features * layer.out_features < (0.1 if c.small_fraction is None else c.small_fraction) * \
                total_weights:
            dens = max(dens, 0.5 if c.small_density is None else c.small_density)
        be = c.break_even.get(name) if c.break_even is not None else None
        if be is not None and 1.0 - dens < be:
            return 1.0
        return dens

    def _shape(self, module, name):
        n_in, n_out = dims(module)
        p = self._params(n_in, n_out, name, k=1)
        return LayerShape(name, n_in, n_out, p["block"], p["tiles"])

    def layer_shapes(self, model):
        seq = fuse_relu(model)
        names = param_names(seq)
        return [self._shape(m, names[id(m)]) for m, _ in seq if isinstance(m, PARAM_LAYERS)]

    def prepare(self, seq):
        """With ``permute``: reorder output channels so that the kept blocks keep more weight energy."""
        if not self.config.permute:
            return
        names = param_names(seq)
        total = sum(dims(m)[0] * dims(m)[1] for m, _ in seq if isinstance(m, PARAM_LAYERS))

        def block_of(m, n_in, n_out):
            shape = self._shape(m, names[id(m)])
            return shape.block, 1.0 if self.is_dense(shape.name) else self.density(shape, total)
        permute_for_blocks(seq, block_of)

    def is_dense(self, name):
        """Whether layer ``name`` stays a dense int8 layer (option ``dense``: the dense engine runs it)."""
        return bool(layer_value(self.config.dense, name, False))

    def make_layer(self, module, relu, name):
        if self.is_dense(name):
            return _dense_int8(module, relu)
        n_in, n_out = dims(module)
        p = self._params(n_in, n_out, name, k=self.BASIS_K)
        fixed = self.BASIS_K == 1
        if isinstance(module, nn.Conv2d):
            return SDConv2d(**conv_args(module), relu=relu, fixed_basis=fixed, **p)
        return SDLinear(n_in, n_out, relu=relu, fixed_basis=fixed, **p)

    def _targets(self, qm):
        """{id(layer): (layer, target density)} of the sd layers of ``qm``, in order."""
        names = layer_names(qm)
        total = sum(m.in_features * m.out_features for m in qm.qlayers())
        return {id(m): (m, self.density(LayerShape(names[id(m)], m.in_features, m.out_features, m.block, m.tiles),
                                        total))
                for m in qm.qlayers() if isinstance(m, SDLinear)}


# --------------------------------------------------------------------------- smartdeal

@dataclasses.dataclass(frozen=True)
class SmartDealConfig(_BlockConfig):
    """SmartDeal: W = C . B, C sparse power-of-two in P x 1 blocks, B a k x k basis per group of k inputs.

    Parameters (beside :class:`~sparrow.sw.config.MethodConfig`'s)
    ----------
    k : int
        Basis group size (the largest divisor of ``in`` at most k and out / (32 T)).
    tiles : int
        T: output-row tiles with their own basis (1 when T does not divide ``out``).
    block : int or per layer
        P: rows per pruning block (at most out / T), aligned to the PE array's row blocks of
        P rows: a tile's last block is shorter when P does not divide out / T (10 rows in
        blocks of 4: 4, 4, 2).
    levels : int or per layer
        Power-of-two exponents of C, 1..8 (3-bit codes).
    z_bits : int
        Width of z, 8..16.
    density : float or per layer
        Fraction of P x 1 blocks of C kept, in (0, 1].
    prune_epochs, fix_epochs : int
        Gradual pruning (cubic schedule, mask every 10 steps), then fixed-mask finetuning.
    criterion : str
        Block criterion, a name of :data:`sparrow.sw.prune.CRITERIA`; ``l1`` its penalty strength.
    lr, fix_lr : float
        Learning rates (fix_lr default lr / 2).
    als_iters : int
        Alternating least squares iterations of the initial decomposition.
    freeze_window : bool
        Fix each layer's exponent window once the mask is final.
    permute : bool
        Reorder output channels so that rows with large weights in the same columns share blocks.
    small_fraction, small_density : float
        Layers below this fraction of the weights keep at least this density.
    break_even : {layer: ratio} or None
        A layer whose target sparsity is below its ratio stays dense.
    dense : bool or per layer
        Layers kept as dense int8 layers (``dense_linear``, run by the dense engine) instead of sd layers.
    """

    k: int = 4
    tiles: int = 1
    levels: object = 8
    z_bits: int = 8
    density: object = 0.12
    prune_epochs: int = 30
    fix_epochs: int = 10
    criterion: str = "magnitude"
    als_iters: int = 4
    fix_lr: float | None = None
    l1: float | None = None

    method: ClassVar[str] = "smartdeal"
    REPORTED: ClassVar[tuple] = ("k", "tiles", "block", "levels", "z_bits", "density", "prune_epochs", "fix_epochs",
                                 "qat_epochs", "criterion", "lr", "als_iters")
    EPOCH_FIELDS: ClassVar[tuple] = ("prune_epochs", "fix_epochs", "qat_epochs")

    def check(self):
        super().check()
        check_int(self.k, "k", 1, 4096)
        check_int(self.als_iters, "als_iters", 1, 1000)
        if self.l1 is not None:
            check_number(self.l1, "l1", 0, 1)


@register
class SmartDeal(_BlockPruned):
    """SmartDeal (sd layers): decomposition, gradual block pruning of power-of-two C, fixed-mask finetuning."""

    Config = SmartDealConfig

    def make_layer(self, module, relu, name):
        q = super().make_layer(module, relu, name)
        if isinstance(q, SDLinear):
            with torch.no_grad():
                q.decompose_(module.weight.detach(), iters=self.config.als_iters)
        return q

    def recipe(self, qm, trainer):
        c = self.config
        crit = make_criterion(c.criterion, c.l1)
        targets = self._targets(qm)
        sds = [m for m, _ in targets.values()]
        for m in sds:
            m.pow2 = True

        def after(step, total):
            if step % 10 and step != total:
                return
            for m, final in targets.values():
                d = cubic_density(step, total, final)
                with torch.no_grad():
                    m.mask.copy_(block_mask(crit.scores(m.coef * m.mask, m.block, m.tiles), d, m.block, m.tiles,
                                            m.out_features // m.tiles))
                crit.update(m.coef, m.block, m.tiles)

        trainer.fit(qm, c.prune_epochs, c.lr, c.seed, after_step=after, penalty=crit.regulariser(sds))
        if c.freeze_window:
            for m in sds:
                m.cquant.freeze(m.coef, m.mask)
        trainer.fit(qm, c.fix_epochs, c.fix_lr or c.lr / 2, c.seed + 1)


# --------------------------------------------------------------------------- circulant

def check_circulant_k(value, name):
    """A circulant block size: 4, 8, 16, 32 or 64, or 0 (keep the layer dense int8)."""
    check_choice(value, name, CIRCULANT_KS + (0,))


CIRCULANT_KS = (4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class CirculantConfig(MethodConfig):
    """Block-circulant: k x k circulant blocks (one length-k vector each) where k divides in and out.

    Parameters (beside :class:`~sparrow.sw.config.MethodConfig`'s)
    ----------
    k : int or per layer
        Preferred block size (4, 8, 16, 32 or 64); a layer it does not fit tries 16, 8, 4, else stays dense int8.
        0 keeps a layer dense int8 (per layer, e.g. ``{"fc2": 0, "default": 16}``).
    epochs : int
        Finetuning epochs of the projected model (float forward, int8 w in the last epochs' export).
    lr : float
        Finetuning learning rate.
    """

    k: object = 16
    epochs: int = 30
    lr: float = 2e-3

    method: ClassVar[str] = "circulant"
    REPORTED: ClassVar[tuple] = ("k", "epochs", "qat_epochs", "lr")
    EPOCH_FIELDS: ClassVar[tuple] = ("epochs", "qat_epochs")

    def check(self):
        object.__setattr__(self, "k", per_layer(self.k, "k", check_circulant_k))


@register
class Circulant(Method):
    """Block-circulant (bc layers): least-squares projection, finetuning, int8 w."""

    Config = CirculantConfig

    def block_size(self, n_in, n_out, name):
        """k of one layer (None: dense int8): the configured k, else 16, 8, 4, where it divides in and out."""
        want = layer_value(self.config.k, name, 16)
        if want == 0:
            return None
        return next((k for k in (want, 16, 8, 4) if n_in % k == 0 and n_out % k == 0), None)

    def make_layer(self, module, relu, name):
        n_in, n_out = dims(module)
        k = self.block_size(n_in, n_out, name)
        if k is None:
            return _dense_int8(module, relu)
        if isinstance(module, nn.Conv2d):
            q = BCConv2d(**conv_args(module), relu=relu, k=k)
        else:
            q = BCLinear(n_in, n_out, k=k, relu=relu)
        return q.project_(module.weight.detach())

    def recipe(self, qm, trainer):
        c = self.config
        trainer.fit(qm, c.epochs, c.lr, c.seed)
        for m in qm.qlayers():
            if isinstance(m, BCLinear):
                m.int8_weights = True


# --------------------------------------------------------------------------- admm

@dataclasses.dataclass(frozen=True)
class ADMMConfig(_BlockConfig):
    """ADMM-NN joint block pruning and power-of-two quantisation (sd layers with k = 1, B = 1).

    Parameters (beside :class:`~sparrow.sw.config.MethodConfig`'s)
    ----------
    block, levels, density, tiles, z_bits, freeze_window, permute, small_fraction, small_density, break_even, dense
        As for :class:`SmartDealConfig` (tiles default 1, z_bits default 8).
    admm_epochs : int
        Epochs of W training with the ADMM penalty; Z and U are updated once per epoch.
    rho, rho_growth : float
        Penalty strength and its growth per epoch (so that W meets Z by the end).
    retrain_epochs : int
        Masked retraining on Z's support.
    lr, retrain_lr : float
        Learning rates (retrain_lr default lr / 2).
    criterion : str or None
        The block criterion whose scores the Z projection keeps (default magnitude).
    """

    density: object = 0.08
    admm_epochs: int = 30
    rho: float = 1e-3
    rho_growth: float = 1.1
    retrain_epochs: int = 20
    retrain_lr: float | None = None
    criterion: str | None = None

    method: ClassVar[str] = "admm"
    REPORTED: ClassVar[tuple] = ("block", "levels", "density", "admm_epochs", "rho", "rho_growth", "retrain_epochs",
                                 "qat_epochs", "lr", "break_even")
    EPOCH_FIELDS: ClassVar[tuple] = ("admm_epochs", "retrain_epochs", "qat_epochs")

    def check(self):
        super().check()
        check_number(self.rho, "rho", 0, 1e6)
        check_number(self.rho_growth, "rho_growth", 1, 10)


@register
class ADMM(_BlockPruned):
    """ADMM-NN (sd layers, k = 1, fixed basis 1): W / Z / U updates, hard prune to Z, masked retraining."""

    Config = ADMMConfig
    BASIS_K = 1

    def make_layer(self, module, relu, name):
        q = super().make_layer(module, relu, name)
        if isinstance(q, SDLinear):
            with torch.no_grad():
                q.coef.copy_(module.weight.detach().reshape(q.out_features, q.in_features))
        return q

    def _project(self, crit, w, m, density):
        """Z-step: keep the top ``density`` P x 1 blocks of w by ``crit``, round them to powers of two."""
        mask = block_mask(crit.scores(w, m.block, m.tiles), density, m.block, m.tiles, m.out_features // m.tiles)
        return m.cquant(w, mask)[0].detach(), mask

    def recipe(self, qm, trainer):
        c = self.config
        crit = make_criterion(c.criterion or "magnitude")
        targets = self._targets(qm)
        state = {}
        for i, (m, dens) in targets.items():
            z, _ = self._project(crit, m.coef.detach(), m, dens)
            state[i] = [z, torch.zeros_like(z)]
        steps_per = (len(trainer.x) + 63) // 64
        rho_now = [c.rho]

        def penalty():
            return sum(rho_now[0] / 2 * ((m.coef - state[i][0] + state[i][1]) ** 2).sum()
                       for i, (m, _) in targets.items())

        def after(step, total):
            if step % steps_per:
                return
            rho_now[0] *= c.rho_growth          # rho grows so that W meets Z by the end
            for i, (m, dens) in targets.items():    # Z and U updates once per epoch
                z, u = state[i]
                z, _ = self._project(crit, m.coef.detach() + u, m, dens)
                state[i] = [z, u + m.coef.detach() - z]

        trainer.fit(qm, c.admm_epochs, c.lr, c.seed, penalty=penalty, after_step=after)
        for m, dens in targets.values():            # hard prune to Z's support, masked retrain
            with torch.no_grad():
                _, mask = self._project(crit, m.coef.detach(), m, dens)
                m.mask.copy_(mask)
            m.pow2 = True
            if c.freeze_window:
                m.cquant.freeze(m.coef, m.mask)
        trainer.fit(qm, c.retrain_epochs, c.retrain_lr or c.lr / 2, c.seed + 1)


# --------------------------------------------------------------------------- dense int8

@dataclasses.dataclass(frozen=True)
class DenseInt8Config(MethodConfig):
    """Dense int8: int8 weights and activations on power-of-two grids (only QAT trains)."""

    method: ClassVar[str] = "dense-int8"
    REPORTED: ClassVar[tuple] = ("qat_epochs",)
    EPOCH_FIELDS: ClassVar[tuple] = ("qat_epochs",)


@register
class DenseInt8(Method):
    """Dense int8 (dense layers): the baseline every hardware claim is measured against."""

    Config = DenseInt8Config

    def make_layer(self, module, relu, name):
        return _dense_int8(module, relu)


#: The methods that prune P x 1 blocks (option ``block``: smartdeal, admm).
BLOCK_METHODS = tuple(name for name, cls in METHODS.items() if issubclass(cls, _BlockPruned))
