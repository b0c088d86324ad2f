"""NumPy reference for filter2d: scipy.ndimage.correlate/convolve on the last two axes.

The boundary modes map an out-of-range index to a source index (or to ``cval``),
exactly as scipy.ndimage names them (for a row ``a b c d``):

    reflect  d c b a | a b c d | d c b a     (half-sample symmetric)
    mirror     d c b | a b c d | c b a       (whole-sample symmetric)
    nearest  a a a a | a b c d | d d d d
    wrap     a b c d | a b c d | a b c d
    constant k k k k | a b c d | k k k k     (k = cval)

The patterns repeat for kernels wider than the image.
"""
from __future__ import annotations

import numpy as np

MODES = ("reflect", "constant", "nearest", "mirror", "wrap")


def source_index(i, n, mode):
    """Source index of (integer array) positions ``i`` along an axis of length n; −1 where
    mode='constant' and out of range."""
    i = np.asarray(i)
    inside = (i >= 0) & (i < n)
    if mode == "constant":
        return np.where(inside, i, -1)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if mode == "reflect":
        m = np.mod(i, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        m = np.mod(i, 2 * n - 2)
        return np.where(m < n, m, 2 * n - 2 - m)
    raise ValueError(f"unknown mode {mode!r}")


def anchor(size, convolve):
    """Kernel tap aligned with the output element: size//2 for correlation; scipy's convolve
    flips the kernel and shifts even sizes by one, giving (size−1)//2."""
    return (size - 1) // 2 if convolve else size // 2


def filter2d(image, kernel, mode, cval, convolve):
    """out[..., i, j] = Σ_r,s k[r, s] · image[..., src(i + r − a_r), src(j + s − a_s)],
    with k the kernel (flipped in both axes when ``convolve``) and a the anchor."""
    x = image.astype(np.float64)
    k = np.asarray(kernel, dtype=np.float64)
    if convolve:
        k = k[::-1, ::-1]
    R, S = k.shape
    H, W = x.shape[-2:]
    rows = source_index(np.arange(H + R - 1) - anchor(R, convolve), H, mode)
    cols = source_index(np.arange(W + S - 1) - anchor(S, convolve), W, mode)
    extended = x[..., rows[:, None], cols[None, :]]
    if mode == "constant":
        outside = (rows[:, None] < 0) | (cols[None, :] < 0)
        extended = np.where(outside, float(cval), extended)
    out = np.zeros(x.shape)
    for r in range(R):
        for s in range(S):
            out += k[r, s] * extended[..., r : r + H, s : s + W]
    return out.astype(image.dtype)
