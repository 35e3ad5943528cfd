"""A harness that lets any ``wiring.Component`` be placed and routed on a board.

A unit under test has far more ports than a board has pins, and logic whose
outputs go nowhere is removed by synthesis.  The harness therefore:

* feeds every input port of the unit from a shift register that a 32-bit
  Galois LFSR fills one bit per clock (so every input bit toggles and no input
  is constant), and
* XOR-reduces every output bit of the unit, through a registered two-level
  tree, into one bit that drives an LED.

Its own cost, reported beside the unit's numbers: one flip-flop per input bit
plus 32, and about one LUT4 per three output bits plus 8 flip-flops.
"""

from amaranth import Elaboratable, Module, Signal, Cat, Mux, Value
from amaranth.lib import wiring

__all__ = ["Harness", "flat_ports"]

_LFSR_TAPS = 0x80200003  # x^32 + x^22 + x^2 + x + 1, maximal length


def flat_ports(component):
    """``[(path, signal, is_input)]`` for every port of ``component``'s signature."""
    ports = []
    for path, member, value in component.signature.flatten(component):
        # Struct-layout payloads (stream data) are Views: cast them to plain Values.
        ports.append((".".join(map(str, path)), Value.cast(value), member.flow == wiring.In))
    return ports


class Harness(Elaboratable):
    """Wrap ``unit`` (a ``wiring.Component``) for a board build.

    Parameters
    ----------
    unit : wiring.Component
        The design to place and route; its ``sync`` domain is the board clock.
    led : str
        Board resource that shows the XOR of all outputs (default ``"led"``,
        falling back to ``"led_g"`` on boards that name LEDs by colour).
    """

    def __init__(self, unit, led=None):
        if not isinstance(unit, wiring.Component):
            raise TypeError(f"Unit must be a wiring.Component, not {unit!r}")
        self.unit = unit
        self.led = led
        ports = flat_ports(unit)
        self.input_bits = sum(len(v) for _, v, i in ports if i)
        self.output_bits = sum(len(v) for _, v, i in ports if not i)

    def _request_led(self, platform):
        from amaranth.build import ResourceError
        for name in ([self.led] if self.led else ["led", "led_g", "rgb_led"]):
            try:
                return platform.request(name, 0, dir="-")
            except ResourceError:
                continue
        raise ResourceError("board has no LED resource for the harness output")

    def elaborate(self, platform):
        from amaranth.lib import io
        m = Module()
        m.submodules.unit = unit = self.unit
        ports = flat_ports(unit)

        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], 0) ^ Mux(lfsr[0], _LFSR_TAPS, 0))
        inputs = [v for _, v, i in ports if i]
        if inputs:
            shift = Signal(self.input_bits)
            m.d.sync += shift.eq(Cat(lfsr[0], shift[:-1]) if self.input_bits > 1 else lfsr[0])
            m.d.comb += Cat(*inputs).eq(shift)

        outputs = Cat(*[v for _, v, i in ports if not i])
        chunk = 64
        partial = Signal(max(1, (len(outputs) + chunk - 1) // chunk))
        for n in range(len(partial)):
            m.d.sync += partial[n].eq(outputs[n * chunk:(n + 1) * chunk].xor())
        result = Signal()
        m.d.sync += result.eq(partial.xor())

        if platform is not None:
            led = self._request_led(platform)
            m.submodules.led_buf = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(result)
        return m
