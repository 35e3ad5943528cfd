"""Pinned CPU numerics for compression, so that the same code and seeds give the same model on any x86 machine.

Measured (2026-11-30, digits-cnn smartdeal, same code and seed, one thread):
the fp32 model comes out the same whatever the CPU's instruction set, but the
compressed one does not: capping oneDNN at AVX2 (``ONEDNN_MAX_CPU_ISA``), ATen's
vector kernels at AVX2 or none (``ATEN_CPU_CAPABILITY``), or MKL's code path
(``MKL_CBWR``) each changed its golden test accuracy (95.28% -> 94.17%, 94.44%,
95.00%).  Float sums in another order differ in the last bits; block masks,
power-of-two rounding and exponent windows are discrete decisions that turn
such bits into other models.  Two machines with different CPUs (AVX-512 or
not, Intel or AMD) therefore trained different compressed models.

:func:`pin` removes these sources for the rest of the process: ATen's portable
(non-vectorised) kernels, MKL's conditional numerical reproducibility in its
``COMPATIBLE`` branch (the same results on every x86 CPU), no oneDNN (its
convolution kernels and blocking depend on the CPU), and one thread (a
reduction split over threads sums in another order).  The environment
variables take effect only if no torch operation ran before in the process;
:func:`state` records what is in effect (the compressor writes it into the
manifest's ``meta.numerics``).  ``SPARROW_NATIVE_NUMERICS=1`` keeps the
machine's fastest kernels (and its own results).  What remains machine
dependent: a different torch, MKL or numpy version, or a non-x86 CPU.
"""

import os

__all__ = ["PINNED_ENV", "pin", "state"]

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def pin(threads=1):
    """Pin torch's CPU numerics (see the module text) and use ``threads`` threads; returns :func:`state`."""
    import torch
    if os.environ.get("SPARROW_NATIVE_NUMERICS") != "1":
        for key, value in PINNED_ENV.items():
            os.environ.setdefault(key, value)
        torch.backends.mkldnn.enabled = False
    torch.set_num_threads(threads)
    return state()


def state():
    """{cpu_capability, mkl_cbwr, onednn, threads, torch}: the numerics in effect now."""
    import torch
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": os.environ.get("MKL_CBWR"),
            "onednn": bool(torch.backends.mkldnn.enabled), "threads": torch.get_num_threads(),
            "torch": torch.__version__}
