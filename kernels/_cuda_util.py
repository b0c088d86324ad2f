"""Shared pieces of the CUDA kernels: per-dtype compilation cache and launch sizes.

Every kernel is written as a factory ``make(dt)`` taking the Numba scalar type, so a
float32 kernel never touches float64 (literals are cast with ``dt(...)``), and each
(kernel, dtype) pair is compiled once and memoised. ``SIGNATURES`` lists each kernel
with explicit argument types for the offline ``compile_ptx`` + ``ptxas`` report.
"""
from __future__ import annotations

import numpy as np

THREADS = 256
MAX_BLOCKS = 8192
_cache = {}


def numba_dtype(dtype):
    from numba import float32, float64

    return {np.dtype(np.float32): float32, np.dtype(np.float64): float64}[np.dtype(dtype)]


def kernel(factory, dtype, *static):
    """The jitted kernel ``factory(dt, *static)`` makes for ``dtype``, compiled once per process
    for each (dtype, static parameters) — e.g. a block tile."""
    key = (factory, np.dtype(dtype), static)
    compiled = _cache.get(key)
    if compiled is None:
        from numba import cuda

        compiled = cuda.jit(factory(numba_dtype(dtype), *static))
        _cache[key] = compiled
    return compiled


def grid_for(total: int, threads: int = THREADS) -> int:
    """Blocks for a grid-stride loop over ``total`` items."""
    return max(1, min((total + threads - 1) // threads, MAX_BLOCKS))
