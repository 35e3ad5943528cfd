"""The error of the circulant engine's fixed-point FFT datapath against the exact circulant product.

For every ``bc_linear`` / ``bc_conv2d`` layer of a model, on the inputs that
reach it when the model runs (golden) on real data:

* ``output``: the int8 output of the datapath (:mod:`sparrow.fixedfft`, what
  the RTL computes bit for bit) minus the ideal int8 output
  (:func:`sparrow.sw.golden.bc_linear_ideal`: the exact integer circulant
  product, shifted and saturated), in output LSBs; docs/format.md's target:
  >= 99% within 1 LSB, none off by more than 2;
* ``real``: the same before the final rounding, a real number of output
  LSBs: the datapath's value (v + b') / 2^Fe against the exact
  (bias + W x + 2^(out_shift-1)) / 2^out_shift, both before the floor and
  the saturation that turn them into int8 (:func:`sparrow.fixedfft.finish`).

:func:`model_fft_errors` measures a model directory; the explorer's report
(:mod:`sparrow.explore.report`) draws their histogram.
"""

import numpy as np

from sparrow import SparrowError

__all__ = ["BC_KINDS", "layer_fft_errors", "model_fft_errors"]

#: Layer kinds that run through the fixed-point FFT datapath.
BC_KINDS = ("bc_linear", "bc_conv2d")


def _prefinish(layer, x):
    """The datapath's value before :func:`~sparrow.fixedfft.finish`: ``(v + b') / 2^Fe`` (float64
    [N, out]), and its int8 result (``sat8(floor(.))``, ReLU), for ``x`` int64 [N, in]."""
    from sparrow import fixedfft as F
    v, c = F.bc_linear_prefinish(layer, x)
    y = F.finish(v, c["bias_adj"], c["fe"], bool(layer.attrs["relu"]))
    return (v + c["bias_adj"]) / float(1 << c["fe"]), y


def _linear_view(layer):
    """A bc_conv2d layer as the bc_linear that runs on its im2col patches."""
    from sparrow.modeldir import Layer
    if layer.kind == "bc_linear":
        return layer
    a = layer.attrs
    conv = ("in_ch", "out_ch", "kh", "kw", "stride", "padding")
    return Layer(layer.name, "bc_linear", {**{k: v for k, v in a.items() if k not in conv},
                                           "in": a["in_ch"] * a["kh"] * a["kw"], "out": a["out_ch"]},
                 layer.params)


def layer_fft_errors(layer, x):
    """``{"output": int64 [M], "real": float64 [M]}``: the errors (output LSBs) of one bc layer on its
    input batch ``x`` (int64, [N, in] or [N, C, H, W] for bc_conv2d; M outputs in all)."""
    from sparrow.sw import golden
    if layer.kind not in BC_KINDS:
        raise SparrowError(f"layer {layer.name!r} ({layer.kind}): not a circulant layer")
    lin = _linear_view(layer)
    x = np.asarray(x, np.int64)
    if layer.kind == "bc_conv2d":
        a = layer.attrs
        cols, _, _ = golden.im2col(x, a["kh"], a["kw"], a["stride"], a["padding"])
        x = cols.reshape(-1, cols.shape[-1])
    real, y = _prefinish(lin, x)
    if not np.array_equal(y, golden.bc_linear_forward(lin, x)):   # the steps above must be the golden's
        raise SparrowError(f"layer {layer.name!r}: the FFT error study disagrees with the golden datapath")
    ideal = golden.bc_linear_ideal(lin, x)
    s = int(lin.attrs["out_shift"])
    exact = golden.bc_linear_ideal_acc(lin, x).astype(np.float64)
    exact = (exact + (2.0 ** (s - 1) if s else 0.0)) / 2.0 ** s
    return {"output": (y - ideal).ravel(), "real": (real - exact).ravel()}


def model_fft_errors(model, codes):
    """``[{"layer", "kind", "k", "outputs", "output", "real"}]`` for every bc layer of ``model`` (a
    :class:`~sparrow.modeldir.Model`) run by the golden model on the int8 inputs ``codes``."""
    from sparrow.sw import golden
    acts = golden.run_layers(model, codes)
    out = []
    for layer, x in zip(model.layers, acts):
        if layer.kind in BC_KINDS:
            err = layer_fft_errors(layer, x)
            out.append({"layer": layer.name, "kind": layer.kind, "k": int(layer.attrs["k"]),
                        "outputs": int(err["output"].size), **err})
    return out
