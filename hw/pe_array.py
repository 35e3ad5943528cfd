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

Coefficient code (one per PE, ``cw = exp_bits + 2`` bits, PE p at bits
``[p*cw, (p+1)*cw)``)::

    bit  exp_bits+1   exp_bits   exp_bits-1 .. 0
         nz           sign       exp
    nz = 0: coefficient 0 (sign and exp ignored); all-zero code = zero coefficient.
    value = (-1)^sign * 2^exp

Without zero codes (``zero_codes=False``: a layout whose stored codes are all
nonzero) the nz bit is left out: ``exp_bits + 1`` bits, value ``(-1)^sign * 2^exp``.
"""

from amaranth.hdl import Module, Signal, Shape, signed, Mux, Cat, Const
from amaranth.lib import stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent, discard
from sparrow.hw.pe import ShiftAddPE, RunningPE, PE_LATENCY
from sparrow.validate import check_int, check_range

__all__ = ["code_width", "encode_code", "DrainChain", "PEArray", "OutputStage", "rshift_sat"]


def code_width(exp_bits, zero_codes=True):
    """Bits of one coefficient code: (nz,) sign, exp."""
    return exp_bits + 1 + int(bool(zero_codes))


def encode_code(sign, exp, exp_bits=3, zero_codes=True):
    """The code of coefficient ``sign * 2^exp`` (sign in {-1, 0, 1}) as an int.

    Raises ValueError for a zero coefficient without zero codes.
    """
    if sign == 0:
        if not zero_codes:
            raise ValueError("A zero coefficient needs zero codes")
        return 0
    return (int(bool(zero_codes)) << (exp_bits + 1)) | (int(sign < 0) << exp_bits) | int(exp)


class DrainChain(ValidatedComponent):
    """Parallel-load, serial-out chain of ``lanes`` signed ``width``-bit words.

    ``load`` copies ``data`` (lane i at bits ``[i*width, (i+1)*width)``) into the
    chain; on each of the following ``load_count`` cycles (1..lanes) ``o.payload``
    shows lane 0, 1, ... with ``o.valid`` high; lanes beyond are dropped.  Loading while words remain sets the sticky
    ``overrun`` flag (a sequencer bug: the engines never do it).  Between loads the
    words shift every cycle (no hold), so ``load`` is the only control the words see.

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
    load_words : In(load_groups)    (only with ``load_groups`` > 1)
        Copies of ``load`` (the caller's fan-out tree): group g of the words
        (``lanes / load_groups`` consecutive words) loads on bit g; ``load``
        itself then only drives the count.  The copies must equal ``load``
        whenever a count is loaded (garbage elsewhere is hidden by ``o.valid``).

    Raises
    ------
    TypeError, ValueError
        ``lanes`` (1..4096), ``width`` (1..65536) or ``load_groups`` (1..lanes) out of range.
    """

    def __init__(self, lanes, width, load_groups=1):
        super().__init__(lanes, width, load_groups)

    def _validate(self, lanes, width, load_groups):
        check_int(lanes, "Lane count", 1, 4096)
        check_int(width, "Width", 1, 1 << 16)
        check_int(load_groups, "Load group count", 1, lanes)
        self._lanes, self._width, self._groups = lanes, width, load_groups
        extra = {"load_words": In(load_groups)} if load_groups > 1 else {}
        return {
            **extra,
            "data": In(lanes * width), "load": In(1), "load_count": In(range(lanes + 1)),
            "o": Out(stream.Signature(signed(width))),
            "count": Out(range(lanes + 1)), "overrun": Out(1),
        }

    def elaborate(self, platform):
        m = Module()
        n, w = self._lanes, self._width
        regs = [Signal(signed(w), name=f"word{i}") for i in range(n)]
        # The words shift on every cycle without a load (past the last valid word
        # they carry garbage that o.valid hides): one control signal per word, its load.
        G = self._groups
        for i, r in enumerate(regs):
            ld = self.load if G == 1 else self.load_words[i * G // n]
            m.d.sync += r.eq(Mux(ld, self.data[i * w:(i + 1) * w],
                                 regs[i + 1] if i + 1 < n else r))
        # o.valid is a flop equal to ``count != 0`` (computed a cycle ahead), so that the
        # consumer's word counters (the output stage's next lane, a RAM address) start at a flop.
        nonzero = Signal()
        with m.If(self.load):
            m.d.sync += [self.count.eq(self.load_count), nonzero.eq(self.load_count != 0)]
            with m.If(self.count != 0):
                m.d.sync += self.overrun.eq(1)
        with m.Elif(self.count != 0):
            m.d.sync += [self.count.eq(self.count - 1), nonzero.eq(self.count != 1)]
        m.d.comb += [self.o.payload.eq(regs[0]), self.o.valid.eq(nonzero)]
        return m


class PEArray(ValidatedComponent):
    """P shift-add PEs with a broadcast activation and a drain chain.

    Each cycle with ``valid``, PE p adds ``code_p * z`` (code layout in the
    module docstring) to its running sum (:class:`~sparrow.hw.pe.RunningPE`,
    never cleared, wrapping modulo ``2^acc_width``).  An entry with ``last``
    ends a block: the P running sums are snapshot into the drain chain
    ``latency`` (= 3 + ``bcast``) edges after the entry was taken and leave on
    ``o``, ``out_lanes`` sums per cycle (PEs 0..C-1 first).  A block's sums are
    the differences of consecutive snapshots (:class:`OutputStage` with
    ``running=True``), exact when each block sum fits ``acc_width`` signed
    bits.  ``can_last`` says whether an entry with ``last`` may be given this
    cycle: it is low while an earlier ``last`` is in flight or the chain would
    still hold words at load time.  Entries without ``last`` are always taken.

    Pipeline: ``bcast`` broadcast register stages (z, valid and every PE's
    code), then the PE (:data:`~sparrow.hw.pe.PE_LATENCY`: term register,
    accumulator), then the chain load.  With ``bcast = 0`` the inputs should
    come straight from registers (the engine feeds z from the z buffer's output
    register, the codes from the code ROM's): ``z`` fans out to every PE; large
    arrays take ``bcast >= 1`` so that the placer can put the broadcast
    register (and each PE's code register) between the block RAMs and the PEs.

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
    out_lanes : int
        Sums per drain-chain word C (1..64, divides P): the chain has P/C words
        of C sums and a block of n rows drains in n/C cycles.
    bcast : int
        Broadcast register stages, 0..4.
    groups : int
        PE groups G (1..pes, divides ``pes``): with G > 1, group g (PEs
        ``g*P/G .. (g+1)*P/G - 1``) takes its own activation, lane g of ``z``,
        and adds its terms when ``group_valid[g]`` (each group runs its own
        column list; a block still ends for all PEs at once, on ``valid`` and
        ``last``).  ``group_valid`` replaces ``valid`` for the terms: the caller
        holds it low when ``valid`` is low.
    zero_codes : bool
        Codes carry the nz bit (default); without it every code is a nonzero
        coefficient and a group adds nothing only when not ``group_valid``.
    gated : bool
        With one group: take ``group_valid`` all the same (an entry may carry
        ``last`` without a term).

    Members
    -------
    z : In(signed(act_width))   (G = 1)
    z : In(groups * act_width)  (G > 1: group g's signed activation at bits ``[g*w, (g+1)*w)``)
    group_valid : In(groups)    (G > 1 or ``gated`` only)
    codes : In(pes * code_width(exp_bits, zero_codes))
    valid, last : In(1)
    lanes : In(range(pes // out_lanes + 1))
        With ``last``: how many chain words (C PEs each, from PE 0) hold rows of
        this block; only they are shifted out (the rest hold zero codes in this block).
    can_last : Out(1)
    can_last_next : Out(1)
        What ``can_last`` will be next cycle (a caller that registers its own
        block-end decision combines it with its state).
    o : Out(stream.Signature(signed(acc_width)))  (``out_lanes`` = 1)
    o : Out(stream.Signature(out_lanes * acc_width))  (``out_lanes`` > 1: PE c of the
        word at bits ``[c*acc_width, (c+1)*acc_width)``)
        The sums, PE 0 first; ``o.ready`` is ignored (cannot stall).
    overrun : Out(1)            sticky: a sum was lost (never happens when can_last is obeyed)

    Raises
    ------
    TypeError, ValueError
        ``pes`` or ``out_lanes`` out of range, ``out_lanes`` not dividing ``pes``,
        ``bcast`` outside [0, 4], or widths that :class:`~sparrow.hw.pe.ShiftAddPE`
        refuses (with ``max_terms=1``).
    """

    #: Edges from an entry being taken to its block's sums being in the drain chain
    #: (without broadcast stages; see :attr:`latency`).
    ARRAY_LATENCY = PE_LATENCY + 1

    def __init__(self, pes, act_width=8, exp_bits=3, acc_width=20, out_lanes=1, bcast=0, groups=1,
                 zero_codes=True, gated=False):
        super().__init__(pes, act_width, exp_bits, acc_width, out_lanes, bcast, groups, zero_codes,
                         gated)

    def _validate(self, pes, act_width, exp_bits, acc_width, out_lanes, bcast, groups, zero_codes,
                  gated):
        check_int(pes, "PE count", 1, 1024)
        check_int(groups, "PE group count", 1, pes)
        if pes % groups:
            raise ValueError(f"PE group count {groups} does not divide PE count {pes}")
        check_int(out_lanes, "Output lane count", 1, 64)
        if pes % out_lanes:
            raise ValueError(f"Output lane count {out_lanes} does not divide PE count {pes}")
        check_range(bcast, "Broadcast stages", 0, 4)
        discard(ShiftAddPE(act_width, exp_bits, acc_width, max_terms=1))    # its checks only
        self._pes, self._act_width, self._exp_bits, self._acc_width = pes, act_width, exp_bits, acc_width
        self._out_lanes, self._bcast = out_lanes, bcast
        self._groups, self._zero_codes = groups, bool(zero_codes)
        self._gated = groups > 1 or bool(gated)
        payload = signed(acc_width) if out_lanes == 1 else out_lanes * acc_width
        grouped = {"z": In(groups * act_width) if groups > 1 else In(signed(act_width))}
        if self._gated:
            grouped["group_valid"] = In(groups)
        return {
            **grouped, "codes": In(pes * code_width(exp_bits, zero_codes)),
            "valid": In(1), "last": In(1), "lanes": In(range(pes // out_lanes + 1)),
            "can_last": Out(1), "can_last_next": Out(1),
            "o": Out(stream.Signature(payload)),
            "overrun": Out(1),
        }

    @property
    def pes(self):
        return self._pes

    @property
    def latency(self):
        """Edges from an entry being taken to its block's sums being in the drain chain."""
        return self.ARRAY_LATENCY + self._bcast

    def elaborate(self, platform):
        m = Module()
        P, eb, C, S = self._pes, self._exp_bits, self._out_lanes, self._bcast
        cw, G, w = code_width(eb, self._zero_codes), self._groups, self._act_width
        zin = [self.z[g * w:(g + 1) * w].as_signed() for g in range(G)] if G > 1 else [self.z]
        gvalid = [self.group_valid[g] for g in range(G)] if self._gated else [self.valid]
        # With broadcast stages, the chain's words load on copies of the load signal
        # (one per group of words, up to 2^(1+S) groups).
        groups = min(P // C, 1 << (PE_LATENCY - 1 + S)) if S else 1
        m.submodules.chain = chain = DrainChain(P // C, C * self._acc_width, groups)

        # A block's last entry: taken at e0, through the S broadcast stages, in the
        # accumulator at e(S+1), snapshot at e(S+2).
        depth = PE_LATENCY + S
        last_pipe = Signal(depth)
        m.d.sync += last_pipe.eq(Cat(self.valid & self.last, last_pipe[:-1]))
        lanes_pipe = [Signal(range(P // C + 1), name=f"lanes{i}") for i in range(depth)]
        m.d.sync += lanes_pipe[0].eq(self.lanes)
        m.d.sync += [lanes_pipe[i].eq(lanes_pipe[i - 1]) for i in range(1, depth)]
        bcodes = self.codes
        for s in range(S):
            ncodes = Signal(P * cw, name=f"bcodes{s}")
            m.d.sync += ncodes.eq(bcodes)
            bcodes = ncodes
        if S:
            # z goes through a binary tree of S register stages (2, 4, ... copies, at
            # most one per 8 PEs), gated by valid at the root: an idle cycle
            # broadcasts z = 0, so the PEs need no valid (a zero term whatever the
            # code).  Sibling copies differ in their (reset-less, don't-care) initial
            # value, 0 or all ones, so that Yosys does not merge them back into one;
            # at time 0 the codes, delayed alike, are zero codes.
            zs = [_fanout_tree(m, Mux(gvalid[g], zin[g], 0), S, max(1, P // G // 8),
                               f"bz{g}_" if G > 1 else "bz", signed(w)) for g in range(G)]
        else:
            zs = [[z] for z in zin]

        # Without zero codes an idle PE's code is no zero: the broadcast copies' don't-care
        # initial values (above) would add terms until the first gated z arrives, so each
        # group's valid travels with z (S flops from 0) and enables the PEs.
        pe_valid = gvalid
        if S and not self._zero_codes:
            pe_valid = []
            for g in range(G):
                v = gvalid[g]
                for s_ in range(S):
                    nv = Signal(name=f"bvalid{g}_{s_}")
                    m.d.sync += nv.eq(v)
                    v = nv
                pe_valid.append(v)
        accs = []
        for p in range(P):
            pe = RunningPE(self._act_width, eb, self._acc_width)
            m.submodules[f"pe{p}"] = pe
            code = bcodes[p * cw:(p + 1) * cw]
            g, q = divmod(p, P // G)
            m.d.comb += [pe.act.eq(zs[g][q * len(zs[g]) // (P // G)]), pe.exp.eq(code[:eb]),
                         pe.sign.eq(code[eb]), pe.nz.eq(code[eb + 1] if self._zero_codes else 1),
                         pe.valid.eq(1 if S and self._zero_codes else pe_valid[g])]
            accs.append(pe.acc)
        m.d.comb += [chain.data.eq(Cat(*accs)), chain.load.eq(last_pipe[-1]),
                     chain.load_count.eq(lanes_pipe[-1])]
        if groups > 1:
            # Copies of the chain load from a tree over the last depth-1 stages of the pipe.
            loads = _fanout_tree(m, last_pipe[0], depth - 1, groups, "bload", 1)
            m.d.comb += chain.load_words.eq(Cat(*loads))
        m.d.comb += [self.o.payload.eq(chain.o.payload), self.o.valid.eq(chain.o.valid)]
        m.d.comb += self.overrun.eq(chain.overrun)

        # Taken at edge e0, loaded at edge e(L-1): the chain shifts at e0..e(L-2), so it
        # must hold at most L-1 words now, and one last at a time may be in flight.
        # can_last is registered (computed from the next cycle's chain count and
        # in-flight flags) so that the valid fanned out to every PE starts at flops.
        edges = self.latency - 1
        inflight = Signal(edges)
        inflight_next = Cat(self.valid & self.last & self.can_last, inflight[:-1])
        m.d.sync += inflight.eq(inflight_next)
        # The next count (load_count on a load, else count - 1 down to 0) is at most edges
        # exactly when count <= edges + 1 without a load: compared without the subtractor.
        few_next = Mux(chain.load, chain.load_count <= edges, chain.count <= edges + 1)
        can = Signal(init=1)
        m.d.comb += self.can_last_next.eq(few_next & (inflight_next == 0))
        m.d.sync += can.eq(self.can_last_next)
        m.d.comb += self.can_last.eq(can)
        return m


def _fanout_tree(m, src, stages, most, name, shape):
    """Copies of ``src`` delayed by ``stages`` edges through a binary register tree.

    Stage s holds up to ``2^(s+1)`` copies (at most ``most``), copy j fed by copy
    j // 2 of the stage before.  Yosys merges flip-flops with the same input and
    initial value, so sibling copies get different (reset-less) initial values, 0
    and all ones: callers use the copies only where the value at time 0 does not
    matter.  Returns the last stage's copies (a list of Values).
    """
    shape = Shape.cast(shape)
    ones = -1 if shape.signed else (1 << shape.width) - 1
    level = [src]
    for s in range(stages):
        n = min(most, 2 * len(level)) if len(level) < most else len(level)
        nxt = []
        for j in range(n):
            c = Signal(shape, name=f"{name}{s}_{j}", reset_less=True, init=ones if j % 2 else 0)
            m.d.sync += c.eq(level[j * len(level) // n])
            nxt.append(c)
        level = nxt
    return level


def rshift_sat(m, value, shift, relu, name="y"):
    """Comb int8 of ``value``: sat8(rshift(value, shift)) (then ReLU); returns the signal.

    rshift(v, s) = floor((v + 2^(s-1)) / 2^s), v for s = 0; the rounding
    constant is added by the caller (folded into the bias), this only shifts.
    ``shift`` and ``relu`` are constants, or signals (a run-time shift and flag).
    """
    if isinstance(shift, int):
        shifted = value >> shift if shift else value
    else:
        shifted = value >> shift
    y = Signal(signed(8), name=name)
    if isinstance(shift, int) and isinstance(relu, (bool, int)):
        # Constant shift and flag: the clamp tests the bits above the int8 (no comparators).
        n = len(shifted)
        sign = shifted[-1]
        if n <= 8:
            over, under = Const(0, 1), sign & bool(relu)
        else:
            top = shifted[7:n - 1]
            over, under = ~sign & top.any(), sign & (Const(1, 1) if relu else ~top.all())
        with m.If(over):
            m.d.comb += y.eq(127)
        with m.Elif(under):
            m.d.comb += y.eq(0 if relu else -128)
        with m.Else():
            m.d.comb += y.eq(shifted)
        return y
    if isinstance(relu, (bool, int)):
        lo = 0 if relu else -128
    else:
        lo = Mux(relu, Const(0, signed(9)), Const(-128, signed(9)))
    with m.If(shifted > 127):
        m.d.comb += y.eq(127)
    with m.Elif(shifted < lo):
        m.d.comb += y.eq(lo)
    with m.Else():
        m.d.comb += y.eq(shifted)
    return y


#: Blocks of at most this many words keep the previous snapshots (``running``) in registers:
#: a shift register when every block is whole, else a RAM read asynchronously (registers
#: and a small multiplexer).  Longer blocks keep them in a RAM with a synchronous read
#: port, which may be a memory block, read a word ahead (at the next word's lane).
EARLY_LANES = 8


class OutputStage(ValidatedComponent):
    """End-of-block arithmetic: ``y[row] = relu?(sat8(rshift(acc + bias[row], out_shift)))``.

    Takes the serial sums of blocks of rows (as the drain chain gives them: word
    0 first), ``out_lanes`` = C rows per word (rows r*C .. r*C+C-1, row r*C+c
    at bits ``[c*acc_width, (c+1)*acc_width)``), and gives C int8 per beat.
    A block is ``lanes`` words; a tile of ``tile_rows`` rows is covered by
    ``ceil(tile_rows / (C*lanes))`` blocks, the last of which delivers only the
    tile's remaining words.  After ``rows / C`` beats the row counter restarts
    at 0 (next input vector).  The rounding constant ``2^(out_shift-1)`` is
    folded into the bias ROM (``bias + 2^(s-1)``, C rows per word), so the
    datapath is one add, an arithmetic shift and a clamp per lane.  Latency: 3 edges;
    4 with ``running``, whose snapshot difference gets an edge of its own (the
    previous-snapshot RAM's clock-to-out, about 6 ns on ECP5, then two adder
    chains in one cycle held a 768-PE engine at 77 MHz): the previous snapshot
    is at hand when a sum arrives (registers with at most :data:`EARLY_LANES`
    lanes; else a RAM read synchronously a word ahead, at the next word's
    lane), so the difference is taken from the input at edge 1 and the clamped
    result waits an edge before ``o`` (one adder chain per edge, no register
    holding the sum or the bias word for a cycle).
    The clamp of a constant shift tests the bits above the int8 (no comparator).

    Parameters
    ----------
    acc_width : int
        Width of one incoming sum.
    lanes : int
        Words per block.
    rows : int
        Rows per vector (the layer's ``out``).
    tile_rows : int
        Rows per tile; divides ``rows``; a multiple of ``out_lanes``.
    bias : sequence of int
        Per-row bias (``rows`` values).
    out_shift : int
        0..31.
    relu : bool
    running : bool
        The sums are running-sum snapshots (the PE array's): each lane's block
        sum is its snapshot minus the lane's previous snapshot (initially 0),
        modulo ``2^acc_width``.  The previous snapshots are a ``lanes``-deep
        RAM addressed by lane, or, with at most :data:`EARLY_LANES` lanes all of
        whose blocks are whole (``lanes`` divides the words per tile: the lanes
        come in turn), a shift register.
    out_lanes : int
        Rows per word and per output beat C (1..64).
    bias_width : int, optional
        Width of one bias in the ROM (default: what the biases need; a larger
        value gives a structure that does not depend on the bias values).
    rom_attrs : dict, optional
        Attributes of the bias ROM (``sparrow_rom`` for run-time loading).
    runtime_shift : bool
        Take the shift and the ReLU flag from the ports ``shift`` and ``relu``
        (a simulation build loads them at run time) instead of ``out_shift``
        and ``relu``; the bias ROM still holds the rounding constant of ``out_shift``.

    Members
    -------
    i : In(stream.Signature(signed(acc_width)))  (C = 1; ``C * acc_width`` bits for C > 1)
        Always ready.
    o : Out(stream.Signature(signed(8)))  (C = 1; ``8 * C`` bits for C > 1, row r*C+c
        at bits ``[8c, 8c+8)``)
        Cannot stall: ``o.ready`` is ignored.

    Raises
    ------
    TypeError, ValueError
        A count or width out of range (:func:`sparrow.validate.check_int`), ``tile_rows``
        not dividing ``rows``, ``out_lanes`` not dividing ``tile_rows``, a bias of the
        wrong length, ``out_shift`` outside [0, 31].
    """

    def __init__(self, acc_width, lanes, rows, tile_rows, bias, out_shift, relu, running=False,
                 out_lanes=1, bias_width=None, rom_attrs=None, runtime_shift=False):
        super().__init__(acc_width, lanes, rows, tile_rows, bias, out_shift, relu, running, out_lanes,
                         bias_width, rom_attrs, runtime_shift)

    def _validate(self, acc_width, lanes, rows, tile_rows, bias, out_shift, relu, running, out_lanes,
                  bias_width, rom_attrs, runtime_shift):
        check_int(acc_width, "Accumulator width", 1, 128)
        check_int(lanes, "Lane count", 1, 4096)
        check_int(rows, "Row count", 1, 1 << 20)
        check_int(tile_rows, "Tile row count", 1, 1 << 20)
        check_int(out_lanes, "Output lane count", 1, 64)
        if rows % tile_rows:
            raise ValueError(f"Tile row count {tile_rows} does not divide row count {rows}")
        if tile_rows % out_lanes:
            raise ValueError(f"Output lane count {out_lanes} does not divide the rows per tile "
                             f"{tile_rows}")
        bias = [int(b) for b in bias]
        if len(bias) != rows:
            raise ValueError(f"Bias must have {rows} values, not {len(bias)}")
        check_range(out_shift, "Output shift", 0, 31)
        self._acc_width, self._lanes, self._rows, self._tile_rows = acc_width, lanes, rows, tile_rows
        self._out_lanes = out_lanes
        rnd = (1 << (out_shift - 1)) if out_shift else 0
        self._bias = [b + rnd for b in bias]
        self._out_shift, self._relu, self._running = out_shift, bool(relu), bool(running)
        self._bias_width = max(max(abs(b) for b in self._bias).bit_length() + 1, 2)
        if bias_width is not None:
            if bias_width < self._bias_width:
                raise ValueError(f"Bias width {bias_width} is below the {self._bias_width} bits "
                                 f"the biases need")
            self._bias_width = bias_width
        self._rom_attrs = dict(rom_attrs or {})
        self._runtime_shift = bool(runtime_shift)
        C = out_lanes
        members = {
            "i": In(stream.Signature(signed(acc_width) if C == 1 else C * acc_width)),
            "o": Out(stream.Signature(signed(8) if C == 1 else 8 * C)),
        }
        if self._runtime_shift:
            members.update(shift=In(5), relu=In(1))
        return members

    @property
    def bias_image(self):
        """``(width, words)`` of the bias ROM: ``bias[row] + 2^(out_shift-1)``, two's complement,
        ``out_lanes`` rows per word (row r*C+c at bits ``[c*w, (c+1)*w)``)."""
        w, C = self._bias_width, self._out_lanes
        u = [b & ((1 << w) - 1) for b in self._bias]
        return C * w, [sum(u[r * C + c] << (c * w) for c in range(C)) for r in range(len(u) // C)]

    def elaborate(self, platform):
        m = Module()
        C = self._out_lanes
        L, R, TR = self._lanes, self._rows // C, self._tile_rows // C
        bw, aw = self._bias_width, self._acc_width
        m.submodules.bias = bias = Memory(shape=C * bw, depth=R, init=self.bias_image[1],
                                          attrs=self._rom_attrs)
        rd = bias.read_port()

        # Word counters.  Blocks start at the tile's start (a short block ends it), so the
        # lane is the tile-relative word modulo L: its low bits when L is a power of two;
        # the tile-relative word is the row when a tile is the whole vector.  ``*_n``: the
        # value after this cycle (the next word's), which addresses a synchronous read.
        valid = self.i.valid
        row = Signal(range(R))
        row_n = Mux(valid, Mux(row == R - 1, 0, row + 1), row)
        m.d.sync += row.eq(row_n)
        if TR == R:
            in_tile, in_tile_n = row, row_n
        else:
            in_tile = Signal(range(TR))          # tile-relative word of this lane
            in_tile_n = Mux(valid, Mux(in_tile == TR - 1, 0, in_tile + 1), in_tile)
            m.d.sync += in_tile.eq(in_tile_n)
        if L & (L - 1) == 0:
            lb = min((L - 1).bit_length(), len(in_tile))
            lane, lane_n = in_tile[:lb], in_tile_n[:lb]
        else:
            lane = Signal(range(L))
            # A block ends after word L-1 or at the tile's last word (a short block).
            lane_n = Mux(valid, Mux((in_tile == TR - 1) | (lane == L - 1), 0, lane + 1), lane)
            m.d.sync += lane.eq(lane_n)
        m.d.comb += rd.addr.eq(row)

        # Edge 1: the sum arrives; with ``running`` its block sum (the snapshot minus the
        # lane's previous one) is taken from it at once; the bias word is read.  Edge 2: add
        # the bias.  Then shift/clamp; with ``running`` the clamped result waits an edge
        # before ``o`` (4 edges, one adder chain per edge).
        v1 = Signal()
        m.d.sync += v1.eq(valid)
        if self._running and L <= EARLY_LANES and TR % L == 0:
            # Every block is whole, so the lanes come in turn 0..L-1: the previous snapshots
            # are a shift register, the lane's own at its end (no address, no read mux).
            hist = [Signal(C * aw, name=f"prev{j}") for j in range(L)]
            with m.If(valid):
                m.d.sync += hist[0].eq(self.i.payload)
                m.d.sync += [hist[j].eq(hist[j - 1]) for j in range(1, L)]
            prev_now = hist[-1]
        elif self._running:
            m.submodules.prev = prev = Memory(shape=C * aw, depth=L, init=[])
            pw = prev.write_port()
            m.d.comb += [pw.addr.eq(lane), pw.data.eq(self.i.payload), pw.en.eq(valid)]
            if L <= EARLY_LANES:
                # A few words: registers and a small multiplexer, read before the edge.
                pr = prev.read_port(domain="comb")
                m.d.comb += pr.addr.eq(lane)
            else:
                # A synchronous read at the NEXT word's lane, so that the previous snapshot
                # is at the port's output when the word arrives (no register holds the sum
                # for a cycle).  That lane is not the one written at the same edge, unless a
                # block of one word (lane 0) is followed by the next block's first: then the
                # read takes the word written (transparent).
                # The next lane is kept a word ahead in flops (``lane_a``: the lane after this
                # one, ``tile_a``: its tile-relative word), so that the address is one mux
                # from flops (valid selects it) instead of the counters' compare-and-add.
                tile_a = Signal(range(TR), init=1 % TR)
                lane_a = Signal(range(L), init=int(TR > 1 and L > 1))
                with m.If(valid):
                    m.d.sync += [tile_a.eq(Mux(tile_a == TR - 1, 0, tile_a + 1)),
                                 lane_a.eq(Mux((tile_a == TR - 1) | (lane_a == L - 1), 0, lane_a + 1))]
                pr = prev.read_port(transparent_for=(pw,) if TR % L == 1 else ())
                m.d.comb += pr.addr.eq(Mux(valid, lane_a, lane))
            prev_now = pr.data
        ys = []
        v2 = Signal()
        m.d.sync += v2.eq(v1)
        for c in range(C):
            acc1 = Signal(signed(aw), name=f"acc1_{c}")
            word = self.i.payload[c * aw:(c + 1) * aw]
            if self._running:
                m.d.sync += acc1.eq((word - prev_now[c * aw:(c + 1) * aw])[:aw])
            else:
                m.d.sync += acc1.eq(word)
            total = Signal(signed(max(aw, bw) + 1), name=f"total{c}")
            m.d.sync += total.eq(acc1 + rd.data[c * bw:(c + 1) * bw].as_signed())
            if self._runtime_shift:
                ys.append(rshift_sat(m, total, self.shift, self.relu, name=f"y{c}"))
            else:
                ys.append(rshift_sat(m, total, self._out_shift, self._relu, name=f"y{c}"))
        if self._running:
            y_reg, v3 = Signal(C * 8), Signal()
            m.d.sync += [y_reg.eq(Cat(*ys)), v3.eq(v2), self.o.payload.eq(y_reg), self.o.valid.eq(v3)]
        else:
            m.d.sync += [self.o.payload.eq(Cat(*ys)), self.o.valid.eq(v2)]
        m.d.comb += self.i.ready.eq(1)
        return m
