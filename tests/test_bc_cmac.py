"""ComplexMAC: parameter checks and bit-exact cocotb runs on Verilator and Icarus."""

import numpy as np
import pytest

from sparrow.hw.cmac import ComplexMAC, cmac_min_acc_width
from sparrow.tb.cmac_tb import FIELDS, cmac_reference
from sparrow.tb.runner import run_cocotb, to_verilog


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"acc_width": 33, "shift": 4}, ValueError, "Accumulator width must be between 34 and 64, not 33"),
    ({"acc_width": 40.0, "shift": 4}, TypeError, "Accumulator width must be a positive integer, not 40.0"),
    ({"acc_width": 40, "shift": 0}, TypeError, "Shift must be a positive integer, not 0"),
    ({"acc_width": 40, "shift": 41}, ValueError, "Shift must be between 1 and 40, not 41"),
    ({"acc_width": 40, "shift": 4, "lanes": 5}, ValueError, "Lane count must be between 1 and 4, not 5"),
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


def _stimulus(rng, n_sums, max_terms, lanes):
    """Interleaved sums of 1..max_terms terms on every lane, idle gaps, full-scale corners."""
    rows = []
    lo, hi = -(1 << 15), (1 << 15) - 1

    def term(lane, first, last, vals=None):
        v = vals if vals is not None else rng.integers(lo, hi + 1, size=4)
        rows.append(dict(x_re=v[0], x_im=v[1], w_re=v[2], w_im=v[3], lane=lane, first=first,
                         last=last, valid=1))

    # Full-scale corners: (-2^15)^2 products, both signs, max_terms long, on lane 0.
    for vals in ([lo, lo, lo, lo], [lo, hi, lo, hi], [hi, hi, hi, lo], [lo, 0, hi, 0]):
        for t in range(max_terms):
            term(0, int(t == 0), int(t == max_terms - 1), vals)
    for _ in range(n_sums):
        n = int(rng.integers(1, max_terms + 1))
        order = [(lane, t) for t in range(n) for lane in range(lanes)]
        for lane, t in order:
            term(lane, int(t == 0), int(t == n - 1))
            if rng.random() < 0.1:
                rows.append(dict(x_re=12345, x_im=-1, w_re=7, w_im=7, lane=0, first=1, last=1, valid=0))
    return {f: np.array([r[f] for r in rows], np.int64) for f in FIELDS}


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_cmac_bit_exact(tmp_path, simulator):
    rng = np.random.default_rng(7)
    lanes, max_terms, shift, out_bits = 2, 16, 14, 20
    stim = _stimulus(rng, 40 if simulator == "icarus" else 150, max_terms, lanes)
    expected = cmac_reference(stim, shift, out_bits)
    clamped = sum(1 for _, r, i in expected if abs(r) >= (1 << 19) - 1 or abs(i) >= (1 << 19) - 1)
    assert clamped >= 2 and len(expected) > 40       # the stimulus exercises the clamp
    acc_width = cmac_min_acc_width(max_terms, shift)
    path = tmp_path / "cmac.npz"
    np.savez(path, shift=shift, out_bits=out_bits, lanes=lanes, **stim)
    run_cocotb(to_verilog(ComplexMAC(acc_width, shift, out_bits, lanes), "cmac"), "cmac",
               "sparrow.tb.cmac_tb", simulator, extra_env={"CMAC_TB_DATA": path},
               log_file=tmp_path / "sim.log")
