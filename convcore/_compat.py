"""Compatibility with the NumPy that is installed, applied when convcore is imported.

numba-cuda 0.30.x registers a CUDA implementation for ``np.row_stack`` while it loads its typing
registries, at the first kernel compile. NumPy 2.5 removed ``row_stack`` (an alias of ``vstack``
since NumPy 1.x), so with numba-cuda 0.30.4 and NumPy 2.5 *every* CUDA kernel compile fails with
``AttributeError: module 'numpy' has no attribute 'row_stack'`` (seen on a lent H100 machine:
numba 0.68.0, numba-cuda 0.30.4, numpy 2.5.2). Restoring the alias, only where it is missing, is the
whole fix: ``row_stack`` was ``vstack`` under another name.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("convcore")


def restore_numpy_aliases() -> list[str]:
    """Put back NumPy aliases that numba-cuda still refers to; returns the names restored."""
    restored = []
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
        restored.append("row_stack")
    if restored:
        log.info("convcore: restored numpy.%s (= numpy.vstack) for numba-cuda's CUDA registries on NumPy %s",
                 ", numpy.".join(restored), np.__version__)
    return restored


restore_numpy_aliases()
