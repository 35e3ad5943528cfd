"""sparrow: compress neural networks into multiplier-free forms and generate FPGA accelerators.

Subpackages: ``sparrow.sw`` (PyTorch compression, export, golden model),
``sparrow.hw`` (Amaranth generators), ``sparrow.tb`` (cocotb benches and the
simulator runner), ``sparrow.fpga`` (board builds, reports, flashing, host),
``sparrow.bench`` (benchmarks).
"""

__version__ = "0.1.0"


class SparrowError(Exception):
    """A user mistake (bad input, bad parameter, missing file).

    The CLI prints the message as one line and exits non-zero, without a
    traceback.  The message names what is wrong and where (file, layer, field).
    """
