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
from amaranth.hdl import Module, Signal, Mux, Array, Const, signed, unsigned
from amaranth.lib import wiring, stream
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow import fixedfft as G
from sparrow.hw.fft import FFTUnit, fft_cycles
from sparrow.hw.cmac import ComplexMAC, CMAC_LATENCY, cmac_min_acc_width

__all__ = ["BCEngine", "bc_cycles", "bin_order", "write_images", "memory_images", "spectra_images"]

#: Cycles after the last MAC issue until the last Z word is in the FFT buffer
#: (read, CMAC pipeline, Hermitian partner write).
MAC_DRAIN = 1 + CMAC_LATENCY + 3

#: Output FIFO depth (covers the two-cycle output pipeline at full rate).
OUT_FIFO_DEPTH = 6


def bin_order(k):
    """MAC bin order and, per bin m, the last buffer position its Z words overwrite.

    Bin m writes Z[m] and Z[(k - m) mod k] at the bit-reversed positions (the
    inverse transform's input order); the output reads positions 0..k-1 in
    order, so the bins run by increasing w_m = max(bitrev(m), bitrev(-m mod k)):
    returns ``(order, w)`` with ``order`` a list of the H bins and ``w[m]``.
    """
    L = G.log2k(k)
    br = lambda v: int(G.bitrev(v % k, L))
    w = [max(br(m), br(-m)) for m in range(k // 2 + 1)]
    return sorted(range(k // 2 + 1), key=lambda m: (w[m], m)), w


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


def _reject(obj, exc):
    obj._MustUse__silence = True       # refused, so never elaborated: no warning
    raise exc


def spectra_images(layer):
    """Memory images of one bc_linear layer: dict name -> (width, list of unsigned words).

    ``ws``: weight spectra of a block-row pair, word ((q*nb + j)*H + m) =
    {im, re of W_2q+1,j[m], im, re of W_2q,j[m]} (16 bits each, W_2q,j[m].re
    at bit 0; block rows padded to an even count with zeros); ``bias``: the
    adjusted biases b' (signed, ``width`` bits, two's complement).
    """
    c = G.layer_constants(layer)
    wr, wi = c["wr"], c["wi"]
    nbo, nb, h = wr.shape
    if nbo % 2:
        wr = np.concatenate([wr, np.zeros((1, nb, h), np.int64)])
        wi = np.concatenate([wi, np.zeros((1, nb, h), np.int64)])
    re = [int(v) & 0xFFFF for v in wr.reshape(-1, 2, nb * h).transpose(0, 2, 1).reshape(-1)]
    im = [int(v) & 0xFFFF for v in wi.reshape(-1, 2, nb * h).transpose(0, 2, 1).reshape(-1)]
    # lanes of a pair interleaved: (re, im) of row 2q, then of row 2q+1
    ws = [re[2 * i] | (im[2 * i] << 16) | (re[2 * i + 1] << 32) | (im[2 * i + 1] << 48)
          for i in range(len(re) // 2)]
    b = c["bias_adj"]
    bw = _bias_width(b)
    bias = (b & ((1 << bw) - 1)).tolist()
    return {"ws": (64, ws), "bias": (bw, bias)}


def _bias_width(b):
    b = np.asarray(b, np.int64)
    lim = int(max(np.abs(b).max(initial=0), 1))
    return max(2, lim.bit_length() + 1)


def memory_images(layer):
    """``{name: (width, words, layout)}`` of the engine's ROMs, exactly as the RTL holds them."""
    images = spectra_images(layer)
    c = G.layer_constants(layer)
    h = c["k"] // 2 + 1
    return {
        "ws": (64, images["ws"][1],
               f"word ((q*{c['nb']} + j)*{h} + m) = weight spectra W_2q,j[m] and W_2q+1,j[m]: "
               f"re, im of row 2q at bits [0, 16), [16, 32), of row 2q+1 at [32, 48), [48, 64), "
               f"signed; block rows padded to an even count with zeros"),
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
    from sparrow.hw.images import write_images as write_hex
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


class BCEngine(wiring.Component):
    """bc_linear on the RTL, bit-exact with :func:`sparrow.fixedfft.bc_linear_forward`.

    Parameters
    ----------
    layer : sparrow.modeldir.Layer
        A bc_linear layer (attributes ``in``, ``out``, ``k``, ``out_shift``,
        ``relu``, optional ``fft_frac``; params ``w`` int8 [out/k, in/k, k],
        ``bias`` [out]).  Its weights become ROM contents.

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
        ``layer`` is not a bc_linear Layer.
    ValueError
        Attributes or parameters out of range.
    """

    def __init__(self, layer):
        from sparrow.modeldir import Layer
        if not isinstance(layer, Layer) or layer.kind != "bc_linear":
            _reject(self, TypeError(f"Layer must be a bc_linear sparrow.modeldir.Layer, not {layer!r}"))
        a, p = layer.attrs, layer.params
        for key in ("in", "out", "k", "out_shift", "relu"):
            if key not in a:
                _reject(self, ValueError(f"Layer {layer.name!r} lacks attribute '{key}'"))
        k = a["k"]
        if k not in (4, 8, 16, 32, 64):
            _reject(self, ValueError(f"FFT size must be a power of two from 4 to 64, not {k!r}"))
        n_in, n_out = a["in"], a["out"]
        for name, v in (("Input count", n_in), ("Output count", n_out)):
            if not isinstance(v, int) or v < k or v % k or v > (1 << 16):
                _reject(self, ValueError(f"{name} must be a multiple of k={k} up to 65536, not {v!r}"))
        if not 0 <= a["out_shift"] <= 31:
            _reject(self, ValueError(f"Output shift must be between 0 and 31, not {a['out_shift']}"))
        frac = a.get("fft_frac", G.DEFAULT_FRAC)
        if not isinstance(frac, int) or not 0 <= frac <= 16:
            _reject(self, ValueError(f"fft_frac must be an integer between 0 and 16, not {frac!r}"))
        w = np.asarray(p.get("w"))
        if w.shape != (n_out // k, n_in // k, k) or w.min() < -128 or w.max() > 127:
            _reject(self, ValueError(f"w must be int8 of shape [{n_out // k}, {n_in // k}, {k}]"))
        if np.asarray(p.get("bias")).shape != (n_out,):
            _reject(self, ValueError(f"bias must have shape [{n_out}]"))
        self._layer = layer
        self._c = G.layer_constants(layer)
        self._images = spectra_images(layer)
        self._n_in, self._n_out, self._k = n_in, n_out, k
        super().__init__({
            "i": In(stream.Signature(signed(8))),
            "o": Out(stream.Signature(signed(8))),
            "error": Out(1),
        })

    @property
    def in_features(self):
        return self._n_in

    @property
    def out_features(self):
        return self._n_out

    @property
    def k(self):
        return self._k

    @property
    def lanes(self):
        """Output blocks computed together (a pair: two parallel complex MAC lanes)."""
        return 2

    @property
    def acc_width(self):
        """Width of the complex MAC accumulators."""
        return max(34, cmac_min_acc_width(self._c["nb"], self._c["s1"]))

    def memory_images(self):
        """``{name: (width, words, layout)}`` of the ROMs (for ``sparrow generate``)."""
        return memory_images(self._layer)

    @property
    def cycles_per_vector(self):
        return bc_cycles(self._k, self._n_in, self._n_out)

    def elaborate(self, platform):
        m = Module()
        c = self._c
        k, L, g, fe = c["k"], c["L"], c["g"], c["fe"]
        nb, nbo = c["nb"], c["nbo"]
        h = k // 2 + 1
        pin, pout = -(-nb // 2), -(-nbo // 2)
        D = G.DATA_BITS

        m.submodules.fft = fft = FFTUnit(k)
        m.submodules.cmac = cmac = ComplexMAC(self.acc_width, c["s1"], G.YQ_BITS, 2)
        # MAC lane 1 multiplies on the FFT unit's complex multiplier (idle during the MAC).
        m.d.comb += [fft.mul_op.eq(cmac.ext_op), cmac.ext_res.eq(fft.mul_res)]

        # Spectrum RAM of the input blocks, weight spectra ROM, adjusted bias ROM.
        xs_re = Memory(shape=signed(D), depth=nb * h, init=[])
        xs_im = Memory(shape=signed(D), depth=nb * h, init=[])
        ws_width, ws_words = self._images["ws"]
        ws = Memory(shape=unsigned(ws_width), depth=len(ws_words), init=ws_words)
        bw, b_words = self._images["bias"]
        bias = Memory(shape=unsigned(bw), depth=len(b_words), init=b_words)
        m.submodules.xs_re, m.submodules.xs_im = xs_re, xs_im
        m.submodules.ws, m.submodules.bias = ws, bias
        xs_wr_re, xs_wr_im = xs_re.write_port(), xs_im.write_port()
        xs_rd_re, xs_rd_im = xs_re.read_port(), xs_im.read_port()
        ws_rd = ws.read_port()
        b_rd = bias.read_port()

        # ---------------------------------------------------------------- counters
        p = Signal(range(max(2, pin + 1)))         # input pair
        q = Signal(range(max(2, pout + 1)))        # output pair
        half = Signal()                             # second block of an input pair / lane b
        n = Signal(range(k + 1))                    # element within a block
        mm = Signal(range(h + 1))                   # bin (MAC issue), in bin_order(k)
        order, wpos = bin_order(k)
        nxt = Array([Const(order[(order.index(b) + 1) % h], range(h)) for b in range(h)])
        wlast = Array([Const(wpos[b], range(k)) for b in range(h)])
        j = Signal(range(nb + 1))                   # input block (MAC issue)
        gap = Signal()                              # nb == 1: every other MAC cycle is idle
        xs_addr = Signal(range(nb * h + 1))         # j*H + m
        ws_addr = Signal(range(len(ws_words) + 1))  # (q*nb + j)*H + m
        ws_base = Signal(range(len(ws_words) + 1))  # q*nb*H
        cnt = Signal(range(2 * h + 8))
        ob = Signal(range(2 * k * max(1, pout) + 1))  # output index within the vector
        # output process (reads the IFFT result of pair oq while the MAC of pair oq+1 runs)
        out_act = Signal()
        on = Signal(range(k + 1))                   # element within the output block
        ohalf = Signal()                            # block 2oq (re) or 2oq+1 (im)
        oq = Signal(range(max(2, pout + 1)))

        # ---------------------------------------------------------------- FFT load port
        lp = fft.load.payload
        x_shifted = self.i.payload.as_signed() << g
        last_pair_single = (nb % 2 == 1)

        # MAC write-back into the FFT buffer: both lanes close together (A = Y_2q[m],
        # B = Y_2q+1[m]); Z[m] = (Ar - Bi, Ai + Br) is written the cycle after the result,
        # Z[k-m] = (Ar + Bi, Br - Ai) (0 < m < k/2) the cycle after that (a two-entry queue,
        # registered: keeps the MAC result path short).
        res_m = Signal(range(h + 1))
        z2_valid = Signal()
        z2_idx = Signal(L)
        z2_r, z2_i = Signal(signed(G.ZBUF_BITS)), Signal(signed(G.ZBUF_BITS))
        zq_v, zq_idx = Signal(), Signal(L)
        zq_r, zq_i = Signal(signed(G.ZBUF_BITS)), Signal(signed(G.ZBUF_BITS))
        ya, yb = cmac.res[0], cmac.res[1]
        m.d.sync += [zq_v.eq(z2_valid), zq_idx.eq(z2_idx), zq_r.eq(z2_r), zq_i.eq(z2_i),
                     z2_valid.eq(0)]
        with m.If(cmac.res_valid):
            m.d.sync += [zq_v.eq(1), zq_idx.eq(res_m), zq_r.eq(ya.re - yb.im), zq_i.eq(ya.im + yb.re),
                         z2_valid.eq((res_m != 0) & (res_m != k // 2)), z2_idx.eq(-res_m),
                         z2_r.eq(ya.re + yb.im), z2_i.eq(yb.re - ya.im),
                         res_m.eq(nxt[res_m])]

        # ---------------------------------------------------------------- MAC operands
        mac_v, mac_first, mac_last = Signal(), Signal(), Signal()
        cp = cmac.inp.payload
        m.d.comb += [
            cmac.inp.valid.eq(mac_v),
            cp.x_re.eq(xs_rd_re.data), cp.x_im.eq(xs_rd_im.data),
            cp.w[0].re.eq(ws_rd.data[0:16].as_signed()), cp.w[0].im.eq(ws_rd.data[16:32].as_signed()),
            cp.w[1].re.eq(ws_rd.data[32:48].as_signed()), cp.w[1].im.eq(ws_rd.data[48:64].as_signed()),
            cp.first.eq(mac_first), cp.last.eq(mac_last),
        ]
        issue = Signal()
        m.d.sync += [mac_v.eq(issue), mac_first.eq(j == 0), mac_last.eq(j == nb - 1)]
        m.d.comb += [xs_rd_re.addr.eq(xs_addr), xs_rd_im.addr.eq(xs_addr), ws_rd.addr.eq(ws_addr)]

        # ---------------------------------------------------------------- split write-back
        sp_v, sp_sel = Signal(), Signal()
        sp_m = Signal(range(h + 1))
        sp_idx = Signal(L)
        p_r, p_i = Signal(signed(D)), Signal(signed(D))
        xb_v = Signal()
        xb_r, xb_i = Signal(signed(D)), Signal(signed(D))
        xb_addr = Signal(range(nb * h + 1))
        sat = lambda v: Mux(v > (1 << (D - 1)) - 1, (1 << (D - 1)) - 1,
                            Mux(v < -(1 << (D - 1)), -(1 << (D - 1)), v))
        m.d.sync += xb_v.eq(0)
        with m.If(fft.rd_valid & sp_v & ~sp_sel):
            m.d.sync += [p_r.eq(fft.rd_data.re), p_i.eq(fft.rd_data.im)]
        # Q is registered first (keeps the memory read path short), combined one cycle later.
        q_r, q_i = Signal(signed(D)), Signal(signed(D))
        xa_v = Signal()
        xa_m = Signal(range(h + 1))
        m.d.sync += xa_v.eq(fft.rd_valid & sp_v & sp_sel)
        with m.If(fft.rd_valid & sp_v & sp_sel):
            m.d.sync += [q_r.eq(fft.rd_data.re), q_i.eq(fft.rd_data.im), xa_m.eq(sp_m)]
        xs_we, xs_wa = Signal(), Signal(range(nb * h + 1))
        xs_wd_r, xs_wd_i = Signal(signed(D)), Signal(signed(D))
        pair_base = Signal(range(nb * h + 1))      # 2p*H
        with m.If(xa_v):
            # Xa = (Pr + Qr, Pi - Qi) now;  Xb = (Pi + Qi, Qr - Pr) next cycle
            m.d.comb += [xs_we.eq(1), xs_wa.eq(pair_base + xa_m),
                         xs_wd_r.eq(sat(p_r + q_r)), xs_wd_i.eq(sat(p_i - q_i))]
            m.d.sync += [xb_v.eq(1 if not last_pair_single else (p != pin - 1)),
                         xb_addr.eq(pair_base + h + xa_m),
                         xb_r.eq(sat(p_i + q_i)), xb_i.eq(sat(q_r - p_r))]
        with m.Elif(xb_v):
            m.d.comb += [xs_we.eq(1), xs_wa.eq(xb_addr), xs_wd_r.eq(xb_r), xs_wd_i.eq(xb_i)]
        m.d.comb += [xs_wr_re.en.eq(xs_we), xs_wr_im.en.eq(xs_we),
                     xs_wr_re.addr.eq(xs_wa), xs_wr_im.addr.eq(xs_wa),
                     xs_wr_re.data.eq(xs_wd_r), xs_wr_im.data.eq(xs_wd_i)]

        # ---------------------------------------------------------------- output stage
        # t: read address of element `on` of block `ohalf` (issued only while the output FIFO
        # has room for everything in flight, so o.ready never reaches the address path);
        # t+1: v * 2^e and b' registered; t+2: y written into the output FIFO.
        m.submodules.ofifo = ofifo = SyncFIFOBuffered(width=8, depth=OUT_FIFO_DEPTH)
        issue_out = Signal()
        rd1_v, rd1_half = Signal(), Signal()
        s1_valid = Signal()
        s1_v = Signal(signed(D + G.E_MAX))
        s1_b = Signal(signed(bw))
        # room (registered, fmax): the FIFO entries in flight next cycle are at most those
        # in flight now plus this cycle's read, so the flag is safe one cycle late.
        room = Signal()
        m.d.sync += room.eq(ofifo.level + rd1_v + s1_valid + issue_out < OUT_FIFO_DEPTH)
        m.d.sync += [rd1_v.eq(issue_out), rd1_half.eq(ohalf), s1_valid.eq(rd1_v)]
        with m.If(rd1_v):
            m.d.sync += [s1_v.eq(Mux(rd1_half, fft.rd_data.im, fft.rd_data.re) << fft.exp),
                         s1_b.eq(b_rd.data.as_signed())]
        y_full = Signal(signed(D + G.E_MAX + bw + 2))
        m.d.comb += y_full.eq((s1_v + s1_b) >> fe)
        y_sat = Mux(y_full > 127, 127, Mux(y_full < -128, -128, y_full))
        if self._layer.attrs["relu"]:
            y_sat = Mux(y_full < 0, 0, y_sat)
        m.d.comb += [ofifo.w_en.eq(s1_valid), ofifo.w_data.eq(y_sat),
                     self.o.valid.eq(ofifo.r_rdy), self.o.payload.eq(ofifo.r_data),
                     ofifo.r_en.eq(self.o.ready)]

        # error: nonzero forward block exponent
        fwd_done = Signal()
        m.d.sync += fwd_done.eq(0)

        # ---------------------------------------------------------------- sequencer
        # FFT read index: the output's or the split's, selected by a flop (not the FSM
        # state: the path into the buffer's read address is the UP5K's longest)
        m.d.comb += [fft.rd_req.payload.eq(Mux(out_act, on, sp_idx)), b_rd.addr.eq(ob)]

        # Output process: element `on` of block 2oq (real parts), then of block 2oq+1
        # (imaginary parts), one read per cycle while the output FIFO has room.
        last_lane = (2 * oq + 1 >= nbo) if nbo % 2 else 0
        with m.If(out_act):
            m.d.comb += fft.rd_req.valid.eq(1)
            with m.If(room):
                m.d.comb += issue_out.eq(1)
                m.d.sync += [on.eq(on + 1), ob.eq(ob + 1)]
                with m.If(on == k - 1):
                    m.d.sync += [on.eq(0), ohalf.eq(~ohalf)]
                    with m.If(ohalf | last_lane):
                        m.d.sync += [out_act.eq(0), ohalf.eq(0), oq.eq(oq + 1)]
                        with m.If(oq == pout - 1):
                            m.d.sync += [ob.eq(0), oq.eq(0)]
        # The MAC of the next pair overlaps the output: the sum of bin m (its last
        # issue) waits until the buffer positions of Z[m] and Z[(k - m) mod k]
        # (bit-reversed) have been read in the final pass, as its results overwrite
        # them.  Bins run in the order in which their positions are freed (bin_order).
        # The flag is registered (fmax): one cycle late, which is safe, as positions once
        # read stay free until the MAC is done; it is always computed for the current
        # bin by the time of its closing issue (nb - 1 cycles, or a gap cycle, after the
        # bin starts; mm is back at the first bin from the end of the previous MAC).
        final_pass = ohalf | last_lane
        bin_free = Signal()
        m.d.sync += bin_free.eq(~out_act | (final_pass & (on > wlast[mm])))

        def init():
            return [p.eq(0), half.eq(0), n.eq(0), pair_base.eq(0)]

        with m.FSM(init="INIT"):
            with m.State("INIT"):
                m.d.sync += init()
                m.next = "LOAD"

            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), fft.load.valid.eq(self.i.valid),
                             lp.index.eq(n)]
                if last_pair_single:
                    single = (p == pin - 1)
                else:
                    single = 0
                m.d.comb += [
                    lp.re.eq(Mux(half, 0, x_shifted)), lp.im.eq(Mux(half, x_shifted, 0)),
                    lp.we_re.eq(~half), lp.we_im.eq(half | single),
                ]
                with m.If(self.i.valid):
                    m.d.sync += n.eq(n + 1)
                    with m.If(n == k - 1):
                        m.d.sync += [n.eq(0), half.eq(~half)]
                        with m.If(half | single):
                            m.d.sync += half.eq(0)
                            m.next = "FFT"

            with m.State("FFT"):
                m.d.comb += [fft.start.valid.eq(1), fft.start.payload.inverse.eq(0)]
                with m.If(fft.start.ready):
                    m.next = "FFT_WAIT"

            with m.State("FFT_WAIT"):
                with m.If(~fft.busy):
                    m.d.sync += [cnt.eq(0), fwd_done.eq(1), sp_idx.eq(0)]
                    m.next = "SPLIT"

            with m.State("SPLIT"):
                # reads: P = Z[m] at even cnt, Q = Z[(k-m) mod k] at odd cnt
                rm = cnt >> 1
                # sp_idx (a register) is this cycle's read index: m, then (k - m) mod k
                nc = cnt + 1
                m.d.comb += fft.rd_req.valid.eq(cnt < 2 * h)
                m.d.sync += [cnt.eq(cnt + 1), sp_v.eq(cnt < 2 * h), sp_sel.eq(cnt[0]),
                             sp_m.eq(rm), sp_idx.eq(Mux(nc[0], -(nc >> 1), nc >> 1))]
                with m.If(cnt == 2 * h + 3):
                    m.d.sync += [sp_v.eq(0), p.eq(p + 1), pair_base.eq(pair_base + 2 * h)]
                    with m.If(p == pin - 1):
                        m.d.sync += [q.eq(0), ws_base.eq(0)]
                        m.next = "MAC_INIT"
                    with m.Else():
                        m.next = "LOAD"

            with m.State("MAC_INIT"):
                m.d.sync += [mm.eq(0), j.eq(0), gap.eq(0), xs_addr.eq(0), ws_addr.eq(ws_base),
                             res_m.eq(0), cnt.eq(0)]
                m.next = "MAC"

            with m.State("MAC"):
                closing = j == nb - 1
                m.d.comb += issue.eq(~gap & (~closing | bin_free))
                if nb == 1:
                    m.d.sync += gap.eq(issue)
                with m.If(issue):
                    m.d.sync += [j.eq(j + 1), xs_addr.eq(xs_addr + h), ws_addr.eq(ws_addr + h)]
                    with m.If(closing):
                        # next bin: back to block 0
                        nm = nxt[mm]
                        m.d.sync += [j.eq(0), mm.eq(nm), xs_addr.eq(nm), ws_addr.eq(ws_base + nm)]
                        with m.If(mm == order[-1]):
                            m.next = "MAC_DRAIN"

            with m.State("MAC_DRAIN"):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == MAC_DRAIN - 1):
                    m.next = "IFFT"

            with m.State("IFFT"):
                # (the output of the previous pair is read by now: its last bin waited for it)
                m.d.comb += [fft.start.valid.eq(~out_act), fft.start.payload.inverse.eq(1)]
                with m.If(fft.start.ready & ~out_act):
                    m.next = "IFFT_WAIT"

            with m.State("IFFT_WAIT"):
                with m.If(~fft.busy):
                    m.d.sync += [out_act.eq(1), on.eq(0), ohalf.eq(0), q.eq(q + 1),
                                 ws_base.eq(ws_base + nb * h)]
                    with m.If(q == pout - 1):
                        m.next = "OUT_WAIT"
                    with m.Else():
                        m.next = "MAC_INIT"

            with m.State("OUT_WAIT"):
                # the last pair's output must be read before the next vector loads
                with m.If(~out_act):
                    m.d.sync += init()
                    m.next = "LOAD"


        # The FFT load port: input elements in LOAD, Z words from the MAC otherwise.
        with m.If(zq_v):
            m.d.comb += [fft.load.valid.eq(1), lp.index.eq(zq_idx), lp.re.eq(zq_r), lp.im.eq(zq_i),
                         lp.we_re.eq(1), lp.we_im.eq(1)]
        err = Signal()
        with m.If(fwd_done & (fft.exp != 0)):
            m.d.sync += err.eq(1)
        m.d.comb += self.error.eq(err)
        return m
