"""The sub-units of the bc_linear engine (:class:`sparrow.hw.bc_engine.BCEngine`).

Each unit owns the registers of one part of the datapath of docs/design-fft.md;
the engine's sequencer drives their one-cycle strobes (``start``, ``active``,
...) and joins them to the shared :class:`~sparrow.hw.fft.FFTUnit`:

- :class:`InputLoader`: pairs of input blocks into the FFT buffer (z = x[2p] + i x[2p+1]);
- :class:`SpectrumSplitter`: the two half spectra of a forward transform into the spectrum RAM;
- :class:`SpectrumReader`: spectrum RAM and weight-spectrum ROM read in bin order, as MAC beats;
- :class:`FrequencyMAC`: the two-lane complex MAC and the Hermitian Z words it writes back;
- :class:`OutputReader`: the inverse transform read out through the bias, shift, saturation and ReLU.

Several strobes and read requests ignore back-pressure: the FFT unit is idle
while they run, and the sequencer guarantees it; those streams say so with
``always_ready=True``.
"""

from dataclasses import dataclass

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow import fixedfft as G
from sparrow.hw.cmac import ComplexMAC, operand_layout
from sparrow.hw.fft import load_layout, mul_op_layout, mul_res_layout, result_layout
from sparrow.validate import check_int

__all__ = ["BlockGeometry", "bin_order", "InputLoader", "SpectrumSplitter", "SpectrumReader",
           "FrequencyMAC", "OutputReader", "OUT_FIFO_DEPTH"]

#: Output FIFO depth (covers the two-cycle output pipeline at full rate).
OUT_FIFO_DEPTH = 6


@dataclass(frozen=True)
class BlockGeometry:
    """Block sizes of one bc_linear layer: ``k`` (block size), ``n_blocks_in``, ``n_blocks_out``."""

    k: int
    n_blocks_in: int
    n_blocks_out: int

    @property
    def log2k(self):
        return G.log2k(self.k)

    @property
    def bins(self):
        """H = k/2 + 1: the bins of a real block's half spectrum."""
        return self.k // 2 + 1

    @property
    def in_pairs(self):
        return -(-self.n_blocks_in // 2)

    @property
    def out_pairs(self):
        return -(-self.n_blocks_out // 2)


def bin_order(k):
    """MAC bin order and, per bin m, the last buffer position its Z words overwrite.

    Bin m writes Z[m] and Z[(k - m) mod k] at the bit-reversed positions (the
    inverse transform's input order); the output reads positions 0..k-1 in
    order, so the bins run by increasing w_m = max(bitrev(m), bitrev(-m mod k)):
    returns ``(order, w)`` with ``order`` a list of the H bins and ``w[m]``.
    """
    bits = G.log2k(k)
    position = lambda v: int(G.bitrev(v % k, bits))
    last_position = [max(position(m), position(-m)) for m in range(k // 2 + 1)]
    return sorted(range(k // 2 + 1), key=lambda m: (last_position[m], m)), last_position


def _saturate(value, bits):
    top, bottom = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    return Mux(value > top, top, Mux(value < bottom, bottom, value))


def _spectrum_word():
    return data.StructLayout({"re": signed(G.DATA_BITS), "im": signed(G.DATA_BITS)})


class InputLoader(wiring.Component):
    """Writes a pair of input blocks into the FFT buffer as z = x[2p] + i x[2p+1], times 2**shift.

    Parameters
    ----------
    geometry : BlockGeometry
    shift : int
        Input pre-shift g = 7 - log2(k) (:func:`sparrow.fixedfft.layer_constants`).

    Members
    -------
    i : In(stream.Signature(signed(8)))
        Input elements; ready while ``active``.
    active : In(1)
        The sequencer's load phase.
    last_pair : In(1)
        The pair being loaded is the last one (a single block when the block count is odd).
    load : Out(stream.Signature(load_layout(k)))
        Beats for :attr:`FFTUnit.load` (the unit is idle: its ``ready`` is not consulted).
    done : Out(1)
        The pair's last element is accepted this cycle.
    """

    def __init__(self, geometry, shift):
        self._geometry, self._shift = geometry, shift
        super().__init__({
            "i": In(stream.Signature(signed(8))),
            "active": In(1),
            "last_pair": In(1),
            "load": Out(stream.Signature(load_layout(geometry.k))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        k = self._geometry.k
        element = Signal(range(k + 1))
        odd_block = Signal()                       # block 2p+1: the imaginary part
        single = self.last_pair if self._geometry.n_blocks_in % 2 else 0
        scaled = self.i.payload.as_signed() << self._shift
        beat = self.load.payload
        with m.If(self.active):
            m.d.comb += [self.i.ready.eq(1), self.load.valid.eq(self.i.valid),
                         beat.index.eq(element),
                         beat.re.eq(Mux(odd_block, 0, scaled)), beat.im.eq(Mux(odd_block, scaled, 0)),
                         beat.we_re.eq(~odd_block), beat.we_im.eq(odd_block | single)]
            with m.If(self.i.valid):
                m.d.sync += element.eq(element + 1)
                with m.If(element == k - 1):
                    m.d.sync += [element.eq(0), odd_block.eq(~odd_block)]
                    with m.If(odd_block | single):
                        m.d.sync += odd_block.eq(0)
                        m.d.comb += self.done.eq(1)
        return m


class SpectrumSplitter(wiring.Component):
    """Separates the forward transform of a pair into the half spectra X_2p, X_2p+1.

    Reads P = Z[m] and Q = Z[(k - m) mod k] for m = 0..H-1 (one read a cycle),
    and writes X_2p[m] = (Pr + Qr, Pi - Qi) and X_2p+1[m] = (Pi + Qi, Qr - Pr)
    (saturated to 16 bits) at words 2p*H + m and (2p+1)*H + m of the spectrum RAM.

    Parameters
    ----------
    geometry : BlockGeometry

    Members
    -------
    start : In(1)
        The forward transform is done: the split begins next cycle.
    active : In(1)
        The sequencer's split phase.
    restart : In(1)
        A new vector: the next pair is pair 0.
    last_pair : In(1)
        The pair being split is the last (with an odd block count, it has no block 2p+1).
    rd : Out(stream.Signature(unsigned(log2 k), always_ready=True))
        Read requests for :attr:`FFTUnit.rd_req` (the unit is idle).
    rd_valid : In(1)
    rd_data : In(result_layout())
        :attr:`FFTUnit.rd_valid` and :attr:`FFTUnit.rd_data`.
    xs : Out(stream.Signature(StructLayout{addr, re, im}, always_ready=True))
        Spectrum RAM writes.
    done : Out(1)
        The pair's last write has been issued: high in the phase's last cycle.
    """

    def __init__(self, geometry):
        self._geometry = geometry
        words = geometry.n_blocks_in * geometry.bins
        self._write_layout = data.StructLayout({"addr": range(words + 1), "re": signed(G.DATA_BITS),
                                                "im": signed(G.DATA_BITS)})
        super().__init__({
            "start": In(1),
            "active": In(1),
            "restart": In(1),
            "last_pair": In(1),
            "rd": Out(stream.Signature(unsigned(geometry.log2k), always_ready=True)),
            "rd_valid": In(1),
            "rd_data": In(result_layout()),
            "xs": Out(stream.Signature(self._write_layout, always_ready=True)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        geo, D = self._geometry, G.DATA_BITS
        h, words = geo.bins, geo.n_blocks_in * geo.bins
        step = Signal(range(2 * h + 8))             # even: read P, odd: read Q
        read_index = Signal(geo.log2k)              # this cycle's read: m, then (k - m) mod k
        reading, reading_q = Signal(), Signal()     # a read is returning (of Q)
        returning_bin = Signal(range(h + 1))
        pair_base = Signal(range(words + 1))        # 2p*H
        with m.If(self.active):
            next_step = step + 1
            m.d.comb += self.rd.valid.eq(step < 2 * h)
            m.d.sync += [step.eq(step + 1), reading.eq(step < 2 * h), reading_q.eq(step[0]),
                         returning_bin.eq(step >> 1),
                         read_index.eq(Mux(next_step[0], -(next_step >> 1), next_step >> 1))]
            with m.If(step == 2 * h + 3):
                m.d.comb += self.done.eq(1)
                m.d.sync += [reading.eq(0), pair_base.eq(pair_base + 2 * h)]
        with m.If(self.start):
            m.d.sync += [step.eq(0), read_index.eq(0)]
        with m.If(self.restart):
            m.d.sync += pair_base.eq(0)
        m.d.comb += self.rd.payload.eq(read_index)

        p_re, p_im = Signal(signed(D)), Signal(signed(D))
        q_re, q_im = Signal(signed(D)), Signal(signed(D))
        first_ready = Signal()                      # X_2p[m] is written this cycle
        first_bin = Signal(range(h + 1))
        second_pending = Signal()                   # X_2p+1[m] is written this cycle
        second_addr = Signal(range(words + 1))
        second_re, second_im = Signal(signed(D)), Signal(signed(D))
        returned = self.rd_valid & reading
        m.d.sync += second_pending.eq(0)
        with m.If(returned & ~reading_q):
            m.d.sync += [p_re.eq(self.rd_data.re), p_im.eq(self.rd_data.im)]
        # Q is registered first (keeps the memory read path short), combined one cycle later.
        m.d.sync += first_ready.eq(returned & reading_q)
        with m.If(returned & reading_q):
            m.d.sync += [q_re.eq(self.rd_data.re), q_im.eq(self.rd_data.im), first_bin.eq(returning_bin)]
        write = self.xs.payload
        with m.If(first_ready):
            m.d.comb += [self.xs.valid.eq(1), write.addr.eq(pair_base + first_bin),
                         write.re.eq(_saturate(p_re + q_re, D)), write.im.eq(_saturate(p_im - q_im, D))]
            has_second = 1 if geo.n_blocks_in % 2 == 0 else ~self.last_pair
            m.d.sync += [second_pending.eq(has_second), second_addr.eq(pair_base + h + first_bin),
                         second_re.eq(_saturate(p_im + q_im, D)), second_im.eq(_saturate(q_re - p_re, D))]
        with m.Elif(second_pending):
            m.d.comb += [self.xs.valid.eq(1), write.addr.eq(second_addr),
                         write.re.eq(second_re), write.im.eq(second_im)]
        return m


class SpectrumReader(wiring.Component):
    """Reads X_j[m] from the spectrum RAM and W_2q,j[m], W_2q+1,j[m] from the weight-spectrum ROM.

    Per output pair the bins run in :func:`bin_order`, each over the input
    blocks j = 0..nb-1 (one MAC beat a cycle, at least two cycles a bin: each
    bin writes two Z words).  The closing beat of bin m waits for
    ``bin_free``: in pairs q >= 1 the read-out of the previous pair must have
    passed the buffer positions its Z words overwrite.

    Parameters
    ----------
    geometry : BlockGeometry
    weight_words : list of int
        The weight-spectrum ROM (``ws`` of :func:`sparrow.hw.bc_engine.spectra_images`:
        k/2 words per input block, bins 0 and k/2 sharing the first).
    rom_attrs : dict, optional
        Attributes of that ROM (``sparrow_rom`` for run-time loading).
    component_bits : int
        Bits of one stored spectrum component (2..16; sign-extended to 16).

    Members
    -------
    start : In(1)
        A pair's MAC begins next cycle (at the first bin, block 0).
    active : In(1)
        The sequencer's MAC phase: issue beats.
    first_pair : In(1)
        The next pair is pair 0.
    next_pair : In(1)
        The next pair is the one after this.
    readout_busy, readout_final : In(1)
        The read-out of the previous pair is running / in its final pass.
    readout_position : In(range(k + 1))
        The buffer position the read-out reads next.
    xs_addr : Out(range(nb*H + 1))
        Spectrum RAM read address (``xs_data`` one cycle later).
    xs_data : In(StructLayout{re, im})
    mac : Out(stream.Signature(operand_layout(2), always_ready=True))
        Complex MAC beats (the MAC is always ready).
    done : Out(1)
        The pair's last beat is issued this cycle.
    """

    def __init__(self, geometry, weight_words, rom_attrs=None, component_bits=G.DATA_BITS):
        self._geometry, self._weight_words = geometry, list(weight_words)
        self._rom_attrs = dict(rom_attrs or {})
        check_int(component_bits, "Spectrum component width", 2, G.DATA_BITS)
        self._bits = component_bits
        words = geometry.n_blocks_in * geometry.bins
        super().__init__({
            "start": In(1),
            "active": In(1),
            "first_pair": In(1),
            "next_pair": In(1),
            "readout_busy": In(1),
            "readout_final": In(1),
            "readout_position": In(range(geometry.k + 1)),
            "xs_addr": Out(range(words + 1)),
            "xs_data": In(_spectrum_word()),
            "mac": Out(stream.Signature(operand_layout(2), always_ready=True)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        geo = self._geometry
        k, h, nb = geo.k, geo.bins, geo.n_blocks_in
        rom_words, b, half = len(self._weight_words), self._bits, k // 2
        m.submodules.ws = ws = Memory(shape=unsigned(4 * b), depth=rom_words, init=self._weight_words,
                                      attrs=self._rom_attrs)
        ws_read = ws.read_port()

        order, last_position = bin_order(k)
        next_bin = Array([Const(order[(order.index(b) + 1) % h], range(h)) for b in range(h)])
        # ROM word of a bin within its block: bin k/2 shares bin 0's word.
        next_slot = Array([Const(order[(order.index(b) + 1) % h] % half, range(half))
                           for b in range(h)])
        bin_last_position = Array([Const(last_position[b], range(k)) for b in range(h)])
        bin_ = Signal(range(h + 1))
        block = Signal(range(nb + 1))
        gap = Signal()                              # nb == 1: every other cycle is idle
        xs_addr = Signal(range(nb * h + 1))         # j*H + m
        ws_addr = Signal(range(rom_words + 1))      # (q*nb + j)*k/2 + m mod k/2
        ws_base = Signal(range(rom_words + 1))      # q*nb*k/2
        bin_free = Signal()
        issue = Signal()
        closing = block == nb - 1

        # Registered (fmax): one cycle late, which is safe, as positions once read stay
        # free until the MAC is done.
        m.d.sync += bin_free.eq(~self.readout_busy |
                                (self.readout_final & (self.readout_position > bin_last_position[bin_])))
        with m.If(self.active):
            m.d.comb += issue.eq(~gap & (~closing | bin_free))
            if nb == 1:
                m.d.sync += gap.eq(issue)
            with m.If(issue):
                m.d.sync += [block.eq(block + 1), xs_addr.eq(xs_addr + h), ws_addr.eq(ws_addr + half)]
                with m.If(closing):
                    following = next_bin[bin_]
                    m.d.sync += [block.eq(0), bin_.eq(following), xs_addr.eq(following),
                                 ws_addr.eq(ws_base + next_slot[bin_])]
                    with m.If(bin_ == order[-1]):
                        m.d.comb += self.done.eq(1)
        with m.If(self.start):
            m.d.sync += [bin_.eq(0), block.eq(0), gap.eq(0), xs_addr.eq(0), ws_addr.eq(ws_base)]
        with m.If(self.first_pair):
            m.d.sync += ws_base.eq(0)
        with m.If(self.next_pair):
            m.d.sync += ws_base.eq(ws_base + nb * half)

        beat, weights = self.mac.payload, ws_read.data
        beat_first, beat_last = Signal(), Signal()
        # With the ROM word: its bin is real (0 or k/2), and is k/2 (re in the im fields).
        real, nyquist = Signal(), Signal()
        m.d.sync += [self.mac.valid.eq(issue), beat_first.eq(block == 0), beat_last.eq(closing),
                     real.eq((bin_ == 0) | (bin_ == half)), nyquist.eq(bin_ == half)]
        field = [weights[i * b:(i + 1) * b].as_signed() for i in range(4)]
        m.d.comb += [
            self.xs_addr.eq(xs_addr), ws_read.addr.eq(ws_addr),
            beat.x_re.eq(self.xs_data.re), beat.x_im.eq(self.xs_data.im),
            beat.w[0].re.eq(Mux(nyquist, field[1], field[0])), beat.w[0].im.eq(Mux(real, 0, field[1])),
            beat.w[1].re.eq(Mux(nyquist, field[3], field[2])), beat.w[1].im.eq(Mux(real, 0, field[3])),
            beat.first.eq(beat_first), beat.last.eq(beat_last),
        ]
        return m


class FrequencyMAC(wiring.Component):
    """Two-lane complex MAC: Y_2q[m], Y_2q+1[m], written back as Z = Y_2q + i Y_2q+1 with its partner.

    For each closed bin m (in :func:`bin_order`), with A = Y_2q[m], B =
    Y_2q+1[m]: Z[m] = (Ar - Bi, Ai + Br) the cycle after the result, and
    Z[k-m] = (Ar + Bi, Br - Ai) (0 < m < k/2) the cycle after that.

    Parameters
    ----------
    geometry : BlockGeometry
    acc_width, shift : int
        Of the :class:`~sparrow.hw.cmac.ComplexMAC` (its result is ``YQ_BITS`` wide).

    Members
    -------
    inp : In(stream.Signature(operand_layout(2), always_ready=True))
        MAC beats.
    start : In(1)
        A pair begins: its first result is of the first bin.
    mul_op : Out(mul_op_layout())
    mul_res : In(mul_res_layout())
        Lane 1's multiplier (the FFT unit's, idle during the MAC).
    z : Out(stream.Signature(load_layout(k), always_ready=True))
        Z words for :attr:`FFTUnit.load` (the unit is idle).
    """

    def __init__(self, geometry, acc_width, shift):
        self._geometry = geometry
        self._cmac = ComplexMAC(acc_width, shift, G.YQ_BITS, 2)
        super().__init__({
            "inp": In(stream.Signature(operand_layout(2), always_ready=True)),
            "start": In(1),
            "mul_op": Out(mul_op_layout()),
            "mul_res": In(mul_res_layout()),
            "z": Out(stream.Signature(load_layout(geometry.k), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        k, h, bits = self._geometry.k, self._geometry.bins, self._geometry.log2k
        m.submodules.cmac = cmac = self._cmac
        m.d.comb += [cmac.inp.valid.eq(self.inp.valid), cmac.inp.payload.eq(self.inp.payload),
                     self.mul_op.eq(cmac.ext_op), cmac.ext_res.eq(self.mul_res)]

        order, _ = bin_order(k)
        next_bin = Array([Const(order[(order.index(b) + 1) % h], range(h)) for b in range(h)])
        result_bin = Signal(range(h + 1))
        # A two-entry queue, registered: keeps the MAC result path short.
        partner_valid, partner_index = Signal(), Signal(bits)
        partner_re, partner_im = Signal(signed(G.ZBUF_BITS)), Signal(signed(G.ZBUF_BITS))
        word_valid, word_index = Signal(), Signal(bits)
        word_re, word_im = Signal(signed(G.ZBUF_BITS)), Signal(signed(G.ZBUF_BITS))
        lane_a, lane_b = cmac.res[0], cmac.res[1]
        m.d.sync += [word_valid.eq(partner_valid), word_index.eq(partner_index),
                     word_re.eq(partner_re), word_im.eq(partner_im), partner_valid.eq(0)]
        with m.If(cmac.res_valid):
            m.d.sync += [word_valid.eq(1), word_index.eq(result_bin),
                         word_re.eq(lane_a.re - lane_b.im), word_im.eq(lane_a.im + lane_b.re),
                         partner_valid.eq((result_bin != 0) & (result_bin != k // 2)),
                         partner_index.eq(-result_bin),
                         partner_re.eq(lane_a.re + lane_b.im), partner_im.eq(lane_b.re - lane_a.im),
                         result_bin.eq(next_bin[result_bin])]
        with m.If(self.start):
            m.d.sync += result_bin.eq(0)
        word = self.z.payload
        m.d.comb += [self.z.valid.eq(word_valid), word.index.eq(word_index),
                     word.re.eq(word_re), word.im.eq(word_im), word.we_re.eq(1), word.we_im.eq(1)]
        return m


class OutputReader(wiring.Component):
    """Reads the inverse transform of a pair out: y = sat8(((v << e) + b') >> Fe), ReLU optional.

    Block 2q from the real parts, then block 2q+1 from the imaginary parts, one
    read a cycle while the output FIFO has room.  Read at t, v * 2^e and b'
    registered at t+1, y written into the FIFO at t+2; reads are issued only
    while the FIFO has room for everything in flight, so ``o.ready`` never
    reaches the read address path.

    Parameters
    ----------
    geometry : BlockGeometry
    bias_image : (int, list of int)
        Width and words of the adjusted-bias ROM (``bias`` of
        :func:`sparrow.hw.bc_engine.spectra_images`).
    frac_bits : int
        Fe, the final right shift.
    relu : bool
    rom_attrs : dict, optional
        Attributes of the bias ROM (``sparrow_rom`` for run-time loading).

    Members
    -------
    begin : In(1)
        The inverse transform of the next pair is done: read it out.
    rd : Out(stream.Signature(unsigned(log2 k), always_ready=True))
        Read requests for :attr:`FFTUnit.rd_req` (the unit is idle).
    rd_data : In(result_layout())
    exp : In(range(E_MAX + 1))
        :attr:`FFTUnit.rd_data` and the block exponent of the transform.
    o : Out(stream.Signature(signed(8)))
        The outputs, y[0] first; ``o.ready`` is honoured.
    busy : Out(1)
        A pair is being read out.
    final_pass : Out(1)
        Reading the pair's last block.
    position : Out(range(k + 1))
        The buffer position read next.
    """

    def __init__(self, geometry, bias_image, frac_bits, relu, rom_attrs=None):
        self._geometry, self._bias_image = geometry, bias_image
        self._rom_attrs = dict(rom_attrs or {})
        self._frac_bits, self._relu = frac_bits, relu
        super().__init__({
            "begin": In(1),
            "rd": Out(stream.Signature(unsigned(geometry.log2k), always_ready=True)),
            "rd_data": In(result_layout()),
            "exp": In(range(G.E_MAX + 1)),
            "o": Out(stream.Signature(signed(8))),
            "busy": Out(1),
            "final_pass": Out(1),
            "position": Out(range(geometry.k + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        geo, D = self._geometry, G.DATA_BITS
        k, pairs = geo.k, geo.out_pairs
        bias_width, bias_words = self._bias_image
        m.submodules.bias = bias = Memory(shape=unsigned(bias_width), depth=len(bias_words),
                                          init=bias_words, attrs=self._rom_attrs)
        bias_read = bias.read_port()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=OUT_FIFO_DEPTH)
        wiring.connect(m, fifo.r_stream, wiring.flipped(self.o))

        reading = Signal()
        position = Signal(range(k + 1))             # element within the block
        odd_block = Signal()                        # block 2q (re) or 2q+1 (im)
        pair = Signal(range(max(2, pairs + 1)))
        output_index = Signal(range(2 * k * max(1, pairs) + 1))
        last_lane = (2 * pair + 1 >= geo.n_blocks_out) if geo.n_blocks_out % 2 else 0
        issue = Signal()
        m.d.comb += [self.busy.eq(reading), self.final_pass.eq(odd_block | last_lane),
                     self.position.eq(position), self.rd.payload.eq(position),
                     bias_read.addr.eq(output_index)]

        read_valid, read_odd = Signal(), Signal()
        scaled_valid = Signal()
        scaled = Signal(signed(D + G.E_MAX))
        scaled_bias = Signal(signed(bias_width))
        # Registered (fmax): the FIFO entries in flight next cycle are at most those in
        # flight now plus this cycle's read, so the flag is safe one cycle late.
        room = Signal()
        m.d.sync += room.eq(fifo.level + read_valid + scaled_valid + issue < OUT_FIFO_DEPTH)
        m.d.sync += [read_valid.eq(issue), read_odd.eq(odd_block), scaled_valid.eq(read_valid)]
        with m.If(read_valid):
            m.d.sync += [scaled.eq(Mux(read_odd, self.rd_data.im, self.rd_data.re) << self.exp),
                         scaled_bias.eq(bias_read.data.as_signed())]
        full = Signal(signed(D + G.E_MAX + bias_width + 2))
        m.d.comb += full.eq((scaled + scaled_bias) >> self._frac_bits)
        y = Mux(full > 127, 127, Mux(full < -128, -128, full))
        if self._relu:
            y = Mux(full < 0, 0, y)
        m.d.comb += [fifo.w_en.eq(scaled_valid), fifo.w_data.eq(y)]

        with m.If(reading):
            m.d.comb += self.rd.valid.eq(1)
            with m.If(room):
                m.d.comb += issue.eq(1)
                m.d.sync += [position.eq(position + 1), output_index.eq(output_index + 1)]
                with m.If(position == k - 1):
                    m.d.sync += [position.eq(0), odd_block.eq(~odd_block)]
                    with m.If(odd_block | last_lane):
                        m.d.sync += [reading.eq(0), odd_block.eq(0), pair.eq(pair + 1)]
                        with m.If(pair == pairs - 1):
                            m.d.sync += [output_index.eq(0), pair.eq(0)]
        with m.If(self.begin):
            m.d.sync += [reading.eq(1), position.eq(0), odd_block.eq(0)]
        return m
