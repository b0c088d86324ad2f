"""OpenBLAS's idle worker threads, configured before NumPy loads OpenBLAS.

After each threaded product, OpenBLAS's workers spin for ``2**OPENBLAS_THREAD_TIMEOUT``
cycles (default 2**28, about 0.1 s) before they sleep. The CPU conv algorithms alternate
BLAS products with Numba parallel loops (im2col → GEMM → col2im; Winograd's transforms
around its batched GEMM), so on a few cores the spinning workers take the cores from
Numba's threads for the whole next loop. Measured on 2 cores (`convcore bench --cases
resnet50_3x3_14,lenet_5x5_14_b128`, the same run otherwise): ResNet-50 3x3 at 14x14 forward
12.0 -> 8.6 ms, input gradient 11.8 -> 8.4 ms; LeNet 5x5 forward 1.6 -> 0.86 ms.

OpenBLAS reads the variable once, when it is loaded (by ``import numpy``), so it can only
be set here when convcore is imported before NumPy (as the ``convcore`` command is). A value
the user set is kept. ``state()`` says which case holds, for the log and the bench header.
"""
from __future__ import annotations

import os
import sys

VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
# log2 of the spin, in cycles: 2**VALUE cycles, a few microseconds, is enough to keep the
# workers awake between the products of one batched np.matmul.
VALUE = "14"

if VARIABLE in os.environ:
    _STATE = "user"
elif "numpy" in sys.modules:
    _STATE = "preloaded"  # OpenBLAS has read its environment already
else:
    os.environ[VARIABLE] = VALUE
    _STATE = "set"


def state() -> str:
    """'set' (convcore set it), 'user' (the user's value) or 'preloaded' (NumPy came first)."""
    return _STATE


def describe() -> str:
    """One line for logs and the bench header."""
    if _STATE == "set":
        return f"{VARIABLE}={VALUE} (set by convcore: OpenBLAS workers sleep after 2^{VALUE} idle cycles)"
    if _STATE == "user":
        return f"{VARIABLE}={os.environ[VARIABLE]} (set by the user)"
    return (f"{VARIABLE} unset and NumPy imported before convcore: OpenBLAS's workers spin 2^28 cycles after "
            f"each product; set {VARIABLE}={VALUE} before importing NumPy (or import convcore first)")
