"""Cycle model of the engines (sd, dense, convolution, pooling), and break-even pruning ratios.

Cycles per input vector in steady state (vectors back to back), as in
docs/design-sd.md:

* SD engine (P PEs, C output lanes, T basis tiles)::

      max(in, T*in + 1, ceil(out/C), sum over row blocks of max(entries_b, rows_b/C) + 4*T)

  ``entries_b`` is the number of columns with a nonzero in block b (at least
  1); a layer pruned in P x 1 blocks to block density d has about
  ``max(1, d*in)`` per block.
* dense engine (D MAC lanes, one int8 out per cycle):
  ``max(ceil(out/D) * in + 1, out + ceil(out/D))``.
* convolution engine (:func:`conv_cycles`): the inner linear engine's
  cycles per patch times the patches, against the input and output vectors'
  lengths; max-pooling (:func:`pool_cycles`): the input's length when the
  windows tile it, else the window reads.

The break-even pruning ratio of a layer (ADMM-NN) is the smallest sparsity
(fraction of P x 1 blocks removed) at which the SD engine is at least as fast
as the dense engine on the same layer; pruning a layer less than that buys no
speed, so the compressor keeps such a layer dense.

The SD formula is a model: tests/test_cycle_model.py holds it within 15% of
RTL simulation on array- and drain-bound layers (stalls on the drain chain
cost a little more than ``rows_b/C`` per block).  With the layers' actual
``entries_b`` (:func:`sd_block_cycles`, which ``SDEngine.cycles`` and the
registry's :func:`sparrow.hw.engines.layer_cycles` use) these formulas give
the simulated cycles of the benchmark layers exactly (bench/bench_sd.py: 97
and 1345 on the UP5K, 129 and 1548 on the ECP5-85F).
"""

import math

from sparrow.validate import check_int, check_number

__all__ = ["sd_cycles", "sd_block_cycles", "dense_cycles", "break_even_ratio", "conv_cycles",
           "pool_cycles"]


def sd_cycles(n_in, n_out, density, pes, out_lanes=1, tiles=1):
    """Steady-state cycles per vector of the SD engine on a layer of block density ``density``."""
    check_int(n_in, "Input count", 1, 1 << 20)
    check_int(n_out, "Output count", 1, 1 << 20)
    check_int(pes, "PE count", 1, 4096)
    check_int(out_lanes, "Output lane count", 1, 64)
    check_int(tiles, "Tile count", 1, 1 << 20)
    check_number(density, "Block density", 0, 1)
    if n_out % tiles:
        raise ValueError(f"Tile count {tiles} does not divide output count {n_out}")
    rows = n_out // tiles
    entries = max(1, math.ceil(density * n_in))
    blocks = [(entries, min(pes, rows - start)) for start in range(0, rows, pes)] * tiles
    return sd_block_cycles(n_in, n_out, blocks, out_lanes, tiles)


def sd_block_cycles(n_in, n_out, blocks, out_lanes=1, tiles=1):
    """Steady-state cycles per vector of the SD engine from its row blocks.

    Parameters
    ----------
    n_in, n_out : int
        Layer sizes.
    blocks : iterable of (int, int)
        ``(entries_b, rows_b)`` of every row block of every tile: its code
        entries (columns with a nonzero in the block, at least 1) and its rows.
    out_lanes : int
        Output lanes C.
    tiles : int
        Basis tiles T.
    """
    array = sum(max(entries, math.ceil(rows / out_lanes)) for entries, rows in blocks)
    return max(n_in, tiles * n_in + 1, math.ceil(n_out / out_lanes), array + 4 * tiles)


def dense_cycles(n_in, n_out, lanes):
    """Steady-state cycles per vector of the dense engine with ``lanes`` MAC lanes."""
    check_int(n_in, "Input count", 1, 1 << 20)
    check_int(n_out, "Output count", 1, 1 << 20)
    check_int(lanes, "Dense lane count", 1, 4096)
    blocks = math.ceil(n_out / lanes)
    return max(blocks * n_in + 1, n_out + blocks)


def break_even_ratio(n_in, n_out, pes, dense_lanes, out_lanes=1, tiles=1, steps=1000):
    """Smallest sparsity (on a grid of 1/steps) at which the SD engine is no slower than dense.

    0.0: the SD engine wins even unpruned; 1.0: it never wins (the layer
    should stay dense).
    """
    check_int(steps, "Step count", 1, 1 << 20)
    target = dense_cycles(n_in, n_out, dense_lanes)
    for i in range(steps + 1):
        sparsity = i / steps
        if sd_cycles(n_in, n_out, 1.0 - sparsity, pes, out_lanes, tiles) <= target:
            return sparsity
    return 1.0


def conv_cycles(n_in, patches, inner_cycles, out_ch):
    """Steady-state cycles per vector of a convolution engine (:mod:`sparrow.hw.conv`).

    Three stages overlap on consecutive vectors: the activation buffer takes
    ``n_in`` = C*H*W elements (one a cycle); the inner linear engine runs
    ``patches`` = OH*OW patches back to back at ``inner_cycles`` each (its
    own steady-state cycles per vector), plus one cycle to start a vector;
    the reorder buffer sends ``out_ch * patches`` outputs (one a cycle)::

        max(n_in, patches * inner_cycles + 1, out_ch * patches)
    """
    check_int(n_in, "Input count", 1, 1 << 24)
    check_int(patches, "Patch count", 1, 1 << 24)
    check_int(inner_cycles, "Inner cycles", 1, 1 << 30)
    check_int(out_ch, "Output channel count", 1, 1 << 20)
    return max(n_in, patches * inner_cycles + 1, out_ch * patches)


def pool_cycles(n_in, n_out, kernel, streaming=False):
    """Steady-state cycles per vector of a max-pooling engine (:mod:`sparrow.hw.pool`).

    Streaming (kernel == stride: windows do not overlap) the engine takes
    one element a cycle and keeps only the partial maxima of one output row:
    ``n_in``.  Otherwise the buffer takes ``n_in`` elements while the window
    reader reads ``kernel**2`` elements per output (one a cycle), plus one
    cycle to start a vector: ``max(n_in, n_out * kernel**2 + 1)``.
    """
    check_int(n_in, "Input count", 1, 1 << 24)
    check_int(n_out, "Output count", 1, 1 << 24)
    check_int(kernel, "Kernel size", 1, 1 << 16)
    if streaming:
        return n_in
    return max(n_in, n_out * kernel * kernel + 1)
