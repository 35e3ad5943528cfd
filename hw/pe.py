"""The shift-add processing element: a multiplier-free power-of-two MAC.

One PE accumulates terms ``(-1)^sign * act * 2^exp`` (or 0 when the code's zero
flag is set) into a signed accumulator.  It is the unit the sparse
power-of-two PE array replicates P times.
"""

from amaranth.hdl import Module, Signal, signed, Mux
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent
from sparrow.validate import check_int

__all__ = ["ShiftAddPE", "RunningPE", "pe_term_bound", "pe_min_acc_width", "pe_max_terms", "PE_LATENCY"]

#: Clock edges from a term on the inputs to the accumulator holding it.
PE_LATENCY = 2


def _check_widths(act_width, exp_bits, acc_width):
    check_int(act_width, "Activation width", 2, 32)
    check_int(exp_bits, "Exponent width", 1, 5)
    check_int(acc_width, "Accumulator width", 2, 64)


def pe_term_bound(act_width, exp_bits):
    """Largest magnitude of one term: ``2^(act_width-1) * 2^(2^exp_bits - 1)``.

    Reached by the most negative activation with the largest exponent (negated
    or not); every other term is smaller in magnitude.
    """
    return 1 << (act_width - 1 + (1 << exp_bits) - 1)


def pe_min_acc_width(act_width, exp_bits, max_terms):
    """Smallest signed accumulator width that holds ``+-max_terms * pe_term_bound``."""
    bound = max_terms * pe_term_bound(act_width, exp_bits)
    return bound.bit_length() + 1


def pe_max_terms(act_width, exp_bits, acc_width):
    """Largest number of worst-case terms a signed ``acc_width``-bit accumulator holds."""
    return ((1 << (acc_width - 1)) - 1) // pe_term_bound(act_width, exp_bits)


class ShiftAddPE(ValidatedComponent):
    """Power-of-two multiply-accumulate element (no multiplier).

    Each cycle with ``valid`` high, the term ``t = (-1)^sign * act * 2^exp`` (0
    when ``zero`` is set; ``sign`` and ``exp`` are then ignored) is added to the
    accumulator.  ``clear`` restarts the sum: with ``valid`` the new sum starts
    at this term, without ``valid`` at 0.  A term sent with ``last`` (and
    ``valid``) closes the sum: ``PE_LATENCY`` (= 2) clock edges later ``acc``
    holds the finished sum and ``out_valid`` is high for one cycle.  All
    arithmetic is exact two's complement; there is no rounding.

    Pipeline: edge 1 registers the shifted term in one's complement
    (``act_width + 2^exp_bits - 1`` bits) and its negation carry; edge 2 adds
    both to the accumulator (``-x = ~x + 1``, so ``-(-2^(act_width-1) << e_max)``
    is exact).  Control (``valid``, ``clear``, ``last``) travels with the term,
    so a new sum may start on the cycle after a ``last`` with no bubble.

    Bounds: a term's magnitude is at most
    ``B = 2^(act_width-1) * 2^(2^exp_bits - 1)`` (:func:`pe_term_bound`).  A sum
    of at most ``max_terms`` terms lies in ``[-max_terms*B, max_terms*B]``; the
    accumulator never overflows for such sums, and construction refuses an
    ``acc_width`` too small for that (:func:`pe_min_acc_width`).  Sums of more
    terms than ``max_terms`` are outside the documented bounds and wrap.

    Parameters
    ----------
    act_width : int
        Width of the signed activation, 2..32 bits (default 8).
    exp_bits : int
        Width of the unsigned exponent code, 1..5 bits (default 3: shifts 0..7).
    acc_width : int
        Width of the signed accumulator, 2..64 bits (default 20).
    max_terms : int or None
        Number of worst-case terms one sum may hold.  Default: the most that
        ``acc_width`` holds (:func:`pe_max_terms`, 31 for the defaults).

    Members
    -------
    act : In(signed(act_width))
        Activation.
    sign : In(1)
        1: the term is negated.
    exp : In(exp_bits)
        Left shift of the activation.
    zero : In(1)
        1: the term is 0 (a pruned coefficient).
    valid : In(1)
        The term on ``act``/``sign``/``exp``/``zero`` is to be added this cycle.
    clear : In(1)
        Restart the sum (see above).
    last : In(1)
        With ``valid``: this term is the sum's last.
    acc : Out(signed(acc_width))
        The accumulator (registered).
    out_valid : Out(1)
        ``acc`` holds a finished sum (one cycle per ``last``).

    Raises
    ------
    TypeError
        A parameter is not a positive integer.
    ValueError
        A parameter is out of range, or ``acc_width`` cannot hold ``max_terms``
        worst-case terms.
    """

    def __init__(self, act_width=8, exp_bits=3, acc_width=20, max_terms=None):
        super().__init__(act_width, exp_bits, acc_width, max_terms)

    def _validate(self, act_width, exp_bits, acc_width, max_terms):
        _check_widths(act_width, exp_bits, acc_width)
        if max_terms is None:
            max_terms = pe_max_terms(act_width, exp_bits, acc_width)
            if max_terms < 1:
                need = pe_min_acc_width(act_width, exp_bits, 1)
                raise ValueError(f"Accumulator width {acc_width} cannot hold one term of "
                                 f"{act_width}-bit activations shifted by up to "
                                 f"{(1 << exp_bits) - 1}; it needs at least {need} bits")
        else:
            check_int(max_terms, "Maximum term count", 1, 1 << 64)
            need = pe_min_acc_width(act_width, exp_bits, max_terms)
            if acc_width < need:
                raise ValueError(f"Accumulator width {acc_width} cannot hold {max_terms} terms of "
                                 f"{act_width}-bit activations shifted by up to "
                                 f"{(1 << exp_bits) - 1}; it needs at least {need} bits")
        self._act_width = act_width
        self._exp_bits = exp_bits
        self._acc_width = acc_width
        self._max_terms = max_terms
        return {
            "act": In(signed(act_width)),
            "sign": In(1),
            "exp": In(exp_bits),
            "zero": In(1),
            "valid": In(1),
            "clear": In(1),
            "last": In(1),
            "acc": Out(signed(acc_width)),
            "out_valid": Out(1),
        }

    @property
    def act_width(self):
        return self._act_width

    @property
    def exp_bits(self):
        return self._exp_bits

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def max_terms(self):
        return self._max_terms

    @property
    def term_width(self):
        """Width of the registered signed term."""
        return self._act_width + (1 << self._exp_bits)

    def elaborate(self, platform):
        m = Module()
        tw = self.term_width - 1
        shifted = Signal(signed(tw))
        m.d.comb += shifted.eq(self.act << self.exp)
        # Two's complement negation as one's complement plus a carry-in: the XOR folds
        # into the shifter's last LUT level and the +1 into the adder's carry chain.
        # An idle or zero term is a synchronous reset of the term register (free).
        en = self.valid & ~self.zero
        term = Signal(signed(tw))
        cin = Signal()
        t_clear = Signal()
        t_last = Signal()
        m.d.sync += [
            term.eq(Mux(en, shifted ^ self.sign.replicate(tw), 0)),
            cin.eq(en & self.sign),
            t_clear.eq(self.clear),
            t_last.eq(self.valid & self.last),
        ]
        m.d.sync += [
            self.acc.eq(Mux(t_clear, 0, self.acc) + term + cin),
            self.out_valid.eq(t_last),
        ]
        return m


class RunningPE(ValidatedComponent):
    """The PE array's shift-add element: a running sum that is never cleared.

    Each cycle ``acc <= acc + t`` with ``t = (-1)^sign * act * 2^exp`` when
    ``valid`` and ``nz``, else 0 (latency :data:`PE_LATENCY` = 2 edges).  The
    accumulator wraps modulo ``2^acc_width``; a block's sum is the difference
    of two snapshots, exact whenever the block's true sum fits ``acc_width``
    signed bits (the output stage subtracts).  Dropping the clear saves a LUT
    per accumulator bit: about 54 LUT4 for the default widths, against about
    74 for :class:`ShiftAddPE`.

    Parameters are those of :class:`ShiftAddPE` (no ``max_terms``: the caller
    sizes ``acc_width`` for its block sums).

    Members
    -------
    act : In(signed(act_width))
    sign, nz, valid : In(1)
    exp : In(exp_bits)
    acc : Out(signed(acc_width))
    """

    def __init__(self, act_width=8, exp_bits=3, acc_width=20):
        super().__init__(act_width, exp_bits, acc_width)

    def _validate(self, act_width, exp_bits, acc_width):
        _check_widths(act_width, exp_bits, acc_width)
        self._act_width, self._exp_bits, self._acc_width = act_width, exp_bits, acc_width
        return {
            "act": In(signed(act_width)), "sign": In(1), "exp": In(exp_bits), "nz": In(1),
            "valid": In(1), "acc": Out(signed(acc_width)),
        }

    def elaborate(self, platform):
        m = Module()
        tw = self._act_width + (1 << self._exp_bits) - 1
        en = self.valid & self.nz
        neg = Signal()
        m.d.comb += neg.eq(en & self.sign)
        # The enable gates the activation before the shifter (it folds into the first
        # shift level's LUTs), not the term register: a register zeroed by a per-PE
        # enable becomes a flip-flop with its own synchronous reset, and hundreds of
        # distinct reset nets leave nextpnr's ECP5 legaliser no legal placement.
        shifted = Signal(signed(tw))
        m.d.comb += shifted.eq(Mux(en, self.act, 0) << self.exp)
        term = Signal(signed(tw))
        cin = Signal()
        m.d.sync += [term.eq(shifted ^ neg.replicate(tw)), cin.eq(neg)]
        m.d.sync += self.acc.eq(self.acc + term + cin)
        return m
