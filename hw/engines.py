"""The engine that runs each layer kind of a model directory (docs/format.md).

One place maps a layer kind to its Amaranth engine, for ``sparrow generate``,
``sparrow sim``, ``sparrow build`` and the demo.
"""

from sparrow import SparrowError

__all__ = ["ENGINE_KINDS", "engine_for_layer", "check_engine_kinds", "multipliers"]

ENGINE_KINDS = ("sd_linear", "dense_linear", "bc_linear")


def engine_for_layer(layer, pes=8, dense_lanes=None):
    """The engine component for one validated layer.

    ``pes`` sizes sd_linear engines (1..1024), ``dense_lanes`` dense_linear
    ones (MAC lanes, default :data:`~sparrow.hw.dense_engine.DENSE_LANES`).
    """
    if layer.kind == "sd_linear":
        from sparrow.hw.sd_engine import SDEngine
        return SDEngine.from_layer(layer, pes)
    if layer.kind == "dense_linear":
        from sparrow.hw.dense_engine import DenseEngine, DENSE_LANES
        return DenseEngine.from_layer(layer, dense_lanes or DENSE_LANES)
    if layer.kind == "bc_linear":
        from sparrow.hw.bc_engine import BCEngine
        return BCEngine(layer)
    raise SparrowError(f"layer {layer.name!r}: kind {layer.kind!r} has no RTL engine "
                       f"(supported: {', '.join(ENGINE_KINDS)})")


def check_engine_kinds(model):
    """Raise SparrowError naming the first layer of ``model`` that no engine runs."""
    for layer in model.layers:
        if layer.kind not in ENGINE_KINDS:
            raise SparrowError(f"layer {layer.name!r}: kind {layer.kind!r} has no RTL engine "
                               f"(supported: {', '.join(ENGINE_KINDS)})")


def multipliers(layer, dense_lanes):
    """Hardware multipliers (DSP blocks) the layer's engine uses: k for sd_linear
    (the basis unit), 8 for bc_linear (FFT and complex MAC), the lanes for dense_linear."""
    if layer.kind == "sd_linear":
        return int(layer.attrs["k"])
    if layer.kind == "bc_linear":
        return 8
    return dense_lanes
