"""Depthwise conv2d (C/groups == 1): dedicated CPU kernels. Same index notation as cpu_direct."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu_direct import _column_range


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
