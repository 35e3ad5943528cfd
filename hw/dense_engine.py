"""The dense_linear engine: the int8 baseline, a MAC array on the device's multipliers.

``D`` MAC lanes (default 8: the UP5K's eight SB_MAC16) each own one output row
of a block of D rows; x[j] is broadcast to every lane and lane d multiplies it
by ``weight[b*D + d, j]`` from the weight ROM (one D-lane word per column),
so a block takes ``in`` cycles and a vector ``ceil(out/D) * in`` cycles (+1 to
hand over the x bank); x is double-buffered, so the next vector loads (``in``
cycles) while this one computes.  The block's sums go
through the same drain chain and output stage as the SD engine (bias + rounding
shift + saturation + ReLU), overlapping the next block.  Each registered 8x8
product maps to one DSP (SB_MAC16 / MULT18X18D).
"""

import numpy as np
from amaranth.hdl import Module, Signal, signed, Cat, Mux
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import connect

from sparrow.hw.cycle_model import dense_cycles
from sparrow.hw.engine import (DEFAULT_DENSE_LANES, GENERIC_BIAS_WIDTH, Engine, EngineConfig,
                               consts_image, consts_rom, rom_attrs)
from sparrow.hw.pe_array import DrainChain, OutputStage
from sparrow.validate import check_int

__all__ = ["DenseEngine", "dense_image", "dense_acc_width", "balanced_lanes"]


def balanced_lanes(n_out, lanes):
    """MAC lanes that a layer of ``n_out`` rows uses of ``lanes``: ``ceil(n_out / ceil(n_out / lanes))``.

    As many row blocks as ``lanes`` lanes take (so the same cycles), each as
    full as possible: the weight ROM holds no all-zero padding rows but the
    last block's (at most ``blocks - 1`` rows), and idle lanes take no DSP.
    """
    blocks = -(-n_out // lanes)
    return -(-n_out // blocks)


def dense_acc_width(weight):
    """Signed width of every row's worst-case ``sum_j w_rj x_j`` (x int8, bias excluded)."""
    w = np.abs(np.asarray(weight, dtype=np.int64))
    bound = int(w.sum(axis=1).max(initial=0)) * 128
    return max(bound.bit_length() + 1, 17)


def dense_image(weight, lanes):
    """Weight ROM words: word ``b*in + j`` holds ``weight[b*D + d, j]`` in lane d (bits [8d, 8d+8))."""
    w = np.asarray(weight, dtype=np.int64)
    out, n_in = w.shape
    blocks = -(-out // lanes)
    pad = np.zeros((blocks * lanes, n_in), dtype=np.int64)
    pad[:out] = w
    u = pad & 0xFF
    words = []
    for b in range(blocks):
        for j in range(n_in):
            words.append(sum(int(u[b * lanes + d, j]) << (8 * d) for d in range(lanes)))
    return words


class DenseEngine(Engine):
    """dense_linear on the RTL: ``y = relu?(sat8(rshift(bias + W x, out_shift)))``.

    Parameters
    ----------
    in_features, out_features : int
        1..65536.
    weight : int8 array [out, in]
    bias : int array [out]
    out_shift : int
        0..31.
    relu : bool
    lanes : int
        MAC lanes D, 1..256 (default 8).
    generic : bool
        A simulation build whose widths depend on the structure only (see
        :class:`~sparrow.hw.engine.EngineConfig`): the accumulator holds any
        int8 weights' sums, the bias ROM any int32, and the shift and ReLU
        flag come from a one-word ROM ``consts``.

    Members
    -------
    i, o, error
        As :class:`~sparrow.hw.engine.Engine` (one int8 per output beat); the
        drain chain's overrun (a sequencer bug) also sets ``error``.

    Raises
    ------
    TypeError
        A size or the lane count is not a positive integer ("Lane count must be
        a positive integer, not 0").
    ValueError
        A parameter out of range ("Weight must have shape [out, in], not [...]",
        "Weight values must be int8", ...).
    """

    #: Edges from a column being issued to its block's sums being in the drain chain
    #: (read, operand register, multiply, accumulate, load).
    LATENCY = 5

    kind = "dense_linear"

    def __init__(self, in_features, out_features, weight, bias, out_shift, relu,
                 lanes=DEFAULT_DENSE_LANES, generic=False):
        super().__init__(in_features, out_features, weight, bias, out_shift, relu, lanes, generic)

    @classmethod
    def from_layer(cls, layer, config=EngineConfig()):
        """The engine of a validated ``sparrow.modeldir.Layer`` of kind dense_linear with
        :func:`balanced_lanes` of ``config.dense_lanes`` MAC lanes (and ``config.generic``)."""
        a, p = layer.attrs, layer.params
        return cls(int(a["in"]), int(a["out"]), p["weight"], p["bias"], int(a["out_shift"]),
                   bool(a["relu"]), balanced_lanes(int(a["out"]), config.dense_lanes), config.generic)

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """One multiplier per MAC lane: :func:`balanced_lanes` of ``config.dense_lanes``."""
        return balanced_lanes(int(layer.attrs["out"]), config.dense_lanes)

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """Steady-state cycles per vector (:func:`~sparrow.hw.cycle_model.dense_cycles`)."""
        return dense_cycles(int(layer.attrs["in"]), int(layer.attrs["out"]), config.dense_lanes)

    def _validate(self, n_in, n_out, weight, bias, out_shift, relu, lanes, generic):
        check_int(n_in, "Input count", 1, 1 << 16)
        check_int(n_out, "Output count", 1, 1 << 16)
        check_int(lanes, "Lane count", 1, 256)
        w = np.asarray(weight)
        if w.shape != (n_out, n_in):
            raise ValueError(f"Weight must have shape [{n_out}, {n_in}], not {list(w.shape)}")
        if w.size and (w.min() < -128 or w.max() > 127):
            raise ValueError("Weight values must be int8")
        self._generic = generic = bool(generic)
        # generic: the widest sums of the structure (every weight -128)
        self._acc_width = dense_acc_width(np.full((1, n_in), 128) if generic else w)
        self._post = OutputStage(self._acc_width, lanes, n_out, n_out, bias, out_shift, relu,
                                 bias_width=GENERIC_BIAS_WIDTH if generic else None,
                                 rom_attrs=rom_attrs("bias", generic), runtime_shift=generic)
        self._consts = (0, out_shift, relu)
        self._words = dense_image(w, lanes)
        self._n_in, self._n_out, self._lanes = n_in, n_out, lanes
        self._blocks = -(-n_out // lanes)
        return self.stream_members()

    def memory_images(self):
        """``{name: (width, words, layout)}`` of every ROM, exactly as the RTL holds them."""
        D = self._lanes
        bw, bias = self._post.bias_image
        images = {
            "weight": (8 * D, list(self._words),
                       f"word b*{self._n_in} + j = weight[b*{D} + d, j] in lane d (bits [8d, 8d+8)), "
                       f"int8, rows past {self._n_out} zero"),
            "bias": (bw, bias, f"bias[row] + 2^(out_shift-1), signed {bw}-bit two's complement"),
        }
        if self._generic:
            images["consts"] = consts_image(*self._consts)
        return images

    @property
    def lanes(self):
        return self._lanes

    def describe(self):
        """``lanes``: the MAC lanes."""
        return {"lanes": self._lanes}

    def elaborate(self, platform):
        m = Module()
        n, D, NB = self._n_in, self._lanes, self._blocks
        m.submodules.post = post = self._post
        if self._generic:            # out_shift and ReLU loaded at run time
            _, out_shift, relu = consts_rom(m, *self._consts)
            m.d.comb += [post.shift.eq(out_shift), post.relu.eq(relu)]
        m.submodules.chain = chain = DrainChain(D, self._acc_width)
        # Two x banks (address MSB): the loader fills one while the MACs read the other.
        jbits = max(1, (n - 1).bit_length())
        m.submodules.xbuf = xbuf = Memory(shape=signed(8), depth=2 << jbits, init=[])
        xw, xr = xbuf.write_port(), xbuf.read_port()
        m.submodules.wrom = wrom = Memory(shape=8 * D, depth=NB * n, init=self._words,
                                          attrs=rom_attrs("weight", self._generic,
                                                          {"ram_style": "block", "rom_style": "block"}))
        wr = wrom.read_port()
        xfull = [Signal(name=f"xfull{i}") for i in range(2)]
        x_set, x_clr = Signal(2), Signal(2)
        for i in range(2):
            with m.If(x_set[i]):
                m.d.sync += xfull[i].eq(1)
            with m.Elif(x_clr[i]):
                m.d.sync += xfull[i].eq(0)

        # Loader.
        wb = Signal()
        li = Signal(range(max(n, 2)))
        m.d.comb += [xw.addr.eq(Cat(li[:jbits], wb)), xw.data.eq(self.i.payload),
                     self.i.ready.eq(~Mux(wb, xfull[1], xfull[0]))]
        with m.If(self.i.valid & self.i.ready):
            m.d.comb += xw.en.eq(1)
            m.d.sync += li.eq(li + 1)
            with m.If(li == n - 1):
                m.d.comb += x_set.eq(Cat(~wb, wb))
                m.d.sync += [li.eq(0), wb.eq(~wb)]

        # MAC sequencer: block b, column j of x bank rb.
        rb = Signal()
        j = Signal(range(max(n, 2)))
        b = Signal(range(max(NB, 2)))
        addr = Signal(range(max(NB * n, 2)))
        m.d.comb += [xr.addr.eq(Cat(j[:jbits], rb)), wr.addr.eq(addr)]

        # A column issued at edge e0 is read at e0, registered at e1, multiplied at e2,
        # accumulated at e3; its block's sums load the chain at e4: the chain may hold
        # 4 words now.  The operand register keeps the block RAM's clock-to-out (about
        # 6 ns on ECP5) and the bank multiplexer out of the multiplier's path.
        # can_last is registered (from the next cycle's chain count and in-flight
        # flags, as in the PE array) so that the sequencer's enable starts at flops.
        issue, last = Signal(), Signal()
        edges = self.LATENCY - 1
        inflight = Signal(edges)
        inflight_next = Cat(issue & last, inflight[:-1])
        m.d.sync += inflight.eq(inflight_next)
        count_next = Mux(chain.load, chain.load_count, Mux(chain.count != 0, chain.count - 1, 0))
        can_last = Signal(init=1)
        m.d.sync += can_last.eq((count_next <= edges) & (inflight_next == 0))

        # last (j == n-1) and last_block (b == NB-1) are flops, set one issue ahead,
        # so that the issue enable is one LUT after the flops.
        last_block = Signal()
        with m.FSM():
            with m.State("WAIT"):
                with m.If(Mux(rb, xfull[1], xfull[0])):
                    m.d.sync += [j.eq(0), b.eq(0), addr.eq(0), last.eq(n == 1), last_block.eq(NB == 1)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(~last | can_last)
                with m.If(issue):
                    m.d.sync += [j.eq(j + 1), addr.eq(addr + 1), last.eq(j == n - 2)]
                    with m.If(last):
                        m.d.sync += [j.eq(0), b.eq(b + 1), last.eq(n == 1), last_block.eq(b == NB - 2)]
                        with m.If(last_block):
                            m.d.comb += x_clr.eq(Cat(~rb, rb))
                            m.d.sync += [b.eq(0), rb.eq(~rb)]
                            m.next = "WAIT"

        # Read data arrives one edge after issue; control follows it.
        lanes = [Signal(range(D + 1), name=f"lanes{i}") for i in range(4)]
        m.d.sync += [lanes[0].eq(Mux(last_block, self._n_out - (NB - 1) * D, D))]
        m.d.sync += [lanes[i].eq(lanes[i - 1]) for i in range(1, 4)]
        v1, l1, f1 = Signal(), Signal(), Signal()
        first = Signal(init=1)
        m.d.sync += [v1.eq(issue), l1.eq(issue & last), f1.eq(issue & first)]
        with m.If(issue):
            m.d.sync += first.eq(last)
        v2, l2, f2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), l2.eq(l1), f2.eq(f1)]
        v3, l3, f3 = Signal(), Signal(), Signal()
        m.d.sync += [v3.eq(v2), l3.eq(l2), f3.eq(f2)]
        w_op = Signal(8 * D)
        x_op = Signal(signed(8))
        m.d.sync += [w_op.eq(wr.data), x_op.eq(xr.data)]
        accs = []
        for d in range(D):
            prod = Signal(signed(16), name=f"prod{d}")
            acc = Signal(signed(self._acc_width), name=f"acc{d}")
            m.d.sync += prod.eq(w_op[8 * d:8 * d + 8].as_signed() * x_op)
            with m.If(v3):
                m.d.sync += acc.eq(Mux(f3, 0, acc) + prod)
            accs.append(acc)
        done = Signal()
        m.d.sync += done.eq(l3)
        m.d.comb += [chain.data.eq(Cat(*accs)), chain.load.eq(done), chain.load_count.eq(lanes[3])]
        connect(m, chain.o, post.i)
        self.drive_output(m, post.o, chain.overrun)
        return m
