"""cocotb testbenches and the simulator runner (Verilator, Icarus)."""
