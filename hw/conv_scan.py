"""Nested loops over an activation vector: the addresses of im2col patches and pooling windows.

:class:`WindowScanner` steps through nested counters (innermost first).  A
step of level l (the inner levels returning to 0) moves the element address
c*H*W + ih*W + iw by a constant that depends on l alone, so the address is
one register and one adder fed by a constant chosen by the counters' wraps:
no multiplier, no per-level copies.  Whether a position lies in the zero
padding is a table of the few counters that move the row (or column), or
that register-and-adder scheme again for the row and column when those
counters are wide.  :func:`conv_levels` and :func:`pool_levels` give the
loops of the two users in the order of docs/format.md.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
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
        # Levels of one trip never step: they add nothing and always wrap.
        levels = [lv for lv in self._levels[:self._window] if lv[0] > 1]
        n_win = len(levels)
        levels += [lv for lv in self._levels[self._window:] if lv[0] > 1]
        L = len(levels)
        cnt = [Signal(range(lv[0]), name=f"cnt{l}") for l, lv in enumerate(levels)]
        wrap = [c == lv[0] - 1 for c, lv in zip(cnt, levels)]
        # carry[l]: level l steps (every inner level wraps); carry[L]: the vector's last step.
        carry = [self.step]
        for w in wrap:
            carry.append(carry[-1] & w)
        for l in range(L):
            with m.If(carry[l]):
                m.d.sync += cnt[l].eq(Mux(wrap[l], 0, cnt[l] + 1))
        # Row and column only matter for padding; where the counters that move them are
        # few (8 bits at most), ``inside`` is a table of those counters.
        tables = {}
        for d in (1, 2) if self._pad else ():
            movers = [l for l in range(L) if levels[l][1 + d]]
            if sum(len(cnt[l]) for l in movers) <= 8:
                tables[d] = movers
        tracked = [d for d in ((0, 1, 2) if self._pad else (0,)) if d not in tables]
        # One register per tracked value (address; row, column without a table), one adder:
        # when level l steps, the levels inside it return to 0, so the value moves by the
        # constant delta_l - sum_{j<l} (count_j - 1) * delta_j (after the last step, back to
        # the start).
        values = {}
        for d in tracked:
            width = self._widths[d]
            value = Signal(signed(width), init=self._init[d], name=("addr_r", "row", "col")[d])
            inc = Signal(width, name=("d_addr", "d_row", "d_col")[d])
            back = 0
            for l in range(L + 1):
                delta = levels[l][1 + d] if l < L else 0
                const = (delta - back) & ((1 << width) - 1)
                if L == 0:
                    m.d.comb += inc.eq(const)
                else:
                    with (m.If(~wrap[l]) if l == 0 else m.Elif(~wrap[l]) if l < L else m.Else()):
                        m.d.comb += inc.eq(const)
                if l < L:
                    back += (levels[l][0] - 1) * levels[l][1 + d]
            with m.If(self.step):
                m.d.sync += value.eq(value + inc)
            values[d] = value
        win_first, win_last, last = 1, 1, 1
        for l in range(L):
            if l < n_win:
                win_first = win_first & (cnt[l] == 0)
                win_last = win_last & wrap[l]
            last = last & wrap[l]
        m.d.comb += [self.addr.eq(values[0]), self.win_first.eq(win_first),
                     self.win_last.eq(win_last), self.last.eq(last)]
        inside = Const(1, 1)
        for d, bound in ((1, self._h), (2, self._w)) if self._pad else ():
            if d in tables:
                inside = inside & _table(levels, cnt, tables[d], d, self._init[d], bound)
            else:
                inside = inside & _in_range(values[d], bound)
        m.d.comb += self.inside.eq(inside)
        return m


def _table(levels, cnt, movers, d, init, bound):
    """0 <= init + sum(cnt_l * delta_l) < bound, looked up by the counters of ``movers``."""
    if not movers:
        return Const(int(0 <= init < bound), 1)
    widths = [len(cnt[l]) for l in movers]
    bits = 0
    for key in range(1 << sum(widths)):
        value, shift = init, 0
        for l, w in zip(movers, widths):
            value += ((key >> shift) & ((1 << w) - 1)) * levels[l][1 + d]
            shift += w
        bits |= int(0 <= value < bound) << key
    return Const(bits, 1 << sum(widths)).bit_select(Cat(*(cnt[l] for l in movers)), 1)


def _in_range(value, bound):
    """0 <= value < bound for a signed signal, as gates (no carry chain): bit by bit from the LSB."""
    width = len(value)
    if bound >= 1 << (width - 1):
        return ~value[-1]
    lt = Const(0, 1)
    for i in range(width - 1):
        lt = (~value[i] | lt) if (bound >> i) & 1 else (~value[i] & lt)
    return ~value[-1] & lt
