"""PyTorch compression (SmartDeal, block-circulant, ADMM, dense int8), export and the integer golden model.

``sparrow.sw.compress(model, config, data=None)`` is the one-call entry point
(:func:`sparrow.sw.compressor.compress`); ``config`` is the configuration of a
method of :data:`sparrow.sw.methods.METHODS` (``SmartDealConfig``, ...) or
its dict form.  The drop-in layers (``SDLinear``, ``SDConv2d``, ``BCLinear``,
``BCConv2d``, ``QLinear``, ``QConv2d``) live in :mod:`sparrow.sw.layers`.
Importing this package stays cheap (no torch) so the CLI starts fast; torch
loads on first use.
"""

_LAYERS = ("SDLinear", "SDConv2d", "BCLinear", "BCConv2d", "QLinear", "QConv2d")


def compress(model, config, data=None, progress=None, monitor=None):
    """Compress an fp32 ``nn.Sequential`` (see :func:`sparrow.sw.compressor.compress`)."""
    from sparrow.sw.compressor import compress as _compress
    return _compress(model, config, data, progress, monitor)


def export_model(qm, name=None, meta=None):
    """The model directory contents of a compressed model (see :func:`sparrow.sw.qmodel.export_model`)."""
    from sparrow.sw.qmodel import export_model as _export
    return _export(qm, name, meta)


def __getattr__(name):
    if name in _LAYERS:
        from sparrow.sw import layers
        return getattr(layers, name)
    raise AttributeError(f"module 'sparrow.sw' has no attribute {name!r}")
