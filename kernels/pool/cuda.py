"""Max and average pooling, forward and input gradient: Numba CUDA kernels.

Index names as in cpu.py (n, c, h/w, p/q, r/s). Thread mapping, all grid-stride loops:
- forward: one thread per output element (n, c, p, q), reading its window.
- gradients: one thread per input element (n, c, h, w), gathering the windows that
  contain it (each element has exactly one writer: no atomics, deterministic).
"""
from __future__ import annotations

import math

from numba import cuda

from .._cuda_util import THREADS, grid_for, kernel


def make_max_fwd(dt):
    def max_pool2d_fwd_kernel(x, out, indices, write_indices, R, S, sh, sw, ph, pw, dh, dw):
        # NaN wins (the last NaN in scan order, as PyTorch), otherwise the first maximum.
        N, C, H, W = x.shape
        P = out.shape[2]
        Q = out.shape[3]
        total = N * C * P * Q
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            q = idx % Q
            t = idx // Q
            p = t % P
            t = t // P
            c = t % C
            n = t // C
            h0 = p * sh - ph
            h1 = min(h0 + (R - 1) * dh + 1, H)
            while h0 < 0:
                h0 += dh
            w0 = q * sw - pw
            w1 = min(w0 + (S - 1) * dw + 1, W)
            while w0 < 0:
                w0 += dw
            best = dt(-math.inf)
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

    return max_pool2d_fwd_kernel


def make_max_bwd(dt):
    def max_pool2d_bwd_kernel(dy, indices, dx, R, S, sh, sw, ph, pw, dh, dw):
        # dx[n,c,h,w] = Σ dy[n,c,p,q] over windows containing (h, w) whose argmax is h·W + w.
        N, C, H, W = dx.shape
        P = dy.shape[2]
        Q = dy.shape[3]
        total = N * C * H * W
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            w = idx % W
            t = idx // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
            # Window p has tap r at row p·sh − ph + r·dh = h: p from ⌈(h + ph − (R−1)·dh)/sh⌉ to
            # ⌊(h + ph)/sh⌋ where h + ph − p·sh is a multiple of dh (likewise q).
            a = h + ph - (R - 1) * dh
            p_lo = 0 if a <= 0 else (a + sh - 1) // sh
            p_hi = min((h + ph) // sh + 1, P)
            b = w + pw - (S - 1) * dw
            q_lo = 0 if b <= 0 else (b + sw - 1) // sw
            q_hi = min((w + pw) // sw + 1, Q)
            flat = h * W + w
            acc = dt(0)
            for p in range(p_lo, p_hi):
                if dh == 1 or (h + ph - p * sh) % dh == 0:
                    for q in range(q_lo, q_hi):
                        if (dw == 1 or (w + pw - q * sw) % dw == 0) and indices[n, c, p, q] == flat:
                            acc += dy[n, c, p, q]
            dx[n, c, h, w] = acc

    return max_pool2d_bwd_kernel


def make_avg_fwd(dt):
    def avg_pool2d_fwd_kernel(x, out, R, S, sh, sw, ph, pw, count_include_pad):
        N, C, H, W = x.shape
        P = out.shape[2]
        Q = out.shape[3]
        total = N * C * P * Q
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            q = idx % Q
            t = idx // Q
            p = t % P
            t = t // P
            c = t % C
            n = t // C
            h0 = p * sh - ph
            w0 = q * sw - pw
            h1 = min(h0 + R, H + ph)
            w1 = min(w0 + S, W + pw)
            hs = max(h0, 0)
            he = min(h1, H)
            ws = max(w0, 0)
            we = min(w1, W)
            acc = dt(0)
            for h in range(hs, he):
                for w in range(ws, we):
                    acc += x[n, c, h, w]
            count = (h1 - h0) * (w1 - w0) if count_include_pad else (he - hs) * (we - ws)
            out[n, c, p, q] = acc / dt(count) if hs < he and ws < we else dt(0)

    return avg_pool2d_fwd_kernel


def make_avg_bwd(dt):
    def avg_pool2d_bwd_kernel(dy, dx, R, S, sh, sw, ph, pw, count_include_pad):
        # dx[n,c,h,w] = Σ over windows (p, q) containing (h, w) of dy[n,c,p,q] / divisor(p, q);
        # window p covers rows [p·sh − ph, p·sh − ph + R): p from ⌈(h + ph − R + 1)/sh⌉ to ⌊(h + ph)/sh⌋.
        N, C, H, W = dx.shape
        P = dy.shape[2]
        Q = dy.shape[3]
        total = N * C * H * W
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            w = idx % W
            t = idx // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
            a = h + ph - R + 1
            p_lo = 0 if a <= 0 else (a + sh - 1) // sh
            p_hi = min((h + ph) // sh + 1, P)
            b = w + pw - S + 1
            q_lo = 0 if b <= 0 else (b + sw - 1) // sw
            q_hi = min((w + pw) // sw + 1, Q)
            acc = dt(0)
            for p in range(p_lo, p_hi):
                h0 = p * sh - ph
                h1 = min(h0 + R, H + ph)
                for q in range(q_lo, q_hi):
                    w0 = q * sw - pw
                    w1 = min(w0 + S, W + pw)
                    if count_include_pad:
                        count = (h1 - h0) * (w1 - w0)
                    else:
                        count = (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))
                    acc += dy[n, c, p, q] / dt(count)
            dx[n, c, h, w] = acc

    return avg_pool2d_bwd_kernel


def _args(geom):
    (sh, sw), (ph, pw), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return geom.R, geom.S, sh, sw, ph, pw, dh, dw


def max_pool2d_fwd(x, out, indices, geom):
    write = indices is not None
    if not write:
        indices = cuda.device_array((1, 1, 1, 1), dtype="int64", stream=out.stream)  # never written
    launch = kernel(make_max_fwd, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](x, out, indices, write, *_args(geom))


def max_pool2d_bwd(dy, indices, dx, geom):
    launch = kernel(make_max_bwd, dx.dtype)
    launch[grid_for(dx.size), THREADS, dx.stream](dy, indices, dx, *_args(geom))


def avg_pool2d_fwd(x, out, geom, count_include_pad):
    R, S, sh, sw, ph, pw, _, _ = _args(geom)
    launch = kernel(make_avg_fwd, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](x, out, R, S, sh, sw, ph, pw, count_include_pad)


def avg_pool2d_bwd(dy, dx, geom, count_include_pad):
    R, S, sh, sw, ph, pw, _, _ = _args(geom)
    launch = kernel(make_avg_bwd, dx.dtype)
    launch[grid_for(dx.size), THREADS, dx.stream](dy, dx, R, S, sh, sw, ph, pw, count_include_pad)


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature)}."""
    from numba import boolean, int64

    a4 = dt[:, :, :, ::1]
    i4 = int64[:, :, :, ::1]
    geo = (int64,) * 8
    avg = (int64,) * 6 + (boolean,)
    return {
        "max_pool2d_fwd": (make_max_fwd, (a4, a4, i4, boolean) + geo),
        "max_pool2d_bwd": (make_max_bwd, (a4, i4, a4) + geo),
        "avg_pool2d_fwd": (make_avg_fwd, (a4, a4) + avg),
        "avg_pool2d_bwd": (make_avg_bwd, (a4, a4) + avg),
    }
