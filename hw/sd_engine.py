"""The sd_linear engine: basis unit + sparse power-of-two PE array + output stage.

One input vector (``in`` int8 values) enters on stream ``i``; ``out`` int8
values leave on stream ``o`` in row order, ``out_lanes`` (C) per beat.  Parameters live in ROMs
initialised from the layer (``init=``); ``sparrow generate`` writes the same
contents as memory images (:mod:`sparrow.hw.images`).

Three processes run concurrently, handing over double-buffered banks::

    loader   in cycles per vector      x -> x bank (k int8 per word)
    basis    in cycles per tile        z_t = satz(rshift(B_t x)) -> z bank
             (tiles back to back; 6 edges of pipeline)
    issue    one cycle per code entry  z[col] and P codes -> PE array
             of the tile (+ stalls, + 3)
    drain    P/C cycles per row block, overlapping the next block

so in steady state a vector costs about
max(in, T*in + 1, out/C, sum over blocks of max(entries_b, rows_b/C) + 4*T) cycles.

Code program (one ROM word per entry, see :func:`sd_program`): the rows of
tile t are split into blocks of P; for each block, one entry per column that
is nonzero in at least one of the block's rows (all-zero columns cost no
cycle), holding the column index, the P codes and a ``last`` flag on the
block's final entry.  A block with no nonzero column gets one all-zero entry.
"""

import numpy as np
from amaranth.hdl import Module, Signal, signed, Cat, Array, Const, Mux
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import connect

from sparrow.hw.basis import BasisUnit, basis_image
from sparrow.hw.cycle_model import sd_block_cycles
from sparrow.hw.engine import (GENERIC_BIAS_WIDTH, Engine, EngineConfig, consts_image, consts_rom,
                               rom_attrs)
from sparrow.hw.pe import pe_min_acc_width
from sparrow.hw.pe_array import PEArray, OutputStage, code_width, encode_code
from sparrow.validate import check_int, check_range

__all__ = ["SDEngine", "sd_program", "sd_row_blocks", "sd_acc_width", "code_rom_depth", "EXP_BITS"]

#: Exponent code width of the model format (coef_exp in [0, 7]).
EXP_BITS = 3


def sd_acc_width(coef_sign, coef_exp, z_bits):
    """Signed width that holds every row's worst-case sum of ``coef * z`` (bias excluded).

    Bound per row o: ``sum_j |c_oj| * 2^(z_bits-1)``; the width is that of the
    largest row bound plus a sign bit (and at least one worst-case term).
    """
    s = np.asarray(coef_sign, dtype=np.int64)
    e = np.asarray(coef_exp, dtype=np.int64)
    mag = np.where(s != 0, np.int64(1) << np.where(s != 0, e, 0), 0)
    bound = int(mag.sum(axis=1).max(initial=0)) << (z_bits - 1)
    return max(bound.bit_length() + 1, pe_min_acc_width(z_bits, EXP_BITS, 1))


def code_rom_depth(entries, max_entries, generic=False):
    """Depth of the code ROM: the program's ``entries`` plus one zero word.

    With ``generic`` (simulation builds shared by every model of one structure)
    the depth is rounded up to a power of two, at least 16, and capped at
    ``max_entries + 1`` (every row block with every column: the largest program
    of the structure), so programs of up to 15 entries share a build, 16..31
    the next, 32..63 the next, and so on.
    """
    depth = entries + 1
    if generic:
        depth = min(max(16, 1 << (depth - 1).bit_length()), max(depth, max_entries + 1))
    return depth


def sd_row_blocks(coef_sign, tiles, pes):
    """The row blocks of the code program: ``[(first row, end row, nonzero columns)]``.

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


def sd_program(coef_sign, coef_exp, tiles, pes):
    """The code ROM of an sd_linear layer.

    Returns ``(words, tile_ends, col_bits, first_cols)``: ``words`` the ROM
    words (ints), ``tile_ends[t]`` the address one past tile t's last entry,
    ``first_cols[t]`` the column of tile t's first entry.  Word layout, LSB
    first: P codes of ``exp_bits + 2`` bits (PE p at bits ``[5p, 5p+5)``:
    exp[3], sign, nz), the column of the *next* entry of the tile (0 after the
    tile's last; ``col_bits``), the ``last`` flag (end of a row block), the
    *next* entry's ``last`` flag (0 after the tile's last), so that the issue
    stage holds an entry's ``last`` in a flip-flop, not behind the ROM output.
    """
    s = np.asarray(coef_sign, dtype=np.int64)
    e = np.asarray(coef_exp, dtype=np.int64)
    n_in = s.shape[1]
    cw = code_width(EXP_BITS)
    col_bits = max(1, (n_in - 1).bit_length())
    words, tile_ends, first_cols = [], [], []
    blocks = sd_row_blocks(s, tiles, pes)
    per_tile = len(blocks) // tiles
    for t in range(tiles):
        entries = []                     # (column, codes, last)
        for r0, r1, cols in blocks[t * per_tile:(t + 1) * per_tile]:
            block = []
            for c in cols:
                w = 0
                for p, r in enumerate(range(r0, r1)):
                    w |= encode_code(int(s[r, c]), int(e[r, c]), EXP_BITS) << (cw * p)
                block.append([int(c), w, 0])
            if not block:
                block = [[0, 0, 0]]
            block[-1][2] = 1
            entries.extend(block)
        first_cols.append(entries[0][0])
        for i, (c, w, last) in enumerate(entries):
            nxt, nlast = entries[i + 1][0::2] if i + 1 < len(entries) else (0, 0)
            words.append(w | (nxt << (cw * pes)) | (last << (cw * pes + col_bits))
                         | (nlast << (cw * pes + col_bits + 1)))
        tile_ends.append(len(words))
    return words, tile_ends, col_bits, first_cols


class SDEngine(Engine):
    """sd_linear on the RTL: ``y = relu?(sat8(rshift(bias + C satz(rshift(B x)), out_shift)))``.

    Parameters
    ----------
    in_features, out_features : int
        Layer sizes (1..65536).
    k : int
        Basis group size (divides ``in_features``, at most 16).
    basis : int8 array [T, in/k, k, k]
    coef_sign : int array [out, in] in {-1, 0, 1}
    coef_exp : int array [out, in] in [0, 7]
    bias : int array [out]
    basis_shift, out_shift : int
        0..31.
    relu : bool
    z_bits : int
        8..16.
    pes : int
        PE count P, 1..1024.
    out_lanes : int
        Output lanes C (1..64; divides P and the rows per tile): the drain chain
        carries C sums per word, C output stages run side by side and ``o``
        gives C int8 per beat, so a block of n rows drains in n/C cycles.
    bcast : int
        Broadcast register stages of the PE array (0..4; 0 for small arrays,
        1-2 for hundreds of PEs: see :class:`~sparrow.hw.pe_array.PEArray`).
    generic : bool
        A simulation build whose widths and depths depend on the structure
        only (see :class:`~sparrow.hw.engine.EngineConfig`): the accumulator
        holds any coefficients' sums, the bias ROM any int32, the code ROM
        :func:`code_rom_depth` words, the per-tile tables (first column,
        end address) are a ROM ``tiles`` and the shifts and ReLU flag a ROM
        ``consts`` instead of constants.

    Members
    -------
    i, o, error
        As :class:`~sparrow.hw.engine.Engine`, with ``out_lanes`` int8 per
        output beat; the drain chain's overrun (a sequencer bug) also sets
        ``error``.

    Raises
    ------
    TypeError
        A size or count is not a positive integer ("PE count must be a positive
        integer, not 0").
    ValueError
        A parameter out of range or arrays of the wrong shape ("Coefficient
        arrays must have shape [out, in]", "Output lane count C does not divide
        PE count P", "Broadcast stages must be an integer in [0, 4], not 5", ...).
    """

    kind = "sd_linear"

    def __init__(self, in_features, out_features, k, basis, coef_sign, coef_exp, bias,
                 basis_shift, out_shift, relu, z_bits=8, pes=8, out_lanes=1, bcast=0, generic=False):
        super().__init__(in_features, out_features, k, basis, coef_sign, coef_exp, bias,
                         basis_shift, out_shift, relu, z_bits, pes, out_lanes, bcast, generic)

    @classmethod
    def from_layer(cls, layer, config=EngineConfig()):
        """The engine of a validated ``sparrow.modeldir.Layer`` of kind sd_linear.

        Reads ``config.pes``, ``config.out_lanes``, ``config.bcast`` and ``config.generic``.
        """
        a, p = layer.attrs, layer.params
        return cls(int(a["in"]), int(a["out"]), int(a["k"]), p["basis"], p["coef_sign"],
                   p["coef_exp"], p["bias"], int(a["basis_shift"]), int(a["out_shift"]),
                   bool(a["relu"]), int(a.get("z_bits", 8)), config.pes, config.out_lanes,
                   config.bcast, config.generic)

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """k: the basis unit's multipliers (the PE array has none)."""
        return int(layer.attrs["k"])

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """Steady-state cycles per vector (:func:`~sparrow.hw.cycle_model.sd_block_cycles`)
        with the layer's actual code entries per row block."""
        a = layer.attrs
        tiles = np.asarray(layer.params["basis"]).shape[0]
        blocks = [(max(1, len(cols)), r1 - r0)
                  for r0, r1, cols in sd_row_blocks(layer.params["coef_sign"], tiles, config.pes)]
        return sd_block_cycles(int(a["in"]), int(a["out"]), blocks, config.out_lanes, tiles)

    def _validate(self, n_in, n_out, k, basis, coef_sign, coef_exp, bias, basis_shift,
                  out_shift, relu, z_bits, pes, out_lanes, bcast, generic):
        check_int(n_in, "Input count", 1, 1 << 16)
        check_int(n_out, "Output count", 1, 1 << 16)
        check_int(pes, "PE count", 1, 1024)
        s, e = np.asarray(coef_sign), np.asarray(coef_exp)
        if s.shape != (n_out, n_in) or e.shape != (n_out, n_in):
            raise ValueError(f"Coefficient arrays must have shape [{n_out}, {n_in}]")
        if not np.isin(s, (-1, 0, 1)).all():
            raise ValueError("Coefficient signs must be -1, 0 or 1")
        if ((s != 0) & ((e < 0) | (e > 7))).any():
            raise ValueError("Coefficient exponents must be in [0, 7]")
        tiles = np.asarray(basis).shape[0] if np.asarray(basis).ndim == 4 else 0
        if tiles < 1 or n_out % tiles:
            raise ValueError(f"Basis tile count {tiles} does not divide output count {n_out}")
        # Checked here too (PEArray, OutputStage) so that nothing is built when refused.
        check_int(out_lanes, "Output lane count", 1, 64)
        if pes % out_lanes:
            raise ValueError(f"Output lane count {out_lanes} does not divide PE count {pes}")
        if (n_out // tiles) % out_lanes:
            raise ValueError(f"Output lane count {out_lanes} does not divide the rows per tile "
                             f"{n_out // tiles}")
        check_range(bcast, "Broadcast stages", 0, 4)
        generic = bool(generic)
        self._generic = generic
        self._basis_unit = BasisUnit(k, n_in, basis, basis_shift, z_bits,
                                     rom_attrs=rom_attrs("basis", generic), runtime_shift=generic)
        self._consts = (basis_shift, out_shift, relu)
        if generic:      # the widest sums of the structure: every coefficient +-2^7
            self._acc_width = sd_acc_width(np.ones((1, n_in)), np.full((1, n_in), 7), z_bits)
        else:
            self._acc_width = sd_acc_width(s, e, z_bits)
        self._array = PEArray(pes, z_bits, EXP_BITS, self._acc_width, out_lanes, bcast)
        self._post = OutputStage(self._acc_width, pes // out_lanes, n_out, n_out // tiles, bias,
                                 out_shift, relu, running=True, out_lanes=out_lanes,
                                 bias_width=GENERIC_BIAS_WIDTH if generic
                                 else None, rom_attrs=rom_attrs("bias", generic),
                                 runtime_shift=generic)
        self._words, self._tile_ends, self._col_bits, self._first_cols = sd_program(s, e, tiles, pes)
        max_entries = tiles * -(-(n_out // tiles) // pes) * n_in
        self._code_depth = code_rom_depth(len(self._words), max_entries, generic)
        self._n_in, self._n_out, self._k, self._tiles, self._pes = n_in, n_out, k, tiles, pes
        self._z_bits, self._out_lanes = z_bits, out_lanes
        return self.stream_members(out_lanes)

    @property
    def pes(self):
        return self._pes

    @property
    def out_lanes(self):
        """int8 outputs per beat of ``o`` (row r*C+c at bits [8c, 8c+8))."""
        return self._out_lanes

    @property
    def program(self):
        """``(words, tile_ends, col_bits, first_cols)`` of the code ROM."""
        return self._words, self._tile_ends, self._col_bits, self._first_cols

    def _tile_table(self):
        """``(width, words)`` of the ``tiles`` ROM of a generic build: per tile, LSB first,
        its end address, its first entry's column and that entry's ``last`` flag."""
        P, cw = self._pes, code_width(EXP_BITS)
        pcb = max(1, (self._code_depth - 1).bit_length())
        words = []
        for t in range(self._tiles):
            start = self._tile_ends[t - 1] if t else 0
            first_last = (self._words[start] >> (P * cw + self._col_bits)) & 1
            words.append(self._tile_ends[t] | (self._first_cols[t] << pcb)
                         | (first_last << (pcb + self._col_bits)))
        return pcb + self._col_bits + 1, words

    def memory_images(self):
        """``{name: (width, words, layout)}`` of every ROM, exactly as the RTL holds them."""
        P, cw = self._pes, code_width(EXP_BITS)
        bw, bias = self._post.bias_image
        k = self._k
        pad = self._code_depth - len(self._words)
        images = {
            "codes": (P * cw + self._col_bits + 2, list(self._words) + [0] * pad,
                      f"one entry per (row block, nonzero column); LSB first: {P} codes of {cw} bits "
                      f"(PE p at bits [{cw}p, {cw}p+{cw}): exp[0:3], sign[3], nz[4]), "
                      f"next entry's column[{P * cw}:{P * cw + self._col_bits}] (0 after a tile's last), "
                      f"last[{P * cw + self._col_bits}] (end of a row block), next entry's "
                      f"last[{P * cw + self._col_bits + 1}] (0 after a tile's last); tile t ends at address "
                      f"tile_ends[t] = {self._tile_ends}, its first entry's column is "
                      f"first_cols[t] = {self._first_cols}; then {pad} zero word(s) (the issue "
                      f"stage reads one word past the last entry)"),
            "basis": (8 * k, basis_image(self._basis_unit._basis),
                      f"word t*{self._n_in} + g*{k} + i = basis[t, g, i, 0:{k}], lane j at bits [8j, 8j+8), int8"),
            "bias": (bw, bias, f"bias[row] + 2^(out_shift-1), signed {bw // self._out_lanes}-bit "
                               f"two's complement, {self._out_lanes} row(s) per word (row "
                               f"w*{self._out_lanes}+c at bits [{bw // self._out_lanes}c, ...))"),
        }
        if self._generic:
            images["consts"] = consts_image(*self._consts)
            tw, tiles = self._tile_table()
            pcb = max(1, (self._code_depth - 1).bit_length())
            images["tiles"] = (tw, tiles, f"word t: tile t's end address at bits [0, {pcb}), its first "
                                          f"entry's column at [{pcb}, {pcb + self._col_bits}), that "
                                          f"entry's last flag at bit {pcb + self._col_bits}")
        return images

    @property
    def entries(self):
        """Number of code entries (array cycles per vector without stalls)."""
        return len(self._words)

    def describe(self):
        """``pes``, ``code_entries``, ``tile_ends`` and ``first_cols`` of the code program."""
        return {"pes": self._pes, "code_entries": self.entries, "tile_ends": self._tile_ends,
                "first_cols": self._first_cols}

    def elaborate(self, platform):
        m = Module()
        n, k, T, P, C = self._n_in, self._k, self._tiles, self._pes, self._out_lanes
        cw = code_width(EXP_BITS)
        m.submodules.basis = bu = self._basis_unit
        m.submodules.array = arr = self._array
        m.submodules.post = post = self._post
        if self._generic:            # shifts and ReLU loaded at run time
            basis_shift, out_shift, relu = consts_rom(m, *self._consts)
            m.d.comb += [bu.shift.eq(basis_shift), post.shift.eq(out_shift), post.relu.eq(relu)]

        # Two x banks and two z banks: the loader fills one x bank while the basis
        # unit reads the other; the basis unit writes one z bank while the array
        # issues from the other.  A bank index is the address MSB.
        gbits = max(1, (n // k - 1).bit_length())
        zbits = max(1, (n - 1).bit_length())
        m.submodules.xbuf = xbuf = Memory(shape=8 * k, depth=2 << gbits, init=[])
        xw, xr = xbuf.write_port(), xbuf.read_port()
        m.submodules.zbuf = zbuf = Memory(shape=signed(self._z_bits), depth=2 << zbits, init=[])
        zw, zr = zbuf.write_port(), zbuf.read_port()
        # Block RAM even when shallow: as LUTs a wide ROM costs thousands of cells.
        depth = self._code_depth
        m.submodules.codes = crom = Memory(shape=P * cw + self._col_bits + 2, depth=depth,
                                           init=self._words + [0] * (depth - len(self._words)),
                                           attrs=rom_attrs("codes", self._generic,
                                                           {"ram_style": "block", "rom_style": "block"}))
        cr = crom.read_port()

        xfull = [Signal(name=f"xfull{b}") for b in range(2)]
        zfull = [Signal(name=f"zfull{b}") for b in range(2)]
        x_set, x_clr, z_set, z_clr = Signal(2), Signal(2), Signal(2), Signal(2)
        for flags, st, cl in ((xfull, x_set, x_clr), (zfull, z_set, z_clr)):
            for b in range(2):
                with m.If(st[b]):
                    m.d.sync += flags[b].eq(1)
                with m.Elif(cl[b]):
                    m.d.sync += flags[b].eq(0)

        def bank_bit(bank):
            return Cat(~bank, bank)        # one-hot of a bank index

        # Loader: pack k bytes per x word into x bank wb.  ``last_elem`` (a flop) says
        # that the next element taken completes the vector, so the bank flags'
        # logic is shallow.
        wb = Signal()
        lane = Signal(range(max(k, 2)))
        group = Signal(range(max(n // k, 2)))
        cnt = Signal(range(max(n, 2)))
        last_elem = Signal(init=int(n == 1))
        if k > 1:
            sh = Signal(8 * (k - 1))
            word = Cat(sh, self.i.payload)
        else:
            word = self.i.payload
        m.d.comb += [xw.addr.eq(Cat(group[:gbits], wb)), xw.data.eq(word),
                     self.i.ready.eq(~Mux(wb, xfull[1], xfull[0]))]
        with m.If(self.i.valid & self.i.ready):
            if k > 1:
                m.d.sync += sh.eq(Cat(sh[8:], self.i.payload))
            with m.If(lane == k - 1):
                m.d.comb += xw.en.eq(1)
                m.d.sync += [lane.eq(0), group.eq(group + 1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
            if n > 1:
                m.d.sync += [last_elem.eq(cnt == n - 2), cnt.eq(Mux(last_elem, 0, cnt + 1))]
            with m.If(last_elem):
                m.d.comb += x_set.eq(bank_bit(wb))
                m.d.sync += [group.eq(0), wb.eq(~wb)]

        # Basis: tile bt of x bank xb into z bank zb.  A tile starts as soon as the
        # previous one has read its x (its last elements may still be in the basis
        # pipeline, tagged with their z bank), so tiles cost ``in`` cycles each.
        xb, zb = Signal(), Signal()
        bt = Signal(range(max(T, 2)))
        rt_last = Signal()                 # the running tile is the vector's last
        zwriting = Signal(2)               # a started tile will write this z bank
        m.d.comb += [xr.addr.eq(Cat(bu.x_addr[:gbits], xb)), bu.x_data.eq(xr.data),
                     zw.addr.eq(Cat(bu.z_addr[:zbits], bu.z_tag)), zw.data.eq(bu.z_data),
                     zw.en.eq(bu.z_we), bu.tile.eq(bt), bu.tag.eq(zb)]
        start = Signal()
        m.d.comb += start.eq(~bu.running & Mux(xb, xfull[1], xfull[0])
                             & ~Mux(zb, zfull[1] | zwriting[1], zfull[0] | zwriting[0]))
        m.d.comb += bu.start.eq(start)
        zw_set, zw_clr = Signal(2), Signal(2)
        with m.If(start):
            m.d.comb += zw_set.eq(bank_bit(zb))
            m.d.sync += [zb.eq(~zb), rt_last.eq(bt == T - 1), bt.eq(Mux(bt == T - 1, 0, bt + 1))]
        with m.If(bu.read_done & rt_last):
            m.d.comb += x_clr.eq(bank_bit(xb))
            m.d.sync += xb.eq(~xb)
        with m.If(bu.done):
            m.d.comb += [z_set.eq(bank_bit(bu.z_tag)), zw_clr.eq(bank_bit(bu.z_tag))]
        m.d.sync += zwriting.eq((zwriting | zw_set) & ~zw_clr)

        # Issue: the entries of tile it from z bank ib.  One stage: the code ROM's
        # output register holds entry i (codes, last) while the z buffer's holds
        # z[col_i], read a cycle earlier at the column that entry i-1 carries
        # (the tile's first column comes from a table).  A stall holds both.
        ib = Signal()
        it = Signal(range(max(T, 2)))
        pc = Signal(range(depth))
        if self._generic:    # per-tile tables in a ROM that a simulation loads at run time
            tw, tiles = self._tile_table()
            pcb = max(1, (depth - 1).bit_length())
            m.submodules.tiles = trom = Memory(shape=tw, depth=T, init=tiles,
                                               attrs=rom_attrs("tiles", True))
            tr = trom.read_port(domain="comb")
            m.d.comb += tr.addr.eq(it)
            tile_end = tr.data[:pcb]
            first_col = tr.data[pcb:pcb + self._col_bits]
        else:
            tile_end = Array(Const(v, range(len(self._words) + 1)) for v in self._tile_ends)[it]
            first_col = Array(Const(v, self._col_bits) for v in self._first_cols)[it]
        s1_valid = Signal()
        issuing = Signal()
        # The last flag of the entry at the ROM output, in a flop (loaded like the
        # column: from the previous word's look-ahead bit or the tile's table), so
        # that fire/advance (the ROM and z-read enables, the PEs' valid) start at flops.
        if self._generic:
            first_last = tr.data[pcb + self._col_bits]
        else:
            first_last = Array(Const((self._words[a] >> (P * cw + self._col_bits)) & 1, 1)
                               for a in [0] + self._tile_ends[:-1])[it]
        last1 = Signal()
        fire = s1_valid & (~last1 | arr.can_last)
        advance = ~s1_valid | fire
        next_col = Mux(s1_valid, cr.data[P * cw:P * cw + self._col_bits], first_col)
        with m.If(advance):
            m.d.sync += last1.eq(Mux(s1_valid, cr.data[-1], first_last))
        # Rows of the block being closed: P, or what is left of the tile.
        rows = self._n_out // T
        nb = -(-rows // P)
        blk = Signal(range(max(nb, 2)))
        with m.If(fire & last1):
            m.d.sync += blk.eq(Mux(blk == nb - 1, 0, blk + 1))
        m.d.comb += [cr.addr.eq(pc), cr.en.eq(advance), zr.addr.eq(Cat(next_col[:zbits], ib)),
                     zr.en.eq(advance), arr.z.eq(zr.data), arr.codes.eq(cr.data[:P * cw]),
                     arr.valid.eq(fire), arr.last.eq(last1),
                     arr.lanes.eq(Mux(blk == nb - 1, (rows - (nb - 1) * P) // C, P // C))]
        with m.If(advance):
            m.d.sync += s1_valid.eq(issuing)
            with m.If(issuing):
                m.d.sync += pc.eq(pc + 1)
        with m.FSM(name="issue_fsm"):
            with m.State("WAIT"):
                with m.If(Mux(ib, zfull[1], zfull[0])):
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += issuing.eq(pc != tile_end)
                with m.If((pc == tile_end) & ~s1_valid):
                    m.d.comb += z_clr.eq(bank_bit(ib))
                    m.d.sync += ib.eq(~ib)
                    with m.If(it == T - 1):
                        m.d.sync += [it.eq(0), pc.eq(0)]
                    with m.Else():
                        m.d.sync += it.eq(it + 1)
                    m.next = "WAIT"

        connect(m, arr.o, post.i)
        self.drive_output(m, post.o, arr.overrun)
        return m
