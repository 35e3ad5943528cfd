"""Small composable quantisers with straight-through estimators (STE).

Every quantiser maps a float tensor onto a power-of-two-scaled integer grid
and back (fake quantisation).  Rounding is round-half-up, floor(v + 1/2),
the same as the format's ``rshift``: on float64 the fake-quantised value is
exactly ``int * 2**exp`` with ``int`` what the integer model computes.

* :func:`ste_round` / :func:`fake_quant`: uniform grid 2**exp, clamp [lo, hi].
* :class:`Pow2Scale`: the smallest exponent e with max|x| <= hi * 2**e.
* :class:`IntQuantizer`: int8 (or nbit) weights with a power-of-two scale.
* :class:`Pow2Quantizer`: sign * 2**e with e in a window of ``levels`` exponents
  (the SmartDeal / ADMM-NN coefficient set), zeros kept where the mask is 0.
"""

import math

import torch

__all__ = ["ste_round", "fake_quant", "pow2_exp_for", "IntQuantizer", "Pow2Quantizer"]


def ste_round(v):
    """floor(v + 0.5) forward (exactly: the STE term v - v.detach() is an exact 0), identity gradient."""
    return torch.floor(v.detach() + 0.5) + (v - v.detach())


def fake_quant(v, exp, lo=-128, hi=127):
    """clamp(floor(v / 2**exp + 1/2), lo, hi) * 2**exp with STE rounding (gradient 0 outside [lo, hi])."""
    s = 2.0 ** int(exp)
    return torch.clamp(ste_round(v / s), lo, hi) * s


def pow2_exp_for(maxabs, hi=127):
    """Smallest integer e with maxabs <= hi * 2**e (maxabs > 0); a float maxabs of 0 gives -16."""
    maxabs = float(maxabs)
    if not maxabs > 0:
        return -16
    e = math.ceil(math.log2(maxabs / hi))
    while maxabs > hi * 2.0 ** e:  # guard float log2 rounding
        e += 1
    while e > -64 and maxabs <= hi * 2.0 ** (e - 1):
        e -= 1
    return e


class IntQuantizer:
    """Signed ``bits``-bit integer weights on a power-of-two grid chosen from max|w|.

    ``__call__(w)`` returns (fake-quantised w, exponent); ``codes(w)`` the integers.
    """

    def __init__(self, bits=8):
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"Bits must be an integer in [2, 16], not {bits!r}")
        self.bits = bits
        self.hi = (1 << (bits - 1)) - 1

    def exp(self, w):
        return pow2_exp_for(w.detach().abs().max(), self.hi)

    def __call__(self, w):
        e = self.exp(w)
        return fake_quant(w, e, -self.hi - 1, self.hi), e

    def codes(self, w):
        e = self.exp(w)
        v = w.detach().double() / 2.0 ** e
        return torch.clamp(torch.floor(v + 0.5), -self.hi - 1, self.hi).to(torch.int64), e


class Pow2Quantizer:
    """Coefficients sign * 2**e, e in [e_lo, e_lo + levels - 1] (``levels`` <= 8 for the 3-bit exp code).

    e_hi is the rounded log2 of max|w| (over unmasked entries), e_lo = e_hi - levels + 1.
    Every unmasked weight keeps its sign and takes the nearest power of two in
    the log domain (2**e up to sqrt(2) * 2**e) clamped to the window, so the
    mask alone decides the sparsity.
    Gradients pass straight through (STE).
    """

    def __init__(self, levels=8):
        if not isinstance(levels, int) or not 1 <= levels <= 8:
            raise ValueError(f"Levels must be an integer in [1, 8], not {levels!r}")
        self.levels = levels
        self.fixed_e_hi = None      # set by freeze(): the window stops following max|w|

    def freeze(self, w, mask=None):
        """Fix the window at the one of ``w`` now (training then cannot shift every exponent at once)."""
        self.fixed_e_hi = None
        self.fixed_e_hi = self.window(w, mask)[1]
        return self

    def window(self, w, mask=None):
        if self.fixed_e_hi is not None:
            return self.fixed_e_hi - self.levels + 1, self.fixed_e_hi
        a = w.detach().abs()
        if mask is not None:
            a = a * mask
        m = float(a.max())
        e_hi = math.floor(math.log2(m) + 0.5) if m > 0 else 0
        return e_hi - self.levels + 1, e_hi

    def codes(self, w, mask=None):
        """(sign int8-like int64 tensor, exp code int64 in [0, levels-1], e_lo)."""
        e_lo, e_hi = self.window(w, mask)
        # float64 whatever the model's dtype: a float32 model and its float64 copy get the same codes
        wd = w.detach().double()
        sign = torch.sign(wd)
        if mask is not None:
            sign = sign * (mask.to(wd.device) != 0)
        e = torch.floor(torch.log2(wd.abs().clamp_min(1e-30)) + 0.5).clamp(e_lo, e_hi)   # nearest in log2
        sign = sign.to(torch.int64)
        code = torch.where(sign != 0, e - e_lo, torch.zeros_like(e)).to(torch.int64)
        return sign, code, e_lo

    def __call__(self, w, mask=None):
        sign, code, e_lo = self.codes(w, mask)
        q = sign.to(w.dtype) * torch.exp2((code + e_lo).to(w.dtype))
        return q + (w - w.detach()), e_lo
