"""The interface every layer engine implements, and the hardware parameters they share.

A layer engine runs one layer kind of the model format (docs/format.md) on
the RTL: one int8 input vector in on stream ``i``, the layer's int8 outputs
out on stream ``o``.  :mod:`sparrow.hw.engines` maps each layer kind to its
engine class; ``sparrow generate``, ``sparrow sim``, ``sparrow build``, the
accelerator and the cycle model reach engines only through it.
"""

from dataclasses import dataclass

from amaranth.hdl import Signal, signed
from amaranth.lib import stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_bool, check_int, check_range

__all__ = ["EngineConfig", "Engine", "LayerEngine", "DEFAULT_DENSE_LANES", "ROM_ATTR", "rom_attrs",
           "GENERIC_BIAS_WIDTH", "CONSTS_WIDTH", "consts_image", "consts_rom"]

#: Attribute naming a ROM whose contents a simulation loads at run time (``generic`` builds).
ROM_ATTR = "sparrow_rom"

#: Bias ROM width of ``generic`` builds: any int32 bias plus a rounding constant below 2^31.
GENERIC_BIAS_WIDTH = 33

#: Width of the ``consts`` ROM of generic sd/dense builds: basis_shift [0, 5),
#: out_shift [5, 10), relu [10].
CONSTS_WIDTH = 11


def consts_image(basis_shift, out_shift, relu):
    """``(width, words, layout)`` of the one-word ``consts`` ROM of a generic sd/dense build."""
    word = int(basis_shift) | (int(out_shift) << 5) | (int(bool(relu)) << 10)
    return (CONSTS_WIDTH, [word], "basis_shift at bits [0, 5) (0 for dense_linear), out_shift at "
                                  "[5, 10), relu at bit 10; loaded at run time (generic builds)")


def consts_rom(m, basis_shift, out_shift, relu):
    """The ``consts`` ROM in module ``m``; returns its ``(basis_shift, out_shift, relu)`` fields."""
    _, words, _ = consts_image(basis_shift, out_shift, relu)
    m.submodules.consts = rom = Memory(shape=CONSTS_WIDTH, depth=1, init=words,
                                       attrs={ROM_ATTR: "consts"})
    read = rom.read_port(domain="comb")
    return read.data[0:5], read.data[5:10], read.data[10]


def rom_attrs(name, generic, attrs=None):
    """Memory attributes of a parameter ROM: ``attrs`` plus ``sparrow_rom = name`` when ``generic``."""
    out = dict(attrs or {})
    if generic:
        out[ROM_ATTR] = name
    return out

#: Default MAC lanes of a dense engine: the eight DSPs of the iCE40UP5K.
DEFAULT_DENSE_LANES = 8


@dataclass(frozen=True)
class EngineConfig:
    """Hardware parameters of the engines of one design (each engine reads those it uses).

    Parameters
    ----------
    pes : int
        PEs of each sd_linear engine, 1..1024.
    dense_lanes : int
        MAC lanes of each dense_linear engine, 1..256.
    out_lanes : int
        int8 outputs per beat of an sd_linear engine, 1..64 (divides ``pes``).
    bcast : int
        Broadcast register stages of an sd_linear PE array, 0..4.
    max_groups : int
        Most PE groups of an sd_linear engine's code layout, 1..16 (default 16:
        the fewest code-ROM bits, a code ROM and a z-buffer copy per group; 1:
        one of each, the least logic and block RAM, as a small board may need;
        :func:`sparrow.hw.sd_program.sd_layout`).
    generic : bool
        Simulation builds (default False: the build for a board).  Every width
        and depth then depends on the layer's structure only (sizes, k, tiles,
        z_bits, the bc_linear shift and relu, ``pes`` and ``max_groups``, and
        the sd_linear code ROM's depth, one of two per structure:
        :func:`sparrow.hw.sd_program.generic_code_depth`; the code layout is
        :func:`sparrow.hw.sd_program.sd_generic_layout`, with the board
        layout's cycles), never on parameter values or sparsity, and the ROMs that
        hold parameter values carry the attribute ``sparrow_rom = "<name>"``
        (the name of :meth:`Engine.memory_images`; sd and dense engines also
        take their shifts and ReLU flag from a one-word ROM ``consts``,
        :func:`consts_image`), so that the simulation
        runner loads them at run time and one compiled simulator serves every
        model of the same structure.  The outputs are the same bit for bit.

    Raises
    ------
    TypeError, ValueError
        A parameter out of its range (messages as :mod:`sparrow.validate`).
    """

    pes: int = 8
    dense_lanes: int = DEFAULT_DENSE_LANES
    out_lanes: int = 1
    bcast: int = 0
    generic: bool = False
    max_groups: int = 16

    def __post_init__(self):
        check_int(self.pes, "PE count", 1, 1024)
        check_int(self.dense_lanes, "Dense lane count", 1, 256)
        check_int(self.out_lanes, "Output lane count", 1, 64)
        check_range(self.bcast, "Broadcast stages", 0, 4)
        check_bool(self.generic, "generic")
        check_int(self.max_groups, "PE group limit", 1, 16)
        if self.pes % self.out_lanes:
            raise ValueError(f"Output lane count {self.out_lanes} does not divide PE count {self.pes}")


class Engine(ValidatedComponent):
    """Base of the layer engines.

    A subclass sets :attr:`kind`, implements ``_validate`` (returning
    :meth:`stream_members`), :meth:`from_layer`, :meth:`memory_images`,
    :meth:`multipliers` and :meth:`cycles`, and stores ``self._n_in``,
    ``self._n_out`` and ``self._acc_width``.

    Members
    -------
    i : In(stream.Signature(signed(8)))
        Input vector elements, x[0] first.
    o : Out(stream.Signature(signed(8)))  (``8 * out_lanes`` bits with several output lanes)
        Output elements, y[0] first (lane c of beat r holds y[r*C + c] at bits
        [8c, 8c+8)).  Unless :attr:`holds_output`, an engine cannot stall its
        output: the consumer must hold ``o.ready`` high (a value offered while
        it is low is lost and sets ``error``).
    error : Out(1)
        Sticky: the engine lost an output or detected an internal overrun.
    """

    #: The layer kind of the model format this engine runs.
    kind = None

    #: The engine's output waits while ``o.ready`` is low (nothing is lost), so
    #: the accelerator's chain needs no output FIFO after it.
    holds_output = False

    #: The engine is a wire (``o`` is ``i``: a re-indexing that the C-major order
    #: already is); a bench that runs engines one by one may leave it out.
    identity = False

    @staticmethod
    def stream_members(out_lanes=1):
        """The signature members every engine has (``out_lanes`` int8 per output beat)."""
        return {
            "i": In(stream.Signature(signed(8))),
            "o": Out(stream.Signature(signed(8) if out_lanes == 1 else 8 * out_lanes)),
            "error": Out(1),
        }

    @classmethod
    def from_layer(cls, layer, config=EngineConfig()):
        """The engine of a validated ``sparrow.modeldir.Layer`` of kind :attr:`kind`."""
        raise NotImplementedError

    @classmethod
    def multipliers(cls, layer, config=EngineConfig()):
        """Hardware multipliers (DSP blocks) the engine of ``layer`` uses."""
        raise NotImplementedError

    @classmethod
    def activation_buffers(cls, layer, config=EngineConfig()):
        """``[(depth, width)]`` of the activation memories the engine of ``layer`` holds
        beyond its own input staging (the vector buffers of convolution and pooling
        engines; none by default)."""
        return []

    @classmethod
    def cycles(cls, layer, config=EngineConfig()):
        """Cycle model: clock cycles per input vector in steady state."""
        raise NotImplementedError

    def memory_images(self):
        """``{name: (width, words, layout)}`` of every ROM, exactly as the RTL holds them."""
        raise NotImplementedError

    def drive_output(self, m, source, fault):
        """Drive ``o`` from the stream ``source``, which cannot stall, and ``error``.

        ``error`` is ``fault`` (an internal overrun) or a sticky flag set when
        a value was offered while ``o.ready`` was low (that value is lost).
        """
        m.d.comb += [self.o.payload.eq(source.payload), self.o.valid.eq(source.valid)]
        dropped = Signal()
        with m.If(self.o.valid & ~self.o.ready):
            m.d.sync += dropped.eq(1)
        m.d.comb += self.error.eq(fault | dropped)

    def describe(self):
        """Engine-specific fields for ``generate.json`` (sizes of its program, lanes, ...)."""
        return {}

    @property
    def in_features(self):
        return self._n_in

    @property
    def out_features(self):
        return self._n_out

    @property
    def acc_width(self):
        """Accumulator width of the engine's sums (bits)."""
        return self._acc_width


class LayerEngine(Engine):
    """An engine whose constructor takes the validated layer itself: ``cls(layer, config)``.

    For the kinds whose engine re-reads the layer's shapes (convolutions,
    pooling, flatten) rather than taking unpacked parameters.
    """

    def __init__(self, layer, config=EngineConfig()):
        super().__init__(layer, config)

    @classmethod
    def from_layer(cls, layer, config=EngineConfig()):
        """The engine of a validated ``sparrow.modeldir.Layer`` of kind :attr:`kind`."""
        return cls(layer, config)
