"""conv2d as im2col/col2im + GEMM: a parallel im2col/col2im written here, and the matrix
product by ``kernels.gemm.cpu.matmul`` (convcore's AVX-512 GEMM for float32, else BLAS)
from the launcher, outside any ``prange``, so threads are not nested. Same index notation as cpu_direct.

Indexing: the inner copy loops index 1-D row views with ``uintp`` indices. Numba adds a
negative-index wraparound select to every signed index it cannot prove non-negative
(``base + q``, ``q·sw + col0``), which blocks vectorising and costs several instructions
per element; an unsigned index has none. Every such index here is non-negative by
construction (``_column_range`` clips q to the columns inside the input).
"""
from __future__ import annotations

from numba import njit, prange, uintp

from .cpu_direct import _column_range


@njit(inline="always")
def _im2col_row(xp, crow, r, s, sh, sw, pt, pl, dh, dw, P, Q):
    # crow[p·Q + q] = xp[p·sh − pt + r·dh, q·sw − pl + s·dw] (0 outside): one row of col.
    H, W = xp.shape
    q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
    q_hi = max(q_hi, q_lo)
    col0 = s * dw - pl
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


@njit(parallel=True, cache=True)
def _im2col(x, col, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # col[n, g, (c·R + r)·S + s, p·Q + q] = x[n, g·Cg + c, p·sh − pt + r·dh, q·sw − pl + s·dw] (0 outside).
    # One prange iteration per (n, c, r): the S rows of col for kernel row r (N·C alone is
    # too few iterations for two threads at batch 1 with RGB input).
    N, C = x.shape[0], x.shape[1]
    Cg = C // groups
    for ncr in prange(N * C * R):
        n = ncr // (C * R)
        c = (ncr // R) % C
        r = ncr % R
        for s in range(S):
            crow = col[n, c // Cg, ((c % Cg) * R + r) * S + s]
            _im2col_row(x[n, c], crow, r, s, sh, sw, pt, pl, dh, dw, P, Q)


@njit(parallel=True, cache=True)
def _im2col_batch(x, col, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # _im2col into the batch-wide layout col[g, (c·R + r)·S + s, n, p·Q + q] (C-contiguous:
    # a strided view of it as (n, g, ...) would cost Numba's generic-layout indexing).
    N, C = x.shape[0], x.shape[1]
    Cg = C // groups
    for ncr in prange(N * C * R):
        n = ncr // (C * R)
        c = (ncr // R) % C
        r = ncr % R
        for s in range(S):
            crow = col[c // Cg, ((c % Cg) * R + r) * S + s, n]
            _im2col_row(x[n, c], crow, r, s, sh, sw, pt, pl, dh, dw, P, Q)


@njit(inline="always")
def _col2im_row(crow, xp, r, s, sh, sw, pt, pl, dh, dw, P, Q):
    # xp[p·sh − pt + r·dh, q·sw − pl + s·dw] += crow[p·Q + q] for the taps inside the plane.
    H, W = xp.shape
    q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
    col0 = s * dw - pl
    for p in range(P):
        h = p * sh - pt + r * dh
        if h < 0 or h >= H:
            continue
        xrow = xp[h]
        base = p * Q
        for q in range(q_lo, q_hi):
            xrow[uintp(q * sw + col0)] += crow[uintp(base + q)]


@njit(parallel=True, cache=True, fastmath=True)
def _col2im(col, dx, sh, sw, pt, pl, dh, dw, groups, R, S, P, Q):
    # Inverse of _im2col, summing overlaps; one prange iteration per (n, c) plane, so
    # each iteration writes only its own plane (race-free, fixed order).
    N, C = dx.shape[0], dx.shape[1]
    Cg = C // groups
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        xp = dx[n, c]
        xp[:, :] = 0.0
        for r in range(R):
            for s in range(S):
                crow = col[n, c // Cg, ((c % Cg) * R + r) * S + s]
                _col2im_row(crow, xp, r, s, sh, sw, pt, pl, dh, dw, P, Q)
