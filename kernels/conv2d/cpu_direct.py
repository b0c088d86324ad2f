"""conv2d direct loop nests (forward, input gradient, weight gradient, bias gradient) and
the bias + ReLU epilogue shared by every CPU algorithm.

Index names are the field's notation: n batch, c/k input/output channel, g group,
h/w input row/column, p/q output row/column, r/s kernel row/column. ``prange`` runs over
independent output planes; the innermost loop is over output columns (contiguous at
stride 1, so LLVM vectorises it). Reductions run in a fixed order: deterministic.
"""
from __future__ import annotations

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


# ---------------------------------------------------------------- weight gradient
# dw[k,c,r,s] = Σ_n,p,q dy[n,k,p,q] · x[n, g·Cg+c, p·sh−pt+r·dh, q·sw−pl+s·dw]
@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_direct(x, dy, dw_out, sh, sw, pt, pl, dh, dw, groups, zero):
    # One prange iteration per (k, c) pair; n, p, q are summed in a fixed order. `zero`
    # has the array dtype: float32 accumulates in float32 (8-wide vector FMAs, no
    # per-element conversion to float64).
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
                acc = zero
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


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _bias_grad(dy, out, zero):
    # One prange iteration per channel k; each row is summed in a fixed (vectorised,
    # reassociated) order, in the array dtype. Only reassociation is allowed: NaN and
    # inf still propagate.
    N, K, P, Q = dy.shape
    for k in prange(K):
        acc = zero
        for n in range(N):
            for p in range(P):
                row = dy[n, k, p]
                for q in range(Q):
                    acc += row[q]
        out[k] = acc
