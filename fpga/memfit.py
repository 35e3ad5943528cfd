"""Do a model's activation memories fit the board's block RAM?  Checked before synthesis.

The accelerator's activation memories (:func:`sparrow.hw.engines.activation_memories`:
convolution and pooling buffers, chain FIFOs, the host interface's vector
slots and output banks) are mapped to the device's block RAMs, each memory
taking the fewest blocks over the primitive's aspect ratios
(:func:`sparrow.hw.onchip.memory_blocks`: iCE40 EBR of 4 kbit, ECP5 DP16KD
of 18 kbit).  The iCE40UP5K's four SPRAMs are not counted: Yosys does not
infer them from a memory.  Parameter ROMs come on top, so a model that
passes may still not fit; one that fails cannot.
"""

from sparrow import SparrowError

__all__ = ["activation_blocks", "block_budget", "check_activation_fit"]

#: family -> the block's name in messages
_BLOCK_NAME = {"ice40": "EBR (4 kbit)", "ecp5": "block RAM (18 kbit)"}


def block_budget(board):
    """Block RAMs of the board's device (iCE40: the EBRs alone, not the SPRAMs)."""
    if board.family == "ice40":
        return 30
    return board.bram_bits // 18432


def activation_blocks(model, board, config, max_batch=16):
    """``(blocks, [(what, depth, width, blocks)])`` of ``model``'s activation memories on ``board``."""
    from sparrow.hw.engines import activation_memories
    from sparrow.hw.onchip import memory_blocks
    rows = [(what, d, w, memory_blocks(w, d, board.family)[1])
            for what, d, w in activation_memories(model, config, max_batch)]
    return sum(r[3] for r in rows), rows


def check_activation_fit(model, board, config, max_batch=16):
    """Refuse ``model`` when its activation memories alone exceed ``board``'s block RAM.

    Raises
    ------
    SparrowError
        ``"model 'NAME': activation memories need about N EBR (4 kbit) (... bytes), the
        iCE40UP5K has 30 (largest: conv1 buffer ...)"``.
    """
    blocks, rows = activation_blocks(model, board, config, max_batch)
    budget = block_budget(board)
    if blocks > budget:
        name = _BLOCK_NAME[board.family]
        nbytes = sum(d * w for _, d, w, _ in rows) // 8
        big = max(rows, key=lambda r: r[3])
        raise SparrowError(f"model {model.name!r}: activation memories need about {blocks} "
                           f"{name} ({nbytes} bytes), the {board.device} has {budget} "
                           f"(largest: {big[0]}, {big[1]} x {big[2]} bits, {big[3]} blocks)")
    return blocks, budget
