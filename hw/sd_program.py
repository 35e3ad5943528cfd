"""The code program of an sd_linear engine: which words its code ROMs hold.

The rows of tile t are split into row blocks of P (the PE count); a block's P
PEs are split into G groups of B = P/G rows (:class:`SDLayout`; a tile shorter
than P is one block, B at most its rows, and the array builds only the PEs
that hold rows, :func:`sd_array_pes`).  Each group runs its own column list
from its own code ROM and its own copy of the z buffer, so a group stores
only the columns where *its* rows are nonzero: with
the compressor's B x 1 blocks every stored word holds one block's codes, what
the model's encoding counts, whatever P is.  A row block ends for all groups
at once (the drain chain takes the P sums together), so it costs as many
cycles as its longest group list.

Group entry (one ROM word, LSB first, ``cw`` = :func:`~sparrow.hw.pe_array.code_width`;
``Bg`` = the most rows group g holds in a row block: B, or fewer for the last group of a
tile shorter than P, whose ROM is narrower, :func:`sd_group_widths`)::

    [0, Bg*cw)           Bg codes, row gB+i at bits [i*cw, (i+1)*cw)
    [Bg*cw, Bg*cw+d)     v of the group's entry AFTER NEXT in the tile (0 past its last)
    Bg*cw+d              last: this entry ends the group's part of a row block
    Bg*cw+d+1            the next entry's last flag (0 after the tile's last)

Columns are delta coded with ``d`` bits: the first entry of a block has
``base = 0``; an entry with ``v < 2^d - 1`` is column ``c = base + v`` and sets
``base = c + 1``; ``v = 2^d - 1`` (FILL) is no term and sets
``base = base + 2^d - 1``.  A group with no column in a block gets one FILL
entry (it carries the block's ``last``).  The first entry of each tile has
its ``v`` and ``last``, and the second its ``v``, in a per-tile table
(constants, or the ``tiles`` ROM of a generic build).  ``v`` looks two entries
ahead so that the issue stage computes each column a cycle before the z read
that uses it: the z-buffer address comes from a flip-flop, not from the code
ROM's clock-to-out and an adder (:class:`~sparrow.hw.sd_engine.SDEngine`).
Codes are ``exp_bits`` exponent bits and a sign, plus the nz bit only when
some stored code is zero (:func:`sd_layout` decides).

A simulation (``generic``) build must not depend on the values, yet must take
the board build's cycles.  Its layout (:func:`sd_generic_layout`) is fixed by
the structure: groups of ``h`` rows, ``h`` the largest size that divides every
group size the board layout may choose below a whole row block (so each
board group is a whole number of generic groups: for P a power of two,
``h = max(1, P / max_groups)``, or the rows when fewer), ``d`` = column bits + 1 (never a fill
entry), :data:`EXP_BITS` and zero codes.  Each generic group
issues the column list of the board group that holds its rows
(``list_rows`` of :func:`sd_program`: the board's B), with its own rows'
codes, zero where its rows are zero: every row block costs the board's
entries, its longest group list, and every list is the board's without fills.
"""

import math
from typing import NamedTuple

import numpy as np

from sparrow.hw.pe_array import code_width, encode_code

__all__ = ["EXP_BITS", "MAX_GROUPS", "SDLayout", "SDProgram", "sd_exp_bits", "sd_row_blocks",
           "sd_active_groups", "sd_array_pes", "sd_group_sizes", "sd_generic_layout",
           "sd_group_widths", "sd_layout", "sd_program", "code_rom_depth", "generic_code_depth", "sd_col_bits"]

#: Exponent code width of the model format (coef_exp in [0, 7]).
EXP_BITS = 3

#: Most PE groups of one engine (each a code ROM and a copy of the z buffer).
MAX_GROUPS = 16


class SDLayout(NamedTuple):
    """How an engine stores a layer's codes: ``group_rows`` B, ``delta_bits`` d,
    ``exp_bits``, ``zero_codes`` (the nz bit)."""
    group_rows: int
    delta_bits: int
    exp_bits: int
    zero_codes: bool


class SDProgram(NamedTuple):
    """The code ROMs of a layer (:func:`sd_program`).

    ``groups[g]`` = ``(words, tile_ends, first_v, first_last, second_v)`` of each active
    group (:func:`sd_active_groups`): group g's ROM words (ints), the address one past each
    tile's last entry, each tile's first entry's ``v`` and ``last``, and its second entry's
    ``v`` (0 when the tile has one entry); ``block_entries`` the entries of every row block
    (its longest group list, tile 0's blocks first); ``word_width`` the bits of the widest
    word (B codes); ``group_rows[g]`` the codes (Bg) of a word of group g's ROM.
    """
    groups: list
    block_entries: list
    layout: SDLayout
    word_width: int
    group_rows: list

    @property
    def word_widths(self):
        """The bits of a word of each group's ROM: Bg codes, the delta and the two last flags."""
        _, d, eb, zero = self.layout
        return [b * code_width(eb, zero) + d + 2 for b in self.group_rows]


def sd_col_bits(n_in):
    """Bits of a column index of a layer with ``n_in`` inputs."""
    return max(1, (n_in - 1).bit_length())


def sd_exp_bits(coef_sign, coef_exp):
    """Exponent field width of a layer's codes: the bits of its largest exponent (at least 1).

    A model with exponents 0..3 (four levels) stores 2-bit exponents; ``generic``
    builds keep :data:`EXP_BITS`.
    """
    s, e = np.asarray(coef_sign), np.asarray(coef_exp, dtype=np.int64)
    return max(1, int(e[s != 0].max(initial=0)).bit_length())


def sd_row_blocks(coef_sign, tiles, pes):
    """The row blocks: ``[(first row, end row, nonzero columns)]``.

    Tile t's rows are split into blocks of ``pes``; a block's columns are those
    with a nonzero coefficient in at least one of its rows (ascending), tile 0's
    blocks first.
    """
    s = np.asarray(coef_sign)
    rows = s.shape[0] // tiles
    blocks = []
    for t in range(tiles):
        for b0 in range(0, rows, pes):
            r0, r1 = t * rows + b0, t * rows + min(b0 + pes, rows)
            blocks.append((r0, r1, np.flatnonzero((s[r0:r1] != 0).any(axis=0))))
    return blocks


def sd_active_groups(rows, pes, group_rows):
    """PE groups that hold rows of a tile of ``rows`` rows (the others, past a tile shorter
    than P, have no code ROM, no z copy and no term)."""
    return min(pes // group_rows, -(-rows // group_rows))


def sd_array_pes(rows, pes, group_rows, out_lanes=1):
    """PEs of the array of an engine with ``pes`` PEs whose tiles have ``rows`` rows: all of them
    when a tile fills a row block, else the active groups' rows rounded up to a multiple of
    ``out_lanes`` (and of ``group_rows``): PEs that would hold no row of any block are left out
    (a 10-row layer on 28 PEs builds 10, not 28 PEs and drain-chain words)."""
    if rows >= pes:
        return pes
    unit = group_rows * out_lanes // math.gcd(group_rows, out_lanes)
    return min(pes, -(-sd_active_groups(rows, pes, group_rows) * group_rows // unit) * unit)


def _group_rows(r0, r1, pes, group_rows, active):
    """``[(g0, g1)]``: the rows of each active group of a row block [r0, r1) (empty past r1)."""
    return [(min(r0 + g, r1), min(r0 + g + group_rows, r1))
            for g in range(0, active * group_rows, group_rows)]


def sd_group_widths(rows, pes, group_rows, narrow=True):
    """Codes a word of each active group holds: the most rows the group holds in a row block
    (B, or fewer for the last group of a tile of ``rows`` < P rows: no code for a row that no
    block has); B for every group when not ``narrow`` (a generic build's one ROM)."""
    active = sd_active_groups(rows, pes, group_rows)
    if not narrow:
        return [group_rows] * active
    return [max(1, min(group_rows, rows - g * group_rows)) if rows < pes else group_rows
            for g in range(active)]


def _entries(cols, delta_bits):
    """``[(v, column or None)]`` of one group's part of a row block (columns ascending)."""
    fill = (1 << delta_bits) - 1
    out, base = [], 0
    for c in cols:
        gap = int(c) - base
        while gap > fill - 1:
            out.append((fill, None))
            gap -= fill
        out.append((gap, int(c)))
        base = int(c) + 1
    return out or [(fill, None)]


def _count(cols, delta_bits):
    """Length of :func:`_entries` (vectorised)."""
    if len(cols) == 0:
        return 1
    fill = (1 << delta_bits) - 1
    gaps = np.diff(np.concatenate([[-1], cols])) - 1
    return len(cols) + int(((np.maximum(gaps - (fill - 1), 0) + fill - 1) // fill).sum())


def _layout_cost(s, tiles, pes, group_rows, delta_bits, exp_bits):
    """``(rom bits, cycles, zero codes needed)`` of a candidate layout."""
    nz = s != 0
    rows = s.shape[0] // tiles
    active = sd_active_groups(rows, pes, group_rows)
    widths = sd_group_widths(rows, pes, group_rows)
    per_group = np.zeros(active, dtype=np.int64)
    cycles, zero = 0, False
    for r0, r1, _ in sd_row_blocks(s, tiles, pes):
        longest = 0
        for g, (g0, g1) in enumerate(_group_rows(r0, r1, pes, group_rows, active)):
            block = nz[g0:g1]
            cols = np.flatnonzero(block.any(axis=0))
            if len(cols) and (g1 - g0 < widths[g] or not block[:, cols].all()):
                zero = True
            n = _count(cols, delta_bits)
            per_group[g] += n
            longest = max(longest, n)
        cycles += longest
    cw = code_width(exp_bits, zero)
    width = np.array(widths) * cw + delta_bits + 2
    return int(((per_group + 1) * width).sum()), cycles, zero


def _check_max_groups(max_groups):
    if not (isinstance(max_groups, int) and 1 <= max_groups <= MAX_GROUPS):
        raise ValueError(f"Group limit must be an integer in [1, {MAX_GROUPS}], not {max_groups!r}")


def sd_group_sizes(rows, pes, max_groups=MAX_GROUPS):
    """The group sizes B that a layout of a tile of ``rows`` rows on ``pes`` PEs may take
    (ascending): every divisor of P with at most ``max_groups`` groups, capped at ``rows``."""
    _check_max_groups(max_groups)
    return sorted({min(b, rows) for b in range(1, pes + 1) if pes % b == 0 and pes // b <= max_groups})


def sd_generic_layout(n_in, rows, pes, max_groups=MAX_GROUPS):
    """The :class:`SDLayout` of a ``generic`` (simulation) build: the structure's alone.

    Group size: the greatest common divisor of the sizes of :func:`sd_group_sizes` smaller
    than a row block (``min(pes, rows)``; a group of a whole block has no inner boundary),
    or a whole block when there are none, so that the rows of every group of any board
    layout are a whole number of generic groups (P = 8, 16 groups: 1; P = 64: 4; P = 56: 1;
    ``max_groups`` 1: P); delta width: the column bits + 1 (no fill entry); :data:`EXP_BITS`
    exponents and zero codes.
    """
    inner = [b for b in sd_group_sizes(rows, pes, max_groups) if b < min(pes, rows)]
    return SDLayout(math.gcd(*inner) if inner else min(pes, rows), sd_col_bits(n_in) + 1,
                    EXP_BITS, True)


def sd_layout(coef_sign, coef_exp, tiles, pes, generic=False, max_groups=MAX_GROUPS):
    """The :class:`SDLayout` of a layer on ``pes`` PEs: the fewest ROM bits.

    Tries every group size B dividing P with at most ``max_groups`` groups (each
    a code ROM, a z-buffer copy and a read pointer: 1 keeps the single broadcast
    of whole-array words, the least logic and block RAMs for a small model),
    B capped at the rows of a tile (a tile shorter than P is one row block: a
    group of all its rows holds no zero codes for rows that do not exist)
    and every delta width d from 1 to the column bits + 1 whose fill entries cost
    no cycle (the longest group list of every row block is no longer than without
    fills, so never longer than the union of the block's columns, one entry per
    cycle), with the layer's exponent width (:func:`sd_exp_bits`) and the nz bit
    only where a stored code is zero; ties go to fewer cycles, then to larger
    groups.  With ``generic``: :func:`sd_generic_layout` (the structure's, whatever the
    values; :func:`sd_program` with ``list_rows`` = this layout's B keeps its cycles).
    """
    s = np.asarray(coef_sign)
    rows = s.shape[0] // tiles
    if generic:
        return sd_generic_layout(s.shape[1], rows, pes, max_groups)
    eb, col_bits = sd_exp_bits(s, coef_exp), sd_col_bits(s.shape[1])
    best = None
    for b in sd_group_sizes(rows, pes, max_groups):
        # d = col_bits + 1 never needs a fill: the group's column lists, no longer than
        # the union of the row block's columns (one group of P: the same)
        fewest = _layout_cost(s, tiles, pes, b, col_bits + 1, eb)[1]
        for d in range(1, col_bits + 2):
            bits, cycles, zero = _layout_cost(s, tiles, pes, b, d, eb)
            if cycles > fewest:          # fill entries that would cost cycles
                continue
            key = (bits, cycles, -b)
            if best is None or key < best[0]:
                best = (key, SDLayout(b, d, eb, zero))
    return best[1]


def sd_program(coef_sign, coef_exp, tiles, pes, layout=None, max_groups=MAX_GROUPS, list_rows=None,
               narrow=True):
    """The code ROMs of an sd_linear layer (:class:`SDProgram`; layout: :func:`sd_layout`).

    ``list_rows`` (default the layout's B; a multiple of it, or at least a row block):
    each group issues the columns of the ``list_rows`` rows that hold its own, a generic
    build's groups those of the board layout's group (the board's entries per row block).
    ``narrow``: a group's words hold only the rows it ever holds (:func:`sd_group_widths`);
    off, every word holds B codes (a generic build's one ROM).
    """
    s = np.asarray(coef_sign, dtype=np.int64)
    e = np.asarray(coef_exp, dtype=np.int64)
    layout = layout or sd_layout(s, e, tiles, pes, max_groups=max_groups)
    B, d, eb, zero = layout
    L = list_rows or B
    if L % B and L < min(pes, s.shape[0] // tiles):
        raise ValueError(f"List rows {L} are not a multiple of the group size {B}")
    cw = code_width(eb, zero)
    active = sd_active_groups(s.shape[0] // tiles, pes, B)
    widths = sd_group_widths(s.shape[0] // tiles, pes, B, narrow)
    blocks = sd_row_blocks(s, tiles, pes)
    per_tile = len(blocks) // tiles
    groups = [([], [], [], [], []) for _ in range(active)]
    block_entries = []
    lists = []                                   # [block][group] -> entries
    for r0, r1, _ in blocks:
        row = []
        for g0, g1 in _group_rows(r0, r1, pes, B, active):
            l0 = r0 + (g0 - r0) // L * L         # the list group's rows (none past the block)
            cols = np.flatnonzero((s[l0:min(l0 + L, r1)] != 0).any(axis=0)) if g1 > g0 else []
            ents = []
            for v, c in _entries(cols, d):
                w = 0
                if c is not None:
                    for i, r in enumerate(range(g0, g1)):
                        w |= encode_code(int(s[r, c]), int(e[r, c]), eb, zero) << (cw * i)
                ents.append([v, w, 0])
            ents[-1][2] = 1
            row.append(ents)
        block_entries.append(max(len(x) for x in row))
        lists.append(row)
    for g, (words, ends, first_v, first_last, second_v) in enumerate(groups):
        bw = widths[g] * cw
        for t in range(tiles):
            entries = [x for row in lists[t * per_tile:(t + 1) * per_tile] for x in row[g]]
            first_v.append(entries[0][0])
            first_last.append(entries[0][2])
            second_v.append(entries[1][0] if len(entries) > 1 else 0)
            for i, (v, w, last) in enumerate(entries):
                nlast = entries[i + 1][2] if i + 1 < len(entries) else 0
                vv = entries[i + 2][0] if i + 2 < len(entries) else 0
                words.append(w | (vv << bw) | (last << (bw + d)) | (nlast << (bw + d + 1)))
            ends.append(len(words))
    return SDProgram(groups, block_entries, layout, B * cw + d + 2, widths)


def generic_code_depth(words, max_words):
    """Depth of a generic build's one code ROM that holds ``words`` (every group's list and its
    zero word), of the structure's largest program ``max_words`` (every column of every row
    block in every group, and a zero word a group).

    Half of ``max_words`` (rounded up) when ``words`` fit, else ``max_words``: the depth takes
    two values per structure, and every program of at most half the largest shares one
    build (the compressor's SmartDeal densities: digits-mlp's lists fill 12% and 26%).  A
    power-of-two rounding of ``words`` would split retrained models whose lists straddle a
    power of two (digits-mlp fc1: 1004 and 1020 words, next to 1024).
    """
    half = -(-max_words // 2)
    return half if words <= half else max_words


def code_rom_depth(entries):
    """Depth of a board build's code ROM: the program's ``entries`` plus one zero word (the
    issue stage reads one word past a list)."""
    return entries + 1
