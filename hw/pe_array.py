"""The shift-add PE array, its drain chain, and the output stage shared with the dense engine.

:class:`PEArray`
    P :class:`~sparrow.hw.pe.ShiftAddPE` s with one broadcast activation ``z``
    and one coefficient code each; the sums of a finished block of P rows are
    copied into a :class:`DrainChain` and shifted out one per cycle while the
    next block accumulates.
:class:`DrainChain`
    Parallel-load, serial-out shift register of ``lanes`` signed words.
:class:`OutputStage`
    bias add, rounding right shift, saturation to int8 and ReLU, one row per
    cycle (the end-of-tile arithmetic of sd_linear and dense_linear).

Coefficient code (one per PE, ``exp_bits + 2`` bits, PE p at bits
``[p*(exp_bits+2), (p+1)*(exp_bits+2))``)::

    bit  exp_bits+1   exp_bits   exp_bits-1 .. 0
         nz           sign       exp
    nz = 0: coefficient 0 (sign and exp ignored); all-zero code = zero coefficient.
    value = (-1)^sign * 2^exp
"""

from amaranth.hdl import Module, Signal, signed, Mux, Cat, Const
from amaranth.lib import wiring, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import ShiftAddPE, RunningPE, PE_LATENCY, _check_int

__all__ = ["code_width", "encode_code", "DrainChain", "PEArray", "OutputStage", "rshift_sat"]


def code_width(exp_bits):
    """Bits of one coefficient code: nz, sign, exp."""
    return exp_bits + 2


def encode_code(sign, exp, exp_bits=3):
    """The code of coefficient ``sign * 2^exp`` (sign in {-1, 0, 1}) as an int."""
    if sign == 0:
        return 0
    return (1 << (exp_bits + 1)) | (int(sign < 0) << exp_bits) | int(exp)


class _Validated(wiring.Component):
    """Runs ``self._validate(*args)`` before building the signature."""

    def __init__(self, *args):
        try:
            signature = self._validate(*args)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # refused, so never elaborated: no warning
            raise
        super().__init__(signature)


class DrainChain(_Validated):
    """Parallel-load, serial-out chain of ``lanes`` signed ``width``-bit words.

    ``load`` copies ``data`` (lane i at bits ``[i*width, (i+1)*width)``) into the
    chain; on each of the following ``load_count`` cycles (1..lanes) ``o.payload``
    shows lane 0, 1, ... with ``o.valid`` high; lanes beyond are dropped.  Loading while words remain sets the sticky
    ``overrun`` flag (a sequencer bug: the engines never do it).

    Members
    -------
    data : In(lanes * width)
    load : In(1)
    load_count : In(range(lanes + 1))    lanes to shift out after this load
    o : Out(stream.Signature(signed(width)))
        The chain cannot stall: ``o.ready`` is ignored, the consumer must take
        every word (the output stage does).
    count : Out(range(lanes + 1))   words not yet shifted out
    overrun : Out(1)
    """

    def __init__(self, lanes, width):
        super().__init__(lanes, width)

    def _validate(self, lanes, width):
        _check_int(lanes, "Lane count", 1, 4096)
        _check_int(width, "Width", 1, 128)
        self._lanes, self._width = lanes, width
        return {
            "data": In(lanes * width), "load": In(1), "load_count": In(range(lanes + 1)),
            "o": Out(stream.Signature(signed(width))),
            "count": Out(range(lanes + 1)), "overrun": Out(1),
        }

    def elaborate(self, platform):
        m = Module()
        n, w = self._lanes, self._width
        regs = [Signal(signed(w), name=f"word{i}") for i in range(n)]
        with m.If(self.load):
            m.d.sync += [r.eq(self.data[i * w:(i + 1) * w]) for i, r in enumerate(regs)]
            m.d.sync += self.count.eq(self.load_count)
            with m.If(self.count != 0):
                m.d.sync += self.overrun.eq(1)
        with m.Elif(self.count != 0):
            m.d.sync += [regs[i].eq(regs[i + 1]) for i in range(n - 1)]
            m.d.sync += self.count.eq(self.count - 1)
        m.d.comb += [self.o.payload.eq(regs[0]), self.o.valid.eq(self.count != 0)]
        return m


class PEArray(_Validated):
    """P shift-add PEs with a broadcast activation and a drain chain.

    Each cycle with ``valid``, PE p adds ``code_p * z`` (code layout in the
    module docstring) to its running sum (:class:`~sparrow.hw.pe.RunningPE`,
    never cleared, wrapping modulo ``2^acc_width``).  An entry with ``last``
    ends a block: the P running sums are snapshot into the drain chain
    ``ARRAY_LATENCY`` (= 3) edges after the entry was taken and leave on ``o``
    (PE 0 first), one per cycle.  A block's sums are the differences of
    consecutive snapshots (:class:`OutputStage` with ``running=True``), exact
    when each block sum fits ``acc_width`` signed bits.  ``can_last`` says whether an
    entry with ``last`` may be given this cycle: it is low while an earlier
    ``last`` is in flight or the chain would still hold words at load time.
    Entries without ``last`` are always taken.

    Pipeline: edges 1-2 are the PE (:data:`~sparrow.hw.pe.PE_LATENCY`: term
    register, accumulator); edge 3 loads the chain.  The inputs should come
    straight from registers (the engine feeds z from the z buffer's output
    register): ``z`` fans out to every PE.

    Parameters
    ----------
    pes : int
        Number of PEs P, 1..1024.
    act_width : int
        Width of the signed broadcast activation (z_bits), 2..32.
    exp_bits : int
        Exponent code width, 1..5 (3 for the model format).
    acc_width : int
        PE accumulator width; the caller sizes it for its worst-case sum.

    Members
    -------
    z : In(signed(act_width))
    codes : In(pes * (exp_bits + 2))
    valid, last : In(1)
    lanes : In(range(pes + 1))
        With ``last``: how many PEs (from PE 0) hold rows of this block; only
        their sums are shifted out (the rest hold zero codes in this block).
    can_last : Out(1)
    o : Out(stream.Signature(signed(acc_width)))
        The sums, PE 0 first; ``o.ready`` is ignored (cannot stall).
    overrun : Out(1)            sticky: a sum was lost (never happens when can_last is obeyed)
    """

    #: Edges from an entry being taken to its block's sums being in the drain chain.
    ARRAY_LATENCY = PE_LATENCY + 1

    def __init__(self, pes, act_width=8, exp_bits=3, acc_width=20):
        super().__init__(pes, act_width, exp_bits, acc_width)

    def _validate(self, pes, act_width, exp_bits, acc_width):
        _check_int(pes, "PE count", 1, 1024)
        probe = ShiftAddPE(act_width, exp_bits, acc_width, max_terms=1)
        probe._MustUse__silence = True
        self._pes, self._act_width, self._exp_bits, self._acc_width = pes, act_width, exp_bits, acc_width
        return {
            "z": In(signed(act_width)), "codes": In(pes * code_width(exp_bits)),
            "valid": In(1), "last": In(1), "lanes": In(range(pes + 1)), "can_last": Out(1),
            "o": Out(stream.Signature(signed(acc_width))),
            "overrun": Out(1),
        }

    @property
    def pes(self):
        return self._pes

    def elaborate(self, platform):
        m = Module()
        P, eb, cw = self._pes, self._exp_bits, code_width(self._exp_bits)
        m.submodules.chain = chain = DrainChain(P, self._acc_width)

        # No broadcast register of its own: z comes straight from the z buffer's
        # output register and the codes from the issue stage's register (one
        # fan-out each), and the PE's term register is the next stage.  A block's
        # last entry: taken at e0, in the accumulator at e1, snapshot at e2.
        last_pipe = Signal(2)
        m.d.sync += last_pipe.eq(Cat(self.valid & self.last, last_pipe[:-1]))
        lanes_pipe = [Signal(range(P + 1), name=f"lanes{i}") for i in range(2)]
        m.d.sync += [lanes_pipe[0].eq(self.lanes), lanes_pipe[1].eq(lanes_pipe[0])]
        bz, bcodes, bvalid = self.z, self.codes, self.valid

        accs = []
        for p in range(P):
            pe = RunningPE(self._act_width, eb, self._acc_width)
            m.submodules[f"pe{p}"] = pe
            code = bcodes[p * cw:(p + 1) * cw]
            m.d.comb += [pe.act.eq(bz), pe.exp.eq(code[:eb]), pe.sign.eq(code[eb]),
                         pe.nz.eq(code[eb + 1]), pe.valid.eq(bvalid)]
            accs.append(pe.acc)
        m.d.comb += [chain.data.eq(Cat(*accs)), chain.load.eq(last_pipe[1]),
                     chain.load_count.eq(lanes_pipe[1])]
        wiring.connect(m, wiring.flipped(self.o), chain.o)
        m.d.comb += self.overrun.eq(chain.overrun)

        # Taken at edge e0, loaded at edge e2: the chain shifts at e0 and e1, so it
        # must hold at most 2 words now, and one last at a time may be in flight.
        # can_last is registered (computed from the next cycle's chain count and
        # in-flight flags) so that the valid fanned out to every PE starts at flops.
        edges = self.ARRAY_LATENCY - 1
        inflight = Signal(edges)
        inflight_next = Cat(self.valid & self.last & self.can_last, inflight[:-1])
        m.d.sync += inflight.eq(inflight_next)
        count_next = Mux(chain.load, chain.load_count,
                         Mux(chain.count != 0, chain.count - 1, 0))
        can = Signal(init=1)
        m.d.sync += can.eq((count_next <= edges) & (inflight_next == 0))
        m.d.comb += self.can_last.eq(can)
        return m


def rshift_sat(m, value, shift, relu, name="y"):
    """Comb int8 of ``value``: sat8(rshift(value, shift)) (then ReLU); returns the signal.

    rshift(v, s) = floor((v + 2^(s-1)) / 2^s), v for s = 0; the rounding
    constant is added by the caller (folded into the bias), this only shifts.
    """
    shifted = value >> shift if shift else value
    y = Signal(signed(8), name=name)
    lo = 0 if relu else -128
    with m.If(shifted > 127):
        m.d.comb += y.eq(127)
    with m.Elif(shifted < lo):
        m.d.comb += y.eq(lo)
    with m.Else():
        m.d.comb += y.eq(shifted)
    return y


class OutputStage(_Validated):
    """End-of-block arithmetic: ``y[row] = relu?(sat8(rshift(acc + bias[row], out_shift)))``.

    Takes the serial sums of blocks of ``lanes`` rows (as the drain chain gives
    them: lane 0 first).  Rows are numbered in order; a tile of ``tile_rows``
    rows is covered by ``ceil(tile_rows / lanes)`` blocks, the last of which
    delivers only the tile's remaining rows.  After ``rows`` outputs the row
    counter restarts at 0 (next input vector).  The rounding constant
    ``2^(out_shift-1)`` is folded into the bias ROM (``bias + 2^(s-1)``), so the
    datapath is one add, an arithmetic shift and a clamp.  Latency: 3 edges.

    Parameters
    ----------
    acc_width : int
        Width of the incoming sums.
    lanes : int
        Rows per block.
    rows : int
        Rows per vector (the layer's ``out``).
    tile_rows : int
        Rows per tile; divides ``rows``.
    bias : sequence of int
        Per-row bias (``rows`` values).
    out_shift : int
        0..31.
    relu : bool
    running : bool
        The sums are running-sum snapshots (the PE array's): each lane's block
        sum is its snapshot minus the lane's previous snapshot (kept in a
        ``lanes``-deep RAM, initially 0), modulo ``2^acc_width``.

    Members
    -------
    i : In(stream.Signature(signed(acc_width)))
        Always ready.
    o : Out(stream.Signature(signed(8)))
        Cannot stall: ``o.ready`` is ignored.
    """

    def __init__(self, acc_width, lanes, rows, tile_rows, bias, out_shift, relu, running=False):
        super().__init__(acc_width, lanes, rows, tile_rows, bias, out_shift, relu, running)

    def _validate(self, acc_width, lanes, rows, tile_rows, bias, out_shift, relu, running):
        _check_int(acc_width, "Accumulator width", 1, 128)
        _check_int(lanes, "Lane count", 1, 4096)
        _check_int(rows, "Row count", 1, 1 << 20)
        _check_int(tile_rows, "Tile row count", 1, 1 << 20)
        if rows % tile_rows:
            raise ValueError(f"Tile row count {tile_rows} does not divide row count {rows}")
        bias = [int(b) for b in bias]
        if len(bias) != rows:
            raise ValueError(f"Bias must have {rows} values, not {len(bias)}")
        if not isinstance(out_shift, int) or not 0 <= out_shift <= 31:
            raise ValueError(f"Output shift must be an integer in [0, 31], not {out_shift!r}")
        self._acc_width, self._lanes, self._rows, self._tile_rows = acc_width, lanes, rows, tile_rows
        rnd = (1 << (out_shift - 1)) if out_shift else 0
        self._bias = [b + rnd for b in bias]
        self._out_shift, self._relu, self._running = out_shift, bool(relu), bool(running)
        self._bias_width = max(max(abs(b) for b in self._bias).bit_length() + 1, 2)
        return {
            "i": In(stream.Signature(signed(acc_width))),
            "o": Out(stream.Signature(signed(8))),
        }

    @property
    def bias_image(self):
        """``(width, words)`` of the bias ROM: ``bias[row] + 2^(out_shift-1)``, two's complement."""
        w = self._bias_width
        return w, [b & ((1 << w) - 1) for b in self._bias]

    def elaborate(self, platform):
        m = Module()
        L, R, TR = self._lanes, self._rows, self._tile_rows
        bw = self._bias_width
        m.submodules.bias = bias = Memory(shape=signed(bw), depth=R, init=self._bias)
        rd = bias.read_port()

        lane = Signal(range(L))
        in_tile = Signal(range(TR))          # tile-relative row of this lane
        row = Signal(range(R))
        keep = self.i.valid
        with m.If(self.i.valid):
            # A block ends after lane L-1 or at the tile's last row (a short block).
            with m.If(in_tile == TR - 1):
                m.d.sync += [lane.eq(0), in_tile.eq(0)]
            with m.Elif(lane == L - 1):
                m.d.sync += [lane.eq(0), in_tile.eq(in_tile + 1)]
            with m.Else():
                m.d.sync += [lane.eq(lane + 1), in_tile.eq(in_tile + 1)]
            m.d.sync += row.eq(Mux(row == R - 1, 0, row + 1))
        m.d.comb += rd.addr.eq(row)

        # Edge 1: sum and bias word (and previous snapshot) arrive together; edge 2:
        # add; edge 3: shift/clamp.
        acc1 = Signal(signed(self._acc_width))
        v1 = Signal()
        m.d.sync += v1.eq(keep)
        if self._running:
            m.submodules.prev = prev = Memory(shape=self._acc_width, depth=L, init=[])
            pw, pr = prev.write_port(), prev.read_port()    # read port: old value on a write
            snap = Signal(signed(self._acc_width))
            m.d.sync += snap.eq(self.i.payload)
            m.d.comb += [pr.addr.eq(lane), pw.addr.eq(lane), pw.data.eq(self.i.payload),
                         pw.en.eq(self.i.valid), acc1.eq((snap - pr.data)[:self._acc_width])]
        else:
            m.d.sync += acc1.eq(self.i.payload)
        total = Signal(signed(max(self._acc_width, bw) + 1))
        v2 = Signal()
        m.d.sync += [total.eq(acc1 + rd.data), v2.eq(v1)]
        y = rshift_sat(m, total, self._out_shift, self._relu)
        m.d.sync += [self.o.payload.eq(y), self.o.valid.eq(v2)]
        m.d.comb += self.i.ready.eq(1)
        return m
