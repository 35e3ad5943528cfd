"""Convolution engines: im2col on chip in front of an existing linear engine.

A convolution (docs/format.md) is its linear kind applied to every im2col
patch.  :class:`ConvEngine` runs it in three stages, each holding two
vectors so that consecutive vectors overlap::

  i ─> ActivationBuffer ─> PatchGenerator ─> inner linear engine ─> OutputReorder ─> o
       (C*H*W, 2 banks)    (patch p, index     (sd/dense/bc_linear   (out_ch*OH*OW, 2 banks:
                            c*kh*kw + r*kw + s, on in_ch*kh*kw ->     written at o*OH*OW + p,
                            zero padding)       out_ch, 1 lane)       read in order)

The input vector and the output vector are in the format's C-major order
(c*H*W + h*W + w), so the engine keeps the :class:`~sparrow.hw.engine.Engine`
contract and the chain, the benches and the cycle model need nothing
kind-specific.  The inner engine is built by its own ``from_layer`` from a
linear layer with the convolution's parameters (:func:`inner_layer`), with one
output lane.  The output leaves from a memory and honours ``o.ready``
(:attr:`~sparrow.hw.engine.Engine.holds_output`).
"""

from dataclasses import replace

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out, connect, flipped

from sparrow.hw.actbuf import ActivationBuffer, OutputReorder
from sparrow.hw.bc_engine import BCEngine
from sparrow.hw.component import ValidatedComponent
from sparrow.hw.conv_scan import WindowScanner, conv_levels
from sparrow.hw.cycle_model import conv_cycles
from sparrow.hw.dense_engine import DenseEngine
from sparrow.hw.engine import EngineConfig, LayerEngine
from sparrow.hw.sd_engine import SDEngine
from sparrow.modeldir import Layer
from sparrow.validate import check_int, check_range

__all__ = ["PatchGenerator", "ConvEngine", "SDConvEngine", "DenseConvEngine", "BCConvEngine",
           "inner_layer", "conv_geometry", "layer_label"]

_CONV_ATTRS = ("in_ch", "out_ch", "kh", "kw", "stride", "padding")


def layer_label(layer):
    """A short description of a value offered as a layer, for messages ("kind 'sd_linear'")."""
    if isinstance(layer, Layer):
        return f"kind {layer.kind!r}" + ("" if layer.in_shape is not None else " (not validated)")
    return type(layer).__name__


def conv_geometry(layer):
    """``(C, H, W, kh, kw, stride, padding, out_ch, OH, OW)`` of a validated conv layer."""
    a = layer.attrs
    c, h, w = layer.in_shape
    out_ch, oh, ow = layer.out_shape
    return c, h, w, a["kh"], a["kw"], a["stride"], a["padding"], out_ch, oh, ow


def inner_layer(layer):
    """The linear layer (kind ``<x>_linear``, in_ch*kh*kw -> out_ch) that a conv layer applies per patch."""
    attrs = {k: v for k, v in layer.attrs.items() if k not in _CONV_ATTRS}
    return Layer(layer.name, layer.kind.replace("conv2d", "linear"), attrs, layer.params,
                 in_shape=(attrs["in"],), out_shape=(attrs["out"],), params_file=layer.params_file)


class PatchGenerator(ValidatedComponent):
    """im2col on chip: an [C, H, W] vector in, its patches out, one element per cycle.

    The vector fills one bank of an :class:`~sparrow.hw.actbuf.ActivationBuffer`
    while the previous one is read: for every output position (oh, ow), row
    major, every patch index c*kh*kw + r*kw + s, the element
    xpad[c, oh*stride + r, ow*stride + s] (0 in the padding).  A vector starts
    only while ``may_start`` is high (its consumer has room for its results);
    ``started`` pulses then.

    Parameters
    ----------
    channels, height, width : int
        The input shape (1..65536 each; C*H*W at most 2^20).
    kh, kw : int
        Kernel size (1..65536).
    stride : int
        1..65536.
    padding : int
        0..64.

    Members
    -------
    i : In(stream.Signature(signed(8)))
        The input vector, C-major.
    o : Out(stream.Signature(signed(8)))
        Patch elements, patch 0 first; honours ``ready``.
    may_start : In(1)
    started : Out(1)

    Raises
    ------
    TypeError, ValueError
        A size out of range, or a kernel that does not fit the padded input
        ("Kernel 5x5 does not fit the padded input 3x3").
    """

    def _validate(self, channels, height, width, kh, kw, stride, padding):
        for v, name in ((channels, "Channel count"), (height, "Height"), (width, "Width"),
                        (kh, "Kernel height"), (kw, "Kernel width"), (stride, "Stride")):
            check_int(v, name, 1, 1 << 16)
        check_range(padding, "Padding", 0, 64)
        oh = (height + 2 * padding - kh) // stride + 1
        ow = (width + 2 * padding - kw) // stride + 1
        if kh > height + 2 * padding or kw > width + 2 * padding:
            raise ValueError(f"Kernel {kh}x{kw} does not fit the padded input "
                             f"{height + 2 * padding}x{width + 2 * padding}")
        self._buf = ActivationBuffer(channels * height * width)
        self._scan = WindowScanner(conv_levels(channels, height, width, kh, kw, stride, oh, ow),
                                   height, width, padding, 3)
        self._out_hw = (oh, ow)
        return {"i": In(stream.Signature(signed(8))), "o": Out(stream.Signature(signed(8))),
                "may_start": In(1), "started": Out(1)}

    @property
    def out_hw(self):
        """``(OH, OW)``: output positions per column and row."""
        return self._out_hw

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf = buf = self._buf
        m.submodules.scan = scan = self._scan
        connect(m, flipped(self.i), buf.w)
        active, inside = Signal(), Signal()
        with m.If(~active & buf.r_full & self.may_start):
            m.d.sync += active.eq(1)
            m.d.comb += self.started.eq(1)
        # The read port's register is the output register: it advances when o is free.
        advance = ~self.o.valid | self.o.ready
        step = active & advance
        m.d.comb += [scan.step.eq(step), buf.r_addr.eq(scan.addr[:len(buf.r_addr)]),
                     buf.r_en.eq(advance), self.o.payload.eq(Mux(inside, buf.r_data, 0))]
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(step), inside.eq(scan.inside)]
        with m.If(step & scan.last):
            m.d.sync += active.eq(0)
            m.d.comb += buf.r_release.eq(1)
        return m


class ConvEngine(LayerEngine):
    """A convolution layer on the RTL (base of the three conv kinds).

    Subclasses set :attr:`kind` and :attr:`inner_class` (the linear engine
    of the patches).

    Parameters
    ----------
    layer : sparrow.modeldir.Layer
        A validated layer of kind :attr:`kind` (with ``in_shape``/``out_shape``).
    config : sparrow.hw.engine.EngineConfig
        Passed to the inner engine with ``out_lanes = 1``.

    Members
    -------
    i, o, error
        As :class:`~sparrow.hw.engine.Engine`: the [C, H, W] input and the
        [out_ch, OH, OW] output, C-major; ``o`` honours ``ready``; ``error``
        is the inner engine's, or a result arriving for a full output bank.

    Raises
    ------
    TypeError
        ``layer`` is not a validated Layer of this kind.
    TypeError, ValueError
        As the inner engine and :class:`PatchGenerator`.
    """

    #: The linear engine that computes each patch.
    inner_class = None
    holds_output = True

    @staticmethod
    def inner_config(config):
        """The inner engine's configuration: ``config`` with one output lane."""
        return replace(config, out_lanes=1)

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """The inner engine's multipliers (the front end and the reorder buffer have none)."""
        return cls.inner_class.multipliers(inner_layer(layer), cls.inner_config(config))

    @classmethod
    def activation_buffers(cls, layer, config=EngineConfig()):
        """Two banks of the input (C*H*W) and two of the output (out_ch*OH*OW), int8."""
        return [(2 * layer.in_size, 8), (2 * layer.out_size, 8)]

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """:func:`~sparrow.hw.cycle_model.conv_cycles` with the inner engine's cycles per patch."""
        c, h, w, kh, kw, stride, padding, out_ch, oh, ow = conv_geometry(layer)
        inner = cls.inner_class.cycles(inner_layer(layer), cls.inner_config(config))
        return conv_cycles(c * h * w, oh * ow, inner, out_ch)

    def _validate(self, layer, config):
        if not isinstance(layer, Layer) or layer.kind != self.kind or layer.in_shape is None:
            raise TypeError(f"Layer must be a validated {self.kind} sparrow.modeldir.Layer, "
                            f"not {layer_label(layer)}")
        c, h, w, kh, kw, stride, padding, out_ch, oh, ow = conv_geometry(layer)
        self._gen = PatchGenerator(c, h, w, kh, kw, stride, padding)
        self._inner = self.inner_class.from_layer(inner_layer(layer), self.inner_config(config))
        self._reorder = OutputReorder(out_ch, oh * ow)
        self._geometry = (c, h, w, kh, kw, stride, padding, out_ch, oh, ow)
        self._n_in, self._n_out = c * h * w, out_ch * oh * ow
        self._acc_width = self._inner.acc_width
        return self.stream_members()

    @property
    def inner(self):
        """The linear engine of the patches."""
        return self._inner

    def memory_images(self):
        """The inner engine's ROMs (the buffers hold no parameters)."""
        return self._inner.memory_images()

    def describe(self):
        """Shapes, patches, buffer sizes and the inner engine's fields."""
        c, h, w, kh, kw, stride, padding, out_ch, oh, ow = self._geometry
        return {"inner": self._inner.kind, "input_shape": [c, h, w], "output_shape": [out_ch, oh, ow],
                "patches": oh * ow, "patch_size": c * kh * kw,
                "buffer_bytes": 2 * self._n_in + 2 * self._n_out, **self._inner.describe()}

    def elaborate(self, platform):
        m = Module()
        m.submodules.patches = gen = self._gen
        m.submodules.inner = inner = self._inner
        m.submodules.reorder = reorder = self._reorder
        connect(m, flipped(self.i), gen.i)
        connect(m, gen.o, inner.i)
        # The reorder buffer takes every result; a vector starts only when it has a bank
        # for it (vectors in flight: started, not yet read out).
        inflight = Signal(range(3))
        m.d.comb += [inner.o.ready.eq(1), reorder.w_valid.eq(inner.o.valid),
                     reorder.w_data.eq(inner.o.payload), gen.may_start.eq(inflight < 2)]
        m.d.sync += inflight.eq(inflight + gen.started - reorder.done)
        connect(m, reorder.o, flipped(self.o))
        m.d.comb += self.error.eq(inner.error | reorder.overrun)
        return m


class SDConvEngine(ConvEngine):
    """sd_conv2d: the SmartDeal engine (:class:`~sparrow.hw.sd_engine.SDEngine`) on im2col patches."""
    kind = "sd_conv2d"
    inner_class = SDEngine


class DenseConvEngine(ConvEngine):
    """dense_conv2d: the dense int8 engine (:class:`~sparrow.hw.dense_engine.DenseEngine`) on im2col patches."""
    kind = "dense_conv2d"
    inner_class = DenseEngine


class BCConvEngine(ConvEngine):
    """bc_conv2d: the FFT circulant engine (:class:`~sparrow.hw.bc_engine.BCEngine`) on im2col patches."""
    kind = "bc_conv2d"
    inner_class = BCEngine

