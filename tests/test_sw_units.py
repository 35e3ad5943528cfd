"""Quantisers, pruning criteria, drop-in layers and storage accounting."""

import math

import numpy as np
import pytest
import torch

from sparrow.modeldir import Layer
from sparrow.sw.layers import BCConv2d, BCLinear, SDConv2d, SDLinear, circulant_expand, circulant_project
from sparrow.sw.prune import BlockMagnitude, ReweightedL1, block_mask, cubic_density
from sparrow.sw.quant import IntQuantizer, Pow2Quantizer, fake_quant, pow2_exp_for
from sparrow.sw.storage import layer_storage, model_storage


def test_fake_quant_rounds_half_up_and_clamps():
    v = torch.tensor([-1.5, -0.5, 0.5, 1.5, 2.49, 1000.0, -1000.0], dtype=torch.float64)
    assert fake_quant(v, 0).tolist() == [-1.0, 0.0, 1.0, 2.0, 2.0, 127.0, -128.0]
    assert fake_quant(torch.tensor([0.3]), -2).tolist() == [0.25]
    assert pow2_exp_for(127.0) == 0 and pow2_exp_for(127.5) == 1 and pow2_exp_for(1.0) == -6


def test_int_quantizer_codes_and_scale():
    w = torch.tensor([[0.5, -0.25], [0.126, 0.0]])
    codes, e = IntQuantizer(8).codes(w)
    assert e == -7 and codes.tolist() == [[64, -32], [16, 0]]
    q, e2 = IntQuantizer(8)(w)
    assert e2 == e and torch.equal(q, codes.float() * 2.0 ** e)


def test_pow2_quantizer_values_window_and_mask():
    w = torch.tensor([[1.0, -0.7, 0.74, 0.0009], [3.1, -2.9, 0.3, 0.01]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 1]])
    sign, code, e_lo = Pow2Quantizer(3).codes(w, mask)
    # max 3.1 -> e_hi = round(log2 3.1) = 2, window [0, 2]
    assert e_lo == 0
    assert sign.tolist() == [[1, -1, 1, 1], [1, -1, 0, 1]]
    q, _ = Pow2Quantizer(3)(w, mask)
    assert q.tolist() == [[1.0, -1.0, 1.0, 1.0], [4.0, -4.0, 0.0, 1.0]]
    # nearest in the log domain: 0.70 -> 0.5 and 0.72 -> 1 (threshold sqrt(1/2)) in a wide window
    q8, _ = Pow2Quantizer(8)(torch.tensor([0.70, 0.72, 1.0, -0.3]))
    assert q8.tolist() == [0.5, 1.0, 1.0, -0.25]
    for v in q8.tolist():
        assert math.log2(abs(v)).is_integer()


def test_block_mask_keeps_whole_p_by_1_blocks():
    torch.manual_seed(0)
    w = torch.randn(8, 6)
    scores = BlockMagnitude().scores(w, 4)
    assert scores.shape == (2, 6)
    m = block_mask(scores, 0.5, 4)
    assert m.shape == (8, 6) and int(m.sum()) == 6 * 4
    blocks = m.reshape(2, 4, 6)
    assert torch.all((blocks.sum(1) == 0) | (blocks.sum(1) == 4))
    kept = scores.flatten().topk(6).indices
    assert torch.all(m.reshape(2, 4, 6)[:, 0, :].flatten()[kept] == 1)
    assert cubic_density(0, 10, 0.1) == 1.0 and cubic_density(10, 10, 0.1) == pytest.approx(0.1)


def test_reweighted_l1_penalises_small_blocks_more():
    w = torch.tensor([[1.0, 0.01], [1.0, 0.01]], requires_grad=True)
    crit = ReweightedL1(lam=1.0, eps=1e-3)
    crit.update(w, 2)
    crit.penalty(w, 2).backward()
    g = w.grad.abs()
    assert g[0, 1] > 10 * g[0, 0]


def test_sd_decompose_exact_without_quantisation():
    torch.manual_seed(1)
    w = torch.randn(8, 12)
    sd = SDLinear(12, 8, k=4, tiles=2)
    err = sd.decompose_(w, iters=3)
    assert err < 1e-5
    assert torch.allclose(sd.weight_matrix(), w, atol=1e-5)


def test_sd_conv_float_forward_is_conv_with_composed_weight():
    torch.manual_seed(2)
    sd = SDConv2d(2, 4, 3, padding=1, k=3, tiles=2)
    with torch.no_grad():
        sd.coef.normal_()
        sd.basis.normal_()
    x = torch.randn(3, 2, 5, 5)
    ref = torch.nn.functional.conv2d(x, sd.weight_matrix().reshape(4, 2, 3, 3), sd.bias, padding=1)
    assert torch.allclose(sd(x), ref, atol=1e-5)


def _circulant_dense(w):
    """docs/format.md: block (i, j) row r col c holds w[i, j, (r - c) mod k] (written out element by element)."""
    bo, bi, k = w.shape
    dense = torch.zeros(bo * k, bi * k, dtype=w.dtype)
    for i in range(bo):
        for j in range(bi):
            for r in range(k):
                for c in range(k):
                    dense[i * k + r, j * k + c] = w[i, j, (r - c) % k]
    return dense


def test_bc_fft_forward_equals_circulant_matrix():
    torch.manual_seed(3)
    bc = BCLinear(16, 8, k=4).double()
    x = torch.randn(5, 16, dtype=torch.float64)
    dense = _circulant_dense(bc.w.detach())
    with torch.no_grad():
        assert torch.allclose(bc(x), x @ dense.t() + bc.bias, atol=1e-9)
        assert torch.equal(circulant_expand(bc.w), dense)
    assert torch.allclose(circulant_project(dense, 4), bc.w)
    conv = BCConv2d(4, 8, 1, k=4).double()
    xi = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(xi, _circulant_dense(conv.w.detach()).reshape(8, 4, 1, 1), conv.bias)
        assert torch.allclose(conv(xi), ref, atol=1e-9)


def test_layer_validation_messages():
    with pytest.raises(ValueError, match="K must be a positive integer dividing in"):
        SDLinear(10, 4, k=3)
    with pytest.raises(ValueError, match=r"^Block must be a positive integer at most out/tiles \(3\), not 4$"):
        SDLinear(8, 6, k=2, tiles=2, block=4)
    with pytest.raises(ValueError, match="K must be a power of two"):
        BCLinear(12, 12, k=6)
    with pytest.raises(TypeError, match="In features must be a positive integer"):
        SDLinear(0, 4, k=1)


def test_storage_counts_every_bit_by_hand():
    sign = np.zeros((8, 16), np.int8)
    sign[0:4, 3] = [1, -1, 0, 1]          # one stored block (P=4) with a zero inside
    sign[4:8, 10] = 1                     # a second block, full
    exp = np.zeros((8, 16), np.uint8)
    exp[0:4, 3] = [0, 2, 0, 5]
    layer = Layer("fc", "sd_linear", {"in": 16, "out": 8, "k": 2, "basis_shift": 0, "out_shift": 0, "relu": False},
                  {"basis": np.zeros((1, 8, 2, 2), np.int8), "coef_sign": sign, "coef_exp": exp,
                   "bias": np.zeros(8, np.int32)})
    s = layer_storage(layer, block=4)
    # exps used {0, 2, 5} -> 6 signed values + zero = 7 -> 3 bits; 2 blocks * 4 codes * 3 bits = 24
    assert s["code_bits"] == 24
    # bitmask 2*16 = 32 bits vs CSR 2*4 + 2*5 = 18 bits
    assert s["index_bits"] == 18
    assert s["basis_bits"] == 8 * 16 * 2
    assert s["weight_bits"] == 24 + 18 + 256 + 16 and s["fp32_bits"] == 32 * 128 and s["bias_bits"] == 256
    dense = Layer("d", "dense_linear", {"in": 4, "out": 2, "out_shift": 0, "relu": False},
                  {"weight": np.ones((2, 4), np.int8), "bias": np.zeros(2, np.int32)})
    assert layer_storage(dense)["weight_bits"] == 64 + 16


def test_pow2_codes_equal_for_float32_model_and_float64_copy():
    """Regression: log2 near the sqrt(2) boundary must round the same in a float32 model and its float64 copy."""
    boundary = torch.tensor([2.0 ** (e + 0.5) for e in range(-8, 0)], dtype=torch.float64)
    w32 = torch.cat([boundary * (1 + d) for d in (-1e-7, -3e-8, 0.0, 3e-8, 1e-7)]).float()
    w32 = torch.cat([w32, -w32, torch.tensor([1e-12, 0.9])])
    s32, c32, e32 = Pow2Quantizer(8).codes(w32)
    s64, c64, e64 = Pow2Quantizer(8).codes(w32.double())
    assert e32 == e64 and torch.equal(s32, s64) and torch.equal(c32, c64)
    q32 = Pow2Quantizer(8)(w32.double().requires_grad_())[0]
    exact = s64.double() * torch.exp2((c64 + e64).double())
    assert torch.equal(q32.detach(), exact)          # the STE adds an exact zero
    v = torch.tensor([1e-20, 0.49999999999, 2.5, -7.5, 1e9 + 0.5], dtype=torch.float64, requires_grad=True)
    assert fake_quant(v, 0, -2 ** 40, 2 ** 40).detach().tolist() == [0.0, 0.0, 3.0, -7.0, 1e9 + 1]


def test_pow2_quantizer_frozen_window_ignores_new_maximum():
    q = Pow2Quantizer(4)
    w = torch.tensor([[1.0, 0.3, -0.1]])
    assert q.window(w) == (-3, 0)
    q.freeze(w)
    grown = torch.tensor([[8.0, 0.3, -0.01]])
    assert q.window(grown) == (-3, 0)
    sign, code, e_lo = q.codes(grown)
    # 8 saturates at 2**0, 0.01 at 2**-3: the codes are those of the frozen window
    assert e_lo == -3 and code.tolist() == [[3, 1, 0]] and sign.tolist() == [[1, 1, -1]]
    assert q(grown)[0].tolist() == [[1.0, 0.25, -0.125]]


def _kept_block_energy(w, block, keep):
    """Energy of the ``keep`` largest P x 1 blocks (P consecutive rows of one column) of w, by loops."""
    energies = sorted((sum(w[r + i, c] ** 2 for i in range(block)) for r in range(0, w.shape[0], block)
                       for c in range(w.shape[1])), reverse=True)
    return float(sum(energies[:keep]))


def test_blocks_follow_the_pe_row_blocks_with_a_short_last_block():
    """10 rows in blocks of 4 (the row blocks of a 4-PE array): rows 0-3, 4-7 and 8-9, per tile."""
    from sparrow.sw.prune import block_norms
    from sparrow.sw.storage import layer_storage
    from sparrow.modeldir import Layer
    torch.manual_seed(1)
    w = torch.randn(20, 6)                                      # two tiles of 10 rows
    scores = block_norms(w, 4, tiles=2)
    assert scores.shape == (6, 6)
    assert torch.allclose(scores[2], w[8:10].norm(dim=0)) and torch.allclose(scores[5], w[18:20].norm(dim=0))
    m = block_mask(scores, 0.5, 4, tiles=2, rows=10)
    assert m.shape == (20, 6)
    for t in range(2):
        for r0, r1 in ((0, 4), (4, 8), (8, 10)):
            blk = m[t * 10 + r0:t * 10 + r1]
            assert torch.all((blk.sum(0) == 0) | (blk.sum(0) == r1 - r0))
    kept = sum(int((m[t * 10 + r0:t * 10 + r1].sum(0) > 0).sum()) for t in range(2)
               for r0, r1 in ((0, 4), (4, 8), (8, 10)))
    assert kept == 18                                           # half of the 2 x 3 x 6 blocks
    # storage: a stored short block holds its 2 rows' codes, not 4
    sign = np.zeros((10, 6), np.int8)
    sign[8:10, 0] = 1                                           # one block of the short last row block
    sign[0:4, 1] = -1                                           # one full block
    lay = Layer("fc", "sd_linear", {"in": 6, "out": 10, "k": 1, "basis_shift": 0, "out_shift": 0,
                                    "relu": False, "z_bits": 8},
                {"basis": np.ones((1, 6, 1, 1), np.int8), "coef_sign": sign,
                 "coef_exp": np.zeros((10, 6), np.uint8), "bias": np.zeros(10, np.int32)})
    st = layer_storage(lay, 4)
    assert st["blocks"] == 2 and st["code_bits"] == (2 + 4) * 1        # two values: +-1, 1-bit codes


def test_block_permutation_keeps_more_block_energy_and_the_function():
    from torch import nn
    from sparrow.sw.methods import ADMM, ADMMConfig
    from sparrow.sw.qmodel import block_permutation, convert
    # rows 0, 2, 4, 6 use columns 0..1, rows 1, 3, 5, 7 columns 2..3: interleaved, P = 4 blocks mix them
    w = np.zeros((8, 4))
    w[0::2, :2] = 1.0
    w[1::2, 2:] = 1.0
    perm = block_permutation(w, 4, 0.5)
    assert sorted(perm.tolist()) == list(range(8))
    keep = 4
    assert _kept_block_energy(w, 4, keep) == 8.0 and _kept_block_energy(w[perm], 4, keep) == 16.0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    cfg = ADMMConfig(input_shape=(6,), input_exp=-6, density={"fc1": 0.5, "fc2": 1.0}, block=4)
    q0 = convert(model, ADMM(cfg))
    q1 = convert(model, ADMM(cfg.replace(permute=True)))
    x = torch.rand(5, 6)
    with torch.no_grad():
        assert torch.allclose(q0(x), q1(x), atol=1e-6)
        assert torch.allclose(q1(x), model(x), atol=1e-6)
        assert not torch.equal(q0.net[0].coef, q1.net[0].coef)


def test_method_configs_are_frozen_validated_and_recorded():
    import dataclasses
    from sparrow.sw.methods import METHODS, SmartDealConfig
    assert list(METHODS) == ["smartdeal", "circulant", "admm", "dense-int8"]
    cfg = SmartDealConfig(input_shape=[64], input_exp=-6, density={"fc1": 0.2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.density = 0.5
    with pytest.raises(TypeError):
        cfg.density["fc1"] = 0.5
    for change, msg in ((dict(density=1.5), "density must be a number in (0, 1], not 1.5"),
                        (dict(density={"fc2": 0}), "density['fc2'] must be a number in (0, 1], not 0"),
                        (dict(levels=9), "levels must be between 1 and 8, not 9"),
                        (dict(criterion="random"), "criterion must be one of magnitude, reweighted-l1, not 'random'"),
                        (dict(prune_epochs=-1), "prune_epochs must be an integer in [0, 100000], not -1"),
                        (dict(break_even=0.5), "break_even must map layer names to ratios in [0, 1], not 0.5")):
        with pytest.raises(ValueError) as exc:
            cfg.replace(**change)
        assert str(exc.value) == msg
    with pytest.raises(ValueError, match="smartdeal has no option 'rho'"):
        cfg.replace(rho=1.0)
    later = cfg.replace(qat_lr=1e-4, permute=True)
    assert cfg.qat_lr is None and cfg.epochs == 30 + 10 + 10
    rec = later.record()
    # the defaults in their order, then the options set, then the context
    assert list(rec)[:3] == ["k", "tiles", "block"] and rec["density"] == {"fc1": 0.2}
    assert list(rec)[-6:] == ["qat_lr", "permute", "input_shape", "input_exp", "name", "seed"]
    assert rec["input_shape"] == (64,)
    for name, cls in METHODS.items():
        assert cls.Config.method == name
        assert cls.Config(input_shape=(4,), input_exp=-6).epochs > 0


def test_criteria_plug_in_through_their_hooks():
    from sparrow.sw.prune import CRITERIA, make_criterion
    w = torch.tensor([[1.0, 0.01], [1.0, 0.01]], requires_grad=True)
    layer = type("L", (), {"coef": w, "block": 2, "tiles": 1})()
    assert set(CRITERIA) == {"magnitude", "reweighted-l1"}
    assert make_criterion("magnitude").regulariser([layer]) is None
    reg = make_criterion("reweighted-l1", 0.5).regulariser([layer])
    # 0.5 * sum_b ||b|| / (||b|| + 1e-3): two blocks of norms sqrt(2) and 0.01 * sqrt(2)
    n0, n1 = math.sqrt(2), 0.01 * math.sqrt(2)
    assert float(reg().detach()) == pytest.approx(0.5 * (n0 / (n0 + 1e-3) + n1 / (n1 + 1e-3)), rel=1e-5)


def test_block_mask_breaks_ties_by_index():
    from sparrow.sw.prune import block_mask
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0], [0.5, 2.0, 3.0, 0.0]])      # five blocks tie at 2.0
    m = block_mask(scores, 0.5, 1)                                             # keep 4 of 8
    assert m.tolist() == [[0, 1, 1, 1], [0, 0, 1, 0]]


def test_numerics_pin_records_what_is_in_effect(monkeypatch):
    from sparrow.sw.numerics import pin
    monkeypatch.delenv("SPARROW_NATIVE_NUMERICS", raising=False)     # whatever the caller's environment says
    monkeypatch.delenv("MKL_CBWR", raising=False)
    state = pin(1)
    assert state["threads"] == 1 and state["onednn"] is False and state["mkl_cbwr"] == "COMPATIBLE"
    assert set(state) == {"cpu_capability", "mkl_cbwr", "onednn", "threads", "torch"}
