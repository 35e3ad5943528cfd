"""Storage accounting of a model directory, the papers' convention.

Every stored weight bit counts: codes, sparsity indices or masks, bases,
per-layer shifts and scales, against 32 bits per weight of the fp32 model.
Biases are reported beside it (``bias_bits``), not hidden in the ratio.

Per kind (``in``/``out`` are the im2col sizes for convolutions):

* dense: 8 bits per weight.
* sd: the basis, 8 bits per entry (T * in * k); the coefficients in P x 1
  blocks (P rows of one tile, one column, from the tile's first row; the last
  block of a tile is shorter when P does not divide its rows): every block
  holding a nonzero stores one code per row of ceil(log2(n)) bits, n = number of (sign, exp) values in
  use (2 * levels, plus one for zero when a stored block holds zeros), and an
  index: the cheaper of a bitmask (one bit per block) and CSR (a column index
  of ceil(log2(in)) bits per stored block plus a count of ceil(log2(in + 1))
  bits per block row).
* bc: 8 bits per stored circulant entry (out * in / k).
* 16 bits per parameter layer for its shifts and flags, 16 bits per model for
  the input/output scale exponents.
"""

import math

import numpy as np

from sparrow.sw.blocks import split_blocks

__all__ = ["layer_storage", "model_storage", "LAYER_META_BITS", "MODEL_META_BITS"]

LAYER_META_BITS = 16
MODEL_META_BITS = 16


def _ceil_log2(n):
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def _sd_coef_bits(sign, exp, block, tiles):
    """(code bits, index bits, stored blocks): blocks of P rows from each tile's first row, the
    tile's last block shorter when P does not divide its rows (it stores its rows' codes only)."""
    n_in = sign.shape[1]
    blocks, real = split_blocks(sign != 0, block, tiles)
    stored = blocks.any(axis=1)                       # [T * ceil(rows/P), in]
    nb = int(stored.sum())
    levels = np.unique(exp[sign != 0]).size if nb else 0
    has_zero = bool((~blocks & stored[:, None, :] & real[:, :, None]).any())
    n_values = 2 * max(levels, 1) + (1 if has_zero else 0)
    code_bits = int((stored * real.sum(axis=1)[:, None]).sum()) * _ceil_log2(n_values)
    bitmask = stored.size
    csr = nb * _ceil_log2(n_in) + stored.shape[0] * _ceil_log2(n_in + 1)
    return code_bits, min(bitmask, csr), nb


def layer_storage(layer, block=None):
    """Bits of one :class:`~sparrow.modeldir.Layer`: dict(fp32_bits, weight_bits, bias_bits, detail...).

    ``block`` is P of the P x 1 blocks for sd kinds (default: the largest of
    8, 4, 2, 1 dividing out/T; only the index cost depends on it).
    """
    a, p = layer.attrs, layer.params
    if not layer.has_params:
        return {"fp32_bits": 0, "weight_bits": 0, "bias_bits": 0, "nonzero": 0, "weights": 0}
    n_in, n_out = a["in"], a["out"]
    weights = n_in * n_out
    res = {"fp32_bits": 32 * weights, "bias_bits": 32 * n_out, "weights": weights}
    base = layer.kind.replace("conv2d", "linear")
    if base == "dense_linear":
        res.update(weight_bits=8 * weights + LAYER_META_BITS, nonzero=int(np.count_nonzero(p["weight"])))
    elif base == "bc_linear":
        res.update(weight_bits=8 * p["w"].size + LAYER_META_BITS, nonzero=int(p["w"].size))
    else:
        t = p["basis"].shape[0]
        rows = n_out // t
        if block is None:
            block = next(b for b in (8, 4, 2, 1) if rows % b == 0)
        codes, index, nb = _sd_coef_bits(p["coef_sign"], p["coef_exp"], block, t)
        basis = 8 * p["basis"].size
        res.update(weight_bits=codes + index + basis + LAYER_META_BITS, code_bits=codes, index_bits=index,
                   basis_bits=basis, nonzero=int(np.count_nonzero(p["coef_sign"])), blocks=nb, block=block)
    return res


def model_storage(model, block=None):
    """Totals over a model: fp32_bits, weight_bits, bias_bits, ratio (fp32 / weight bits), per-layer list.

    The P of each sd layer comes from ``block``, else ``model.meta["blocks"][name]`` (written by
    the compressor), else the default of :func:`layer_storage`.
    """
    blocks = (model.meta or {}).get("blocks", {})
    layers = [dict(name=l.name, kind=l.kind, **layer_storage(l, block or blocks.get(l.name)))
              for l in model.layers if l.has_params]
    fp32 = sum(l["fp32_bits"] for l in layers)
    wb = sum(l["weight_bits"] for l in layers) + MODEL_META_BITS
    return {"fp32_bits": fp32, "weight_bits": wb, "bias_bits": sum(l["bias_bits"] for l in layers),
            "ratio": fp32 / wb, "nonzero": sum(l["nonzero"] for l in layers),
            "weights": sum(l["weights"] for l in layers), "layers": layers}
