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
    N, _, H, W = x.shape
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
                        os = out[n, k, p, q_lo:q_hi]  # 0-based views: no wraparound select
                        xs = x[n, c0 + c, h, q_lo * sw + col0::sw]
                        for j in range(os.shape[0]):
                            os[j] += wv * xs[j]


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
                        ys = dy[n, k, p, q_lo:q_hi]  # 0-based views: no wraparound select
                        xs = dx[n, c, h, q_lo * sw + col0::sw]
                        for j in range(ys.shape[0]):
                            xs[j] += wv * ys[j]


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


# ---------------------------------------------------------------- weight gradient
# dw[k,c,r,s] = Σ_n,p,q dy[n,k,p,q] · x[n, g·Cg+c, p·sh−pt+r·dh, q·sw−pl+s·dw]
@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_direct(x, dy, dw_out, sh, sw, pt, pl, dh, dw, groups):
    # One prange iteration per (k, c) pair; n, p, q are summed in a fixed order.
    N, _, H, W = x.shape
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
                        ys = dy[n, k, p, q_lo:q_hi]  # 0-based views: no wraparound select
                        xs = x[n, c, h, q_lo * sw + col0::sw]
                        for j in range(ys.shape[0]):
                            acc += ys[j] * xs[j]
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


# ---------------------------------------------------------------- depthwise (Cg == 1)
# Each output channel k reads one input channel c = k // M (M = K / C, the channel
# multiplier), so a whole (n, k) plane is independent. The loops run row by row so the
# output row stays in L1 across the R·S taps; the innermost loop is over output columns,
# contiguous at stride 1 (a separate stride-1 loop lets LLVM vectorise it without a
# gather). The valid column range of each tap s is computed once per plane (integer
# division is costly next to a 3x3 tap), so the inner loops carry no bounds checks.
@njit(inline="always")
def _tap_ranges(S, sw, pl, dw, W, Q):
    lo = np.empty(S, np.int64)
    hi = np.empty(S, np.int64)
    for s in range(S):
        lo[s], hi[s] = _column_range(sw, pl, s * dw, W, Q)
    return lo, hi


@njit(parallel=True, cache=True, fastmath=True)
def _fwd_depthwise(x, w, out, sh, sw, pt, pl, dh, dw, zero):
    # One prange iteration per output plane (n, k).
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        xp = x[n, k // M]
        op = out[n, k]
        lo, hi = _tap_ranges(S, sw, pl, dw, W, Q)
        for p in range(P):
            orow = op[p]
            for q in range(Q):
                orow[q] = zero
            for r in range(R):
                h = p * sh - pt + r * dh
                if h < 0 or h >= H:
                    continue
                xrow = xp[h]
                for s in range(S):
                    wv = w[k, 0, r, s]
                    col0 = s * dw - pl
                    os = orow[lo[s]:hi[s]]
                    xs = xrow[lo[s] * sw + col0::sw]
                    for j in range(os.shape[0]):
                        os[j] += wv * xs[j]


@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_depthwise(w, dy, dx, sh, sw, pt, pl, dh, dw, zero):
    # One prange iteration per input plane (n, c): it scatters the M output planes
    # k = c·M .. c·M + M − 1 into its own plane only, in a fixed order.
    N, C, H, W = dx.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        xp = dx[n, c]
        lo, hi = _tap_ranges(S, sw, pl, dw, W, Q)
        for h in range(H):
            for x_col in range(W):
                xp[h, x_col] = zero
        for m in range(M):
            k = c * M + m
            yp = dy[n, k]
            for p in range(P):
                yrow = yp[p]
                for r in range(R):
                    h = p * sh - pt + r * dh
                    if h < 0 or h >= H:
                        continue
                    xrow = xp[h]
                    for s in range(S):
                        wv = w[k, 0, r, s]
                        col0 = s * dw - pl
                        ys = yrow[lo[s]:hi[s]]
                        xs = xrow[lo[s] * sw + col0::sw]
                        for j in range(ys.shape[0]):
                            xs[j] += wv * ys[j]


@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_depthwise(x, dy, dw_out, sh, sw, pt, pl, dh, dw, zero):
    # One prange iteration per output channel k. Each tap (r, s) keeps a row of Q
    # partial sums (elementwise FMAs, no horizontal reduction in the hot loop) over
    # n and p in a fixed order; the row is summed at the end. The order does not
    # depend on the thread count, so results are deterministic. `zero` has the array
    # dtype, so float32 accumulates in float32.
    N, C, H, W = x.shape
    K, _, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    for k in prange(K):
        c = k // M
        lo, hi = _tap_ranges(S, sw, pl, dw, W, Q)
        acc = np.empty((R, S, Q), dw_out.dtype)
        for r in range(R):
            for s in range(S):
                for q in range(Q):
                    acc[r, s, q] = zero
        for n in range(N):
            xp = x[n, c]
            yp = dy[n, k]
            for p in range(P):
                yrow = yp[p]
                for r in range(R):
                    h = p * sh - pt + r * dh
                    if h < 0 or h >= H:
                        continue
                    xrow = xp[h]
                    for s in range(S):
                        arow = acc[r, s]
                        col0 = s * dw - pl
                        a_s = arow[lo[s]:hi[s]]
                        ys = yrow[lo[s]:hi[s]]
                        xs = xrow[lo[s] * sw + col0::sw]
                        for j in range(a_s.shape[0]):
                            a_s[j] += ys[j] * xs[j]
        for r in range(R):
            for s in range(S):
                total = zero
                for q in range(Q):
                    total += acc[r, s, q]
                dw_out[k, 0, r, s] = total


# Stride 1: the plane is copied into a zero-padded buffer of width Wp = Q + (S−1)·dw,
# flattened, so every tap is ONE long contiguous loop over (P−1)·Wp + Q elements
# (output columns q >= Q of each row are scratch, dropped when copying back). Rows of
# ~56 would leave most of the work in LLVM's scalar remainder loop; this has none.
@njit(inline="always")
def _pad_plane(src, pt, pl, Hp, Wp, dtype):
    buf = np.zeros(Hp * Wp, dtype)
    H, W = src.shape
    for h in range(min(H, Hp - pt)):
        base = (h + pt) * Wp + pl
        for x_col in range(min(W, Wp - pl)):
            buf[base + x_col] = src[h, x_col]
    return buf


@njit(parallel=True, cache=True, fastmath=True)
def _fwd_depthwise_s1(x, w, out, pt, pl, dh, dw, zero):
    # One prange iteration per output plane (n, k).
    N, C = x.shape[0], x.shape[1]
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    Wp = Q + (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        xb = _pad_plane(x[n, k // M], pt, pl, Hp, Wp, x.dtype)
        acc = np.zeros(L, out.dtype)
        for r in range(R):
            for s in range(S):
                wv = w[k, 0, r, s]
                xs = xb[r * dh * Wp + s * dw:]
                for i in range(L):
                    acc[i] += wv * xs[i]
        for p in range(P):
            for q in range(Q):
                out[n, k, p, q] = acc[p * Wp + q]


@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_depthwise_s1(w, dy, dx, pt, pl, dh, dw, zero):
    # One prange iteration per input plane (n, c): the M output planes of c are
    # scattered (in a fixed order) into a padded buffer of this plane only.
    N, C, H, W = dx.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    Wp = Q + (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        xb = np.zeros(Hp * Wp, dx.dtype)
        for m in range(M):
            k = c * M + m
            yb = _pad_plane(dy[n, k], 0, 0, P, Wp, dy.dtype)  # zero in columns q >= Q
            for r in range(R):
                for s in range(S):
                    wv = w[k, 0, r, s]
                    xs = xb[r * dh * Wp + s * dw:]
                    for i in range(L):
                        xs[i] += wv * yb[i]
        for h in range(H):  # at stride 1, Hp = pt + H + pb and Wp = pl + W + pr
            for x_col in range(W):
                dx[n, c, h, x_col] = xb[(h + pt) * Wp + x_col + pl]

@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_depthwise_s1(x, dy, dw_out, pt, pl, dh, dw, zero):
    # One prange iteration per output channel k; each tap is a long dot product per
    # image, summed over n in a fixed order (deterministic; float32 stays float32).
    N, C = x.shape[0], x.shape[1]
    K, _, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    Wp = Q + (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    for k in prange(K):
        c = k // M
        for r in range(R):
            for s in range(S):
                dw_out[k, 0, r, s] = zero
        for n in range(N):
            xb = _pad_plane(x[n, c], pt, pl, Hp, Wp, x.dtype)
            yb = _pad_plane(dy[n, k], 0, 0, P, Wp, dy.dtype)  # zero in columns q >= Q
            for r in range(R):
                for s in range(S):
                    xs = xb[r * dh * Wp + s * dw:]
                    t = zero
                    for i in range(L):
                        t += yb[i] * xs[i]
                    dw_out[k, 0, r, s] += t


# ---------------------------------------------------------------- launchers
def _choose(algorithm, geom):
    if algorithm != "auto":
        return algorithm
    # GEMM pays once the reduction (C/g·R·S) is deep enough to feed BLAS;
    # depthwise and tiny-channel layers stay direct.
    return "gemm" if geom.Cg * geom.R * geom.S >= 16 and geom.Kg >= 8 else "direct"


def _depthwise(geom):
    """Each output channel reads one input channel (groups == C): the depthwise kernels."""
    return geom.Cg == 1


def _depthwise_launch(stride1_kernel, kernel, geom, out, *arrays):
    sh, sw, pt, pl, dh, dw, _ = _geom_args(geom)
    zero = out.dtype.type(0)
    if sh == 1 and sw == 1:
        stride1_kernel(*arrays, pt, pl, dh, dw, zero)
    else:
        kernel(*arrays, sh, sw, pt, pl, dh, dw, zero)


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
    elif _depthwise(geom):
        _depthwise_launch(_fwd_depthwise_s1, _fwd_depthwise, geom, out, x, w, out)
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
    elif _depthwise(geom):
        _depthwise_launch(_dgrad_depthwise_s1, _dgrad_depthwise, geom, out, w, dy, out)
    else:
        _dgrad_direct(w, dy, out, *_geom_args(geom))


def conv2d_bwd_weight(x, dy, out, geom, algorithm):
    if _choose(algorithm, geom) == "gemm":
        # One GEMM per group over the whole batch: (Kg, N·P·Q) × (N·P·Q, Cg·R·S).
        # im2col writes straight into the (g, Cg·R·S, N, P·Q) layout through a
        # transposed view, so neither operand of the product needs a strided copy
        # beyond dy's (small) reorder, and there is no N × weight-size temporary.
        crs, pq = geom.Cg * geom.R * geom.S, geom.P * geom.Q
        col = np.empty((geom.groups, crs, geom.N, pq), dtype=x.dtype)
        _im2col(x, col.transpose(2, 0, 1, 3), *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
        dy_mat = np.ascontiguousarray(dy.reshape(geom.N, geom.groups, geom.Kg, pq).transpose(1, 2, 0, 3))
        np.matmul(dy_mat.reshape(geom.groups, geom.Kg, geom.N * pq),
                  col.reshape(geom.groups, crs, geom.N * pq).transpose(0, 2, 1),
                  out=out.reshape(geom.groups, geom.Kg, crs))
    elif _depthwise(geom):
        _depthwise_launch(_wgrad_depthwise_s1, _wgrad_depthwise, geom, out, x, dy, out)
    else:
        _wgrad_direct(x, dy, out, *_geom_args(geom))


def conv2d_bwd_bias(dy, out):
    _bias_grad(dy, out)
