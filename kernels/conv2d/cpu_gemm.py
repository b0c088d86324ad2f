"""conv2d as im2col/col2im + BLAS: a parallel im2col/col2im written here, and the matrix
product by BLAS (``np.matmul`` from the launcher, outside any ``prange``, so BLAS threads
are not nested). Same index notation as cpu_direct.
"""
from __future__ import annotations

from numba import njit, prange

from .cpu_direct import _column_range


@njit(parallel=True, cache=True)
def _im2col(x, col, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # col[n, g, (c·R + r)·S + s, p·Q + q] = x[n, g·Cg + c, p·sh − pt + r·dh, q·sw − pl + s·dw] (0 outside).
    N, C, H, W = x.shape
    Cg = C // groups
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        g = c // Cg
        cl = c % Cg
        for r in range(R):
            for s in range(S):
                row = (cl * R + r) * S + s
                q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
                col0 = s * dw - pl
                for p in range(P):
                    h = p * sh - pt + r * dh
                    base = p * Q
                    if h < 0 or h >= H:
                        for q in range(Q):
                            col[n, g, row, base + q] = 0.0
                        continue
                    for q in range(q_lo):
                        col[n, g, row, base + q] = 0.0
                    if sw == 1 and q_hi - q_lo >= 16:
                        # Sliced views, indexed from 0: a computed index like q + col0 may be
                        # negative to Numba, whose wraparound select blocks vectorising.
                        # (Narrow rows: the view set-up costs more than it saves.)
                        cs = col[n, g, row, base + q_lo:base + q_hi]
                        xs = x[n, c, h, q_lo + col0:]
                        for j in range(cs.shape[0]):
                            cs[j] = xs[j]
                    else:
                        for q in range(q_lo, q_hi):
                            col[n, g, row, base + q] = x[n, c, h, q * sw + col0]
                    for q in range(max(q_hi, q_lo), Q):
                        col[n, g, row, base + q] = 0.0


@njit(parallel=True, cache=True, fastmath=True)
def _col2im(col, dx, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # Inverse of _im2col, summing overlaps; one prange iteration per (n, c) plane.
    N, C, H, W = dx.shape
    Cg = C // groups
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        g = c // Cg
        cl = c % Cg
        for h in range(H):
            for x_col in range(W):
                dx[n, c, h, x_col] = 0.0
        for r in range(R):
            for s in range(S):
                row = (cl * R + r) * S + s
                q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
                col0 = s * dw - pl
                for p in range(P):
                    h = p * sh - pt + r * dh
                    if h < 0 or h >= H:
                        continue
                    if sw == 1 and q_hi - q_lo >= 16:  # as in _im2col
                        cs = col[n, g, row, p * Q + q_lo:p * Q + q_hi]
                        xs = dx[n, c, h, q_lo + col0:]
                        for j in range(cs.shape[0]):
                            xs[j] += cs[j]
                    else:
                        base = p * Q
                        for q in range(q_lo, q_hi):
                            dx[n, c, h, q * sw + col0] += col[n, g, row, base + q]
