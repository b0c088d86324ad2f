"""Max and average pooling, forward and input gradient: Numba CPU kernels.

Index names: n batch, c channel, h/w input row/column, p/q output row/column,
r/s window row/column. Every kernel has one ``prange`` iteration per (n, c) plane,
and writes only that plane. The gradients are in gather form: each input element
sums the windows that contain it, so no two iterations touch the same element.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


# ---------------------------------------------------------------- max pooling
# out[n,c,p,q] = max_{r,s} x[n,c, p·sh − ph + r·dh, q·sw − pw + s·dw] over taps inside the input;
# NaN wins (the last NaN in scan order, as PyTorch), otherwise the first maximum.
@njit(parallel=True, cache=True)
def _max_fwd(x, out, indices, write_indices, R, S, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for p in range(P):
            h0 = p * sh - ph
            h1 = min(h0 + (R - 1) * dh + 1, H)
            while h0 < 0:
                h0 += dh
            for q in range(Q):
                w0 = q * sw - pw
                w1 = min(w0 + (S - 1) * dw + 1, W)
                while w0 < 0:
                    w0 += dw
                best = -np.inf
                best_index = h0 * W + w0
                for h in range(h0, h1, dh):
                    for w in range(w0, w1, dw):
                        v = x[n, c, h, w]
                        if v > best or math.isnan(v):
                            best = v
                            best_index = h * W + w
                out[n, c, p, q] = best
                if write_indices:
                    indices[n, c, p, q] = best_index


# dx[n,c,h,w] = Σ dy[n,c,p,q] over the windows (p, q) that contain (h, w) and chose it as argmax.
# Window p has tap r at row p·sh − ph + r·dh = h, so p runs over ⌈(h + ph − (R−1)·dh)/sh⌉ … ⌊(h + ph)/sh⌋
# where h + ph − p·sh is a multiple of dh.
@njit(parallel=True, cache=True)
def _max_bwd(dy, indices, dx, R, S, sh, sw, ph, pw, dh, dw):
    N, C, H, W = dx.shape
    P, Q = dy.shape[2], dy.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for h in range(H):
            t = h + ph - (R - 1) * dh
            p_lo = 0 if t <= 0 else (t + sh - 1) // sh
            p_hi = min((h + ph) // sh + 1, P)
            for w in range(W):
                u = w + pw - (S - 1) * dw
                q_lo = 0 if u <= 0 else (u + sw - 1) // sw
                q_hi = min((w + pw) // sw + 1, Q)
                flat = h * W + w
                acc = 0.0
                for p in range(p_lo, p_hi):
                    if dh > 1 and (h + ph - p * sh) % dh != 0:
                        continue
                    for q in range(q_lo, q_hi):
                        if dw > 1 and (w + pw - q * sw) % dw != 0:
                            continue
                        if indices[n, c, p, q] == flat:
                            acc += dy[n, c, p, q]
                dx[n, c, h, w] = acc


# ---------------------------------------------------------------- average pooling
@njit(inline="always")
def _divisor(p, q, H, W, R, S, sh, sw, ph, pw, count_include_pad):
    """PyTorch's divisor of window (p, q): its size clipped to the padded input, or to the input."""
    h0 = p * sh - ph
    w0 = q * sw - pw
    h1 = min(h0 + R, H + ph)
    w1 = min(w0 + S, W + pw)
    if count_include_pad:
        return (h1 - h0) * (w1 - w0)
    return (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))


# out[n,c,p,q] = Σ x over the window's taps inside the input / divisor(p, q); 0 for an empty window.
@njit(parallel=True, cache=True, fastmath=True)
def _avg_fwd(x, out, R, S, sh, sw, ph, pw, count_include_pad):
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for p in range(P):
            h0 = p * sh - ph
            h1 = min(h0 + R, H + ph)
            hs = max(h0, 0)
            he = min(h1, H)
            for q in range(Q):
                w0 = q * sw - pw
                w1 = min(w0 + S, W + pw)
                ws = max(w0, 0)
                we = min(w1, W)
                if hs >= he or ws >= we:
                    out[n, c, p, q] = 0.0
                    continue
                acc = 0.0
                for h in range(hs, he):
                    for w in range(ws, we):
                        acc += x[n, c, h, w]
                out[n, c, p, q] = acc / _divisor(p, q, H, W, R, S, sh, sw, ph, pw, count_include_pad)


# dx[n,c,h,w] = Σ over windows (p, q) containing (h, w) of dy[n,c,p,q] / divisor(p, q).
# Window p covers rows [p·sh − ph, p·sh − ph + R), so p runs over ⌈(h + ph − R + 1)/sh⌉ … ⌊(h + ph)/sh⌋.
@njit(parallel=True, cache=True, fastmath=True)
def _avg_bwd(dy, dx, R, S, sh, sw, ph, pw, count_include_pad):
    N, C, H, W = dx.shape
    P, Q = dy.shape[2], dy.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for h in range(H):
            t = h + ph - R + 1
            p_lo = 0 if t <= 0 else (t + sh - 1) // sh
            p_hi = min((h + ph) // sh + 1, P)
            for w in range(W):
                u = w + pw - S + 1
                q_lo = 0 if u <= 0 else (u + sw - 1) // sw
                q_hi = min((w + pw) // sw + 1, Q)
                acc = 0.0
                for p in range(p_lo, p_hi):
                    for q in range(q_lo, q_hi):
                        acc += dy[n, c, p, q] / _divisor(p, q, H, W, R, S, sh, sw, ph, pw, count_include_pad)
                dx[n, c, h, w] = acc


# ---------------------------------------------------------------- launchers
def _args(geom):
    (sh, sw), (ph, pw), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return geom.R, geom.S, sh, sw, ph, pw, dh, dw


def max_pool2d_fwd(x, out, indices, geom):
    write = indices is not None
    _max_fwd(x, out, indices if write else np.empty((1, 1, 1, 1), np.int64), write, *_args(geom))


def max_pool2d_bwd(dy, indices, dx, geom):
    _max_bwd(dy, indices, dx, *_args(geom))


def avg_pool2d_fwd(x, out, geom, count_include_pad):
    R, S, sh, sw, ph, pw, _, _ = _args(geom)
    _avg_fwd(x, out, R, S, sh, sw, ph, pw, count_include_pad)


def avg_pool2d_bwd(dy, dx, geom, count_include_pad):
    R, S, sh, sw, ph, pw, _, _ = _args(geom)
    _avg_bwd(dy, dx, R, S, sh, sw, ph, pw, count_include_pad)
