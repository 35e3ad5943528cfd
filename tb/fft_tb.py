"""cocotb bench for :class:`sparrow.hw.fft.FFTUnit`: driver, monitor, reference, scoreboard.

The pytest side (``tests/test_fft.py``) writes the stimulus to the ``.npz``
named by ``$FFT_TB_DATA``: ``re``/``im`` int64 [N, k] (signed 22-bit words)
and ``inverse`` [N].  For each block the driver loads the k samples (in a
shuffled order, to exercise the index port), starts the transform, waits for
``busy`` to fall, and reads the k results back in natural order.  The
reference is :func:`sparrow.fixedfft.fft_int`; the scoreboard requires
equality of every component and of the block exponent, and reports the first
mismatching block, bin and values.  The busy time of every transform is
checked against :func:`sparrow.hw.fft.fft_cycles`.
"""

import os

import numpy as np

from sparrow.fixedfft import ZBUF_BITS, DATA_BITS, fft_int, log2k

__all__ = ["pack_load", "unpack_pair"]


def pack_load(k, index, re, im, we_re=1, we_im=1):
    """The integer value of a ``load`` payload (index, re, im, we_re, we_im; LSB first)."""
    L = log2k(k)
    mask = (1 << ZBUF_BITS) - 1
    return (index | ((int(re) & mask) << L) | ((int(im) & mask) << (L + ZBUF_BITS))
            | (we_re << (L + 2 * ZBUF_BITS)) | (we_im << (L + 2 * ZBUF_BITS + 1)))


def unpack_pair(v, bits=DATA_BITS):
    """(re, im) from a packed {re, im} value of two signed ``bits``-bit fields."""
    v = int(v)
    m = (1 << bits) - 1

    def sx(x):
        return x - (1 << bits) if x >> (bits - 1) else x
    return sx(v & m), sx((v >> bits) & m)


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ClockCycles
except ImportError:  # imported by pytest for the helpers only
    cocotb = None


if cocotb is not None:
    @cocotb.test()
    async def fft_blocks(dut):
        from sparrow.hw.fft import fft_cycles
        data = np.load(os.environ["FFT_TB_DATA"])
        re, im, inverse = (data[f].astype(np.int64) for f in ("re", "im", "inverse"))
        n, k = re.shape
        rng = np.random.default_rng(int(data["seed"]))

        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        for sig in (dut.load__valid, dut.start__valid, dut.rd_req__valid, dut.load__payload,
                    dut.start__payload, dut.rd_req__payload):
            sig.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

        for b in range(n):
            order = rng.permutation(k)
            for i in order:
                assert int(dut.load__ready.value), f"block {b}: load not ready while idle"
                dut.load__payload.value = pack_load(k, int(i), re[b, i], im[b, i])
                dut.load__valid.value = 1
                await FallingEdge(dut.clk)
            dut.load__valid.value = 0
            dut.start__payload.value = int(inverse[b])
            dut.start__valid.value = 1
            while True:                          # taken at the edge after a cycle with ready high
                ready = int(dut.start__ready.value)
                await FallingEdge(dut.clk)
                if ready:
                    break
            dut.start__valid.value = 0
            busy = 0
            while int(dut.busy.value):
                busy += 1
                await FallingEdge(dut.clk)
            assert busy == fft_cycles(k), f"block {b}: busy for {busy} cycles, expected {fft_cycles(k)}"
            got_r, got_i = [], []
            for i in range(k + 1):
                if i < k:
                    dut.rd_req__payload.value = i
                    dut.rd_req__valid.value = 1
                else:
                    dut.rd_req__valid.value = 0
                await FallingEdge(dut.clk)
                if i < k:
                    assert int(dut.rd_valid.value), f"block {b}: rd_valid low"
                    r, q = unpack_pair(dut.rd_data.value.to_unsigned())
                    got_r.append(r)
                    got_i.append(q)
            exp_r, exp_i, exp_e = fft_int(re[b], im[b], inverse=bool(inverse[b]))
            got_e = int(dut.exp.value)
            assert got_e == int(exp_e), f"block {b}: exponent {got_e}, expected {int(exp_e)}"
            for i in range(k):
                if got_r[i] != exp_r[i] or got_i[i] != exp_i[i]:
                    raise AssertionError(
                        f"block {b} ({'inverse' if inverse[b] else 'forward'}) bin {i}: got "
                        f"({got_r[i]}, {got_i[i]}), expected ({exp_r[i]}, {exp_i[i]}); input re "
                        f"{re[b].tolist()} im {im[b].tolist()}")
        dut._log.info("FFT k=%d: %d blocks match fft_int bit for bit", k, n)
