"""Amaranth HDL generators: shift-add PEs, basis unit, FFT circulant unit, engines, accelerator top."""
