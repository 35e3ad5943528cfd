"""cocotb testbenches and the simulator runner (Verilator, Icarus).

:mod:`~sparrow.tb.runner` compiles and runs a bench; :mod:`~sparrow.tb.bench`
holds the parts every bench shares (start-up, stream driver and monitor,
scoreboard); each ``*_tb`` module keeps only what is specific to its unit;
:mod:`~sparrow.tb.model_sim` runs a whole model on the engines;
:mod:`~sparrow.tb.streambench` is the bench without Python per cycle (a
generated Verilog wrapper, run-time ROMs, cached builds) that it and the
fuzzer (:mod:`~sparrow.tb.fuzz`) use.
"""
