"""An array of N shift-add PEs arranged as the PE array uses them, for board builds.

The activation and the control (valid, clear, last) are broadcast to every PE;
each PE has its own coefficient code (sign, exponent, zero flag).  This is the
datapath of the sparse power-of-two array without its memories and sequencer,
so its LUT count and fmax measure what one more PE costs on a board.
"""

from amaranth.hdl import Module, signed
from amaranth.lib.wiring import In, Out

from sparrow.hw.component import ValidatedComponent, discard
from sparrow.hw.pe import ShiftAddPE
from sparrow.validate import check_int

__all__ = ["PEArrayBench"]


class PEArrayBench(ValidatedComponent):
    """``pes`` :class:`~sparrow.hw.pe.ShiftAddPE` s sharing one activation stream.

    Parameters
    ----------
    pes : int
        Number of PEs, 1..4096.
    act_width, exp_bits, acc_width : int
        As for :class:`~sparrow.hw.pe.ShiftAddPE` (defaults 8, 3, 20).

    Members
    -------
    act : In(signed(act_width))            broadcast activation
    valid, clear, last : In(1)             broadcast control
    sign : In(pes), zero : In(pes)         one bit per PE
    exp : In(pes * exp_bits)               PE i's exponent in bits [i*exp_bits, (i+1)*exp_bits)
    acc : Out(pes * acc_width)             PE i's accumulator in bits [i*acc_width, ...)
    out_valid : Out(pes)

    Raises
    ------
    TypeError, ValueError
        ``pes`` not in 1..4096 ("PE count must be between 1 and 4096, not 5000"),
        or a PE parameter refused by :class:`~sparrow.hw.pe.ShiftAddPE`.
    """

    def __init__(self, pes, act_width=8, exp_bits=3, acc_width=20):
        super().__init__(pes, act_width, exp_bits, acc_width)

    def _validate(self, pes, act_width, exp_bits, acc_width):
        self._pes = check_int(pes, "PE count", 1, 4096)
        self._pe_args = dict(act_width=act_width, exp_bits=exp_bits, acc_width=acc_width)
        discard(ShiftAddPE(**self._pe_args))       # its checks only, not its logic
        return {
            "act": In(signed(act_width)),
            "valid": In(1), "clear": In(1), "last": In(1),
            "sign": In(pes), "zero": In(pes), "exp": In(pes * exp_bits),
            "acc": Out(pes * acc_width), "out_valid": Out(pes),
        }

    @property
    def pes(self):
        return self._pes

    def elaborate(self, platform):
        m = Module()
        eb = self._pe_args["exp_bits"]
        aw = self._pe_args["acc_width"]
        for i in range(self._pes):
            pe = ShiftAddPE(**self._pe_args)
            m.submodules[f"pe{i}"] = pe
            m.d.comb += [
                pe.act.eq(self.act), pe.valid.eq(self.valid), pe.clear.eq(self.clear),
                pe.last.eq(self.last), pe.sign.eq(self.sign[i]), pe.zero.eq(self.zero[i]),
                pe.exp.eq(self.exp[i * eb:(i + 1) * eb]),
                self.acc[i * aw:(i + 1) * aw].eq(pe.acc), self.out_valid[i].eq(pe.out_valid),
            ]
        return m
