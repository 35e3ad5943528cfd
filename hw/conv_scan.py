"""Nested loops over an activation vector: the addresses of im2col patches and pooling windows.

:class:`WindowScanner` steps through nested counters (innermost first), each
level adding a constant to the element address and to the input row and
column, so the address c*H*W + ih*W + iw of every step comes from registers
and constant adders: no multiplier.  :func:`conv_levels` and
:func:`pool_levels` give the loops of the two users in the order of
docs/format.md.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_int, check_range

__all__ = ["WindowScanner", "conv_levels", "pool_levels", "Level"]


class Level(tuple):
    """One loop: ``(count, d_addr, d_row, d_col)``: its trip count and what one step adds."""

    def __new__(cls, count, d_addr, d_row=0, d_col=0):
        return super().__new__(cls, (count, d_addr, d_row, d_col))


def conv_levels(channels, height, width, kh, kw, stride, out_h, out_w):
    """im2col loops, innermost first: s, r, c (patch index c*kh*kw + r*kw + s), ow, oh."""
    return [Level(kw, 1, 0, 1), Level(kh, width, 1, 0), Level(channels, height * width),
            Level(out_w, stride, 0, stride), Level(out_h, stride * width, stride, 0)]


def pool_levels(channels, height, width, kernel, stride, out_h, out_w):
    """Pooling loops, innermost first: s, r (the window), ow, oh, c (C-major outputs)."""
    return [Level(kernel, 1, 0, 1), Level(kernel, width, 1, 0), Level(out_w, stride, 0, stride),
            Level(out_h, stride * width, stride, 0), Level(channels, height * width)]


def _signed_width(lo, hi):
    return max(max(-lo - 1, hi).bit_length() + 1, 2)


class WindowScanner(ValidatedComponent):
    """Nested counters over an [C, H, W] vector with zero padding.

    Each ``step`` moves to the next iteration of the loops (the innermost
    level fastest); after the last it returns to the first.  The current
    position's element address is ``addr`` (meaningful only when
    ``inside``), starting at ``-padding*W - padding``: the top left of the
    padded input.

    Parameters
    ----------
    levels : list of Level
        Innermost first; every count 1..65536, every delta >= 0.
    height, width : int
        The input's H and W (1..65536).
    padding : int
        Zero padding on every side (0..64).
    window : int
        The innermost ``window`` levels form one window (1..len(levels)).

    Members
    -------
    step : In(1)
    addr : Out(signed)
        The element address c*H*W + ih*W + iw of the current position.
    inside : Out(1)
        The position is inside the image (not padding); 1 when ``padding`` is 0.
    win_first, win_last : Out(1)
        The position is the first / last of its window.
    last : Out(1)
        The position is the last of the vector.

    Raises
    ------
    TypeError, ValueError
        A count, size or padding out of range.
    """

    def _validate(self, levels, height, width, padding, window):
        levels = [Level(*lv) for lv in levels]
        if not levels:
            raise ValueError("Scanner needs at least one level")
        for count, *deltas in levels:
            check_int(count, "Loop count", 1, 1 << 16)
            for d in deltas:
                check_range(d, "Loop step", 0, 1 << 24)
        self._h = check_int(height, "Height", 1, 1 << 16)
        self._w = check_int(width, "Width", 1, 1 << 16)
        self._pad = check_range(padding, "Padding", 0, 64)
        self._window = check_int(window, "Window levels", 1, len(levels))
        self._levels = levels
        # Initial values and ranges of the three tracked values (address, row, column).
        self._init = (-padding * width - padding, -padding, -padding)
        hi = [self._init[d] + sum((lv[0] - 1) * lv[1 + d] for lv in levels) for d in range(3)]
        self._widths = [_signed_width(lo, h) for lo, h in zip(self._init, hi)]
        return {"step": In(1), "addr": Out(signed(self._widths[0])), "inside": Out(1),
                "win_first": Out(1), "win_last": Out(1), "last": Out(1)}

    def elaborate(self, platform):
        m = Module()
        L = len(self._levels)
        cnt = [Signal(range(max(lv[0], 2)), name=f"cnt{l}") for l, lv in enumerate(self._levels)]
        wrap = [c == lv[0] - 1 for c, lv in zip(cnt, self._levels)]
        # base[d][l]: value d at the current iteration of level l with every inner level at 0;
        # base[d][0] is the current value.
        base = [[Signal(signed(self._widths[d]), init=self._init[d], name=f"b{d}_{l}")
                 for l in range(L)] for d in range(3)]
        with m.If(self.step):
            for l in range(L):
                inner_wrap = [wrap[j] for j in range(l)]
                cond = ~wrap[l]
                for w in inner_wrap:
                    cond = cond & w
                with (m.If(cond) if l == 0 else m.Elif(cond)):
                    m.d.sync += cnt[l].eq(cnt[l] + 1)
                    m.d.sync += [cnt[j].eq(0) for j in range(l)]
                    for d in range(3):
                        delta = self._levels[l][1 + d]
                        m.d.sync += [base[d][j].eq(base[d][l] + delta) for j in range(l + 1)]
            with m.Else():          # the vector's last position: back to the first
                m.d.sync += [c.eq(0) for c in cnt]
                m.d.sync += [b.eq(self._init[d]) for d in range(3) for b in base[d]]
        win_first, win_last, last = 1, 1, 1
        for l in range(L):
            if l < self._window:
                win_first = win_first & (cnt[l] == 0)
                win_last = win_last & wrap[l]
            last = last & wrap[l]
        m.d.comb += [self.addr.eq(base[0][0]), self.win_first.eq(win_first),
                     self.win_last.eq(win_last), self.last.eq(last)]
        if self._pad:
            row, col = base[1][0], base[2][0]
            m.d.comb += self.inside.eq((row >= 0) & (row < self._h) & (col >= 0) & (col < self._w))
        else:
            m.d.comb += self.inside.eq(1)
        return m
