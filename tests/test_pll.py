"""fpga.pll: the icepll and ecppll arithmetic, checked against the tools' own outputs."""

import pytest

from sparrow import SparrowError
from sparrow.fpga.pll import ecp5_pll, ice40_pll, pll_clocks

# (f_in, requested) -> (DIVR, DIVF, DIVQ, FILTER_RANGE, achieved): yowasp-icepll -i F_IN -o F_OUT
ICEPLL = {
    (12, 48): (0, 63, 4, 1, 48.0),
    (12, 24): (0, 63, 5, 1, 24.0),
    (12, 30): (0, 79, 5, 1, 30.0),
    (12, 33): (0, 87, 5, 1, 33.0),
    (12, 36): (0, 47, 4, 1, 36.0),
    (12, 39): (0, 51, 4, 1, 39.0),
    (12, 40): (0, 52, 4, 1, 39.75),
    (12, 41.9): (0, 55, 4, 1, 42.0),
    (12, 60): (0, 79, 4, 1, 60.0),
    (12, 100): (0, 66, 3, 1, 100.5),
    (25, 50): (0, 31, 4, 2, 50.0),
    (30, 90): (0, 23, 3, 3, 90.0),
    (100, 42): (6, 46, 4, 1, 100 / 7 * 47 / 16),
}

# (f_in, requested) -> (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CLKOP_CPHASE, achieved): yowasp-ecppll -i -o --file
ECPPLL = {
    (25, 100): (1, 4, 6, 2, 100.0),
    (25, 84): (8, 27, 7, 3, 84.375),
    (25, 50): (1, 2, 12, 5, 50.0),
    (25, 60): (5, 12, 10, 4, 60.0),
    (25, 62.5): (2, 5, 10, 4, 62.5),
    (25, 70): (5, 14, 9, 4, 70.0),
    (25, 75): (1, 3, 8, 4, 75.0),
    (25, 80): (5, 16, 7, 3, 80.0),
    (25, 90): (5, 18, 7, 3, 90.0),
    (25, 125): (1, 5, 5, 2, 125.0),
    (25, 40): (5, 8, 15, 7, 40.0),
    (25, 30): (5, 6, 20, 9, 30.0),
}


@pytest.mark.parametrize("f_in, f_out", list(ICEPLL))
def test_ice40_matches_icepll(f_in, f_out):
    divr, divf, divq, filt, achieved = ICEPLL[f_in, f_out]
    pll = ice40_pll(f_in, f_out)
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == (divr, divf, divq, filt)
    # the documented formula, written out here
    assert pll.f_out == pytest.approx(f_in / (divr + 1) * (divf + 1) / 2 ** divq)
    assert round(pll.f_out, 3) == round(f_in / (divr + 1) * (divf + 1) / 2 ** divq, 3)
    if f_in == 12:
        assert pll.f_out == pytest.approx(achieved)


@pytest.mark.parametrize("f_in, f_out", list(ECPPLL))
def test_ecp5_matches_ecppll(f_in, f_out):
    clki, clkfb, clkop, cphase, achieved = ECPPLL[f_in, f_out]
    pll = ecp5_pll(f_in, f_out)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div, pll.clkop_cphase) == (clki, clkfb, clkop, cphase)
    assert pll.f_out == pytest.approx(f_in / clki * clkfb) == pytest.approx(achieved)
    assert 400 <= pll.f_vco <= 800


def test_limits_refused_with_one_line():
    with pytest.raises(SparrowError, match=r"iCE40 PLL: output frequency 15.938 MHz is outside 16..275 MHz"):
        ice40_pll(12, 16)
    with pytest.raises(SparrowError, match=r"iCE40 PLL: output frequency 300.000 MHz is outside 16..275 MHz"):
        ice40_pll(12, 300)
    with pytest.raises(SparrowError, match=r"ECP5 PLL: output frequency .* is outside 3.125..400 MHz"):
        ecp5_pll(25, 500)


def test_clock_lists():
    ice = pll_clocks("ice40", 12)
    assert 48.0 in ice and 42.0 in ice and 39.75 in ice and max(ice) <= 275 and min(ice) >= 16
    assert all(ice40_pll(12, f).f_out == pytest.approx(f) for f in ice if 30 <= f <= 60)
    ecp = pll_clocks("ecp5", 25)
    assert 100.0 in ecp and 84.375 in ecp and 90.0 in ecp
    assert all(ecp5_pll(25, f).f_out == pytest.approx(f, abs=1e-4) for f in ecp if 80 <= f <= 95)
