"""cocotb side of the stream bench (:mod:`sparrow.tb.streambench`): wait, read the counters.

No Python runs per clock cycle: the wrapper makes its own clock (a delay loop)
and reset, the stimulus and the captured outputs live in
the wrapper's memories (loaded and dumped by ``$readmemh``/``$writememh`` from
files named by plusargs), and the seeded bubbles and back-pressure come from
the wrapper's LFSR.  This module waits for ``done`` and
writes ``$STREAM_TB_OUT`` (JSON): ``timeout``, ``cycles`` (total), per engine
``first``/``last`` (the cycles of its first input and last output transfer),
``error`` and ``extra`` flags, and ``seconds`` (wall time of the run).
"""

import json
import os
import time

import cocotb
from cocotb.triggers import RisingEdge


@cocotb.test()
async def stream_run(dut):
    """Run the wrapper's phases to ``done``; the checks are the caller's (it has the reference)."""
    layers = int(os.environ["STREAM_TB_LAYERS"])
    begin = time.perf_counter()
    await RisingEdge(dut.done)
    seconds = time.perf_counter() - begin
    out = {"timeout": int(dut.timeout.value), "cycles": int(dut.cycle.value), "seconds": seconds,
           "layers": [{"first": int(getattr(dut, f"first_{l}").value),
                       "last": int(getattr(dut, f"last_{l}").value),
                       "error": int(getattr(dut, f"err_{l}").value),
                       "extra": int(getattr(dut, f"extra_{l}").value)} for l in range(layers)]}
    with open(os.environ["STREAM_TB_OUT"], "w") as f:
        json.dump(out, f)
    dut._log.info("%d cycles in %.3f s: %.0f cycles/s", out["cycles"], seconds,
                  out["cycles"] / max(seconds, 1e-9))
