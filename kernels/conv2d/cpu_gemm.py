"""conv2d as im2col/col2im + BLAS: a parallel im2col/col2im written here, and the matrix
product by BLAS (``np.matmul`` from the launcher, outside any ``prange``, so BLAS threads
are not nested). Same index notation as cpu_direct.

Indexing: the inner copy loops index 1-D row views with ``uintp`` indices. Numba adds a
negative-index wraparound select to every signed index it cannot prove non-negative
(``base + q``, ``q·sw + col0``), which blocks vectorising and costs several instructions
per element; an unsigned index has none. Every such index here is non-negative by
construction (``_column_range`` clips q to the columns inside the input).
"""
from __future__ import annotations

from numba import njit, prange, uintp

from .cpu_direct import _column_range


@njit(parallel=True, cache=True)
def _im2col(x, col, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # col[n, g, (c·R + r)·S + s, p·Q + q] = x[n, g·Cg + c, p·sh − pt + r·dh, q·sw − pl + s·dw] (0 outside).
    # One prange iteration per (n, c, r): the S rows of col for kernel row r (N·C alone is
    # too few iterations for two threads at batch 1 with RGB input).
    N, C, H, W = x.shape
    Cg = C // groups
    for ncr in prange(N * C * R):
        n = ncr // (C * R)
        c = (ncr // R) % C
        r = ncr % R
        g = c // Cg
        cl = c % Cg
        xp = x[n, c]
        for s in range(S):
            q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
            q_hi = max(q_hi, q_lo)
            col0 = s * dw - pl
            crow = col[n, g, (cl * R + r) * S + s]
            for p in range(P):
                h = p * sh - pt + r * dh
                base = p * Q
                if h < 0 or h >= H:
                    for q in range(Q):
                        crow[uintp(base + q)] = 0.0
                    continue
                xrow = xp[h]
                for q in range(q_lo):
                    crow[uintp(base + q)] = 0.0
                for q in range(q_lo, q_hi):
                    crow[uintp(base + q)] = xrow[uintp(q * sw + col0)]
                for q in range(q_hi, Q):
                    crow[uintp(base + q)] = 0.0


@njit(parallel=True, cache=True, fastmath=True)
def _col2im(col, dx, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # Inverse of _im2col, summing overlaps; one prange iteration per (n, c) plane, so
    # each iteration writes only its own plane (race-free, fixed order).
    N, C, H, W = dx.shape
    Cg = C // groups
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        g = c // Cg
        cl = c % Cg
        xp = dx[n, c]
        for h in range(H):
            for x_col in range(W):
                xp[h, x_col] = 0.0
        for r in range(R):
            for s in range(S):
                q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
                col0 = s * dw - pl
                crow = col[n, g, (cl * R + r) * S + s]
                for p in range(P):
                    h = p * sh - pt + r * dh
                    if h < 0 or h >= H:
                        continue
                    xrow = xp[h]
                    base = p * Q
                    for q in range(q_lo, q_hi):
                        xrow[uintp(q * sw + col0)] += crow[uintp(base + q)]
