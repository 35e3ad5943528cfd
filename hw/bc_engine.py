"""The bc_linear engine: FFT of the input blocks, frequency-domain complex MAC, IFFT.

:class:`BCEngine` runs one block-circulant layer exactly as
:func:`sparrow.fixedfft.bc_linear_forward` specifies (docs/format.md,
"bc_linear: the fixed-point FFT datapath"); docs/design-fft.md draws the
datapath and gives the schedule and the cycle model :func:`bc_cycles`.

Per input vector (k = 2**L, H = k/2 + 1 bins, nb = in/k, nbo = out/k):

1. ``LOAD``/``FFT``/``SPLIT``, per pair of input blocks (2p, 2p+1): the 2k
   elements are written into the FFT buffer as z = x[2p] + i x[2p+1] (times
   2**(7-L)), transformed, and the two half spectra are separated and stored in
   the spectrum RAM ``XS`` (nb*H complex 16-bit words).
2. ``MAC``/``IFFT``/``OUT``, per pair of output blocks (2q, 2q+1): for each bin
   m and input block j the complex MAC multiplies X_j[m] by the weight spectra
   W_{2q,j}[m] and W_{2q+1,j}[m] (one 64-bit word of ROM ``WS``) in one cycle,
   two lanes in parallel (lane 1 on the FFT unit's multiplier), writes
   Z[m] = Y_2q[m] + i Y_2q+1[m] and its Hermitian partner Z[k-m] into the FFT
   buffer, runs the inverse FFT and streams y = sat8(((v << e) + b') >> Fe)
   (ReLU optional) from the real part (block 2q) then the imaginary part
   (block 2q+1).

The weight spectra and adjusted biases are ROM contents computed by
:func:`sparrow.fixedfft.layer_constants`; :func:`write_images` writes
them as memory images for ``sparrow generate``.
"""

import json
from pathlib import Path

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from sparrow import SparrowError
from sparrow import fixedfft as G
from sparrow.hw.cmac import CMAC_LATENCY, cmac_min_acc_width
from sparrow.hw.bc_units import (BlockGeometry, FrequencyMAC, InputLoader, OutputReader,
                                 SpectrumReader, SpectrumSplitter, bin_order)
from sparrow.hw.engine import GENERIC_BIAS_WIDTH, Engine, EngineConfig, rom_attrs
from sparrow.hw.fft import FFTUnit, fft_cycles
from sparrow.hw.images import write_images as write_hex
from sparrow.modeldir import Layer

__all__ = ["BCEngine", "bc_cycles", "bin_order", "write_images", "memory_images", "spectra_images",
           "spectrum_bits",
           "generic_bias_width"]

#: Cycles after the last MAC issue until the last Z word is in the FFT buffer
#: (read, CMAC pipeline, Hermitian partner write).
MAC_DRAIN = 1 + CMAC_LATENCY + 3


def bc_cycles(k, n_in, n_out):
    """Cycles per vector of :class:`BCEngine` (input always valid, output always ready).

    With fc = :func:`~sparrow.hw.fft.fft_cycles` (k), H = k/2 + 1, nb = in/k,
    nbo = out/k, P = ceil(nb/2) input pairs and Q = ceil(nbo/2) output pairs::

        in + P*(fc + 2H + 7) + sum_q (M_q + fc + 3 + MAC_DRAIN) + out_Q + 1

    (MAC_DRAIN = 10; out_Q = 2k, or k for an odd last block: the output of the
    last pair; the outputs of the other pairs overlap the next pair's MAC).
    M_q is the cycle of the last MAC issue of pair q: the bins (in the order of
    :func:`bin_order`) take nb cycles each, at least two (each writes two Z
    words), both lanes at once; in pairs q >= 1 the last issue of bin m also
    waits until the previous pair's output has read the buffer positions it
    overwrites (cycle k + 1 + w_m, seen one cycle later through a register)::

        c_{-1} = nb - max(nb, 2),  c_t = max(c_{t-1} + max(nb, 2), k + 2 + w_{order[t]}),  M_q = c_{H-1}

    (per input pair: load, start, transform, 2H split reads + drain; per
    output pair: MAC issues, drain, start, inverse transform; the last output
    leaves the output pipeline 3 cycles later).  Measured in RTL simulation by
    tests/test_bc_engine.py and bench/bench_bc.py.
    """
    h = k // 2 + 1
    nb, nbo = n_in // k, n_out // k
    pin, pout = -(-nb // 2), -(-nbo // 2)
    fc = fft_cycles(k)
    step = max(nb, 2)
    order, w = bin_order(k)
    total = n_in + pin * (fc + 2 * h + 7)
    for q in range(pout):
        c = nb - step
        for m in order:
            c += step
            if q:
                c = max(c, k + 2 + w[m])
        total += c + fc + 3 + MAC_DRAIN
    return total + (k if nbo % 2 else 2 * k) + 1


def generic_bias_width(layer):
    """Adjusted-bias width of a ``generic`` build: what any int32 bias needs at the layer's
    ``out_shift`` and ``fft_frac`` (a structure, not a value, so models share the build)."""
    extremes = np.array([-(1 << 31), (1 << 31) - 1], np.int64)
    a = layer.attrs
    adj = G.adjusted_bias(extremes, a["out_shift"], G.frac_bits(a))
    return max(GENERIC_BIAS_WIDTH, _bias_width(adj))


def spectrum_bits(layer):
    """Bits of one stored spectrum component: what the layer's weight spectra need (signed),
    at most :data:`sparrow.fixedfft.DATA_BITS` (16, the datapath's width)."""
    c = G.layer_constants(layer)
    values = np.concatenate([np.ravel(c["wr"]), np.ravel(c["wi"]), [0]])
    hi, lo = int(values.max()), int(values.min())
    return min(G.DATA_BITS, max(2, max(hi.bit_length(), (-lo - 1).bit_length()) + 1))


def spectra_images(layer, bias_width=None, component_bits=None):
    """Memory images of one bc_linear layer: dict name -> (width, list of unsigned words).

    ``ws``: weight spectra of a block-row pair, ``b`` = ``component_bits`` (default
    :func:`spectrum_bits`) bits per component, k/2 words per (pair q, input block j):
    word ((q*nb + j)*k/2 + m) for 0 < m < k/2 = {im, re of W_2q+1,j[m], im, re of
    W_2q,j[m]} (W_2q,j[m].re at bit 0, each ``b`` bits, signed); word (q*nb + j)*k/2
    holds the two purely real bins: W[0].re in the re fields and W[k/2].re in the
    im fields (their imaginary parts are 0: sin(0) = sin(pi) = 0 in the tables);
    block rows padded to an even count with zeros.  ``bias``: the adjusted biases
    b' (signed, ``width`` bits, two's complement).
    """
    c = G.layer_constants(layer)
    wr, wi = c["wr"], c["wi"]
    nbo, nb, h = wr.shape
    half = h - 1
    if wi[..., 0].any() or wi[..., half].any():
        raise ValueError(f"layer {layer.name!r}: bins 0 and k/2 of a weight spectrum must be real")
    b = spectrum_bits(layer) if component_bits is None else component_bits
    mask = (1 << b) - 1
    if nbo % 2:
        wr = np.concatenate([wr, np.zeros((1, nb, h), np.int64)])
        wi = np.concatenate([wi, np.zeros((1, nb, h), np.int64)])
    re, im = wr[..., :half].copy(), wi[..., :half].copy()
    im[..., 0] = wr[..., half]                      # bin k/2 shares bin 0's word
    ws = []
    for q in range(len(re) // 2):
        for j in range(nb):
            for m in range(half):
                fields = (re[2 * q, j, m], im[2 * q, j, m], re[2 * q + 1, j, m], im[2 * q + 1, j, m])
                ws.append(sum((int(v) & mask) << (i * b) for i, v in enumerate(fields)))
    bias_adj = c["bias_adj"]
    bw = _bias_width(bias_adj) if bias_width is None else bias_width
    bias = (bias_adj & ((1 << bw) - 1)).tolist()
    return {"ws": (4 * b, ws), "bias": (bw, bias)}


def _bias_width(b):
    b = np.asarray(b, np.int64)
    lim = int(max(np.abs(b).max(initial=0), 1))
    return max(2, lim.bit_length() + 1)


def memory_images(layer, bias_width=None, component_bits=None):
    """``{name: (width, words, layout)}`` of the engine's ROMs, exactly as the RTL holds them
    (``bias_width``, ``component_bits``: those of a ``generic`` build, :func:`generic_bias_width`
    and 16)."""
    images = spectra_images(layer, bias_width, component_bits)
    c = G.layer_constants(layer)
    half = c["k"] // 2
    b = images["ws"][0] // 4
    return {
        "ws": (4 * b, images["ws"][1],
               f"word ((q*{c['nb']} + j)*{half} + m), 0 < m < {half} = weight spectra W_2q,j[m] and "
               f"W_2q+1,j[m]: re, im of row 2q at bits [0, {b}), [{b}, {2 * b}), of row 2q+1 at "
               f"[{2 * b}, {3 * b}), [{3 * b}, {4 * b}), signed; word (q*{c['nb']} + j)*{half}: "
               f"W[0].re in the re fields, W[{half}].re in the im fields (both bins real); "
               f"block rows padded to an even count with zeros"),
        "bias": (images["bias"][0], images["bias"][1],
                 f"adjusted bias b'[o] = floor((bias[o] + 2^(out_shift-1)) / 2^(out_shift - {c['fe']})), "
                 f"signed {images['bias'][0]}-bit two's complement"),
    }


def write_images(layer, out_dir):
    """Write the layer's memory images (``<name>.ws.hex``, ``<name>.bias.hex``) and ``<name>.bc.json``.

    The ``.hex`` files are ``$readmemh`` text (:mod:`sparrow.hw.images`); the
    JSON names widths, depths, layouts and the datapath constants.  Returns
    the list of written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    described = write_hex(memory_images(layer), out_dir, layer.name)
    c = G.layer_constants(layer)
    meta = {"layer": layer.name, "kind": layer.kind, "k": c["k"], "in": layer.attrs["in"],
            "out": layer.attrs["out"], "input_shift": c["g"], "frac_bits": c["fe"],
            "mac_shift": c["s1"], "relu": bool(layer.attrs["relu"]), "images": described,
            "cycles_per_vector": bc_cycles(c["k"], layer.attrs["in"], layer.attrs["out"])}
    p = out_dir / f"{layer.name}.bc.json"
    p.write_text(json.dumps(meta, indent=2) + "\n")
    return [out_dir / d["file"] for d in described.values()] + [p]


class BCEngine(Engine):
    """bc_linear on the RTL, bit-exact with :func:`sparrow.fixedfft.bc_linear_forward`.

    Build it with :meth:`from_layer` (or through :mod:`sparrow.hw.engines`).
    The datapath is the units of :mod:`sparrow.hw.bc_units` around one
    :class:`~sparrow.hw.fft.FFTUnit`; this class holds the spectrum RAM and the
    sequencer (load, FFT, split per input pair; MAC, drain, IFFT per output
    pair, the read-out of one pair overlapping the MAC of the next).

    Parameters
    ----------
    layer : sparrow.modeldir.Layer
        A bc_linear layer (attributes ``in``, ``out``, ``k``, ``out_shift``,
        ``relu``, optional ``fft_frac`` and ``ws_shift``; params ``w`` int8 [out/k, in/k, k],
        ``bias`` [out]).  Its weights become ROM contents.
    generic : bool
        A simulation build whose widths depend on the structure only
        (:func:`generic_bias_width`; see :class:`~sparrow.hw.engine.EngineConfig`).

    Members
    -------
    i : In(stream.Signature(signed(8)))
        Input elements, x[0] first; taken only in the load phases.
    o : Out(stream.Signature(signed(8)))
        Output elements, y[0] first; ``o.ready`` is honoured.
    error : Out(1)
        Sticky: a forward transform had a nonzero block exponent (impossible
        for int8 input; a self-check).

    Raises
    ------
    TypeError
        ``layer`` is not a bc_linear Layer: ``"Layer must be a bc_linear
        sparrow.modeldir.Layer, not {layer!r}"``.
    ValueError
        Attributes or parameters out of range: ``"Layer {name!r} lacks attribute
        '{key}'"``, ``"FFT size must be a power of two from 4 to 64, not {k!r}"``,
        ``"{Input|Output} count must be a multiple of k={k} up to 65536, not {n!r}"``,
        ``"Output shift must be between 0 and 31, not {s}"``, ``"fft_frac must be an
        integer between 0 and 16, not {f!r}"``, ``"ws_shift must be an integer between 0
        and {8 - L} for k = {k}, not {r!r}"``, ``"w must be int8 of shape [...]"``,
        ``"bias must have shape [{out}]"``.
    """

    kind = "bc_linear"

    def _validate(self, layer, generic=False):
        if not isinstance(layer, Layer) or layer.kind != "bc_linear":
            raise TypeError(f"Layer must be a bc_linear sparrow.modeldir.Layer, not {layer!r}")
        attrs, params = layer.attrs, layer.params
        for key in ("in", "out", "k", "out_shift", "relu"):
            if key not in attrs:
                raise ValueError(f"Layer {layer.name!r} lacks attribute '{key}'")
        k = attrs["k"]
        if k not in (4, 8, 16, 32, 64):
            raise ValueError(f"FFT size must be a power of two from 4 to 64, not {k!r}")
        n_in, n_out = attrs["in"], attrs["out"]
        for name, count in (("Input count", n_in), ("Output count", n_out)):
            if not isinstance(count, int) or count < k or count % k or count > (1 << 16):
                raise ValueError(f"{name} must be a multiple of k={k} up to 65536, not {count!r}")
        if not 0 <= attrs["out_shift"] <= 31:
            raise ValueError(f"Output shift must be between 0 and 31, not {attrs['out_shift']}")
        frac = attrs.get("fft_frac", G.DEFAULT_FRAC)
        if not isinstance(frac, int) or not 0 <= frac <= 16:
            raise ValueError(f"fft_frac must be an integer between 0 and 16, not {frac!r}")
        try:
            G.ws_shift(attrs)
        except SparrowError as exc:
            raise ValueError(str(exc)) from None
        w = np.asarray(params.get("w"))
        if w.shape != (n_out // k, n_in // k, k) or w.min() < -128 or w.max() > 127:
            raise ValueError(f"w must be int8 of shape [{n_out // k}, {n_in // k}, {k}]")
        if np.asarray(params.get("bias")).shape != (n_out,):
            raise ValueError(f"bias must have shape [{n_out}]")
        self._layer = layer
        self._generic = bool(generic)
        self._constants = G.layer_constants(layer)
        self._bias_width = generic_bias_width(layer) if generic else None
        self._ws_bits = G.DATA_BITS if generic else spectrum_bits(layer)
        self._images = spectra_images(layer, self._bias_width, self._ws_bits)
        self._n_in, self._n_out, self._k = n_in, n_out, k
        self._acc_width = max(34, cmac_min_acc_width(self._constants["nb"], self._constants["s1"]))
        return self.stream_members()

    @classmethod
    def from_layer(cls, layer, config=EngineConfig()):
        """The engine of a bc_linear layer (of ``config`` it reads ``generic`` only)."""
        return cls(layer, config.generic)

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """Eight 16x16 multipliers: four in the FFT unit (lent to MAC lane 1), four in the MAC."""
        return 8

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """:func:`bc_cycles` of the layer."""
        return bc_cycles(layer.attrs["k"], layer.attrs["in"], layer.attrs["out"])

    @property
    def k(self):
        return self._k

    @property
    def lanes(self):
        """Output blocks computed together (a pair: two parallel complex MAC lanes)."""
        return 2

    def describe(self):
        return {"lanes": self.lanes}

    def memory_images(self):
        """``{name: (width, words, layout)}`` of the ROMs (for ``sparrow generate``)."""
        return memory_images(self._layer, self._bias_width, self._ws_bits)

    @property
    def cycles_per_vector(self):
        return bc_cycles(self._k, self._n_in, self._n_out)

    def elaborate(self, platform):
        m = Module()
        consts = self._constants
        geo = BlockGeometry(consts["k"], consts["nb"], consts["nbo"])
        h, nb = geo.bins, geo.n_blocks_in

        m.submodules.fft = fft = FFTUnit(geo.k)
        m.submodules.loader = loader = InputLoader(geo, consts["g"])
        m.submodules.splitter = splitter = SpectrumSplitter(geo)
        m.submodules.reader = reader = SpectrumReader(geo, self._images["ws"][1],
                                                      rom_attrs("ws", self._generic), self._ws_bits)
        m.submodules.mac = mac = FrequencyMAC(geo, self._acc_width, consts["s1"])
        m.submodules.readout = readout = OutputReader(geo, self._images["bias"], consts["fe"],
                                                      bool(self._layer.attrs["relu"]),
                                                      rom_attrs("bias", self._generic))
        wiring.connect(m, wiring.flipped(self.i), loader.i)
        wiring.connect(m, readout.o, wiring.flipped(self.o))
        wiring.connect(m, reader.mac, mac.inp)
        m.d.comb += [fft.mul_op.eq(mac.mul_op), mac.mul_res.eq(fft.mul_res),
                     splitter.rd_valid.eq(fft.rd_valid), splitter.rd_data.eq(fft.rd_data),
                     readout.rd_data.eq(fft.rd_data), readout.exp.eq(fft.exp),
                     reader.readout_busy.eq(readout.busy), reader.readout_final.eq(readout.final_pass),
                     reader.readout_position.eq(readout.position)]

        # The spectrum RAM of the input blocks: written by the split, read by the MAC.
        m.submodules.xs_re = xs_re = Memory(shape=signed(G.DATA_BITS), depth=nb * h, init=[])
        m.submodules.xs_im = xs_im = Memory(shape=signed(G.DATA_BITS), depth=nb * h, init=[])
        for memory, part in ((xs_re, "re"), (xs_im, "im")):
            write, read = memory.write_port(), memory.read_port()
            m.d.comb += [write.en.eq(splitter.xs.valid), write.addr.eq(splitter.xs.payload.addr),
                         write.data.eq(splitter.xs.payload[part]),
                         read.addr.eq(reader.xs_addr), reader.xs_data[part].eq(read.data)]

        # The FFT unit's ports, shared: loads from the input or the MAC, reads by the split
        # or the read-out.  The read index is selected by a flop, not the sequencer state:
        # the path into the buffer's read address is the UP5K's longest.
        with m.If(mac.z.valid):
            m.d.comb += [fft.load.valid.eq(1), fft.load.payload.eq(mac.z.payload)]
        with m.Else():
            m.d.comb += [fft.load.valid.eq(loader.load.valid), fft.load.payload.eq(loader.load.payload)]
        m.d.comb += [fft.rd_req.valid.eq(readout.rd.valid | splitter.rd.valid),
                     fft.rd_req.payload.eq(Mux(readout.busy, readout.rd.payload, splitter.rd.payload))]

        self._sequence(m, geo, fft, loader, splitter, reader, mac, readout)
        return m

    def _sequence(self, m, geo, fft, loader, splitter, reader, mac, readout):
        """The sequencer: per input pair load, FFT, split; per output pair MAC, drain, IFFT."""
        in_pair = Signal(range(max(2, geo.in_pairs + 1)))
        out_pair = Signal(range(max(2, geo.out_pairs + 1)))
        drain = Signal(range(MAC_DRAIN + 1))
        forward_done = Signal()
        error = Signal()
        m.d.comb += [loader.last_pair.eq(in_pair == geo.in_pairs - 1),
                     splitter.last_pair.eq(in_pair == geo.in_pairs - 1)]
        m.d.sync += forward_done.eq(0)

        def restart():
            m.d.sync += in_pair.eq(0)
            m.d.comb += splitter.restart.eq(1)

        with m.FSM(init="INIT"):
            with m.State("INIT"):
                restart()
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += loader.active.eq(1)
                with m.If(loader.done):
                    m.next = "FFT"
            with m.State("FFT"):
                m.d.comb += [fft.start.valid.eq(1), fft.start.payload.inverse.eq(0)]
                with m.If(fft.start.ready):
                    m.next = "FFT_WAIT"
            with m.State("FFT_WAIT"):
                with m.If(~fft.busy):
                    m.d.comb += splitter.start.eq(1)
                    m.d.sync += forward_done.eq(1)
                    m.next = "SPLIT"
            with m.State("SPLIT"):
                m.d.comb += splitter.active.eq(1)
                with m.If(splitter.done):
                    m.d.sync += in_pair.eq(in_pair + 1)
                    with m.If(in_pair == geo.in_pairs - 1):
                        m.d.sync += out_pair.eq(0)
                        m.d.comb += reader.first_pair.eq(1)
                        m.next = "MAC_INIT"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("MAC_INIT"):
                m.d.comb += [reader.start.eq(1), mac.start.eq(1)]
                m.d.sync += drain.eq(0)
                m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += reader.active.eq(1)
                with m.If(reader.done):
                    m.next = "MAC_DRAIN"
            with m.State("MAC_DRAIN"):
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == MAC_DRAIN - 1):
                    m.next = "IFFT"
            with m.State("IFFT"):
                # the read-out of the previous pair is done by now: its last bin waited for it
                m.d.comb += [fft.start.valid.eq(~readout.busy), fft.start.payload.inverse.eq(1)]
                with m.If(fft.start.ready & ~readout.busy):
                    m.next = "IFFT_WAIT"
            with m.State("IFFT_WAIT"):
                with m.If(~fft.busy):
                    m.d.comb += [readout.begin.eq(1), reader.next_pair.eq(1)]
                    m.d.sync += out_pair.eq(out_pair + 1)
                    with m.If(out_pair == geo.out_pairs - 1):
                        m.next = "OUT_WAIT"
                    with m.Else():
                        m.next = "MAC_INIT"
            with m.State("OUT_WAIT"):
                # the last pair's output must be read before the next vector loads
                with m.If(~readout.busy):
                    restart()
                    m.next = "LOAD"

        with m.If(forward_done & (fft.exp != 0)):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
