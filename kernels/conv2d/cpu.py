"""conv2d forward, input gradient and weight gradient: Numba CPU kernels.

Index names are the field's notation: n batch, c/k input/output channel, g group,
h/w input row/column, p/q output row/column, r/s kernel row/column.

Two algorithms per direction:
- ``direct``: a loop nest, ``prange`` over independent output planes, the innermost
  loop over output columns (contiguous at stride 1, so LLVM vectorises it).
- ``gemm``: a parallel im2col/col2im written here, and the matrix product by BLAS
  (``np.matmul`` from the launcher, outside any ``prange``, so BLAS threads are not nested).
Both are race-free and reduce in a fixed order, so results are deterministic.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _column_range(q_stride, left_pad, offset, W, Q):
    """Output columns q whose input column q·q_stride − left_pad + offset lies in [0, W)."""
    start = left_pad - offset
    q_lo = 0 if start <= 0 else (start + q_stride - 1) // q_stride
    stop = W - 1 + left_pad - offset
    q_hi = -1 if stop < 0 else stop // q_stride
    return q_lo, min(q_hi + 1, Q)


# ---------------------------------------------------------------- forward
# out[n,k,p,q] = Σ_c,r,s x[n,g·Cg+c, p·sh−pt+r·dh, q·sw−pl+s·dw] · w[k,c,r,s]
@njit(parallel=True, cache=True, fastmath=True)
def _fwd_direct(x, w, out, sh, sw, pt, pl, dh, dw, groups):
    # One prange iteration per output plane (n, k).
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    Kg = K // groups
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        c0 = (k // Kg) * Cg
        for p in range(P):
            for q in range(Q):
                out[n, k, p, q] = 0.0
        for c in range(Cg):
            for r in range(R):
                for s in range(S):
                    wv = w[k, c, r, s]
                    q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
                    col0 = s * dw - pl
                    for p in range(P):
                        h = p * sh - pt + r * dh
                        if h < 0 or h >= H:
                            continue
                        for q in range(q_lo, q_hi):
                            out[n, k, p, q] += wv * x[n, c0 + c, h, q * sw + col0]


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
                    for q in range(q_lo, q_hi):
                        col[n, g, row, base + q] = x[n, c, h, q * sw + col0]
                    for q in range(max(q_hi, q_lo), Q):
                        col[n, g, row, base + q] = 0.0


@njit(parallel=True, cache=True)
def _epilogue(out, b, has_bias, relu):
    # Bias and ReLU in one pass, one prange iteration per output plane. Not fastmath:
    # ReLU must keep NaN (NaN < 0 is false).
    N, K, P, Q = out.shape
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        bv = b[k] if has_bias else 0.0
        for p in range(P):
            for q in range(Q):
                v = out[n, k, p, q] + bv
                if relu and v < 0:
                    v = 0.0
                out[n, k, p, q] = v


# ---------------------------------------------------------------- input gradient
# dx[n,c,h,w] = Σ_k,r,s dy[n,k,p,q] · w[k,c,r,s] where h = p·sh − pt + r·dh, w = q·sw − pl + s·dw
@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_direct(w, dy, dx, sh, sw, pt, pl, dh, dw, groups):
    # One prange iteration per input plane (n, c): each scatters only into its own plane.
    N, C, H, W = dx.shape
    K, Cg, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    Kg = K // groups
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        g = c // Cg
        cl = c % Cg
        for h in range(H):
            for x_col in range(W):
                dx[n, c, h, x_col] = 0.0
        for kl in range(Kg):
            k = g * Kg + kl
            for r in range(R):
                for s in range(S):
                    wv = w[k, cl, r, s]
                    q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
                    col0 = s * dw - pl
                    for p in range(P):
                        h = p * sh - pt + r * dh
                        if h < 0 or h >= H:
                            continue
                        for q in range(q_lo, q_hi):
                            dx[n, c, h, q * sw + col0] += wv * dy[n, k, p, q]


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
                    base = p * Q
                    for q in range(q_lo, q_hi):
                        dx[n, c, h, q * sw + col0] += col[n, g, row, base + q]


# ---------------------------------------------------------------- weight gradient
# dw[k,c,r,s] = Σ_n,p,q dy[n,k,p,q] · x[n, g·Cg+c, p·sh−pt+r·dh, q·sw−pl+s·dw]
@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_direct(x, dy, dw_out, sh, sw, pt, pl, dh, dw, groups):
    # One prange iteration per (k, c) pair; n, p, q are summed in a fixed order.
    N, C, H, W = x.shape
    K, Cg, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    Kg = K // groups
    for kc in prange(K * Cg):
        k = kc // Cg
        cl = kc % Cg
        c = (k // Kg) * Cg + cl
        for r in range(R):
            for s in range(S):
                q_lo, q_hi = _column_range(sw, pl, s * dw, W, Q)
                col0 = s * dw - pl
                acc = 0.0
                for n in range(N):
                    for p in range(P):
                        h = p * sh - pt + r * dh
                        if h < 0 or h >= H:
                            continue
                        for q in range(q_lo, q_hi):
                            acc += dy[n, k, p, q] * x[n, c, h, q * sw + col0]
                dw_out[k, cl, r, s] = acc


@njit(parallel=True, cache=True)
def _bias_grad(dy, out):
    # One prange iteration per channel k; fixed summation order.
    N, K, P, Q = dy.shape
    for k in prange(K):
        acc = 0.0
        for n in range(N):
            for p in range(P):
                for q in range(Q):
                    acc += dy[n, k, p, q]
        out[k] = acc


# ---------------------------------------------------------------- launchers
def _choose(algorithm, geom):
    if algorithm != "auto":
        return algorithm
    # GEMM pays once the reduction (C/g·R·S) is deep enough to feed BLAS;
    # depthwise and tiny-channel layers stay direct.
    return "gemm" if geom.Cg * geom.R * geom.S >= 16 and geom.Kg >= 8 else "direct"


def _geom_args(geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, pt, pl, dh, dw, geom.groups


def _im2col_buffer(x, geom):
    col = np.empty((geom.N, geom.groups, geom.Cg * geom.R * geom.S, geom.P * geom.Q), dtype=x.dtype)
    _im2col(x, col, *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
    return col


def conv2d_fwd(x, w, b, out, geom, algorithm, activation=None):
    if _choose(algorithm, geom) == "gemm":
        col = _im2col_buffer(x, geom)
        w_mat = w.reshape(geom.groups, geom.Kg, geom.Cg * geom.R * geom.S)
        np.matmul(w_mat[None], col, out=out.reshape(geom.N, geom.groups, geom.Kg, geom.P * geom.Q))
    else:
        _fwd_direct(x, w, out, *_geom_args(geom))
    if b is not None or activation is not None:
        _epilogue(out, b if b is not None else out.reshape(-1)[:1], b is not None, activation == "relu")


def conv2d_bwd_data(w, dy, out, geom, algorithm):
    if _choose(algorithm, geom) == "gemm":
        w_mat = w.reshape(geom.groups, geom.Kg, geom.Cg * geom.R * geom.S)
        dy_mat = dy.reshape(geom.N, geom.groups, geom.Kg, geom.P * geom.Q)
        col = np.matmul(w_mat.transpose(0, 2, 1)[None], dy_mat)
        _col2im(col, out, *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
    else:
        _dgrad_direct(w, dy, out, *_geom_args(geom))


def conv2d_bwd_weight(x, dy, out, geom, algorithm):
    if _choose(algorithm, geom) == "gemm":
        col = _im2col_buffer(x, geom)
        dy_mat = dy.reshape(geom.N, geom.groups, geom.Kg, geom.P * geom.Q)
        per_image = np.matmul(dy_mat, col.transpose(0, 1, 3, 2))  # (N, g, Kg, Cg·R·S)
        np.sum(per_image, axis=0, out=out.reshape(geom.groups, geom.Kg, -1))
    else:
        _wgrad_direct(x, dy, out, *_geom_args(geom))


def conv2d_bwd_bias(dy, out):
    _bias_grad(dy, out)
