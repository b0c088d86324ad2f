"""Boundary modes of filter2d, shared by the CPU and CUDA kernels.

``source_index`` is plain Python, compiled twice: with ``njit`` in cpu.py and as a CUDA
device function in cuda.py, so both backends follow one definition of each mode
(the same as scipy.ndimage's).
"""

REFLECT, CONSTANT, NEAREST, MIRROR, WRAP = 0, 1, 2, 3, 4


def source_index(i, n, mode):
    """Source index of position i along an axis of length n, or −1 (mode constant, outside)."""
    if i >= 0 and i < n:
        return i
    if mode == CONSTANT:
        return -1
    if mode == NEAREST:
        return 0 if i < 0 else n - 1
    if mode == WRAP:
        m = i % n
        return m + n if m < 0 else m
    if mode == REFLECT:
        period = 2 * n
        m = i % period
        if m < 0:
            m += period
        return m if m < n else period - 1 - m
    # MIRROR
    if n == 1:
        return 0
    period = 2 * n - 2
    m = i % period
    if m < 0:
        m += period
    return m if m < n else period - m
