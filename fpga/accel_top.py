"""The board top of the whole-model accelerator: the board's UART and LEDs around
:class:`~sparrow.hw.accel.Accelerator`, in the board's default clock domain.

The accelerator runs at the board's oscillator (iCEBreaker 12 MHz, ULX3S
25 MHz): the host link, not the engines, bounds a vector's turnaround at
these rates.  LED 0 shows ``error``, LED 1 ``busy`` (where the board has two).
"""

from amaranth.hdl import Elaboratable, Module

from sparrow import SparrowError

__all__ = ["AcceleratorTop", "accelerator_design", "fit_dense_lanes"]


def accelerator_design(model, board, baud=115200, pes=8):
    """``(top, name, report fields, clock MHz)`` for building ``model``'s accelerator on ``board``.

    The clock MHz is the board's oscillator: the build's timing target.
    """
    from sparrow.fpga.boards import get_board
    from sparrow.protocol import model_id
    top = AcceleratorTop(model, get_board(board), baud, pes)
    mhz = top.clk_hz / 1e6
    extra = {"model": model.name, "pes": pes, "design_kind": "accelerator", "baud": baud,
             "clock_mhz": mhz, "dense_lanes": top.dense_lanes,
             "layers": [f"{l.name} {l.kind} {l.attrs['in']}->{l.attrs['out']}" for l in model.layers],
             "model_id": f"{model_id(model):08x}"}
    return top, f"{model.name}_accel", extra, mhz


def fit_dense_lanes(model, board):
    """MAC lanes per dense_linear engine so that all engines share the board's DSP blocks.

    The sd_linear and bc_linear engines take theirs first
    (:func:`~sparrow.hw.engines.multipliers`); the dense engines split the
    rest evenly, at least one lane and at most 8 each.
    """
    from sparrow.hw.engines import multipliers
    dense = [l for l in model.layers if l.kind == "dense_linear"]
    if not dense:
        return None
    fixed = sum(multipliers(l, 0) for l in model.layers if l.kind != "dense_linear")
    return max(1, min(8, (board.dsps - fixed) // len(dense)))


class AcceleratorTop(Elaboratable):
    """``model`` on ``board`` with a UART at ``baud``; ``pes`` PEs per sd_linear engine,
    ``dense_lanes`` MAC lanes per dense_linear engine (default :func:`fit_dense_lanes`).

    Raises SparrowError (one line) when the board has no UART, the baud rate
    does not divide the board clock closely enough, or a layer has no engine.
    """

    def __init__(self, model, board, baud=115200, pes=8, dense_lanes=None):
        from sparrow.hw.accel import Accelerator
        from sparrow.hw.uart import uart_divisor
        platform = board.platform_class()()
        if ("uart", 0) not in platform.resources:
            raise SparrowError(f"{board.name} has no UART resource for the host link "
                               f"(boards with one: icebreaker, ulx3s-12f, ulx3s-85f)")
        clk_hz = float(platform.default_clk_frequency)
        try:
            divisor = uart_divisor(clk_hz, baud)
        except ValueError as exc:
            raise SparrowError(f"--baud {baud}: {exc}") from None
        self.board, self.clk_hz = board, clk_hz
        self.dense_lanes = dense_lanes or fit_dense_lanes(model, board)
        self.accel = Accelerator(model, clk_hz, divisor, pes, self.dense_lanes)

    def elaborate(self, platform):
        from amaranth.build import ResourceError
        from amaranth.lib import io
        m = Module()
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
