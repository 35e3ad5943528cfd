"""ShiftAddPE: parameter checks, and bit-exact cocotb runs on Verilator and Icarus."""

import numpy as np
import pytest

from sparrow.hw.pe import ShiftAddPE, pe_max_terms, pe_min_acc_width, pe_term_bound
from sparrow.tb.pe_tb import STIM_FIELDS, pe_reference
from sparrow.tb.runner import run_cocotb, to_verilog


# ---------------------------------------------------------------- parameters

def test_defaults_and_bound():
    pe = ShiftAddPE()
    assert (pe.act_width, pe.exp_bits, pe.acc_width) == (8, 3, 20)
    assert pe_term_bound(8, 3) == 1 << 14
    assert pe.max_terms == 31 == pe_max_terms(8, 3, 20)
    assert pe_min_acc_width(8, 3, 31) == 20
    assert pe_min_acc_width(8, 3, 32) == 21
    assert "module pe(" in to_verilog(pe, "pe")


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"act_width": 0}, TypeError, "Activation width must be a positive integer, not 0"),
    ({"act_width": 8.0}, TypeError, "Activation width must be a positive integer, not 8.0"),
    ({"act_width": 33}, ValueError, "Activation width must be between 2 and 32, not 33"),
    ({"exp_bits": True}, TypeError, "Exponent width must be a positive integer, not True"),
    ({"exp_bits": 6}, ValueError, "Exponent width must be between 1 and 5, not 6"),
    ({"acc_width": "20"}, TypeError, "Accumulator width must be a positive integer, not '20'"),
    ({"max_terms": 0}, TypeError, "Maximum term count must be a positive integer, not 0"),
    ({"max_terms": 32}, ValueError,
     "Accumulator width 20 cannot hold 32 terms of 8-bit activations shifted by up to 7; "
     "it needs at least 21 bits"),
    ({"acc_width": 15}, ValueError,
     "Accumulator width 15 cannot hold one term of 8-bit activations shifted by up to 7; "
     "it needs at least 16 bits"),
])
def test_parameter_errors(kwargs, exc, msg):
    with pytest.raises(exc) as info:
        ShiftAddPE(**kwargs)
    assert str(info.value) == msg


def test_reference_detects_overflow():
    stim = {f: np.zeros(2, np.int64) for f in STIM_FIELDS}
    stim["act"][:] = -128
    stim["exp"][:] = 7
    stim["valid"][:] = 1
    stim["last"][1] = 1
    assert pe_reference(stim)[0][0] == -2 * (128 << 7)
    with pytest.raises(ValueError):
        pe_reference(stim, acc_width=15)


# ---------------------------------------------------------------- stimulus

def _stimulus(rng, act_width, exp_bits, max_terms, n_random=120):
    """Random sums plus corners; each sum within the PE's documented bounds."""
    lo, hi = -(1 << (act_width - 1)), (1 << (act_width - 1)) - 1
    emax = (1 << exp_bits) - 1
    rows = []

    def add_sum(terms, clear_first=True, gap=0):
        for i, (a, s, e, z) in enumerate(terms):
            rows.append((a, s, e, z, 1, int(clear_first and i == 0), int(i == len(terms) - 1)))
            for _ in range(gap if i < len(terms) - 1 else 0):
                rows.append((int(rng.integers(lo, hi + 1)), 1, emax, 0, 0, 0, 0))

    # Corners: the worst case both signs, max_terms long.
    add_sum([(lo, 1, emax, 0)] * max_terms)            # -(-2^(w-1)) << emax, max_terms times
    add_sum([(lo, 0, emax, 0)] * max_terms)
    add_sum([(hi, 0, emax, 0)] * max_terms)
    add_sum([(lo, 1, emax, 0)] * (max_terms - 1) + [(lo, 0, emax, 0)])
    # Zero codes (sign/exp garbage must be ignored), a single-term sum, a lone zero.
    add_sum([(int(rng.integers(lo, hi + 1)), int(rng.integers(2)), int(rng.integers(emax + 1)), 1)
             for _ in range(7)])
    add_sum([(lo, 0, 0, 0)])
    add_sum([(hi, 1, emax, 1)])
    # clear without valid, then a sum that does not assert clear itself.
    rows.append((0, 0, 0, 0, 0, 1, 0))
    add_sum([(3, 0, 1, 0), (-5, 1, 2, 0)], clear_first=False)
    # Random sums of random length with random bubbles.
    for _ in range(n_random):
        n = int(rng.integers(1, min(max_terms, 300) + 1))
        terms = [(int(rng.integers(lo, hi + 1)), int(rng.integers(2)),
                  int(rng.integers(emax + 1)), int(rng.random() < 0.25)) for _ in range(n)]
        add_sum(terms, gap=int(rng.integers(0, 2)))
    arr = np.array(rows, dtype=np.int64)
    return {f: arr[:, i] for i, f in enumerate(STIM_FIELDS)}


PARAMS = [
    (8, 3, 20),    # the default PE
    (4, 2, 9),     # small: 3 worst-case terms fill the accumulator
    (16, 4, 40),   # z_bits = 16, 15 shifts, 511 terms
]


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("act_width, exp_bits, acc_width", PARAMS)
def test_pe_bit_exact(tmp_path, simulator, act_width, exp_bits, acc_width):
    pe = ShiftAddPE(act_width, exp_bits, acc_width)
    rng = np.random.default_rng(act_width * 100 + exp_bits)
    stim = _stimulus(rng, act_width, exp_bits, pe.max_terms,
                     n_random=40 if act_width == 16 else 150)
    expected = pe_reference(stim, acc_width)           # also proves the stimulus is in bounds
    assert len(expected) > 40
    data = tmp_path / "pe.npz"
    np.savez(data, **stim, act_width=act_width, exp_bits=exp_bits, acc_width=acc_width)
    run_cocotb(to_verilog(pe, "pe"), "pe", "sparrow.tb.pe_tb", simulator,
               extra_env={"PE_TB_DATA": data}, test_dir=tmp_path / "sim")
