"""sparrow: compress neural networks into multiplier-free forms and generate FPGA accelerators.

Subpackages: ``sparrow.sw`` (PyTorch compression, export, golden model),
``sparrow.hw`` (Amaranth generators), ``sparrow.tb`` (cocotb benches and the
simulator runner), ``sparrow.fpga`` (board builds, reports, flashing, host),
``sparrow.bench`` (benchmarks).

``sparrow.compress(model, data, method, out=DIR)`` compresses your own model
(``.pt2``, ``.onnx`` or ``nn.Sequential``) to an accuracy budget, as
``sparrow compress --model FILE --data DATA.npz`` does.
"""

__version__ = "0.1.0"


class SparrowError(Exception):
    """A user mistake (bad input, bad parameter, missing file).

    The CLI prints the message as one line and exits non-zero, without a
    traceback.  The message names what is wrong and where (file, layer, field).
    """



def __getattr__(name):
    # ``sparrow.compress`` is the command layer's (sparrow.cli.compress.compress), loaded on first use by name
    # so that importing sparrow stays cheap and the contracts below the commands never import it.
    if name == "compress":
        import importlib
        return importlib.import_module("sparrow.cli.compress").compress
    raise AttributeError(f"module 'sparrow' has no attribute {name!r}")
