"""cocotb testbenches and the simulator runner (Verilator, Icarus).

:mod:`~sparrow.tb.runner` compiles and runs a bench; :mod:`~sparrow.tb.bench`
holds the parts every bench shares (start-up, stream driver and monitor,
scoreboard); each ``*_tb`` module keeps only what is specific to its unit;
:mod:`~sparrow.tb.model_sim` runs a whole model layer by layer.
"""
