"""NumPy's OpenBLAS: its idle threads, configured before NumPy loads it, and its kernels, reported.

1. After each threaded product, OpenBLAS's workers spin for ``2**OPENBLAS_THREAD_TIMEOUT``
   cycles (default 2**28, about 0.1 s) before they sleep. The CPU conv algorithms alternate
   BLAS products with Numba parallel loops (im2col → GEMM → col2im; Winograd's transforms
   around its batched GEMM), so on a few cores the spinning workers take the cores from
   Numba's threads for the whole next loop. Measured on 2 cores (`convcore bench --cases
   resnet50_3x3_14,lenet_5x5_14_b128`, the same run otherwise): ResNet-50 3x3 at 14x14
   forward 12.0 -> 8.6 ms, input gradient 11.8 -> 8.4 ms; LeNet 5x5 forward 1.6 -> 0.86 ms.
2. ``OPENBLAS_CORETYPE``, when the user (or the machine's environment) sets it, chooses
   OpenBLAS's kernels: convcore never changes it, but reports it, because it can halve
   every BLAS-backed path (measured on an AVX-512 AMD machine that sets it to Haswell:
   SGEMM 2048³ 232 GFLOP/s, against 440 with OpenBLAS's own choice, SkylakeX).

OpenBLAS reads its variables once, when it is loaded (by ``import numpy``), so they can
only be set here when convcore is imported before NumPy (as the ``convcore`` command is).
A value the user set is kept. ``describe()`` says what holds, for the log and the bench.
"""
from __future__ import annotations

import os
import sys

TIMEOUT = "OPENBLAS_THREAD_TIMEOUT"
# log2 of the spin, in cycles: 2**14 cycles, a few microseconds, keeps the workers awake
# between the products of one batched np.matmul.
TIMEOUT_VALUE = "14"
CORETYPE = "OPENBLAS_CORETYPE"


def _configure():
    if "numpy" in sys.modules:  # OpenBLAS has read its environment already
        return {TIMEOUT: "preloaded"}
    state = "user" if TIMEOUT in os.environ else "set"
    os.environ.setdefault(TIMEOUT, TIMEOUT_VALUE)
    return {TIMEOUT: state}


_STATES = _configure()


def state() -> str:
    """'set' (convcore set the spin), 'user' (the user's value) or 'preloaded' (NumPy was imported first)."""
    return _STATES[TIMEOUT]


def describe() -> str:
    """One line for logs and the bench header."""
    if _STATES[TIMEOUT] == "preloaded":
        text = (f"NumPy was imported before convcore, so OpenBLAS's workers spin 2^28 cycles after each product "
                f"(set {TIMEOUT}={TIMEOUT_VALUE} before importing NumPy, or import convcore first)")
    else:
        text = f"{TIMEOUT}={os.environ[TIMEOUT]} ({'set by convcore' if _STATES[TIMEOUT] == 'set' else 'the user'})"
    if CORETYPE in os.environ:
        text += f", {CORETYPE}={os.environ[CORETYPE]} (the user's: OpenBLAS's kernels are forced)"
    return "OpenBLAS " + text
