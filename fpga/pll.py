"""Board PLLs: the settings of iCE40 ``SB_PLL40_PAD`` (or ``_CORE``) and ECP5 ``EHXPLLL``, and the clock domain they make.

The arithmetic is that of the vendor-independent tools that ship with the
toolchain (``icepll`` of icestorm, ``ecppll`` of prjtrellis), reproduced so
that sparrow can search every clock a PLL can make without running them; the
tests compare both against the tools' own outputs.

iCE40 (simple feedback)::

    f_pfd = f_in / (DIVR + 1)          10 .. 133 MHz
    f_vco = f_pfd * (DIVF + 1)         533 .. 1066 MHz
    f_out = f_vco / 2**DIVQ            16 .. 275 MHz   (DIVQ 1..6)
    FILTER_RANGE from f_pfd: <17 -> 1, <26 -> 2, <44 -> 3, <66 -> 4, <101 -> 5, else 6

ECP5 (feedback from CLKOP)::

    f_pfd = f_in / CLKI_DIV            3.125 .. 400 MHz
    f_out = f_pfd * CLKFB_DIV          3.125 .. 400 MHz
    f_vco = f_out * CLKOP_DIV          400 .. 800 MHz
    CLKOP_CPHASE: a half period of f_out in VCO cycles (ecppll's single-precision rounding)

:class:`PLLDomain` instantiates the PLL for a board and holds the ``sync``
domain in reset until the PLL reports lock.
"""

from dataclasses import dataclass, asdict

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

from sparrow import SparrowError

__all__ = ["ICE40PLL", "ECP5PLL", "ice40_pll", "ecp5_pll", "pll_for", "pll_clocks", "PLLDomain"]

ICE40_LIMITS = {"pfd": (10.0, 133.0), "vco": (533.0, 1066.0), "out": (16.0, 275.0)}
ECP5_LIMITS = {"pfd": (3.125, 400.0), "vco": (400.0, 800.0), "out": (3.125, 400.0)}


@dataclass(frozen=True)
class ICE40PLL:
    """``SB_PLL40_PAD``/``SB_PLL40_CORE`` settings (simple feedback) and the frequencies they give, in MHz."""
    f_in: float
    divr: int
    divf: int
    divq: int
    filter_range: int

    @property
    def f_pfd(self):
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self):
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self):
        return self.f_vco / 2 ** self.divq

    def check(self):
        """Raise SparrowError (one line) unless every frequency is within the iCE40 limits."""
        _check_limits("iCE40 PLL", ICE40_LIMITS, self.f_pfd, self.f_vco, self.f_out)
        if not (0 <= self.divr <= 15 and 0 <= self.divf <= 127 and 1 <= self.divq <= 6):
            raise SparrowError(f"iCE40 PLL: DIVR {self.divr}, DIVF {self.divf}, DIVQ {self.divq} "
                               f"out of range (0..15, 0..127, 1..6)")
        return self

    def report(self):
        return {"primitive": "SB_PLL40_PAD", "feedback": "SIMPLE", **asdict(self),
                "f_pfd_mhz": self.f_pfd, "f_vco_mhz": self.f_vco, "f_out_mhz": self.f_out}


@dataclass(frozen=True)
class ECP5PLL:
    """``EHXPLLL`` settings (feedback from CLKOP) and the frequencies they give, in MHz."""
    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int

    @property
    def f_pfd(self):
        return self.f_in / self.clki_div

    @property
    def f_out(self):
        return self.f_pfd * self.clkfb_div

    @property
    def f_vco(self):
        return self.f_out * self.clkop_div

    def check(self):
        """Raise SparrowError (one line) unless every frequency is within the ECP5 limits."""
        _check_limits("ECP5 PLL", ECP5_LIMITS, self.f_pfd, self.f_vco, self.f_out)
        if not (1 <= self.clki_div <= 128 and 1 <= self.clkfb_div <= 80 and 1 <= self.clkop_div <= 128):
            raise SparrowError(f"ECP5 PLL: CLKI_DIV {self.clki_div}, CLKFB_DIV {self.clkfb_div}, "
                               f"CLKOP_DIV {self.clkop_div} out of range (1..128, 1..80, 1..128)")
        return self

    def report(self):
        return {"primitive": "EHXPLLL", "feedback": "CLKOP", **asdict(self),
                "f_pfd_mhz": self.f_pfd, "f_vco_mhz": self.f_vco, "f_out_mhz": self.f_out}


def _check_limits(what, limits, pfd, vco, out):
    for name, value in (("PFD", pfd), ("VCO", vco), ("output", out)):
        lo, hi = limits[name.lower() if name != "output" else "out"]
        if not lo <= value <= hi:
            raise SparrowError(f"{what}: {name} frequency {value:.3f} MHz is outside "
                               f"{lo:g}..{hi:g} MHz")


def _filter_range(f_pfd):
    for bound, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd < bound:
            return value
    return 6


def _ice40_candidates(f_in):
    """Every simple-feedback setting within the PFD and VCO limits, in icepll's search order."""
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not ICE40_LIMITS["pfd"][0] <= f_pfd <= ICE40_LIMITS["pfd"][1]:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not ICE40_LIMITS["vco"][0] <= f_vco <= ICE40_LIMITS["vco"][1]:
                continue
            for divq in range(1, 7):
                yield divr, divf, divq, f_vco / 2 ** divq


def ice40_pll(f_in, f_out):
    """icepll's choice for ``f_out`` MHz from ``f_in`` MHz: the closest output, first found on ties.

    Raises SparrowError when the closest output is outside 16..275 MHz.
    """
    best = None
    for divr, divf, divq, out in _ice40_candidates(f_in):
        if best is None or abs(out - f_out) < abs(best[3] - f_out):
            best = (divr, divf, divq, out)
    if best is None:
        raise SparrowError(f"iCE40 PLL: no setting for a {f_in:g} MHz input")
    divr, divf, divq, _ = best
    return ICE40PLL(f_in, divr, divf, divq, _filter_range(f_in / (divr + 1))).check()


def _ecp5_table(f_in):
    """ecppll's search space in single precision: arrays of (input, feedback, output divider, f_out, f_vco)."""
    import numpy as np
    f32 = np.float32
    idiv, fdiv, odiv = np.meshgrid(np.arange(1, 129), np.arange(1, 81), np.arange(1, 129), indexing="ij")
    pfd = f32(f_in) / idiv.astype(f32)
    fvco = pfd * fdiv.astype(f32) * odiv.astype(f32)
    ok = (pfd >= f32(ECP5_LIMITS["pfd"][0])) & (pfd <= f32(ECP5_LIMITS["pfd"][1])) & \
         (fvco >= f32(ECP5_LIMITS["vco"][0])) & (fvco <= f32(ECP5_LIMITS["vco"][1]))
    fout = fvco / odiv.astype(f32)
    return idiv[ok], fdiv[ok], odiv[ok], fout[ok], fvco[ok]


def _ecp5_cphase(f_out, f_vco):
    """ecppll's CLKOP_CPHASE: half a period of ``f_out`` in VCO cycles, truncated as ecppll computes it."""
    import numpy as np
    ns_phase = float(np.float32(1 / (float(f_out) * 1e6) * 0.5))
    return int(ns_phase * (float(f_vco) * 1e6))


def ecp5_pll(f_in, f_out):
    """ecppll's choice for ``f_out`` MHz from ``f_in`` MHz: the closest output, then the VCO closest to 600 MHz.

    Raises SparrowError when the output is outside the ECP5 limits.
    """
    import numpy as np
    idiv, fdiv, odiv, fout, fvco = _ecp5_table(f_in)
    err = np.abs(fout - np.float32(f_out))
    pick = np.flatnonzero(err == err.min())
    dist = np.abs(fvco[pick] - np.float32(600))
    k = pick[np.flatnonzero(dist == dist.min())[0]]     # first in ecppll's loop order on a tie
    pll = ECP5PLL(float(f_in), int(idiv[k]), int(fdiv[k]), int(odiv[k]),
                  _ecp5_cphase(fout[k], fvco[k]))
    return pll.check()


def pll_for(family, f_in, f_out):
    """The PLL settings of ``family`` (``"ice40"`` or ``"ecp5"``) for ``f_out`` MHz from ``f_in`` MHz."""
    if family == "ice40":
        return ice40_pll(f_in, f_out)
    if family == "ecp5":
        return ecp5_pll(f_in, f_out)
    raise SparrowError(f"no PLL for FPGA family {family!r}")


def pll_clocks(family, f_in):
    """Every output frequency (MHz, descending) the family's PLL makes from ``f_in`` MHz within its limits."""
    if family == "ice40":
        lo, hi = ICE40_LIMITS["out"]
        outs = {round(out, 6) for _, _, _, out in _ice40_candidates(f_in) if lo <= out <= hi}
    elif family == "ecp5":
        lo, hi = ECP5_LIMITS["out"]
        pfds = [f_in / d for d in range(1, 129)
                if ECP5_LIMITS["pfd"][0] <= f_in / d <= ECP5_LIMITS["pfd"][1]]
        outs = set()
        for pfd in pfds:
            for fb in range(1, 81):
                out = pfd * fb
                if lo <= out <= hi and any(400 <= out * od <= 800 for od in range(1, 129)):
                    outs.add(round(out, 6))
    else:
        raise SparrowError(f"no PLL for FPGA family {family!r}")
    return sorted(outs, reverse=True)


class PLLDomain(Elaboratable):
    """The ``sync`` clock domain from a PLL on the board's oscillator, in reset until the PLL locks.

    Parameters
    ----------
    pll : ICE40PLL or ECP5PLL
        The settings (``f_in`` must be the board oscillator's frequency).
    clk_in : Signal or amaranth.hdl.IOPort
        The oscillator's clock: on the iCE40 the pin itself (``SB_PLL40_PAD``:
        the UP5K's PLL sits on the clock pin's I/O site, so the pin cannot go
        through an input buffer first), on the ECP5 its input buffer's output.

    Members
    -------
    locked : Signal
        The PLL's lock output.
    """

    def __init__(self, pll, clk_in):
        self.pll, self.clk_in = pll, clk_in
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync", local=False)
        pll = self.pll
        if isinstance(pll, ICE40PLL):
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                p_DIVR=pll.divr, p_DIVF=pll.divf, p_DIVQ=pll.divq, p_FILTER_RANGE=pll.filter_range,
                i_PACKAGEPIN=self.clk_in, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=cd.clk, o_LOCK=self.locked)
        else:
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{pll.f_in:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.f_out:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=pll.clki_div, p_CLKOP_DIV=pll.clkop_div,
                p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=pll.clkfb_div,
                i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, i_CLKFB=cd.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=cd.clk, o_LOCK=self.locked)
        # Lock, then a further 16 us in reset: iCE40 block RAMs read as zero for ~3 us after
        # configuration (the margin is amaranth's own for its power-on reset).
        m.domains.locked = ClockDomain("locked", local=True)
        m.d.comb += ClockSignal("locked").eq(cd.clk)
        m.submodules.reset_sync = ResetSynchronizer(~self.locked, domain="locked")
        delay = max(2, int(16e-6 * pll.f_out * 1e6))
        timer = Signal(range(delay + 1))
        with m.If(timer != delay):
            m.d.locked += timer.eq(timer + 1)
        m.d.comb += cd.rst.eq(timer != delay)
        return m
