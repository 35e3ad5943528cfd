"""Benchmarks: each prints measured numbers (resources, fmax, cycles, storage, accuracy)."""
