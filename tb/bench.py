"""Shared parts of the cocotb benches: start-up, stream driver and monitor, scoreboard.

Every bench in :mod:`sparrow.tb` follows the shape of cocotb's
``matrix_multiplier`` example: a driver applies the stimulus, a monitor
collects what the design produces, an independent reference model gives what
it should produce, and a :class:`Scoreboard` compares the two and fails on the
first mismatch with its vector.  What is specific to a unit (its ports, its
reference model, how its words pack) stays in the unit's bench.

Cycle discipline, the same in every bench: inputs change and outputs are
sampled just after a falling edge; a valid/ready transfer happens at the next
rising edge when both were high.  The designs' ``ready`` outputs depend on
their state only, so sampling ``ready`` at the falling edge is exact.

Drivers and monitors are *steps*, objects with a ``step(cycle)`` method, run by
:func:`run_steps` from one coroutine that wakes once per clock cycle: two
coroutines (one each for driver and monitor) would double the Python work per
simulated cycle, which dominates these benches' run time.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

__all__ = ["CLOCK_NS", "start", "signed", "signed_fields", "run_steps", "CycleDriver",
           "StreamDriver", "StreamMonitor", "Scoreboard"]

#: Clock period of every bench, in ns.
CLOCK_NS = 10


async def start(dut, idle=(), reset_cycles=2):
    """Start ``dut.clk``, set ``idle`` (``{port name: value}``), hold ``dut.rst`` for ``reset_cycles``.

    Returns just after the falling edge at which reset is released.
    """
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    for name, value in dict(idle).items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    await ClockCycles(dut.clk, reset_cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def signed(value, bits):
    """``value``'s low ``bits`` bits as a two's complement integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def signed_fields(word, bits, count):
    """The ``count`` signed ``bits``-bit fields of the integer ``word``, LSB field first."""
    return [signed(word >> (i * bits), bits) for i in range(count)]


async def run_steps(clk, *steps, until=None, cycles=None, limit=None, timeout=None):
    """Call ``step.step(cycle)`` for every step just after each falling edge of ``clk``.

    Runs ``cycles`` cycles, or until ``until()`` is true (checked before each
    cycle).  With ``limit``, fails after that many cycles with the message
    ``timeout()``.  Returns the number of cycles run.
    """
    cycle = 0
    edge = FallingEdge(clk)
    while (until is None or not until()) and (cycles is None or cycle < cycles):
        await edge
        cycle += 1
        for s in steps:
            s.step(cycle)
        if limit is not None and cycle >= limit:
            raise AssertionError(timeout() if timeout else f"timeout after {cycle} cycles")
    return cycle


class CycleDriver:
    """Apply one row of values per cycle to ``signals``; then set them to 0.

    ``columns[i][r]`` is the value of ``signals[i]`` in row ``r``.  For units
    without back-pressure (a PE, a MAC), where the stimulus is a cycle-exact
    trace.
    """

    def __init__(self, signals, columns):
        self._signals = list(signals)
        self._columns = [list(c) for c in columns]
        self._rows = len(self._columns[0]) if self._columns else 0
        self.row = 0

    @property
    def done(self):
        return self.row > self._rows

    def step(self, cycle):
        if self.row < self._rows:
            for s, c in zip(self._signals, self._columns):
                s.value = c[self.row]
        elif self.row == self._rows:
            for s in self._signals:
                s.value = 0
        self.row += 1


class StreamDriver:
    """Send ``items`` on a valid/ready stream, one per transfer, with optional random bubbles.

    Each cycle the driver offers the next item with probability ``p_valid``
    (drawn from ``rng`` only while items remain, so a seeded RNG gives the same
    bubbles every run).  ``taken`` counts the items transferred and
    ``first_cycle`` is the cycle of the first transfer.
    """

    def __init__(self, valid, payload, ready, items, *, p_valid=1.0, rng=None):
        if p_valid < 1.0 and rng is None:
            raise ValueError("random bubbles need a seeded rng")
        self._valid, self._payload, self._ready = valid, payload, ready
        self._items = list(items)
        self._p_valid, self._rng = p_valid, rng
        self.taken = 0
        self.first_cycle = None

    @property
    def done(self):
        return self.taken == len(self._items)

    def step(self, cycle):
        if self.taken < len(self._items) and (self._p_valid >= 1.0
                                               or self._rng.random() < self._p_valid):
            self._valid.value = 1
            self._payload.value = self._items[self.taken]
            if int(self._ready.value):
                if self.first_cycle is None:
                    self.first_cycle = cycle
                self.taken += 1
        else:
            self._valid.value = 0


class StreamMonitor:
    """Collect the payloads of a valid/ready stream into ``items``, with optional back-pressure.

    With ``ready`` given, the monitor drives it: high with probability
    ``p_ready`` each cycle (drawn from ``rng``).  Without, the consumer is
    always ready.  ``unpack(value)`` turns the payload's ``LogicArray`` into a
    list of items (default: one signed integer); a payload with X or Z bits
    fails the bench, naming the stream ``name``.
    """

    def __init__(self, valid, payload, ready=None, *, p_ready=1.0, rng=None, unpack=None,
                 name="output"):
        if p_ready < 1.0 and (ready is None or rng is None):
            raise ValueError("random back-pressure needs the ready port and a seeded rng")
        self._valid, self._payload, self._ready = valid, payload, ready
        self._p_ready, self._rng = p_ready, rng
        self._unpack = unpack
        self._name = name
        self.items = []
        self.cycle = None              # of the last transfer

    def step(self, cycle):
        ready = 1
        if self._ready is not None:
            if self._p_ready < 1.0:
                ready = int(self._rng.random() < self._p_ready)
            self._ready.value = ready
        if ready and int(self._valid.value):
            value = self._payload.value
            if not value.is_resolvable:
                raise AssertionError(f"{self._name}: unresolved output {value} at cycle {cycle}")
            if self._unpack is None:
                self.items.append(value.to_signed())
            else:
                self.items.extend(self._unpack(value))
            self.cycle = cycle


class Scoreboard:
    """Compare collected items with a reference model's, in order; fail on the first mismatch.

    Parameters
    ----------
    name : str
        What is compared, for messages (``"sum"``, ``"fc1: output"``).
    expected : sequence
        The reference model's items.
    where : callable, optional
        ``where(i)`` names item ``i`` in a message (``"vector 3, output 7"``);
        default ``f"{name} {i}"``.
    terms : callable, optional
        ``terms(i)`` gives the inputs that made item ``i``, added to the message.
    """

    def __init__(self, name, expected, *, where=None, terms=None):
        self.name = name
        self.expected = list(expected)
        self._where = where or (lambda i: f"{name} {i}")
        self._terms = terms

    def compare(self, got, *, check_count=True):
        """Raise ``AssertionError`` at the first ``got[i] != expected[i]``, then on a count mismatch."""
        got = list(got)
        for i, (g, e) in enumerate(zip(got, self.expected)):
            if g != e:
                bad = sum(a != b for a, b in zip(got, self.expected))
                message = f"{self._where(i)}: got {g}, expected {e} ({bad} mismatches of {len(got)})"
                if self._terms is not None:
                    message += f"; {self._terms(i)}"
                raise AssertionError(message)
        if check_count:
            assert len(got) == len(self.expected), \
                f"got {len(got)} items ({self.name}), expected {len(self.expected)}"
        return len(got)
