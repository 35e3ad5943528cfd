"""The registry: the engine class of each layer kind of a model directory (docs/format.md).

The one place that maps a layer kind to its :class:`~sparrow.hw.engine.Engine`
subclass, and that refuses a kind with no engine.  ``sparrow generate``,
``sparrow sim``, ``sparrow build``, the accelerator and the cycle model reach
engines only through it; adding an engine is a class in hw/ and one entry here.
"""

from sparrow import SparrowError
from sparrow.hw.bc_engine import BCEngine
from sparrow.hw.conv import BCConvEngine, DenseConvEngine, SDConvEngine
from sparrow.hw.dense_engine import DenseEngine
from sparrow.hw.engine import EngineConfig
from sparrow.hw.pool import FlattenEngine, MaxPoolEngine
from sparrow.hw.sd_engine import SDEngine

__all__ = ["ENGINES", "engine_class", "engine_for_layer", "check_engine_kinds", "multipliers",
           "layer_cycles", "model_cycles", "activation_memories"]

#: Layer kind -> engine class.
ENGINES = {cls.kind: cls for cls in (SDEngine, DenseEngine, BCEngine, SDConvEngine, DenseConvEngine,
                                     BCConvEngine, MaxPoolEngine, FlattenEngine)}


def engine_class(kind):
    """The engine class of layer kind ``kind``.

    Raises
    ------
    SparrowError
        ``"kind 'K' has no RTL engine (supported: sd_linear, dense_linear, bc_linear)"``.
    """
    try:
        return ENGINES[kind]
    except KeyError:
        raise SparrowError(f"kind {kind!r} has no RTL engine "
                           f"(supported: {', '.join(ENGINES)})") from None


def _layer_engine_class(layer):
    try:
        return engine_class(layer.kind)
    except SparrowError as exc:
        raise SparrowError(f"layer {layer.name!r}: {exc}") from None


def engine_for_layer(layer, config=EngineConfig()):
    """The engine component of one validated ``sparrow.modeldir.Layer``.

    Raises
    ------
    SparrowError
        ``"layer 'NAME': kind 'K' has no RTL engine (supported: ...)"``.
    """
    return _layer_engine_class(layer).from_layer(layer, config)


def check_engine_kinds(model):
    """Refuse ``model`` when one of its layers has no engine (SparrowError as :func:`engine_for_layer`)."""
    for layer in model.layers:
        _layer_engine_class(layer)


def multipliers(layer, config=EngineConfig()):
    """Hardware multipliers (DSP blocks) of the engine of ``layer``."""
    return _layer_engine_class(layer).multipliers(layer, config)


def layer_cycles(layer, config=EngineConfig()):
    """Cycle model: steady-state clock cycles per input vector of the engine of ``layer``."""
    return _layer_engine_class(layer).cycles(layer, config)


def model_cycles(model, config=EngineConfig()):
    """``{layer name: steady-state cycles per vector}`` of every layer of ``model``."""
    return {layer.name: layer_cycles(layer, config) for layer in model.layers}


def activation_memories(model, config=EngineConfig(), max_batch=16):
    """``[(what, depth, width)]`` of the activation memories of ``model``'s accelerator.

    The engines' vector buffers (:meth:`~sparrow.hw.engine.Engine.activation_buffers`),
    the chain's FIFO after every engine whose output cannot wait (a whole output
    vector, :class:`~sparrow.hw.accel.EngineChain`) and the host interface's
    input slots (two vectors) and output banks (two frames of ``max_batch`` vectors).
    Parameter ROMs and the engines' internal staging are not included.
    """
    mems = []
    for layer in model.layers:
        cls = _layer_engine_class(layer)
        mems += [(f"{layer.name} buffer", d, w) for d, w in cls.activation_buffers(layer, config)]
        if not cls.holds_output:
            mems.append((f"{layer.name} FIFO", layer.out_size, 8))
    mems.append(("input slots", 2 * model.layers[0].in_size, 8))
    mems.append(("output banks", 2 * max_batch * model.layers[-1].out_size, 8))
    return mems
