"""P x 1 pruning blocks: P consecutive rows of one tile and one input column.

Blocks start at each tile's first row, as the PE array's row blocks do
(:func:`sparrow.hw.sd_program.sd_row_blocks`); when P does not divide a
tile's rows, the tile's last block is shorter (10 rows in blocks of 4: 4, 4,
2).  Pruning (:mod:`sparrow.sw.prune`, torch), the channel permutation
(:mod:`sparrow.sw.qmodel`), the storage count (:mod:`sparrow.sw.storage`) and
the search's estimate (:mod:`sparrow.sw.search`) share this geometry.
"""

import numpy as np

__all__ = ["blocks_per_tile", "split_blocks"]


def blocks_per_tile(rows, block):
    """P x 1 blocks down one column of a tile of ``rows`` rows: ceil(rows / P) (the last may be shorter)."""
    return -(-rows // block)


def split_blocks(a, block, tiles=1):
    """``(blocks, real)`` of a numpy array ``a`` [T * rows, in]: ``blocks`` [T * ceil(rows/P), P, in],
    each tile's rows padded with zeros to whole blocks, and ``real`` [T * ceil(rows/P), P] (bool),
    the rows of each block that exist."""
    out, n_in = a.shape
    rows = out // tiles
    nbt = blocks_per_tile(rows, block)
    pad = nbt * block - rows
    padded = np.pad(np.asarray(a).reshape(tiles, rows, n_in), ((0, 0), (0, pad), (0, 0)))
    real = np.pad(np.ones((tiles, rows), bool), ((0, 0), (0, pad)))
    return padded.reshape(tiles * nbt, block, n_in), real.reshape(tiles * nbt, block)
