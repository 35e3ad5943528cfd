"""ComplexMAC: parameter checks and bit-exact cocotb runs on Verilator and Icarus."""

import numpy as np
import pytest

from sparrow.hw.cmac import ComplexMAC, cmac_min_acc_width
from sparrow.tb.cmac_tb import FIELDS, CMACWithFFT, cmac_reference
from sparrow.tb.runner import run_cocotb, to_verilog


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"acc_width": 33, "shift": 4}, ValueError, "Accumulator width must be between 34 and 64, not 33"),
    ({"acc_width": 40.0, "shift": 4}, TypeError, "Accumulator width must be a positive integer, not 40.0"),
    ({"acc_width": 40, "shift": 0}, TypeError, "Shift must be a positive integer, not 0"),
    ({"acc_width": 40, "shift": 41}, ValueError, "Shift must be between 1 and 40, not 41"),
    ({"acc_width": 40, "shift": 4, "lanes": 3}, ValueError, "Lane count must be between 1 and 2, not 3"),
    ({"acc_width": 40, "shift": 4, "out_bits": True}, TypeError,
     "Output width must be a positive integer, not True"),
    ({"acc_width": 34, "shift": 40}, ValueError,
     "Accumulator width 34 cannot hold one product plus the rounding constant of a 40-bit shift"),
])
def test_parameter_errors(kwargs, exc, msg):
    with pytest.raises(exc) as info:
        ComplexMAC(**kwargs)
    assert str(info.value) == msg


def test_min_acc_width():
    assert cmac_min_acc_width(1, 1) == 33
    assert cmac_min_acc_width(16, 8) == 37


def _stimulus(rng, n_sums, max_terms):
    """Sums of 1..max_terms terms on both lanes, idle gaps, full-scale corners."""
    rows = []
    lo, hi = -(1 << 15), (1 << 15) - 1

    def term(first, last, vals=None):
        v = vals if vals is not None else rng.integers(lo, hi + 1, size=6)
        rows.append(dict(x_re=v[0], x_im=v[1], w0_re=v[2], w0_im=v[3], w1_re=v[4], w1_im=v[5],
                         first=first, last=last, valid=1))

    # Full-scale corners: (-2^15)^2 products, both signs, max_terms long, on both lanes.
    for vals in ([lo, lo, lo, lo, hi, lo], [lo, hi, lo, hi, lo, lo], [hi, hi, hi, lo, lo, hi],
                 [lo, 0, hi, 0, lo, 0]):
        for t in range(max_terms):
            term(int(t == 0), int(t == max_terms - 1), vals)
    for _ in range(n_sums):
        n = int(rng.integers(1, max_terms + 1))
        for t in range(n):
            term(int(t == 0), int(t == n - 1))
            if rng.random() < 0.1:
                rows.append(dict(x_re=12345, x_im=-1, w0_re=7, w0_im=7, w1_re=-3, w1_im=9, first=1,
                                 last=1, valid=0))
    return {f: np.array([r[f] for r in rows], np.int64) for f in FIELDS}


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_cmac_bit_exact(tmp_path, simulator):
    """Two lanes, lane 1 on an idle FFT unit's multiplier (as in the engine)."""
    rng = np.random.default_rng(7)
    max_terms, shift, out_bits = 16, 14, 20
    stim = _stimulus(rng, 60 if simulator == "icarus" else 250, max_terms)
    expected = cmac_reference(stim, shift, out_bits)
    clamped = sum(1 for lanes in expected for r, i in lanes if abs(r) >= (1 << 19) - 1 or abs(i) >= (1 << 19) - 1)
    assert clamped >= 4 and len(expected) > 60       # the stimulus exercises the clamp
    assert any(e[0] != e[1] for e in expected)       # the lanes differ
    acc_width = cmac_min_acc_width(max_terms, shift)
    path = tmp_path / "cmac.npz"
    np.savez(path, shift=shift, out_bits=out_bits, **stim)
    run_cocotb(to_verilog(CMACWithFFT(acc_width, shift, out_bits), "cmac"), "cmac",
               "sparrow.tb.cmac_tb", simulator, extra_env={"CMAC_TB_DATA": path},
               log_file=tmp_path / "sim.log")


def test_one_lane_has_no_external_multiplier():
    from amaranth.hdl import Fragment
    one, two = ComplexMAC(40, 4, lanes=1), ComplexMAC(40, 4)
    assert "ext_op" not in one.signature.members and "ext_res" not in one.signature.members
    assert "ext_op" in two.signature.members and "ext_res" in two.signature.members
    Fragment.get(one, None), Fragment.get(two, None)          # both elaborate
