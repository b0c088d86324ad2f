"""Timing and verification for one benchmark row."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    suite: str
    layer: str
    op: str
    backend: str
    gflops: float
    ms_median: float
    ms_min: float
    ms_max: float
    compile_s: float
    verified: bool
    vs_torch: float | None = None
    vs_numpy: float | None = None


def time_call(fn, repeats: int):
    """Median/min/max in ms over ``repeats`` calls, after one warm-up (returned separately, in s)."""
    start = time.perf_counter()
    fn()
    warmup = time.perf_counter() - start
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples)), float(min(samples)), float(max(samples)), warmup


def verified(actual, expected64, terms: int) -> bool:
    """float32 result within float32 tolerance of the float64 reference."""
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected64))))
    return bool(np.max(np.abs(actual - expected64)) <= 2e-5 * scale * max(1.0, np.sqrt(terms)))
