"""Benchmark suites shared by ``convcore bench`` and ``pytest benchmarks/``."""
