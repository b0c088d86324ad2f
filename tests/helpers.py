"""Comparison helpers shared by the op-family tests."""
from __future__ import annotations

import numpy as np

# Tolerance relative to the largest magnitude in the float64 reference.
RELATIVE_TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}


def to_numpy(array):
    if hasattr(array, "copy_to_host"):
        return array.copy_to_host()
    if hasattr(array, "get"):
        return array.get()
    if type(array).__module__.startswith("torch"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def random(rng, shape, dtype, low=-1.0, high=1.0):
    """Random data, never zeros."""
    return rng.uniform(low, high, size=shape).astype(dtype)


def assert_matches(actual, expected, dtype, terms=1, what=""):
    """actual (any array kind) equals the float64 ``expected`` to dtype tolerance.

    ``terms`` is the length of the sums behind each element: float32 rounding error
    grows with it, so the tolerance does too (as sqrt, with a floor).
    """
    actual = to_numpy(actual)
    dtype = np.dtype(dtype)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    tol = RELATIVE_TOL[dtype] * scale * max(1.0, np.sqrt(terms))
    assert not np.isnan(actual).any(), f"{what}: NaN in output (an element was never written)"
    err = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    assert err <= tol, f"{what}: max abs error {err:.3e} > tolerance {tol:.3e}"


def reference_weight_gradient(x, dy, geom):
    """The float64 reference weight gradient of the layer ``geom`` describes (its stride,
    padding, dilation and groups), from x and dy in any float dtype."""
    from convcore import reference

    return reference.conv2d_weight(x.astype(np.float64), geom.weight_shape, dy.astype(np.float64), stride=geom.stride,
                                   padding=geom.padding, dilation=geom.dilation, groups=geom.groups)


def assert_same_at_any_thread_count(compute):
    """``compute()`` (a fresh array each call) gives the same bits with one thread and with
    all of Numba's: a kernel whose sums do not depend on how the work is split."""
    import numba

    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(compute())
    finally:
        numba.set_num_threads(before)
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
