"""pytest-benchmark setup: the same shapes as ``convcore bench`` (convcore.bench.shapes).

Unlike tests/conftest.py this never turns the Numba CUDA simulator on: timing the simulator
means nothing, so cuda rows are skipped (with the reason) unless a real GPU is present.
Pick the suite with CONVCORE_BENCH_SUITE=quick|full (default quick).
"""
import os

import pytest


def pytest_configure(config):
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        raise pytest.UsageError("benchmarks/: unset NUMBA_ENABLE_CUDASIM; the simulator is never benchmarked")
