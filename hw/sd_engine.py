"""The sd_linear engine: basis unit + sparse power-of-two PE array + output stage.

One input vector (``in`` int8 values) enters on stream ``i``; ``out`` int8
values leave on stream ``o`` in row order, ``out_lanes`` (C) per beat.  Parameters live in ROMs
initialised from the layer (``init=``); ``sparrow generate`` writes the same
contents as memory images (:mod:`sparrow.hw.images`).

Three processes run concurrently, handing over double-buffered banks::

    loader   in cycles per vector      x -> x bank (k int8 per word)
    basis    in cycles per tile        z_t = satz(rshift(B_t x)) -> z bank
             (tiles back to back; 6 edges of pipeline)
    issue    one cycle per code entry  per PE group: z[col] and B codes -> PE array
             of the tile (+ stalls, + 3)   (groups in parallel, a block's end together)
    drain    P/C cycles per row block, overlapping the next block

so in steady state a vector costs about
max(in, T*in + 1, out/C, sum over blocks of max(entries_b, rows_b/C) + 4*T) cycles
(entries_b: the longest group list of block b).

Code program (:mod:`sparrow.hw.sd_program`): the rows of tile t are split
into blocks of P and each block's PEs into G groups of B rows; each group
has its own code ROM (one word per column where its rows are nonzero,
delta-coded, plus fill entries) and its own copy of the z buffer, so a
block costs as many cycles as its longest group list (all-zero columns cost
no cycle) and the ROMs hold what the compressor's B x 1 blocks hold,
whatever P is.
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
from sparrow.hw.pe_array import PEArray, OutputStage, code_width
from sparrow.hw.sd_program import (EXP_BITS, MAX_GROUPS, code_rom_depth, generic_code_depth,
                                   sd_array_pes, sd_col_bits, sd_exp_bits, sd_layout, sd_program,
                                   sd_row_blocks)
from sparrow.validate import check_int, check_range

__all__ = ["SDEngine", "sd_program", "sd_row_blocks", "sd_acc_width", "code_rom_depth", "EXP_BITS",
           "sd_exp_bits", "sd_layout"]

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


def _max_groups(config):
    """The PE-group limit of ``config`` (:attr:`~sparrow.hw.engine.EngineConfig.max_groups`)."""
    return getattr(config, "max_groups", MAX_GROUPS)


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
        holds any coefficients' sums, the bias ROM any int32, the code layout
        is :func:`~sparrow.hw.sd_program.sd_generic_layout` (groups fixed by
        P, ``max_groups`` and the rows, whole column indices, 5-bit codes of
        3-bit exponents and nz), each group issuing the column list of the
        board layout's group that holds its rows (so every row block costs
        the board build's cycles), all groups' lists in one ROM ``codes`` (a
        read port each) of :func:`~sparrow.hw.sd_program.generic_code_depth`
        words, the per-tile tables (each group's start and end address,
        first entry's delta column and last flag, second entry's delta
        column) a ROM ``tiles`` and the shifts and ReLU flag a ROM ``consts``
        instead of constants.
    max_groups : int
        Most PE groups of the code layout (1..16, default 16): 1 keeps one code
        ROM and one z buffer (the least logic and block RAMs, more ROM bits when
        the compressor's blocks are shorter than P).

    The code layout (:func:`~sparrow.hw.sd_program.sd_layout`: PE groups of B
    rows, each with its own code ROM ``codes<g>`` and z-buffer copy, delta-coded
    columns, the layer's exponent width) is chosen for the fewest ROM bits at no
    more cycles than whole column indices.

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
                 basis_shift, out_shift, relu, z_bits=8, pes=8, out_lanes=1, bcast=0, generic=False,
                 max_groups=MAX_GROUPS):
        super().__init__(in_features, out_features, k, basis, coef_sign, coef_exp, bias,
                         basis_shift, out_shift, relu, z_bits, pes, out_lanes, bcast, generic,
                         max_groups)

    @classmethod
    def from_layer(cls, layer, config=EngineConfig()):
        """The engine of a validated ``sparrow.modeldir.Layer`` of kind sd_linear.

        Reads ``config.pes``, ``config.out_lanes``, ``config.bcast``, ``config.generic``
        and ``config.max_groups``.
        """
        a, p = layer.attrs, layer.params
        return cls(int(a["in"]), int(a["out"]), int(a["k"]), p["basis"], p["coef_sign"],
                   p["coef_exp"], p["bias"], int(a["basis_shift"]), int(a["out_shift"]),
                   bool(a["relu"]), int(a.get("z_bits", 8)), config.pes, config.out_lanes,
                   config.bcast, config.generic, _max_groups(config))

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """k: the basis unit's multipliers (the PE array has none)."""
        return int(layer.attrs["k"])

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """Steady-state cycles per vector (:func:`~sparrow.hw.cycle_model.sd_block_cycles`)
        with the layer's actual code entries per row block (its longest group list)."""
        a, p = layer.attrs, layer.params
        tiles = np.asarray(p["basis"]).shape[0]
        program = sd_program(p["coef_sign"], p["coef_exp"], tiles, config.pes,
                             max_groups=_max_groups(config))
        rows = [r1 - r0 for r0, r1, _ in sd_row_blocks(p["coef_sign"], tiles, config.pes)]
        return sd_block_cycles(int(a["in"]), int(a["out"]), list(zip(program.block_entries, rows)),
                               config.out_lanes, tiles)

    def _validate(self, n_in, n_out, k, basis, coef_sign, coef_exp, bias, basis_shift,
                  out_shift, relu, z_bits, pes, out_lanes, bcast, generic, max_groups):
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
        board = sd_layout(s, e, tiles, pes, False, max_groups)
        self._layout = layout = sd_layout(s, e, tiles, pes, True, max_groups) if generic else board
        # A tile shorter than P: only the PEs of its rows (and the drain chain's words) are built.
        self._array_pes = sd_array_pes(n_out // tiles, pes, layout.group_rows, out_lanes)
        self._groups = self._array_pes // layout.group_rows
        self._array = PEArray(self._array_pes, z_bits, layout.exp_bits, self._acc_width, out_lanes,
                              bcast, self._groups, layout.zero_codes, gated=True)
        self._post = OutputStage(self._acc_width, self._array_pes // out_lanes, n_out,
                                 n_out // tiles, bias, out_shift, relu, running=True, out_lanes=out_lanes,
                                 bias_width=GENERIC_BIAS_WIDTH if generic
                                 else None, rom_attrs=rom_attrs("bias", generic),
                                 runtime_shift=generic)
        # generic: each group issues its board group's columns (the board's entries per block)
        self._program = sd_program(s, e, tiles, pes, layout, list_rows=board.group_rows, narrow=not generic)
        self._program_rows = board.group_rows
        self._active = len(self._program.groups)      # groups that hold rows
        if generic:         # one ROM: each group's list and a zero word, one after the other
            # the largest list of the structure: every column of every row block
            most = tiles * -(-(n_out // tiles) // pes) * n_in
            self._code_depths = [generic_code_depth(
                sum(len(g[0]) + 1 for g in self._program.groups), self._active * (most + 1))]
        else:
            self._code_depths = [code_rom_depth(len(g[0])) for g in self._program.groups]
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
        """The :class:`~sparrow.hw.sd_program.SDProgram` of the code ROMs."""
        return self._program

    def _rom_name(self, base, g):
        return base if self._active == 1 else f"{base}{g}"

    def _generic_code_rom(self):
        """``(offsets, pcb, words)`` of a generic build's one ``codes`` ROM: each group's list and
        a zero word, one after the other (group g from address ``offsets[g]``), then zero words
        up to the depth; ``pcb`` address bits."""
        offsets, words = [], []
        for gw, *_ in self._program.groups:
            offsets.append(len(words))
            words += list(gw) + [0]
        depth = self._code_depths[0]
        return offsets, max(1, (depth - 1).bit_length()), words + [0] * (depth - len(words))

    def _tile_table(self):
        """``(width, words)`` of the ``tiles`` ROM of a generic build: per tile, group g at bits
        ``[g*w, (g+1)*w)`` holding, LSB first, the address of the tile's first entry in the
        ``codes`` ROM and the address one past its last, its first entry's ``v``, that entry's
        ``last`` flag and its second entry's ``v`` (all loaded at run time: the groups' start
        addresses depend on the values)."""
        offsets, pcb, _ = self._generic_code_rom()
        d = self._layout.delta_bits
        w = 2 * pcb + 2 * d + 1
        words = [sum((offsets[g] + (ends[t - 1] if t else 0) | (offsets[g] + ends[t]) << pcb
                      | (first_v[t] << 2 * pcb) | (first_last[t] << (2 * pcb + d))
                      | (second_v[t] << (2 * pcb + d + 1))) << (g * w)
                     for g, (_, ends, first_v, first_last, second_v) in enumerate(self._program.groups))
                 for t in range(self._tiles)]
        return self._active * w, words

    def memory_images(self):
        """``{name: (width, words, layout)}`` of every ROM, exactly as the RTL holds them."""
        B, d, eb, zero = self._layout
        cw = code_width(eb, zero)
        code = (f"exp[0:{eb}], sign[{eb}], nz[{eb + 1}]" if zero else
                f"exp[0:{eb}], sign[{eb}] (no zero codes)")
        bw, bias = self._post.bias_image
        k = self._k
        images = {}
        for g, (words, ends, first_v, first_last, second_v) in enumerate(
                [] if self._generic else self._program.groups):
            pad = self._code_depths[g] - len(words)
            bg = self._program.group_rows[g]
            images[self._rom_name("codes", g)] = (
                self._program.word_widths[g], list(words) + [0] * pad,
                f"PE group {g} of {self._groups} ({self._active} hold rows; rows g*{B}..g*{B}+{B - 1} "
                f"of each row block of "
                f"{self._pes}, this group's words the codes of {bg}): one entry per nonzero column of "
                f"the group's rows or fill "
                f"(sparrow.hw.sd_program); LSB first: {bg} codes of {cw} bits ({code}), the "
                f"v[{bg * cw}:{bg * cw + d}] of the entry after next (delta column, {(1 << d) - 1} = "
                f"fill; 0 past a tile's last), last[{bg * cw + d}], next entry's "
                f"last[{bg * cw + d + 1}]; tile t ends at tile_ends[t] = {ends}, its first entry "
                f"has v = {first_v}, last = {first_last}, its second v = {second_v}; then {pad} "
                f"zero word(s) (the issue stage reads one word past the last entry)")
        if self._generic:      # one ROM: the groups' lists one after the other
            offsets, _, words = self._generic_code_rom()
            images["codes"] = (
                self._program.word_width, words,
                f"the lists of the {self._active} PE groups of {B} row(s) (rows g*{B}..g*{B}+{B - 1} "
                f"of each row block of {self._pes}) one after the other, each followed by a zero "
                f"word (the issue stage reads one word past a list), from addresses {offsets}, "
                f"then zero words up to the depth (sparrow.hw.sd_program.generic_code_depth); a "
                f"group's list holds an entry per column where a row of the board layout's group "
                f"of {self._program_rows} rows that holds it is nonzero (an entry for an empty "
                f"part); LSB first: {B} codes of {cw} bits ({code}), the v[{B * cw}:{B * cw + d}] "
                f"of the entry after next (delta column; 0 past a tile's last), last[{B * cw + d}], "
                f"next entry's last[{B * cw + d + 1}]")
        images["basis"] = (8 * k, basis_image(self._basis_unit._basis),
                           f"word t*{self._n_in} + g*{k} + i = basis[t, g, i, 0:{k}], lane j at bits "
                           f"[8j, 8j+8), int8")
        images["bias"] = (bw, bias, f"bias[row] + 2^(out_shift-1), signed {bw // self._out_lanes}-bit "
                                    f"two's complement, {self._out_lanes} row(s) per word (row "
                                    f"w*{self._out_lanes}+c at bits [{bw // self._out_lanes}c, ...))")
        if self._generic:
            images["consts"] = consts_image(*self._consts)
            tw, tiles = self._tile_table()
            _, pcb, _ = self._generic_code_rom()
            images["tiles"] = (tw, tiles, f"word t, group g at bits [g*{tw // self._active}, ...): "
                                          f"the address of tile t's first entry in the codes ROM at "
                                          f"bits [0, {pcb}), one past its last at [{pcb}, {2 * pcb}), "
                                          f"its first entry's v at [{2 * pcb}, {2 * pcb + d}), that "
                                          f"entry's last flag at bit {2 * pcb + d}, its second "
                                          f"entry's v at [{2 * pcb + d + 1}, {2 * pcb + 2 * d + 1})")
        return images

    @property
    def entries(self):
        """Code entries per vector: the longest group list of every row block (array cycles
        per vector without stalls)."""
        return sum(self._program.block_entries)

    def describe(self):
        """``pes``, ``array_pes`` (the PEs built: :func:`~sparrow.hw.sd_program.sd_array_pes`),
        the code layout (``group_rows``, ``delta_bits``, ``exp_bits``, ``zero_codes``),
        ``groups`` (of the array), ``code_entries`` (array cycles) and per group its ``tile_ends`` and each
        tile's first entry's ``first_v`` and ``first_last`` and second entry's ``second_v``
        (held as logic constants)."""
        return {"pes": self._pes, "array_pes": self._array_pes, **self._layout._asdict(),
                "groups": self._groups,
                "active_groups": self._active,
                "code_entries": self.entries, "tile_ends": [g[1] for g in self._program.groups],
                "first_v": [g[2] for g in self._program.groups],
                "first_last": [g[3] for g in self._program.groups],
                "second_v": [g[4] for g in self._program.groups]}

    def elaborate(self, platform):
        m = Module()
        n, k, T, P, C = self._n_in, self._k, self._tiles, self._pes, self._out_lanes
        G, A, (B, d, eb, zero) = self._groups, self._active, self._layout
        cw = code_width(eb, zero)
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
        # One z buffer copy per PE group that holds rows (written alike, read at the
        # group's own columns).
        zws, zrs = [], []
        for g in range(A):
            zbuf = Memory(shape=signed(self._z_bits), depth=2 << zbits, init=[])
            m.submodules[self._rom_name("zbuf", g)] = zbuf
            zws.append(zbuf.write_port())
            zrs.append(zbuf.read_port())

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
                     bu.tile.eq(bt), bu.tag.eq(zb)]
        for zw in zws:
            m.d.comb += [zw.addr.eq(Cat(bu.z_addr[:zbits], bu.z_tag)), zw.data.eq(bu.z_data),
                         zw.en.eq(bu.z_we)]
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

        # Issue: the entries of tile it from z bank ib, every PE group from its own code
        # ROM and z copy (_issue_group).  A group whose entry ends its part of the row
        # block waits there; when every group is at such an entry (and the array can
        # take a block end) they all fire together, with ``last``.
        ib = Signal()
        it = Signal(range(max(T, 2)))
        issuing, restart, close = Signal(), Signal(), Signal()
        groups = [self._issue_group(m, g, it, ib, issuing, restart, close, zbits, zrs[g], rom)
                  for g, rom in enumerate(self._code_roms(m, it))]
        # ``close`` is a flop, loaded from the groups' next states (every group at its last
        # entry of the block) and the array's next can_last, so that fire and the PEs'
        # enables start at flops.
        m.d.sync += close.eq(Cat(*(grp["at_last_next"] for grp in groups)).all() & arr.can_last_next)
        fires = []
        for grp in groups:
            m.d.comb += grp["fire"].eq(grp["s1_valid"] & (~grp["last1"] | close))
            fires.append(grp["fire"])
        fire = Cat(*fires).any()
        rows = self._n_out // T
        nb = -(-rows // P)
        blk = Signal(range(max(nb, 2)))
        with m.If(close):
            m.d.sync += blk.eq(Mux(blk == nb - 1, 0, blk + 1))
        # Groups past the tile's rows (G - A) add nothing: zero codes, z and group_valid.
        m.d.comb += [arr.codes.eq(Cat(*(grp["codes"] for grp in groups))),
                     arr.z.eq(Cat(*(grp["z"] for grp in groups))),
                     arr.valid.eq(fire), arr.last.eq(close),
                     arr.lanes.eq(Mux(blk == nb - 1, (rows - (nb - 1) * P) // C, P // C))]
        m.d.comb += arr.group_valid.eq(Cat(*(grp["term"] for grp in groups)))   # zero past A
        done = Cat(*(grp["done"] for grp in groups)).all()
        with m.FSM(name="issue_fsm"):
            with m.State("WAIT"):
                # Rewind the read pointers before a vector's first tile (here, not with
                # ``done``: the pointers' next value then starts at flops).
                m.d.comb += restart.eq(it == 0)
                with m.If(Mux(ib, zfull[1], zfull[0])):
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += issuing.eq(1)
                with m.If(done):
                    m.d.comb += z_clr.eq(bank_bit(ib))
                    m.d.sync += ib.eq(~ib)
                    with m.If(it == T - 1):
                        m.d.sync += it.eq(0)
                    with m.Else():
                        m.d.sync += it.eq(it + 1)
                    m.next = "WAIT"

        connect(m, arr.o, post.i)
        self.drive_output(m, post.o, arr.overrun)
        return m

    def _code_roms(self, m, it):
        """Per group ``(read port, first address, ROM depth, tile end, tile's first v, its last
        flag, the tile's second v)`` for tile ``it`` (the first address is read at tile 0):
        a ROM per group (board builds: block RAM each, from address 0), or one ROM with a read
        port per group and one ``tiles`` ROM that a simulation loads at run time (generic)."""
        G, T, d = self._active, self._tiles, self._layout.delta_bits
        ram = {"ram_style": "block", "rom_style": "block"}
        out = []
        if self._generic:
            _, pcb, words = self._generic_code_rom()
            m.submodules.codes = crom = Memory(shape=self._program.word_width, depth=len(words),
                                               init=words, attrs=rom_attrs("codes", True, ram))
            tw, table = self._tile_table()
            m.submodules.tiles = trom = Memory(shape=tw, depth=T, init=table,
                                               attrs=rom_attrs("tiles", True))
            tr = trom.read_port(domain="comb")
            m.d.comb += tr.addr.eq(it)
            w = tw // G
            for g in range(G):
                f = tr.data[g * w:(g + 1) * w]
                out.append((crom.read_port(), f[:pcb], len(words), f[pcb:2 * pcb],
                            f[2 * pcb:2 * pcb + d], f[2 * pcb + d],
                            f[2 * pcb + d + 1:2 * pcb + 2 * d + 1]))
            return out
        for g, (words, ends, first_v, first_last, second_v) in enumerate(self._program.groups):
            depth = self._code_depths[g]
            # Block RAM even when shallow: as LUTs a wide ROM costs thousands of cells.
            crom = Memory(shape=self._program.word_widths[g], depth=depth,
                          init=list(words) + [0] * (depth - len(words)), attrs=ram)
            m.submodules[self._rom_name("codes", g)] = crom
            out.append((crom.read_port(), 0, depth,
                        Array(Const(v, range(len(words) + 1)) for v in ends)[it],
                        Array(Const(v, d) for v in first_v)[it],
                        Array(Const(v, 1) for v in first_last)[it],
                        Array(Const(v, d) for v in second_v)[it]))
        return out

    def _issue_group(self, m, g, it, ib, issuing, restart, close, zbits, zr, rom):
        """Group g's issue stage: its read pointer, look-ahead column and z read.

        One stage: the code ROM's output register holds entry i (codes, last) while
        the z copy's holds z[col_i], read a cycle earlier at ``col``, a flip-flop: the
        column of the entry read next, computed a cycle before its read from the ``v``
        two entries ahead that entry i-1's word carries (a tile's first two from a
        table), so the z read's address is not behind the ROM's clock-to-out and an
        adder.  ``fire`` (driven by the caller) takes the entry; a stall holds both.
        ``rom`` is the group's entry of :meth:`_code_roms`; ``restart`` (the vector's
        last tile is done, the sequencer waits for the next) rewinds the read pointer.
        Returns the signals the caller joins: fire, s1_valid, last1, at_last_next (at
        its block's last entry next cycle), done, codes, z, term (a real entry fires:
        the group adds its terms).  ``close`` (driven by the caller) ends the block:
        every group fires its last entry.
        """
        B, d, eb, zero = self._layout
        cw = code_width(eb, zero)
        bw = self._program.group_rows[g] * cw        # the group's codes; its PEs past them get 0
        cr, first, depth, tile_end, tile_v, tile_last, tile_v2 = rom
        # generic: the start address comes from the tiles ROM (restart loads it before a vector)
        pc = Signal(range(depth), init=first if isinstance(first, int) else 0, name=f"pc{g}")
        s1_valid, last1, real1 = (Signal(name=f"{n}{g}") for n in ("s1_valid", "last1", "real1"))
        fire = Signal(name=f"fire{g}")
        advance = ~s1_valid | fire
        more = issuing & (pc != tile_end)
        # col: the column of the entry read next (base + v, base = 0 at a tile's or block's
        # start, else one past the entry before it, not past a fill), and whether that entry
        # is a fill.  Loaded with the tile's first entry while waiting; on each read the
        # next entry's: its v is two entries past the word at the ROM output.
        fill_v = (1 << d) - 1
        col = Signal(range(1 << (max(sd_col_bits(self._n_in), d) + 1)), name=f"col{g}")
        fill = Signal(name=f"fill{g}")
        # While waiting s1 is empty: the same adder loads 0 + the tile's first v (no
        # multiplexer behind the adder, whose operand from the ROM is the critical path).
        v_after = Mux(s1_valid, cr.data[bw:bw + d], Mux(issuing, tile_v2, tile_v))
        last_next = Mux(s1_valid, cr.data[bw + d + 1], tile_last)
        m.d.comb += [cr.addr.eq(pc), cr.en.eq(advance), zr.addr.eq(Cat(col[:zbits], ib)),
                     zr.en.eq(advance)]
        with m.If(advance | ~issuing):
            m.d.sync += [col.eq(Mux(last_next | ~issuing, 0, col + ~fill) + v_after),
                         fill.eq(v_after == fill_v)]
        with m.If(advance):
            m.d.sync += [s1_valid.eq(more), last1.eq(last_next), real1.eq(more & ~fill)]
            with m.If(more):
                m.d.sync += pc.eq(pc + 1)
        with m.If(restart):
            m.d.sync += pc.eq(first)
        return {"fire": fire, "s1_valid": s1_valid, "last1": last1,
                "at_last_next": Mux(advance, more & last_next, s1_valid & last1),
                "done": (pc == tile_end) & ~s1_valid,
                "codes": Cat(cr.data[:bw], Const(0, B * cw - bw)), "z": zr.data,
                "term": real1 & (~last1 | close)}
