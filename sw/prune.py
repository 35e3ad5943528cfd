"""Pruning criteria and schedules for P x 1 block sparsity.

A block is P consecutive output rows of one tile and one input column: the
shift-add PE array (P PEs per tile) skips a column when its whole block is
zero.  Criteria are small objects with ``scores(w, P, tiles) -> [out/P, in]``
(higher = keep); :func:`block_mask` keeps the top ``density`` fraction.
Every criterion also has ``update(w, P, tiles)`` (refresh its state after a
mask step) and ``regulariser(layers)``: a callable to add to the loss, or
None when the criterion only ranks blocks.  :data:`CRITERIA` maps the names
that configurations use to constructors.

* :class:`BlockMagnitude`: L2 norm of each block (block-based structured pruning).
* :class:`ReweightedL1`: SSGD-style reweighted group-L1; ``penalty(w)`` is a
  regulariser sum_b a_b ||block_b|| whose weights a_b = 1 / (||block_b|| + eps)
  are refreshed by ``update(w)``; its scores are the block norms.
"""

import torch

from sparrow.sw.blocks import blocks_per_tile

__all__ = ["BlockMagnitude", "ReweightedL1", "CRITERIA", "make_criterion", "block_norms", "block_mask",
           "cubic_density"]


def block_norms(w, block, tiles=1):
    """L2 norm of every P x 1 block of w [out, in] -> [T * ceil(rows/P), in], rows = out/T.

    Blocks as :mod:`sparrow.sw.blocks` (from each tile's first row, the last shorter when P
    does not divide the rows); torch, so that a penalty on the norms has a gradient.
    """
    out, n_in = w.shape
    rows = out // tiles
    nbt = blocks_per_tile(rows, block)
    wt = w.reshape(tiles, rows, n_in)
    if nbt * block > rows:
        wt = torch.cat([wt, wt.new_zeros(tiles, nbt * block - rows, n_in)], dim=1)
    return wt.reshape(tiles * nbt, block, n_in).norm(dim=1)


def block_mask(scores, density, block, tiles=1, rows=None):
    """0/1 mask [T * rows, in] keeping the ``density`` fraction of blocks with the highest scores
    (``scores`` [T * ceil(rows/P), in] as :func:`block_norms`; ``rows`` per tile, default
    P times the blocks per tile)."""
    nb = scores.numel()
    keep = max(1, int(round(density * nb)))
    flat = scores.flatten()
    # a stable sort: ties go to the lower index whatever the kernel (topk's choice among ties is unspecified)
    idx = torch.sort(flat, descending=True, stable=True).indices[:keep]
    m = torch.zeros(nb, dtype=torch.float32)
    m[idx] = 1.0
    m = m.reshape(scores.shape).repeat_interleave(block, dim=0)
    nbt = scores.shape[0] // tiles
    rows = nbt * block if rows is None else rows
    return m.reshape(tiles, nbt * block, -1)[:, :rows].reshape(tiles * rows, -1)


class BlockMagnitude:
    """Keep the blocks with the largest L2 norm."""

    def scores(self, w, block, tiles=1):
        return block_norms(w.detach(), block, tiles)

    def penalty(self, w, block, tiles=1):
        return w.new_zeros(())

    def update(self, w, block, tiles=1):
        pass

    def regulariser(self, layers):
        """None: block magnitude ranks blocks and adds nothing to the loss."""
        return None


class ReweightedL1:
    """Reweighted group-L1 (SSGD-style): penalty strength ``lam`` * sum_b a_b ||block_b||."""

    def __init__(self, lam=1e-4, eps=1e-3):
        self.lam, self.eps = lam, eps
        self._a = {}

    def scores(self, w, block, tiles=1):
        return block_norms(w.detach(), block, tiles)

    def update(self, w, block, tiles=1):
        self._a[id(w)] = 1.0 / (block_norms(w.detach(), block, tiles) + self.eps)

    def penalty(self, w, block, tiles=1):
        a = self._a.get(id(w))
        if a is None:
            self.update(w, block, tiles)
            a = self._a[id(w)]
        return self.lam * (a * block_norms(w, block, tiles)).sum()

    def regulariser(self, layers):
        """sum over ``layers`` (objects with ``coef``, ``block``, ``tiles``) of :meth:`penalty`."""
        return lambda: sum(self.penalty(m.coef, m.block, m.tiles) for m in layers)


# name -> constructor(l1): ``l1`` is the reweighted penalty strength (None: its default 2e-4)
CRITERIA = {
    "magnitude": lambda l1=None: BlockMagnitude(),
    "reweighted-l1": lambda l1=None: ReweightedL1(lam=2e-4 if l1 is None else l1),
}


def make_criterion(name, l1=None):
    """The criterion registered as ``name`` (a key of :data:`CRITERIA`)."""
    return CRITERIA[name](l1)


def cubic_density(step, total, final, start=1.0):
    """Gradual pruning (Zhu & Gupta): density from ``start`` to ``final`` with a cubic ramp."""
    f = min(1.0, max(0.0, step / max(1, total)))
    return final + (start - final) * (1.0 - f) ** 3
