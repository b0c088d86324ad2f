"""conv2d direct CUDA kernels: one thread per output element, and the reductions.

Index names are the field's notation (n, c/k, h/w, p/q, r/s as in cpu.py).
- forward: one thread per output element (n, k, p, q), grid-stride loop.
- input gradient: one thread per input element (n, c, h, w), gathering the outputs
  that read it (no scatter, so no atomics).
- weight gradient: split-K without atomics: thread (split, k, c, r, s) sums its weight
  element over one fixed slice of the N·P output rows into a workspace; ``sum_splits``
  then adds the slices in index order (also used by the implicit-GEMM weight gradient).
- bias gradient: one thread per channel, summing in order.
These use 64-bit grid-stride indices, so they also serve tensors of 2**31 elements or more.
"""
from __future__ import annotations

from numba import cuda


def make_fwd(dt):
    def conv2d_fwd_kernel(x, w, b, has_bias, out, sh, sw, pt, pl, dh, dw, groups):
        N, C, H, W = x.shape
        K, Cg, R, S = w.shape
        P = out.shape[2]
        Q = out.shape[3]
        Kg = K // groups
        total = N * K * P * Q
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            q = idx % Q
            t = idx // Q
            p = t % P
            t = t // P
            k = t % K
            n = t // K
            c0 = (k // Kg) * Cg
            acc = dt(0)
            for c in range(Cg):
                for r in range(R):
                    h = p * sh - pt + r * dh
                    if h >= 0 and h < H:
                        for s in range(S):
                            col = q * sw - pl + s * dw
                            if col >= 0 and col < W:
                                acc += x[n, c0 + c, h, col] * w[k, c, r, s]
            if has_bias:
                acc += b[k]
            out[n, k, p, q] = acc

    return conv2d_fwd_kernel


def make_bwd_data(dt):
    def conv2d_bwd_data_kernel(w, dy, dx, sh, sw, pt, pl, dh, dw, groups):
        N, C, H, W = dx.shape
        K, Cg, R, S = w.shape
        P = dy.shape[2]
        Q = dy.shape[3]
        Kg = K // groups
        total = N * C * H * W
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            x_col = idx % W
            t = idx // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
            g = c // Cg
            cl = c % Cg
            acc = dt(0)
            for r in range(R):
                ph = h + pt - r * dh  # = p·sh when output row p reads input row h
                if ph >= 0 and ph % sh == 0 and ph // sh < P:
                    p = ph // sh
                    for s in range(S):
                        qw = x_col + pl - s * dw
                        if qw >= 0 and qw % sw == 0 and qw // sw < Q:
                            q = qw // sw
                            for kl in range(Kg):
                                k = g * Kg + kl
                                acc += dy[n, k, p, q] * w[k, cl, r, s]
            dx[n, c, h, x_col] = acc

    return conv2d_bwd_data_kernel


def make_bwd_weight(dt):
    def conv2d_bwd_weight_kernel(x, dy, partial, rows_per_split, sh, sw, pt, pl, dh, dw, groups):
        # Thread (split, k, c, r, s) sums its weight element over output rows
        # [split·rows_per_split, (split+1)·rows_per_split) of the N·P rows, in order.
        N, C, H, W = x.shape
        splits, K, Cg, R, S = partial.shape
        P = dy.shape[2]
        Q = dy.shape[3]
        Kg = K // groups
        total = splits * K * Cg * R * S
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            s = idx % S
            t = idx // S
            r = t % R
            t = t // R
            cl = t % Cg
            t = t // Cg
            k = t % K
            split = t // K
            c = (k // Kg) * Cg + cl
            acc = dt(0)
            row_end = min((split + 1) * rows_per_split, N * P)
            for row in range(split * rows_per_split, row_end):
                n = row // P
                p = row % P
                h = p * sh - pt + r * dh
                if h >= 0 and h < H:
                    for q in range(Q):
                        col = q * sw - pl + s * dw
                        if col >= 0 and col < W:
                            acc += dy[n, k, p, q] * x[n, c, h, col]
            partial[split, k, cl, r, s] = acc

    return conv2d_bwd_weight_kernel


def make_sum_splits(dt):
    def sum_splits_kernel(partial, out):
        # One thread per output element; the splits are added in index order (deterministic).
        splits = partial.shape[0]
        size = partial.shape[1]
        for idx in range(cuda.grid(1), size, cuda.gridsize(1)):
            acc = dt(0)
            for split in range(splits):
                acc += partial[split, idx]
            out[idx] = acc

    return sum_splits_kernel


def make_bwd_bias(dt):
    def conv2d_bwd_bias_kernel(dy, out):
        # One thread per channel k, summing N·P·Q terms in order.
        N, K, P, Q = dy.shape
        for k in range(cuda.grid(1), K, cuda.gridsize(1)):
            acc = dt(0)
            for n in range(N):
                for p in range(P):
                    for q in range(Q):
                        acc += dy[n, k, p, q]
            out[k] = acc

    return conv2d_bwd_bias_kernel


def make_relu_inplace(dt):
    def relu_inplace_kernel(out):
        # One thread per element, grid-stride; NaN stays NaN (NaN < 0 is false).
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            if out[i] < dt(0):
                out[i] = dt(0)

    return relu_inplace_kernel
