"""Random valid layers and models of every kind, for tests and hardware benches.

``random_layer("sd_linear", rng, in_=16, out=8, k=4)`` returns a
:class:`sparrow.modeldir.Layer` with parameters drawn from ``rng`` (a
``numpy.random.Generator``) inside the format's ranges; shifts are chosen so
outputs use the int8 range without saturating everything.
"""

import numpy as np

from sparrow.modeldir import Layer, Model, validate_model

__all__ = ["random_layer", "random_model"]


def _bias(rng, n, scale):
    return rng.integers(-scale, scale + 1, size=n).astype(np.int32)


def random_layer(kind, rng, *, name=None, in_=16, out=8, k=4, tiles=1, density=0.5, relu=False,
                 out_shift=None, basis_shift=6, z_bits=8, in_ch=2, out_ch=3, kh=3, kw=3, stride=1,
                 padding=1, kernel=2, pool_stride=2):
    """One random valid layer of ``kind`` (conv kinds use in_ch/out_ch/kh/kw/stride/padding)."""
    name = name or kind
    if kind == "maxpool2d":
        return Layer(name, kind, {"kernel": kernel, "stride": pool_stride})
    if kind == "flatten":
        return Layer(name, kind, {})
    conv = kind.endswith("conv2d")
    if conv:
        attrs = {"in_ch": in_ch, "out_ch": out_ch, "kh": kh, "kw": kw, "stride": stride, "padding": padding}
        n_in, n_out = in_ch * kh * kw, out_ch
    else:
        attrs = {"in": in_, "out": out}
        n_in, n_out = in_, out
    base = kind.replace("conv2d", "linear")
    if base == "dense_linear":
        params = {"weight": rng.integers(-128, 128, size=(n_out, n_in)).astype(np.int8),
                  "bias": _bias(rng, n_out, 2000)}
        default_shift = max(1, int(np.log2(128 * 64 * np.sqrt(n_in))) - 6)
    elif base == "sd_linear":
        attrs.update(k=k, basis_shift=basis_shift, z_bits=z_bits)
        sign = rng.integers(-1, 2, size=(n_out, n_in)) * (rng.random((n_out, n_in)) < density)
        params = {"basis": rng.integers(-128, 128, size=(tiles, n_in // k, k, k)).astype(np.int8),
                  "coef_sign": sign.astype(np.int8),
                  "coef_exp": rng.integers(0, 8, size=(n_out, n_in)).astype(np.uint8),
                  "bias": _bias(rng, n_out, 2000)}
        default_shift = max(1, int(np.log2((1 << (z_bits - 1)) * 32 * np.sqrt(n_in * density + 1))) - 6)
    elif base == "bc_linear":
        attrs.update(k=k)
        params = {"w": rng.integers(-128, 128, size=(n_out // k, n_in // k, k)).astype(np.int8),
                  "bias": _bias(rng, n_out, 2000)}
        default_shift = max(1, int(np.log2(128 * 64 * np.sqrt(n_in))) - 6)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    attrs.update(out_shift=default_shift if out_shift is None else out_shift, relu=relu)
    return Layer(name, kind, attrs, params)


def random_model(layers, input_shape, *, name="random", input_scale_exp=-4, output_scale_exp=-3):
    """A validated :class:`~sparrow.modeldir.Model` from a list of layers."""
    model = Model(name=name, input_shape=tuple(input_shape), input_scale_exp=input_scale_exp,
                  output_scale_exp=output_scale_exp, layers=list(layers))
    return validate_model(model)
