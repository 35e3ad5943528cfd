"""The fixed-point FFT datapath of ``bc_linear``: the integer reference for the RTL.

Everything here is exact integer arithmetic on numpy int64 and is specified in
``docs/format.md`` ("bc_linear: the fixed-point FFT datapath"); the hardware in
``sparrow.hw.fft``/``cmac``/``bc_engine`` reproduces it bit for bit.  Summary
(k = 2**L, H = k/2 + 1 bins, nb = in/k input blocks, F = ``fft_frac``):

1. Input blocks are paired, z = x[2p] + i*x[2p+1], pre-shifted by g = 7 - L
   bits, and transformed by :func:`fft_int` (radix-2 DIT, 16-bit data, Q14
   twiddles, one rounding per butterfly output, no per-stage scaling).
2. :func:`split_spectra` separates the pair: X = 2*DFT(x)*2**g, 16-bit.
3. Weight spectra :func:`weight_spectra` are round(DFT(w) * 2**(8 - L - R)), 16-bit,
   R = ``ws_shift`` (optional attribute in [0, 8 - L], default 0; R = 8 - L stores
   the integer spectra round(DFT(w)), 8 + L bits, what the compressor writes).
4. :func:`cmac` accumulates Y_i[m] = sum_j W_ij[m] X_j[m] exactly, then
   rounds by s1 = 16 - 2L - Fe + out_shift - R bits (Fe = min(F, out_shift)) and
   clamps each component to 20 bits.
5. Output blocks are paired, Z = Y[2q] + i*Y[2q+1] (Hermitian extension), and
   transformed by the inverse FFT: a block exponent e brings the 21-bit input
   within 15 bits, then every stage halves (rounded); v = result * 2**e.
6. y = sat8(floor((v + b') / 2**Fe)) with the adjusted bias
   b' = floor((bias + 2**(out_shift-1)) / 2**(out_shift - Fe)); then ReLU.
"""

import math

import numpy as np

from sparrow import SparrowError

__all__ = [
    "DATA_BITS", "TW_FRAC", "YQ_BITS", "DEFAULT_FRAC", "log2k", "frac_bits", "ws_shift", "max_ws_shift",
    "bitrev",
    "twiddles", "fft_int", "split_spectra", "pair_blocks", "forward_spectra",
    "weight_spectra", "cmac", "ifft_input", "adjusted_bias", "finish", "bc_linear_prefinish",
    "bc_linear_forward",
    "bc_linear_float", "layer_constants",
]

DATA_BITS = 16          # FFT data, spectra and twiddle words (signed)
TW_FRAC = 14            # twiddles are Q1.14: round(2**14 * cos), round(2**14 * sin)
YQ_BITS = 20            # MAC results are clamped to [-2**19, 2**19 - 1]
ZBUF_BITS = 22          # Hermitian-paired IFFT input words (before the block exponent)
Z_LIMIT = 1 << 14       # after the block exponent, IFFT input components lie in [-2**14, 2**14]
E_MAX = ZBUF_BITS - 15  # largest block exponent
WS_FRAC = 30            # precision of the integer cosine table for the weight spectra
# Default fractional bits carried through the IFFT (optional attribute ``fft_frac``).
DEFAULT_FRAC = 5
_DMAX = (1 << (DATA_BITS - 1)) - 1
_DMIN = -(1 << (DATA_BITS - 1))


def _i64(a):
    return np.asarray(a, dtype=np.int64)


def rshift(v, s):
    """Round-half-up arithmetic shift: floor((v + 2**(s-1)) / 2**s) for s >= 1, v << -s for s <= 0."""
    v = _i64(v)
    s = int(s)
    if s <= 0:
        return v << np.int64(-s)
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def sat(v, bits):
    """Clamp to the signed ``bits``-bit range."""
    lim = 1 << (bits - 1)
    return np.clip(_i64(v), -lim, lim - 1)


def log2k(k):
    """L with k == 2**L, for k in {4, 8, 16, 32, 64}."""
    if k not in (4, 8, 16, 32, 64):
        raise SparrowError(f"FFT size must be a power of two in [4, 64], not {k!r}")
    return k.bit_length() - 1


def frac_bits(attrs):
    """Fe = min(fft_frac, out_shift), the fractional output bits of the IFFT."""
    f = attrs.get("fft_frac", DEFAULT_FRAC)
    return min(int(f), int(attrs["out_shift"]))


def max_ws_shift(k):
    """The largest ``ws_shift`` of an FFT size k: 8 - L (weight spectra round(DFT(w)), integers)."""
    return 8 - log2k(k)


def ws_shift(attrs):
    """R, the weight spectra's right shift: attribute ``ws_shift`` (default 0), in [0, 8 - L].

    Raises
    ------
    SparrowError
        ``"ws_shift must be an integer between 0 and {8 - L} for k = {k}, not {r!r}"``.
    """
    r = attrs.get("ws_shift", 0)
    hi = max_ws_shift(int(attrs["k"]))
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r <= hi:
        raise SparrowError(f"ws_shift must be an integer between 0 and {hi} for k = {attrs['k']}, not {r!r}")
    return int(r)


def bitrev(n, bits):
    """Reverse the low ``bits`` bits of integer ``n``."""
    r = 0
    for _ in range(bits):
        r = (r << 1) | (n & 1)
        n >>= 1
    return r


def twiddles(k):
    """(C, S) int64 [k/2]: round(2**14 cos(2 pi t / k)), round(2**14 sin(2 pi t / k))."""
    t = np.arange(k // 2)
    c = np.array([round(math.cos(2 * math.pi * i / k) * (1 << TW_FRAC)) for i in t], dtype=np.int64)
    s = np.array([round(math.sin(2 * math.pi * i / k) * (1 << TW_FRAC)) for i in t], dtype=np.int64)
    return c, s


def _check_range(re, im, what):
    for part in (re, im):
        if part.size and (part.max() > _DMAX or part.min() < _DMIN):
            raise AssertionError(f"{what}: a value left the {DATA_BITS}-bit range")


def fft_int(re, im, inverse=False):
    """The integer radix-2 DIT FFT on the last axis (length k), as the RTL computes it.

    ``re``/``im`` are int64 [..., k], each value a signed 22-bit word.  Returns
    ``(re, im, e)``: the 16-bit result and the block exponent e [...]; the
    transform of the input is ``(re + i im) * 2**e`` (times 1/k when inverse).

    1. Block exponent: e is the least integer in [0, 7] such that every
       component z of the block satisfies -2**(14+e) <= z < 2**(14+e); each
       component becomes rshift(z, e) (so it lies in [-2**14, 2**14]).
    2. The block is permuted to bit-reversed order (A[bitrev(n)] = z[n]).
    3. Stage s = 0 .. L-1 (span h = 2**s) combines a = A[i], b = A[i + h] for
       every i with bit s clear, with twiddle w = C[t] -/+ i S[t],
       t = (i mod h) * k / (2h) (minus: forward, plus: inverse):
       p = b * w exactly (pr = br*wr - bi*wi, pi = br*wi + bi*wr), then
       A[i] = rshift(a * 2**14 + p, 14 + d), A[i + h] = rshift(a * 2**14 - p, 14 + d)
       per component, d = 0 forward and 1 inverse (the inverse halves in every stage).
    4. The result is A in natural order.

    Every intermediate fits 16 bits when the forward input is bounded by
    2**(14 - L) in magnitude per component (x * 2**(7-L) for int8 x) and for
    any inverse input; this is checked (AssertionError) as it is a proof obligation.
    """
    re, im = _i64(re), _i64(im)
    for part in (re, im):
        if part.size and (part.max() >= (1 << (ZBUF_BITS - 1)) or part.min() < -(1 << (ZBUF_BITS - 1))):
            raise ValueError(f"fft_int: input outside the signed {ZBUF_BITS}-bit range")
    k = re.shape[-1]
    L = log2k(k)
    e = block_exponent(re, im)
    perm = np.array([bitrev(n, L) for n in range(k)])
    inv_perm = np.argsort(perm)           # A[bitrev(n)] = x[n]
    ar = rshift_var(re[..., inv_perm], e[..., None])
    ai = rshift_var(im[..., inv_perm], e[..., None])
    c, s = twiddles(k)
    sh = TW_FRAC + (1 if inverse else 0)
    for st in range(L):
        h = 1 << st
        idx = np.arange(k).reshape(-1, 2 * h)
        lo, hi = idx[:, :h].ravel(), idx[:, h:].ravel()
        t = (lo % h) * (k // (2 * h))
        wr, wi = c[t], (s[t] if inverse else -s[t])
        br, bi = ar[..., hi], ai[..., hi]
        pr = br * wr - bi * wi
        pi = br * wi + bi * wr
        a_r, a_i = ar[..., lo] << TW_FRAC, ai[..., lo] << TW_FRAC
        ar[..., lo], ai[..., lo] = rshift(a_r + pr, sh), rshift(a_i + pi, sh)
        ar[..., hi], ai[..., hi] = rshift(a_r - pr, sh), rshift(a_i - pi, sh)
        _check_range(ar, ai, f"fft_int stage {st}")
    return ar, ai, e


def split_spectra(zr, zi):
    """Separate the spectrum Z of z = xa + i xb (int64 [..., k]) into bins 0..k/2.

    With P = Z[m], Q = Z[(k - m) mod k]:  Xa = (Pr + Qr, Pi - Qi),
    Xb = (Pi + Qi, Qr - Pr), each component saturated to 16 bits.  These are
    2*DFT(xa) and 2*DFT(xb) at the scale of Z.  Returns (ar, ai, br, bi), [..., k/2+1].
    """
    zr, zi = _i64(zr), _i64(zi)
    k = zr.shape[-1]
    m = np.arange(k // 2 + 1)
    q = (k - m) % k
    pr, pi, qr, qi = zr[..., m], zi[..., m], zr[..., q], zi[..., q]
    b = DATA_BITS
    return sat(pr + qr, b), sat(pi - qi, b), sat(pi + qi, b), sat(qr - pr, b)


def pair_blocks(x, k):
    """x int64 [N, nb*k] -> (first, second) [N, ceil(nb/2), k]; a missing odd block is zero."""
    x = _i64(x)
    n, size = x.shape
    nb = size // k
    blocks = x.reshape(n, nb, k)
    if nb % 2:
        blocks = np.concatenate([blocks, np.zeros((n, 1, k), np.int64)], axis=1)
    return blocks[:, 0::2], blocks[:, 1::2]


def forward_spectra(x, k):
    """Input spectra X int64 (re, im) [N, nb, k/2+1] of int8 x [N, nb*k] (scale 2**(8 - L))."""
    x = _i64(x)
    nb = x.shape[1] // k
    g = 7 - log2k(k)
    xa, xb = pair_blocks(x, k)
    zr, zi, e = fft_int(xa << g, xb << g)
    assert not e.any(), "forward block exponent must be 0 for int8 input"
    ar, ai, br, bi = split_spectra(zr, zi)
    n, npair, h = ar.shape
    re = np.stack([ar, br], axis=2).reshape(n, 2 * npair, h)[:, :nb]
    im = np.stack([ai, bi], axis=2).reshape(n, 2 * npair, h)[:, :nb]
    return re, im


def weight_spectra(w, shift=0):
    """Weight spectra (re, im) int64 [out/k, in/k, k/2+1] of w int8 [out/k, in/k, k].

    With the integer tables C30[t] = round(2**30 cos(2 pi t/k)), S30[t] =
    round(2**30 sin(2 pi t/k)), t in [0, k):  Wr[m] = sum_n w[n] C30[mn mod k],
    Wi[m] = -sum_n w[n] S30[mn mod k], then each is rshift(., 22 + L + shift) and
    saturated to 16 bits: round(DFT(w) * 2**(8 - L - shift)); ``shift`` is the layer's
    ``ws_shift`` R (:func:`ws_shift`; 8 - L gives round(DFT(w)), 8 + L bits signed).
    """
    w = _i64(w)
    k = w.shape[-1]
    L = log2k(k)
    t = np.arange(k)
    c30 = np.array([round(math.cos(2 * math.pi * i / k) * (1 << WS_FRAC)) for i in t], dtype=np.int64)
    s30 = np.array([round(math.sin(2 * math.pi * i / k) * (1 << WS_FRAC)) for i in t], dtype=np.int64)
    mn = (np.arange(k // 2 + 1)[:, None] * t[None, :]) % k        # [H, k]
    wr = np.einsum("abn,mn->abm", w, c30[mn])
    wi = -np.einsum("abn,mn->abm", w, s30[mn])
    sh = WS_FRAC - (8 - L) + int(shift)
    return sat(rshift(wr, sh), DATA_BITS), sat(rshift(wi, sh), DATA_BITS)


def cmac_shift(k, out_shift, fe, ws=0):
    """s1 = 16 - 2L - Fe + out_shift - R: the rounding shift from the MAC sum to the IFFT input
    (R = ``ws``, the weight spectra's shift; s1 >= 8 - L >= 2 for R <= 8 - L)."""
    return 16 - 2 * log2k(k) - fe + out_shift - ws


def cmac(wr, wi, xr, xi, s1):
    """Y[N, out/k, H] = clamp14(rshift(sum_j W[i, j] * X[j], s1)) per component (exact sum)."""
    yr = np.einsum("ijm,njm->nim", wr, xr) - np.einsum("ijm,njm->nim", wi, xi)
    yi = np.einsum("ijm,njm->nim", wr, xi) + np.einsum("ijm,njm->nim", wi, xr)
    return sat(rshift(yr, s1), YQ_BITS), sat(rshift(yi, s1), YQ_BITS)


def ifft_input(ar, ai, br, bi):
    """Z [..., k] = Ya + i Yb with Hermitian extension, from bins 0..k/2 of both.

    Z[m] = (Ar - Bi, Ai + Br) for m in [0, k/2];  Z[k - m] = (Ar + Bi, Br - Ai)
    for m in [1, k/2 - 1].
    """
    h = ar.shape[-1]
    k = 2 * (h - 1)
    zr = np.zeros(ar.shape[:-1] + (k,), np.int64)
    zi = np.zeros_like(zr)
    zr[..., :h], zi[..., :h] = ar - bi, ai + br
    m = np.arange(1, h - 1)
    zr[..., k - m], zi[..., k - m] = ar[..., m] + bi[..., m], br[..., m] - ai[..., m]
    return zr, zi


def block_exponent(zr, zi):
    """e [...]: the least e in [0, E_MAX] with -2**(14+e) <= z < 2**(14+e) for every component of a block."""
    e = np.zeros(zr.shape[:-1], np.int64)
    for cand in range(E_MAX, -1, -1):
        lim = Z_LIMIT << cand
        fits = ((zr >= -lim) & (zr < lim) & (zi >= -lim) & (zi < lim)).all(axis=-1)
        e = np.where(fits, cand, e)
    return e


def rshift_var(v, e):
    """rshift with a per-element shift e >= 0 (broadcast): floor((v + 2**(e-1)) / 2**e), v for e = 0."""
    v, e = _i64(v), _i64(e)
    half = np.where(e > 0, np.int64(1) << np.maximum(e - 1, 0), 0)
    return (v + half) >> e


def adjusted_bias(bias, out_shift, fe):
    """b' = floor((bias + R) / 2**(out_shift - Fe)), R = 2**(out_shift-1) (0 when out_shift == 0)."""
    bias = _i64(bias)
    r = (1 << (out_shift - 1)) if out_shift >= 1 else 0
    return (bias + r) >> np.int64(out_shift - fe)


def finish(v, bias_adj, fe, use_relu):
    """y = sat8(floor((v + b') / 2**Fe)), then ReLU."""
    y = sat(((_i64(v) + bias_adj) >> np.int64(fe)), 8)
    return np.maximum(y, 0) if use_relu else y


def layer_constants(layer):
    """The per-layer constants of the datapath: dict k, L, g, fe, ws (R), s1, nb, nbo, wr, wi, bias_adj."""
    a = layer.attrs
    k = int(a["k"])
    L = log2k(k)
    fe = frac_bits(a)
    ws = ws_shift(a)
    wr, wi = weight_spectra(layer.params["w"], ws)
    return {"k": k, "L": L, "g": 7 - L, "fe": fe, "ws": ws, "s1": cmac_shift(k, a["out_shift"], fe, ws),
            "nb": a["in"] // k, "nbo": a["out"] // k, "wr": wr, "wi": wi,
            "bias_adj": adjusted_bias(layer.params["bias"], a["out_shift"], fe)}


def bc_linear_prefinish(layer, x):
    """Steps 1-5 of bc_linear: ``(v, c)``, the IFFT output ``v`` (int64 [N, out], ``Fe`` fractional
    bits, before :func:`finish`) and the layer's constants ``c`` (:func:`layer_constants`)."""
    c = layer_constants(layer)
    x = _i64(x)
    if x.ndim != 2 or x.shape[1] != layer.attrs["in"]:
        raise SparrowError(f"layer {layer.name!r}: input has shape {list(x.shape)}, "
                           f"expected [N, {layer.attrs['in']}]")
    k = c["k"]
    xr, xi = forward_spectra(x, k)
    yr, yi = cmac(c["wr"], c["wi"], xr, xi, c["s1"])
    n = x.shape[0]
    nbo = c["nbo"]
    if nbo % 2:
        pad = np.zeros((n, 1, yr.shape[-1]), np.int64)
        yr, yi = np.concatenate([yr, pad], 1), np.concatenate([yi, pad], 1)
    zr, zi = ifft_input(yr[:, 0::2], yi[:, 0::2], yr[:, 1::2], yi[:, 1::2])
    vr, vi, e = fft_int(zr, zi, inverse=True)
    vr, vi = vr << e[..., None], vi << e[..., None]
    return np.stack([vr, vi], axis=2).reshape(n, -1)[:, :layer.attrs["out"]], c


def bc_linear_forward(layer, x):
    """bc_linear through the fixed-point FFT datapath: x int64 [N, in] -> int64 [N, out]."""
    v, c = bc_linear_prefinish(layer, x)
    return finish(v, c["bias_adj"], c["fe"], bool(layer.attrs["relu"]))


def bc_linear_float(layer, x):
    """Float64 reference of the same scaled datapath without rounding (for error studies)."""
    a = layer.attrs
    k = a["k"]
    w = np.asarray(layer.params["w"], np.float64)
    xb = np.asarray(x, np.float64).reshape(len(x), -1, k)
    y = np.fft.irfft(np.einsum("ijm,njm->nim", np.fft.rfft(w), np.fft.rfft(xb)), n=k)
    return y.reshape(len(x), -1) + layer.params["bias"]
