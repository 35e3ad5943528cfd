"""The SmartDeal basis unit: ``z = B x`` per group of k inputs, on the device's multipliers.

For tile t, group g and row i of the group it computes
``z[g*k+i] = satz(rshift(sum_j basis[t,g,i,j] * x[g*k+j], basis_shift))``
with k signed 8x8 multipliers working in parallel (one z element per cycle).
Yosys maps each registered product to a DSP (SB_MAC16 on iCE40 with
``synth_ice40 -dsp``, MULT18X18D on ECP5).
"""

import numpy as np
from amaranth.hdl import Module, Signal, signed, Cat, Const, Mux
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_int, check_range

__all__ = ["BasisUnit", "basis_image", "BASIS_LATENCY"]

#: Edges from an element's read address to its z write (read, operand register, multiply,
#: sum, round, clamp).
BASIS_LATENCY = 6


def basis_image(basis):
    """Basis ROM words: word ``t*in + g*k + i`` holds ``basis[t, g, i, :]``, lane j at bits [8j, 8j+8)."""
    b = np.asarray(basis, dtype=np.int64)
    t, g, k, _ = b.shape
    u = (b & 0xFF).reshape(t * g * k, k)
    return [sum(int(v) << (8 * j) for j, v in enumerate(row)) for row in u]


class BasisUnit(ValidatedComponent):
    """Computes z for one tile after ``start``; reads x, writes z.

    Parameters
    ----------
    k : int
        Group size, 1..16 (one multiplier per lane).
    in_features : int
        Length of x and z; a multiple of k.
    basis : int array [T, in/k, k, k]
        int8 values.
    basis_shift : int
        0..31, the rounding right shift of the dot products.
    z_bits : int
        8..16, the signed width z is saturated to.
    rom_attrs : dict, optional
        Attributes of the basis ROM (``sparrow_rom`` for run-time loading).
    runtime_shift : bool
        Take the shift from the port ``shift`` (In(5): a simulation build loads
        it at run time) instead of ``basis_shift``.

    Members
    -------
    start : In(1)
        Begin tile ``tile`` (ignored while ``running``).  A tile may start while
        the previous one's last elements are still in the pipeline (it
        started ``in`` cycles earlier), so back-to-back tiles cost ``in`` cycles each.
    tile : In(range(T))
    tag : In(1)
        Copied at ``start``; comes back on ``z_tag`` with the tile's writes (the engine
        gives the z bank).
    running : Out(1)
        The x reads of a tile are in progress.
    read_done : Out(1)
        One cycle, with the tile's last x read address (the x word may change after it).
    busy : Out(1)
        ``running`` or elements still in the pipeline.
    done : Out(1)
        One cycle, together with the write of the tile's last z element.
    x_addr : Out(range(in/k))
        Read address of the x buffer (k int8 lanes per word, lane j = x[g*k+j]).
    x_data : In(8*k)
        The word at the previous cycle's ``x_addr`` (synchronous read).
    z_addr : Out(range(in)), z_data : Out(signed(z_bits)), z_we : Out(1), z_tag : Out(1)
        Write port of the z buffer (``z_tag``: the tile's ``tag``).

    Raises
    ------
    TypeError, ValueError
        ``k`` (1..16), ``in_features`` or ``z_bits`` (8..16) out of range, ``k`` not
        dividing ``in_features``, a basis of the wrong shape or not int8,
        ``basis_shift`` outside [0, 31].
    """

    def __init__(self, k, in_features, basis, basis_shift, z_bits=8, rom_attrs=None,
                 runtime_shift=False):
        super().__init__(k, in_features, basis, basis_shift, z_bits, rom_attrs, runtime_shift)

    def _validate(self, k, in_features, basis, basis_shift, z_bits, rom_attrs, runtime_shift):
        check_int(k, "Group size", 1, 16)
        check_int(in_features, "Input count", 1, 1 << 16)
        if in_features % k:
            raise ValueError(f"Group size {k} does not divide input count {in_features}")
        b = np.asarray(basis)
        if b.ndim != 4 or b.shape[1:] != (in_features // k, k, k):
            raise ValueError(f"Basis must have shape [T, {in_features // k}, {k}, {k}], "
                             f"not {list(b.shape)}")
        if b.size and (b.min() < -128 or b.max() > 127):
            raise ValueError("Basis values must be int8")
        check_range(basis_shift, "Basis shift", 0, 31)
        check_int(z_bits, "Z width", 8, 16)
        self._k, self._in, self._basis, self._shift, self._z_bits = k, in_features, b, basis_shift, z_bits
        self._tiles = b.shape[0]
        self._rom_attrs = dict(rom_attrs or {})
        self._runtime_shift = bool(runtime_shift)
        shift = {"shift": In(5)} if self._runtime_shift else {}
        return {**shift,
            "start": In(1), "tile": In(range(max(self._tiles, 2))), "tag": In(1),
            "running": Out(1), "read_done": Out(1), "busy": Out(1), "done": Out(1),
            "x_addr": Out(range(max(in_features // k, 2))), "x_data": In(8 * k),
            "z_addr": Out(range(max(in_features, 2))), "z_data": Out(signed(z_bits)),
            "z_we": Out(1), "z_tag": Out(1),
        }

    @property
    def tiles(self):
        return self._tiles

    def elaborate(self, platform):
        m = Module()
        k, n = self._k, self._in
        m.submodules.rom = rom = Memory(shape=8 * k, depth=self._tiles * n,
                                        init=basis_image(self._basis), attrs=self._rom_attrs)
        rd = rom.read_port()

        running = self.running
        tag = Signal()
        i = Signal(range(max(n, 2)))          # element within the tile
        r = Signal(range(max(k, 2)))          # row within the group
        g = Signal(range(max(n // k, 2)))     # group
        base = Signal(range(max(self._tiles * n, 2)))
        read_last = Signal()                 # the next read is the tile's last (a flop)
        with m.If(~running & self.start):
            m.d.sync += [running.eq(1), i.eq(0), r.eq(0), g.eq(0), base.eq(self.tile * n),
                         tag.eq(self.tag), read_last.eq(n == 1)]
        with m.Elif(running):
            m.d.sync += [i.eq(i + 1), base.eq(base + 1)]
            with m.If(r == k - 1):
                m.d.sync += [r.eq(0), g.eq(g + 1)]
            with m.Else():
                m.d.sync += r.eq(r + 1)
            m.d.sync += read_last.eq(i == n - 2 if n > 1 else 0)
            with m.If(read_last):
                m.d.sync += running.eq(0)
        m.d.comb += [rd.addr.eq(base), self.x_addr.eq(g), self.read_done.eq(running & read_last)]

        # Stage 1: read data; stage 2: operands; stage 3: k products; stage 4: their sum;
        # stage 5: round; stage 6: clamp.  The operand stage keeps the block RAM's slow
        # clock-to-out (about 6 ns on ECP5) and the x bank mux out of the multiplier path.
        v = Signal(BASIS_LATENCY)
        tags = Signal(BASIS_LATENCY)
        m.d.sync += [v.eq(Cat(running, v[:-1])), tags.eq(Cat(tag, tags[:-1]))]

        # The operand and product registers have no reset (the valid pipeline ``v`` has), so
        # that the iCE40 flow can take them into the SB_MAC16s (input and output registers,
        # which have no synchronous reset) instead of spending a logic cell per bit.
        b_op = Signal(8 * k, reset_less=True)
        x_op = Signal(8 * k, reset_less=True)
        m.d.sync += [b_op.eq(rd.data), x_op.eq(self.x_data)]
        prods = []
        for j in range(k):
            p = Signal(signed(16), name=f"prod{j}", reset_less=True)
            m.d.sync += p.eq(b_op[8 * j:8 * j + 8].as_signed() * x_op[8 * j:8 * j + 8].as_signed())
            prods.append(p)
        total = Signal(signed(16 + k.bit_length()))
        m.d.sync += total.eq(sum(prods))
        if self._runtime_shift:      # 2^(s-1) for s >= 1, 0 for s = 0
            rounded = (total + (Const(1, 32) << self.shift >> 1)) >> self.shift
        else:
            s = self._shift
            rounded = (total + (1 << (s - 1))) >> s if s else total
        zmax, zmin = (1 << (self._z_bits - 1)) - 1, -(1 << (self._z_bits - 1))
        z = Signal(signed(self._z_bits))
        rnd = Signal(signed(len(total) + 1))
        m.d.sync += rnd.eq(rounded)
        with m.If(rnd > zmax):
            m.d.comb += z.eq(zmax)
        with m.Elif(rnd < zmin):
            m.d.comb += z.eq(zmin)
        with m.Else():
            m.d.comb += z.eq(rnd)
        last = BASIS_LATENCY - 2
        # Every tile writes its elements 0..n-1 in order (tiles back to back), so the write
        # address is a counter stepped by each write rather than the element index carried
        # down the pipeline.
        z_next = Mux(self.z_we, Mux(self.z_addr == n - 1, 0, self.z_addr + 1), self.z_addr)
        m.d.sync += [self.z_data.eq(z), self.z_we.eq(v[last]), self.z_addr.eq(z_next),
                     self.z_tag.eq(tags[last]),
                     self.done.eq(v[last] & (z_next == n - 1))]
        m.d.comb += self.busy.eq(running | v.any())
        return m
