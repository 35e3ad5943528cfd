"""The board top of the whole-model accelerator: the board's UART and LEDs around
:class:`~sparrow.hw.accel.Accelerator`, clocked by the board's PLL.

With ``clock_mhz`` the ``sync`` domain comes from the board's PLL
(:mod:`sparrow.fpga.pll`: ``SB_PLL40_PAD`` on the iCE40, ``EHXPLLL`` on the
ECP5) set to the closest frequency it can make, held in reset until the PLL
locks; the UART divisor comes from that real frequency.  Without it the
accelerator runs at the board's oscillator (iCEBreaker 12 MHz, ULX3S 25 MHz).
LED 0 shows ``error``, LED 1 ``busy`` (where the board has two).
"""

from dataclasses import replace

from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, Signal

from sparrow import SparrowError
from sparrow.hw.conv import DenseConvEngine
from sparrow.hw.dense_engine import DenseEngine
from sparrow.hw.engine import EngineConfig
from sparrow.hw.engines import multipliers

__all__ = ["AcceleratorTop", "accelerator_design", "fit_dense_lanes"]


def accelerator_design(model, board, baud=115200, config=EngineConfig(), clock_mhz=None,
                       check_baud=True):
    """``(top, name, report fields, clock MHz)`` for building ``model``'s accelerator on ``board``.

    ``config.dense_lanes`` is replaced by :func:`fit_dense_lanes` (when the
    model has dense layers).  ``clock_mhz``: the PLL's target (None: the
    board's oscillator, no PLL); the returned clock MHz is what the PLL makes,
    the build's timing target.  ``check_baud=False`` builds a UART at the
    nearest divisor whatever its rate error (for the place and route that
    only learns fmax).
    """
    from sparrow.fpga.boards import get_board
    from sparrow.protocol import model_id
    from sparrow.fpga.memfit import check_activation_fit
    board = get_board(board)
    act_blocks, block_budget = check_activation_fit(model, board, config)
    lanes = fit_dense_lanes(model, board, config)
    top = AcceleratorTop(model, board, baud, replace(config, dense_lanes=lanes) if lanes else config,
                         clock_mhz=clock_mhz, check_baud=check_baud)
    mhz = top.clk_hz / 1e6
    extra = {"model": model.name, "pes": config.pes, "design_kind": "accelerator", "baud": baud,
             "clock_mhz": mhz, "clock_hz": top.clk_hz, "uart_divisor": top.accel.divisor,
             "pll": top.pll.report() if top.pll else None, "dense_lanes": lanes,
             "layers": [f"{l.name} {l.kind} {l.in_size}->{l.out_size}" for l in model.layers],
             "model_id": f"{model_id(model):08x}",
             "activation_blocks": act_blocks, "block_budget": block_budget}
    return top, f"{model.name}_accel", extra, mhz


def fit_dense_lanes(model, board, config=EngineConfig()):
    """MAC lanes per dense engine so that all engines share the board's DSP blocks (None: no dense layer).

    The other engines take theirs first (:func:`~sparrow.hw.engines.multipliers`
    with ``config``); the dense engines split the rest evenly, at least one
    lane and at most 8 each.
    """
    uses_lanes = (DenseEngine.kind, DenseConvEngine.kind)
    dense = [l for l in model.layers if l.kind in uses_lanes]
    if not dense:
        return None
    fixed = sum(multipliers(l, config) for l in model.layers if l.kind not in uses_lanes)
    return max(1, min(8, (board.dsps - fixed) // len(dense)))


class AcceleratorTop(Elaboratable):
    """``model`` on ``board`` with a UART at ``baud``, its engines sized by ``config``
    (an :class:`~sparrow.hw.engine.EngineConfig`, used as given:
    :func:`accelerator_design` fits its dense lanes to the board), clocked by
    the board's PLL at the frequency closest to ``clock_mhz`` (None: the
    oscillator, no PLL).

    Raises SparrowError (one line) when the board has no UART, the PLL cannot
    make the clock, the baud rate does not divide the clock closely enough, or
    a layer has no engine.
    """

    def __init__(self, model, board, baud=115200, config=EngineConfig(), clock_mhz=None,
                 check_baud=True):
        from sparrow.fpga.pll import pll_for
        from sparrow.hw.accel import Accelerator
        from sparrow.hw.uart import uart_divisor
        platform = board.platform_class()()
        if ("uart", 0) not in platform.resources:
            raise SparrowError(f"{board.name} has no UART resource for the host link "
                               f"(boards with one: icebreaker, ulx3s-12f, ulx3s-85f)")
        osc_hz = float(platform.default_clk_frequency)
        self.pll = None
        if clock_mhz is not None:
            self.pll = pll_for(board.family, osc_hz / 1e6, clock_mhz)
        clk_hz = self.pll.f_out * 1e6 if self.pll else osc_hz
        try:
            divisor = uart_divisor(clk_hz, baud)
        except ValueError as exc:
            if check_baud:
                raise SparrowError(f"--baud {baud}: {exc}") from None
            divisor = max(4, round(clk_hz / baud))
        self.board, self.clk_hz, self.config, self.baud = board, clk_hz, config, baud
        self.accel = Accelerator(model, clk_hz, divisor, config=config)

    def elaborate(self, platform):
        from amaranth.build import ResourceError
        from amaranth.lib import io
        m = Module()
        if self.pll is not None:
            from sparrow.fpga.pll import PLLDomain
            clk_pin = platform.request(platform.default_clk, 0, dir="-")
            if self.board.family == "ice40":
                clk_in = clk_pin.io
            else:
                m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
                clk_in = clk_buf.i
            # The PLL's domain, renamed: `sync` takes its clock and its reset through one
            # flip-flop (a short path from the PLL's lock timer to the whole design).
            m.submodules.pll = DomainRenamer({"sync": "pll"})(PLLDomain(self.pll, clk_in))
            m.domains.sync = sync = ClockDomain("sync")
            rst = Signal(init=1)
            m.d.pll += rst.eq(0)
            m.d.comb += [sync.clk.eq(ClockSignal("pll")), sync.rst.eq(rst)]
        m.submodules.accel = accel = self.accel
        res = platform.resources["uart", 0]
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in res.ios})
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [accel.rx.eq(rx.i), tx.o.eq(accel.tx)]
        leds = []
        for name in ("led", "led_r", "led_g"):
            for n in range(2):
                if len(leds) < 2 and (name, n) in platform.resources:
                    try:
                        leds.append(platform.request(name, n, dir="-"))
                    except ResourceError:
                        pass
        for k, (pin, value) in enumerate(zip(leds, (accel.error, accel.busy))):
            m.submodules[f"led{k}"] = buf = io.Buffer("o", pin)
            m.d.comb += buf.o.eq(value)
        return m
