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

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sparrow.fixedfft import ZBUF_BITS, DATA_BITS, fft_int, log2k
from sparrow.hw.fft import fft_cycles
from sparrow.tb.bench import Scoreboard, signed_fields, start

__all__ = ["pack_load", "unpack_pair"]


def pack_load(k, index, re, im, we_re=1, we_im=1):
    """The integer value of a ``load`` payload (index, re, im, we_re, we_im; LSB first)."""
    L = log2k(k)
    mask = (1 << ZBUF_BITS) - 1
    return (index | ((int(re) & mask) << L) | ((int(im) & mask) << (L + ZBUF_BITS))
            | (we_re << (L + 2 * ZBUF_BITS)) | (we_im << (L + 2 * ZBUF_BITS + 1)))


def unpack_pair(v, bits=DATA_BITS):
    """(re, im) from a packed {re, im} value of two signed ``bits``-bit fields."""
    re, im = signed_fields(int(v), bits, 2)
    return re, im


@cocotb.test()
async def fft_blocks(dut):
    """Every bin and the block exponent of every transform equal fft_int's; busy time = fft_cycles."""
    data = np.load(os.environ["FFT_TB_DATA"])
    re, im, inverse = (data[f].astype(np.int64) for f in ("re", "im", "inverse"))
    n, k = re.shape
    rng = np.random.default_rng(int(data["seed"]))
    await start(dut, idle={p: 0 for p in ("load__valid", "start__valid", "rd_req__valid",
                                          "load__payload", "start__payload", "rd_req__payload")})

    for b in range(n):
        for i in rng.permutation(k):
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
        got = []
        for i in range(k + 1):
            if i < k:
                dut.rd_req__payload.value = i
                dut.rd_req__valid.value = 1
            else:
                dut.rd_req__valid.value = 0
            await FallingEdge(dut.clk)
            if i < k:
                assert int(dut.rd_valid.value), f"block {b}: rd_valid low"
                got.append(unpack_pair(dut.rd_data.value.to_unsigned()))
        exp_r, exp_i, exp_e = fft_int(re[b], im[b], inverse=bool(inverse[b]))
        got_e = int(dut.exp.value)
        assert got_e == int(exp_e), f"block {b}: exponent {got_e}, expected {int(exp_e)}"
        direction = "inverse" if inverse[b] else "forward"
        bins = Scoreboard("bin", [(int(r), int(q)) for r, q in zip(exp_r, exp_i)],
                          where=lambda i: f"block {b} ({direction}) bin {i}",
                          terms=lambda i: f"input re {re[b].tolist()} im {im[b].tolist()}")
        bins.compare(got)
    dut._log.info("FFT k=%d: %d blocks match fft_int bit for bit", k, n)
