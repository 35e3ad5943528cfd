"""Drop-in compressed layers with an integer-exact fake-quantised forward.

Every layer here computes a linear map ``in -> out`` (a convolution is the
same map applied to ``F.unfold`` patches, patch index c*kh*kw + r*kw + s) and
has two forwards:

* float (``quant = False``): ordinary training; weight quantisers may still be
  on (``wquant``), e.g. power-of-two coefficients with STE.
* quant (``quant = True``): activations are int8 on power-of-two grids
  (``in_exp`` -> ``out_exp``), weights are integer codes times powers of two,
  and every rounding is the format's round-half-up.  Run in float64 this is
  *exactly* the integer model of the exported layer (docs/format.md): each
  value is ``int * 2**exp`` with the same ``int`` as the golden model.

Layers: :class:`QLinear`/:class:`QConv2d` (dense int8), :class:`SDLinear`/
:class:`SDConv2d` (SmartDeal W = C.B), :class:`BCLinear`/:class:`BCConv2d`
(block-circulant through ``torch.fft``).  ``export()`` returns a
:class:`sparrow.modeldir.Layer`.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparrow import SparrowError
from sparrow.modeldir import Layer
from sparrow.sw.quant import IntQuantizer, Pow2Quantizer, fake_quant, pow2_exp_for

__all__ = ["QLayer", "QLinear", "QConv2d", "SDLinear", "SDConv2d", "BCLinear", "BCConv2d",
           "circulant_project", "circulant_expand"]

INT32 = (-(1 << 31), (1 << 31) - 1)


class QLayer(nn.Module):
    """Base of the compressed layers: im2col for convolutions, ReLU, the two forwards.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the linear map (for a convolution in_ch*kh*kw and out_ch).
    conv : dict or None
        ``{"in_ch", "out_ch", "kh", "kw", "stride", "padding"}`` for a convolution.
    """

    linear_kind = None

    def __init__(self, in_features, out_features, conv=None, relu=False, bias=True):
        for name, v in (("In features", in_features), ("Out features", out_features)):
            if not isinstance(v, int) or v < 1:
                raise TypeError(f"{name} must be a positive integer, not {v!r}")
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.conv = dict(conv) if conv else None
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.relu = relu
        self.quant = False
        self.in_exp = None
        self.out_exp = None
        self.max_out = 0.0          # calibration statistics (float forward)
        self.last_out_exp = None    # output exponent of the last quant forward / export

    @property
    def kind(self):
        return self.linear_kind.replace("linear", "conv2d") if self.conv else self.linear_kind

    # -- subclass interface
    def weight_matrix(self):
        """The effective float weight [out, in] (with the active weight quantisers)."""
        raise NotImplementedError

    def float_linear(self, x):
        return x @ self.weight_matrix().t()

    def int_acc(self, x):
        """Quant forward up to the accumulator: (acc on the grid 2**acc_exp incl. bias, acc_exp)."""
        raise NotImplementedError

    def export_params(self):
        """(kind-specific attrs, params, acc_exp)."""
        raise NotImplementedError

    # -- common
    def _patches(self, x):
        c = self.conv
        n, _, h, w = x.shape
        cols = F.unfold(x, (c["kh"], c["kw"]), padding=c["padding"], stride=c["stride"])
        oh = (h + 2 * c["padding"] - c["kh"]) // c["stride"] + 1
        ow = (w + 2 * c["padding"] - c["kw"]) // c["stride"] + 1
        return cols.transpose(1, 2).reshape(-1, self.in_features), (n, oh, ow)

    def forward(self, x):
        shape = None
        if self.conv:
            x, shape = self._patches(x)
        if self.quant:
            acc, acc_exp = self.int_acc(x)
            self.last_out_exp = self.out_exp_eff(acc_exp)
            y = fake_quant(acc, self.last_out_exp, 0 if self.relu else -128, 127)
            if x.dtype == torch.float64 and not torch.is_grad_enabled():
                y = self.exact_output(x, y)
        else:
            y = self.float_linear(x) + self.bias
            if self.relu:
                y = torch.relu(y)
            if y.numel():
                self.max_out = max(self.max_out, float(y.detach().abs().max()))
        if shape is not None:
            n, oh, ow = shape
            y = y.reshape(n, oh, ow, self.out_features).permute(0, 3, 1, 2)
        return y

    def exact_output(self, x, y):
        """Float64 inference hook: the exact exported-integer output (default: ``y`` already is)."""
        return y

    def out_exp_eff(self, acc_exp):
        return max(int(self.out_exp), int(acc_exp))

    def calibrate_out(self):
        self.out_exp = pow2_exp_for(self.max_out)

    def _bias_q(self, acc_exp):
        return fake_quant(self.bias, acc_exp, *INT32)

    def _bias_codes(self, acc_exp):
        b = torch.floor(self.bias.detach().double() / 2.0 ** acc_exp + 0.5).clamp(*INT32)
        return b.numpy().astype(np.int32)

    def export(self, name):
        if self.in_exp is None or self.out_exp is None:
            raise SparrowError(f"layer {name!r}: not calibrated (call calibrate before export)")
        attrs, params, acc_exp = self.export_params()
        self.last_out_exp = self.out_exp_eff(acc_exp)
        out_shift = self.last_out_exp - acc_exp
        if not 0 <= out_shift <= 31:
            raise SparrowError(f"layer {name!r}: out_shift {out_shift} outside [0, 31]")
        base = dict(self.conv) if self.conv else {}
        base.update({"in": self.in_features, "out": self.out_features})
        base.update(attrs)
        base.update(out_shift=int(out_shift), relu=bool(self.relu))
        params["bias"] = self._bias_codes(acc_exp)
        return Layer(name, self.kind, base, params)

    def storage_note(self):
        return ""


def _conv_dict(in_ch, out_ch, kernel_size, stride, padding):
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    return {"in_ch": in_ch, "out_ch": out_ch, "kh": kh, "kw": kw, "stride": stride, "padding": padding}


# --------------------------------------------------------------------------- dense int8

class QLinear(QLayer):
    """Dense layer with int8 weights on a per-layer power-of-two grid (``dense_linear``)."""

    linear_kind = "dense_linear"

    def __init__(self, in_features, out_features, conv=None, relu=False):
        super().__init__(in_features, out_features, conv, relu)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.wquant = IntQuantizer(8)

    @classmethod
    def from_dense(cls, weight, bias, conv=None, relu=False):
        layer = cls(weight.shape[1], weight.shape[0], conv, relu)
        with torch.no_grad():
            layer.weight.copy_(weight.reshape(weight.shape[0], -1))
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def weight_matrix(self):
        return self.weight

    def int_acc(self, x):
        wq, sw = self.wquant(self.weight)
        acc_exp = self.in_exp + sw
        return x @ wq.t() + self._bias_q(acc_exp), acc_exp

    def export_params(self):
        codes, sw = self.wquant.codes(self.weight)
        return {}, {"weight": codes.numpy().astype(np.int8)}, self.in_exp + sw


class QConv2d(QLinear):
    """Dense int8 convolution (``dense_conv2d``): QLinear on im2col patches."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, relu=False):
        c = _conv_dict(in_ch, out_ch, kernel_size, stride, padding)
        super().__init__(in_ch * c["kh"] * c["kw"], out_ch, c, relu)


# --------------------------------------------------------------------------- SmartDeal

class SDLinear(QLayer):
    """SmartDeal layer W = C . B (``sd_linear``).

    Parameters
    ----------
    k : int
        Group size: B holds one k x k basis per group of k inputs (k divides in).
    tiles : int
        T: output rows are split in T equal tiles, each with its own basis.
    block : int
        P: coefficients are pruned in P x 1 blocks (P consecutive rows of a tile,
        one column, aligned to the tile's first row; a tile's last block is shorter
        when P does not divide its rows), so whole columns of a P-row group are zero.
    levels : int
        Number of power-of-two exponents of C (<= 8: the 3-bit coef_exp).
    z_bits : int
        Width of z (8..16); z is saturated to it.
    fixed_basis : bool
        Keep B = identity (with k = 1 this is plain pruned power-of-two weights: ADMM export).
    """

    linear_kind = "sd_linear"

    def __init__(self, in_features, out_features, k=4, tiles=1, block=1, levels=8, z_bits=8,
                 conv=None, relu=False, fixed_basis=False):
        if not isinstance(k, int) or k < 1 or in_features % k:
            raise ValueError(f"K must be a positive integer dividing in ({in_features}), not {k!r}")
        if not isinstance(tiles, int) or tiles < 1 or out_features % tiles:
            raise ValueError(f"Tiles must be a positive integer dividing out ({out_features}), not {tiles!r}")
        if not isinstance(block, int) or not 1 <= block <= out_features // tiles:
            raise ValueError(f"Block must be a positive integer at most out/tiles "
                             f"({out_features // tiles}), not {block!r}")
        if not isinstance(z_bits, int) or not 8 <= z_bits <= 16:
            raise ValueError(f"Z bits must be an integer in [8, 16], not {z_bits!r}")
        super().__init__(in_features, out_features, conv, relu)
        self.k, self.tiles, self.block, self.z_bits = k, tiles, block, z_bits
        g = in_features // k
        eye = torch.eye(k).expand(tiles, g, k, k).clone()
        self.basis = nn.Parameter(eye, requires_grad=not fixed_basis)
        self.coef = nn.Parameter(torch.zeros(out_features, in_features))
        self.register_buffer("mask", torch.ones(out_features, in_features))
        self.cquant = Pow2Quantizer(levels)
        self.bquant = IntQuantizer(8)
        self.pow2 = False           # float forward: quantise C to powers of two (STE)
        self.z_exp = None
        self.max_z = 0.0

    # W[o, g*k+j] = sum_i C[o, g*k+i] * B[t(o), g, i, j]
    def _compose(self, c, b):
        t, r, g, k = self.tiles, self.out_features // self.tiles, self.in_features // self.k, self.k
        w = torch.einsum("trgi,tgij->trgj", c.reshape(t, r, g, k), b)
        return w.reshape(self.out_features, self.in_features)

    def coef_q(self):
        if self.pow2:
            return self.cquant(self.coef, self.mask)[0]
        return self.coef * self.mask

    def weight_matrix(self):
        return self._compose(self.coef_q(), self.basis)

    def float_linear(self, x):
        y = x @ self.weight_matrix().t()
        with torch.no_grad():
            if x.shape[0]:
                m = x.shape[0]
                z = torch.einsum("tgij,mgj->mtgi", self.basis, x.reshape(m, -1, self.k))
                self.max_z = max(self.max_z, float(z.abs().max()))
        return y

    def _zlim(self):
        return -(1 << (self.z_bits - 1)), (1 << (self.z_bits - 1)) - 1

    def z_exp_eff(self, sb):
        return max(int(self.z_exp), int(self.in_exp) + int(sb))

    def calibrate_z(self):
        self.z_exp = pow2_exp_for(self.max_z, self._zlim()[1])

    def int_acc(self, x):
        bq, sb = self.bquant(self.basis)
        m = x.shape[0]
        z = torch.einsum("tgij,mgj->mtgi", bq, x.reshape(m, -1, self.k)).reshape(m, self.tiles, self.in_features)
        zexp = self.z_exp_eff(sb)
        z = fake_quant(z, zexp, *self._zlim())
        cq, elo = self.cquant(self.coef, self.mask)
        t, r = self.tiles, self.out_features // self.tiles
        acc = torch.einsum("mti,tri->mtr", z, cq.reshape(t, r, self.in_features)).reshape(m, self.out_features)
        acc_exp = zexp + elo
        return acc + self._bias_q(acc_exp), acc_exp

    def export_params(self):
        bcodes, sb = self.bquant.codes(self.basis)
        zexp = self.z_exp_eff(sb)
        sign, code, elo = self.cquant.codes(self.coef, self.mask)
        basis_shift = zexp - self.in_exp - sb
        attrs = {"k": self.k, "basis_shift": int(basis_shift), "z_bits": self.z_bits}
        params = {"basis": bcodes.numpy().astype(np.int8), "coef_sign": sign.numpy().astype(np.int8),
                  "coef_exp": code.numpy().astype(np.uint8)}
        return attrs, params, zexp + elo

    # -- decomposition from a dense weight (alternating least squares)
    @torch.no_grad()
    def decompose_(self, weight, iters=8, density=1.0, criterion=None):
        """Fit C (then B) to a dense weight [out, in] by alternating least squares.

        C-step: C = W B^-1 per group (exact for invertible B), pruned to ``density`` in
        P x 1 blocks by ``criterion`` and, when ``pow2`` is on, rounded to powers of two;
        B-step: per tile and group, B = argmin ||C_g B - W_g|| (batched least squares).
        Returns the relative Frobenius error ||C.B - W|| / ||W|| of the final fit.
        """
        from sparrow.sw.prune import BlockMagnitude, block_mask
        crit = criterion or BlockMagnitude()
        w = weight.reshape(self.out_features, self.in_features).double()
        t, r, g, k = self.tiles, self.out_features // self.tiles, self.in_features // self.k, self.k
        wt = w.reshape(t, r, g, k).permute(0, 2, 1, 3)                 # [t, g, r, k]
        b = torch.eye(k, dtype=torch.float64).expand(t, g, k, k).clone()
        for it in range(max(1, iters)):
            c = torch.linalg.solve(b, wt, left=False)                  # C_g B_g = W_g
            c = c.permute(0, 2, 1, 3).reshape(self.out_features, self.in_features)
            mask = block_mask(crit.scores(c, self.block, self.tiles), density, self.block, self.tiles, r) \
                if density < 1.0 else torch.ones_like(c)
            q = self.cquant(c, mask)[0] if self.pow2 else c * mask
            ct = q.reshape(t, r, g, k).permute(0, 2, 1, 3)              # [t, g, r, k]
            if it == max(1, iters) - 1:
                break
            sol = torch.linalg.lstsq(ct, wt).solution                   # [t, g, k, k]
            ok = torch.linalg.matrix_rank(ct) == k
            b = torch.where(ok[..., None, None], sol, b)
        self.basis.copy_(b.float())
        self.coef.copy_(c.float())
        self.mask.copy_(mask.float())
        err = (self._compose(q, b) - w).norm() / w.norm().clamp_min(1e-30)
        return float(err)


class SDConv2d(SDLinear):
    """SmartDeal convolution (``sd_conv2d``): SDLinear on im2col patches."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, relu=False, **kw):
        c = _conv_dict(in_ch, out_ch, kernel_size, stride, padding)
        super().__init__(in_ch * c["kh"] * c["kw"], out_ch, conv=c, relu=relu, **kw)


# --------------------------------------------------------------------------- block-circulant

def circulant_expand(w):
    """w [out/k, in/k, k] -> dense [out, in]; block (i, j) row r col c = w[i, j, (r - c) mod k]."""
    bo, bi, k = w.shape
    r = torch.arange(k)
    idx = (r[:, None] - r[None, :]) % k
    return w[:, :, idx].permute(0, 2, 1, 3).reshape(bo * k, bi * k)


def circulant_project(weight, k):
    """Least-squares projection of a dense [out, in] weight onto block-circulant w [out/k, in/k, k]."""
    out, n_in = weight.shape
    wb = weight.reshape(out // k, k, n_in // k, k).permute(0, 2, 1, 3)   # [bo, bi, r, c]
    r = torch.arange(k)
    d = (r[:, None] - r[None, :]) % k
    w = torch.zeros(out // k, n_in // k, k, dtype=weight.dtype)
    for di in range(k):
        w[:, :, di] = wb[:, :, d == di].mean(-1)
    return w


class BCLinear(QLayer):
    """Block-circulant layer (``bc_linear``): k x k circulant blocks, forward through rfft/irfft.

    Training uses rfft/irfft; the quant forward in float64 inference runs the
    fixed-point FFT datapath of :mod:`sparrow.fixedfft` on the exported
    integers, so it equals the golden model (the ideal circulant product is
    :func:`sparrow.sw.golden.bc_linear_ideal`).
    """

    linear_kind = "bc_linear"

    def __init__(self, in_features, out_features, k=8, conv=None, relu=False):
        if k not in (4, 8, 16, 32, 64) or in_features % k or out_features % k:
            raise ValueError(f"K must be a power of two in [4, 64] dividing in ({in_features}) and "
                             f"out ({out_features}), not {k!r}")
        super().__init__(in_features, out_features, conv, relu)
        self.k = k
        self.w = nn.Parameter(torch.randn(out_features // k, in_features // k, k) / math.sqrt(in_features))
        self.wquant = IntQuantizer(8)
        self.int8_weights = False   # float forward with int8-quantised w (STE)

    def _w(self):
        return self.wquant(self.w)[0] if self.int8_weights else self.w

    def weight_matrix(self):
        return circulant_expand(self._w())

    def _fft_linear(self, x, w):
        m, k = x.shape[0], self.k
        xf = torch.fft.rfft(x.reshape(m, -1, k), dim=-1)
        wf = torch.fft.rfft(w, dim=-1)
        yf = torch.einsum("mjf,ijf->mif", xf, wf.to(xf.dtype))
        return torch.fft.irfft(yf, n=k, dim=-1).reshape(m, self.out_features)

    def float_linear(self, x):
        return self._fft_linear(x, self._w())

    def int_acc(self, x):
        wq, sw = self.wquant(self.w)
        acc_exp = self.in_exp + sw
        if x.dtype == torch.float64:
            acc = x @ circulant_expand(wq).t()     # exact integer circulant product
        else:
            acc = self._fft_linear(x, wq)
        return acc + self._bias_q(acc_exp), acc_exp

    def export_params(self):
        """Attributes ``k`` and ``ws_shift`` = 8 - log2(k): the chip stores the integer weight spectra
        round(DFT(w)), 8 + log2(k) bits a component (docs/format.md, step 2), not 16."""
        from sparrow import fixedfft as golden_bc
        codes, sw = self.wquant.codes(self.w)
        return ({"k": self.k, "ws_shift": golden_bc.max_ws_shift(self.k)}, {"w": codes.numpy().astype(np.int8)},
                self.in_exp + sw)

    def exact_output(self, x, y):
        """In float64 inference, the fixed-point FFT datapath of the exported layer (sparrow.fixedfft)."""
        from sparrow import fixedfft as golden_bc
        layer = self.export("bc")
        xi = torch.round(x / 2.0 ** self.in_exp).to(torch.int64).numpy()
        out = golden_bc.bc_linear_forward(layer, xi)
        return torch.from_numpy(out.astype(np.float64)) * 2.0 ** self.last_out_exp

    @torch.no_grad()
    def project_(self, weight):
        self.w.copy_(circulant_project(weight.reshape(self.out_features, self.in_features), self.k))
        return self


class BCConv2d(BCLinear):
    """Block-circulant convolution (``bc_conv2d``): BCLinear on im2col patches."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, relu=False, k=8):
        c = _conv_dict(in_ch, out_ch, kernel_size, stride, padding)
        super().__init__(in_ch * c["kh"] * c["kw"], out_ch, k=k, conv=c, relu=relu)
