"""The parameter-free layer kinds: ``maxpool2d`` (streaming or a window reader) and ``flatten`` (a wire).

Both keep the :class:`~sparrow.hw.engine.Engine` contract (one vector in on
``i`` and out on ``o``, C-major) and honour ``o.ready``.
"""

from amaranth.hdl import Array, Module, Mux, Signal, signed

from sparrow.hw.actbuf import ActivationBuffer
from sparrow.hw.conv import layer_label
from sparrow.hw.conv_scan import WindowScanner, pool_levels
from sparrow.hw.cycle_model import pool_cycles
from sparrow.hw.engine import EngineConfig, LayerEngine
from sparrow.modeldir import Layer

__all__ = ["MaxPoolEngine", "FlattenEngine"]


def _check_layer(layer, kind):
    if not isinstance(layer, Layer) or layer.kind != kind or layer.in_shape is None:
        raise TypeError(f"Layer must be a validated {kind} sparrow.modeldir.Layer, "
                        f"not {layer_label(layer)}")


class MaxPoolEngine(LayerEngine):
    """maxpool2d on the RTL: the max of every kernel x kernel window (stride, no padding).

    Two structures, chosen from the layer:

    * **streaming** (kernel == stride: the windows tile the input): each
      element is folded into the partial max of its window a cycle after it
      arrives (one element a cycle; the partial maxima of one output row, OW
      values, in registers), and a window's max leaves right after its last
      element: no vector buffer, no cycles beyond the input's;
    * **windowed** (overlapping or gapped windows): the [C, H, W] vector fills
      one bank of an :class:`~sparrow.hw.actbuf.ActivationBuffer` while the
      previous one is read window by window (channel, output row, output
      column; the window's kernel*kernel elements in consecutive cycles).

    Either way the outputs leave on ``o`` in C-major order; a held output
    (``o.ready`` low) stalls the engine.

    Parameters
    ----------
    layer : sparrow.modeldir.Layer
        A validated maxpool2d layer (with ``in_shape``/``out_shape``).

    Members
    -------
    i, o, error
        As :class:`~sparrow.hw.engine.Engine`; ``error`` stays 0 (nothing can be lost).

    Raises
    ------
    TypeError
        ``layer`` is not a validated maxpool2d Layer.
    """

    kind = "maxpool2d"
    holds_output = True

    @staticmethod
    def streaming(layer):
        """The layer's windows tile its input (kernel == stride): the streaming structure."""
        return layer.attrs["kernel"] == layer.attrs["stride"]

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """None."""
        return 0

    @classmethod
    def activation_buffers(cls, layer, config=EngineConfig()):
        """Windowed: two banks of the input (C*H*W), int8; streaming: none (OW registers)."""
        return [] if cls.streaming(layer) else [(2 * layer.in_size, 8)]

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """:func:`~sparrow.hw.cycle_model.pool_cycles`."""
        return pool_cycles(layer.in_size, layer.out_size, layer.attrs["kernel"], cls.streaming(layer))

    def _validate(self, layer, config):
        _check_layer(layer, self.kind)
        c, h, w = layer.in_shape
        _, oh, ow = layer.out_shape
        k, stride = layer.attrs["kernel"], layer.attrs["stride"]
        self._streaming = self.streaming(layer)
        if not self._streaming:
            self._buf = ActivationBuffer(c * h * w)
            self._scan = WindowScanner(pool_levels(c, h, w, k, stride, oh, ow), h, w, 0, 2)
        self._n_in, self._n_out, self._acc_width = c * h * w, c * oh * ow, 8
        self._geometry = (c, h, w, k, stride, oh, ow)
        return self.stream_members()

    def memory_images(self):
        return {}

    def describe(self):
        c, h, w, k, stride, oh, ow = self._geometry
        return {"input_shape": [c, h, w], "output_shape": [c, oh, ow], "kernel": k,
                "stride": stride, "structure": "streaming" if self._streaming else "windowed"}

    def elaborate(self, platform):
        m = Module()
        if self._streaming:
            self._elaborate_streaming(m)
        else:
            self._elaborate_windowed(m)
        m.d.comb += self.error.eq(0)
        return m

    def _elaborate_streaming(self, m):
        c, h, w, k, _, oh, ow = self._geometry
        if h % k == 0 and w % k == 0:
            self._elaborate_tiled(m)
            return
        # Position of the arriving element: column w = ocol*k + s, row h = orow*k + r.
        s, r = Signal(range(max(k, 2))), Signal(range(max(k, 2)))
        ocol, orow = Signal(range(w // k + 1)), Signal(range(h // k + 1))
        col, row = Signal(range(max(w, 2))), Signal(range(max(h, 2)))
        part = Array(Signal(signed(8), name=f"part{j}") for j in range(ow))
        # The arriving element waits one cycle in a register (a short path from the
        # producer, often a memory's output), then folds into its window.
        held, x = Signal(), Signal(signed(8))
        proceed = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(~held | proceed)
        with m.If(self.i.ready):
            m.d.sync += [held.eq(self.i.valid), x.eq(self.i.payload)]
        cur = part[ocol[:max(1, (ow - 1).bit_length())] if ow > 1 else 0]
        first = (s == 0) & (r == 0)
        value = Mux(first | (x > cur), x, cur)
        inside = (ocol < ow) & (orow < oh)
        take = held & proceed
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            with m.If(inside):
                m.d.sync += cur.eq(value)
                with m.If((s == k - 1) & (r == k - 1)):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(value)]
            with m.If(col == w - 1):
                m.d.sync += [col.eq(0), s.eq(0), ocol.eq(0)]
                with m.If(row == h - 1):
                    m.d.sync += [row.eq(0), r.eq(0), orow.eq(0)]
                with m.Else():
                    m.d.sync += row.eq(row + 1)
                    with m.If(r == k - 1):
                        m.d.sync += [r.eq(0), orow.eq(orow + 1)]
                    with m.Else():
                        m.d.sync += r.eq(r + 1)
            with m.Else():
                m.d.sync += col.eq(col + 1)
                with m.If(s == k - 1):
                    m.d.sync += [s.eq(0), ocol.eq(ocol + 1)]
                with m.Else():
                    m.d.sync += s.eq(s + 1)

    def _elaborate_tiled(self, m):
        # Streaming without a remainder (H and W multiples of the kernel): every element is
        # in a window, and the partial maxima of an output row are visited in turn, so they
        # rotate (the current window's at the front) and no counter tracks rows or columns.
        _, _, _, k, _, _, ow = self._geometry
        s, r = Signal(range(max(k, 2))), Signal(range(max(k, 2)))
        ocol = Signal(range(max(ow, 2)))
        part = [Signal(signed(8), name=f"part{j}") for j in range(ow)]
        held, x = Signal(), Signal(signed(8))
        proceed = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(~held | proceed)
        with m.If(self.i.ready):
            m.d.sync += [held.eq(self.i.valid), x.eq(self.i.payload)]
        cur = part[0]
        value = Mux(((s == 0) & (r == 0)) | (x > cur), x, cur)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(held & proceed):
            with m.If(s == k - 1):          # the window's part of this row is in: next window
                m.d.sync += [part[-1].eq(value), s.eq(0)]
                m.d.sync += [part[j].eq(part[j + 1]) for j in range(ow - 1)]
                with m.If(r == k - 1):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(value)]
                with m.If(ocol == ow - 1):  # the row's end
                    m.d.sync += [ocol.eq(0), r.eq(Mux(r == k - 1, 0, r + 1))]
                with m.Else():
                    m.d.sync += ocol.eq(ocol + 1)
            with m.Else():
                m.d.sync += [cur.eq(value), s.eq(s + 1)]

    def _elaborate_windowed(self, m):
        m.submodules.buf = buf = self._buf
        m.submodules.scan = scan = self._scan
        m.d.comb += [buf.w.valid.eq(self.i.valid), buf.w.payload.eq(self.i.payload),
                     self.i.ready.eq(buf.w.ready)]
        active = Signal()
        with m.If(~active & buf.r_full):
            m.d.sync += active.eq(1)
        # Everything advances unless a result waits on o: read (stage 0), max (stage 1).
        advance = ~self.o.valid | self.o.ready
        step = active & advance
        first, last, valid = Signal(), Signal(), Signal()
        best = Signal(signed(8))
        value = Mux(first | (buf.r_data > best), buf.r_data, best)
        m.d.comb += [scan.step.eq(step), buf.r_addr.eq(scan.addr[:len(buf.r_addr)]),
                     buf.r_en.eq(advance)]
        with m.If(advance):
            m.d.sync += [valid.eq(step), first.eq(scan.win_first), last.eq(scan.win_last),
                         best.eq(value), self.o.valid.eq(valid & last), self.o.payload.eq(value)]
        with m.If(step & scan.last):
            m.d.sync += active.eq(0)
            m.d.comb += buf.r_release.eq(1)


class FlattenEngine(LayerEngine):
    """flatten on the RTL: nothing (``o`` is ``i``): the activations are already C-major.

    Parameters
    ----------
    layer : sparrow.modeldir.Layer
        A validated flatten layer.

    Raises
    ------
    TypeError
        ``layer`` is not a validated flatten Layer.
    """

    kind = "flatten"
    holds_output = True
    identity = True

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        return 0

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """0: a re-indexing that the C-major order already is."""
        return 0

    def _validate(self, layer, config):
        _check_layer(layer, self.kind)
        self._n_in = self._n_out = layer.in_size
        self._acc_width = 8
        return self.stream_members()

    def memory_images(self):
        return {}

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload),
                     self.i.ready.eq(self.o.ready), self.error.eq(0)]
        return m
