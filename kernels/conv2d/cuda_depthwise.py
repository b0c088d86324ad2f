"""Depthwise conv2d (C/groups == 1) on CUDA: forward, input gradient, weight gradient.

Each output channel k reads only input channel c = k // (K/groups), so a conv is a set of independent
2-D planes; the GEMM formulation would have a reduction of only R·S. Index names as in cuda.py.
- forward: blockIdx.x = plane (n, k), blockIdx.y = a TY×TX tile of its output; thread (ty, tx) computes
  output (p0 + ty, q0 + tx). The block first stages the input window the tile reads (tile + halo,
  zero outside the padding) in shared memory, so each input element is read from global memory once
  per tile instead of R·S times.
- input gradient: blockIdx.x = plane (n, c), blockIdx.y = a TY×TX tile of dX; for each of the K/groups
  output channels m of that input channel, the block stages the dY window the tile gathers from and each
  thread adds the taps r, s whose (h + pt − r·dh) / sh and (w + pl − s·dw) / sw are exact (no atomics).
- weight gradient: blockIdx.x = k, blockIdx.y = a split of the N·P output rows; for each tap (r, s) the
  threads sum strided shares of the split's (row, q) terms, then a fixed-order tree in shared memory adds
  the threads' sums; thread 0 writes partial[split, k, 0, r, s]. The launcher's ordered sum over splits
  finishes it: deterministic, no atomics.
Index arithmetic is 32-bit as in cuda_igemm (the launchers check every tensor has < 2**31 elements).
``DW_TILE`` = (TY, TX, window rows, window columns); layers whose window does not fit are not depthwise
candidates (``depthwise_fits``).
"""
from __future__ import annotations

from numba import cuda

from convcore._backend import cuda_simulated

from .cuda_igemm import const32, i32, u32

# 8×32 threads per block on a GPU (a warp per output row: coalesced loads and stores); the window fits
# 3×3 at stride 2 with dilation up to 8, and 7×7 at stride 2. The simulator gets 4×4 threads.
DW_TILE = (4, 4, 16, 24) if cuda_simulated() else (8, 32, 32, 96)
# The weight gradient's threads per block (a power of two, for the reduction tree); a tree level is a
# barrier, very slow in the simulator, so 4 threads there.
DW_WGRAD_THREADS = 4 if cuda_simulated() else 256


def depthwise_fits(direction, geom) -> bool:
    """Whether the shared-memory window of one block holds what a tile of ``direction`` reads."""
    TY, TX, WH, WW = DW_TILE
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    height, width = (geom.P, geom.Q) if direction == "forward" else (geom.H, geom.W)
    if -(-height // TY) * -(-width // TX) > 65535:  # the tiles of a plane go on gridDim.y
        return False
    if direction == "forward":
        return (TY - 1) * sh + (geom.R - 1) * dh + 1 <= WH and (TX - 1) * sw + (geom.S - 1) * dw + 1 <= WW
    if direction == "input":
        return (TY - 1 + (geom.R - 1) * dh) // sh + 2 <= WH and (TX - 1 + (geom.S - 1) * dw) // sw + 2 <= WW
    return True  # the weight gradient stages nothing


def make_fwd_depthwise(dt):
    TY_, TX_, WH_, WW_ = DW_TILE
    TY, TX, NT, ZERO = const32(TY_), const32(TX_), const32(TY_ * TX_), const32(0)

    def conv2d_fwd_depthwise_kernel(x, w, b, has_bias, relu, out, sh, sw, pt, pl, dh, dw, groups):
        H, W = i32(x.shape[2]), i32(x.shape[3])
        K, R, S = i32(w.shape[0]), i32(w.shape[2]), i32(w.shape[3])
        P, Q = i32(out.shape[2]), i32(out.shape[3])
        sh, sw, pt, pl, dh, dw = i32(sh), i32(sw), i32(pt), i32(pl), i32(dh), i32(dw)
        Kg = i32(u32(K) // u32(groups))
        plane = i32(cuda.blockIdx.x)
        n = i32(u32(plane) // u32(K))
        k = i32(u32(plane) % u32(K))
        c = i32(u32(k) // u32(Kg))
        tiles_x = i32(u32(Q + TX - 1) // u32(TX))
        p0 = i32(i32(u32(cuda.blockIdx.y) // u32(tiles_x)) * TY)
        q0 = i32(i32(u32(cuda.blockIdx.y) % u32(tiles_x)) * TX)
        h0 = i32(p0 * sh - pt)
        w0 = i32(q0 * sw - pl)
        rows = i32(i32(TY - 1) * sh + i32(R - 1) * dh + 1)
        cols = i32(i32(TX - 1) * sw + i32(S - 1) * dw + 1)
        window = cuda.shared.array((WH_, WW_), dt)
        tid = i32(cuda.threadIdx.x)
        for e in range(tid, i32(rows * cols), NT):
            i = i32(u32(e) // u32(cols))
            j = i32(u32(e) % u32(cols))
            h = i32(h0 + i)
            col = i32(w0 + j)
            v = dt(0)
            if h >= 0 and h < H and col >= 0 and col < W:
                v = x[n, c, h, col]
            window[i, j] = v
        cuda.syncthreads()
        ty = i32(u32(tid) // u32(TX))
        tx = i32(u32(tid) % u32(TX))
        p = i32(p0 + ty)
        q = i32(q0 + tx)
        if p < P and q < Q:
            acc = dt(0)
            for r in range(ZERO, R):
                for s in range(ZERO, S):
                    acc += window[i32(ty * sh + r * dh), i32(tx * sw + s * dw)] * w[k, ZERO, r, s]
            if has_bias:
                acc += b[k]
            if relu and acc < dt(0):
                acc = dt(0)
            out[n, k, p, q] = acc

    return conv2d_fwd_depthwise_kernel


def make_bwd_data_depthwise(dt):
    TY_, TX_, WH_, WW_ = DW_TILE
    TY, TX, NT, ZERO = const32(TY_), const32(TX_), const32(TY_ * TX_), const32(0)

    def conv2d_bwd_data_depthwise_kernel(w, dy, dx, sh, sw, pt, pl, dh, dw, groups):
        C, H, W = i32(dx.shape[1]), i32(dx.shape[2]), i32(dx.shape[3])
        K, R, S = i32(w.shape[0]), i32(w.shape[2]), i32(w.shape[3])
        P, Q = i32(dy.shape[2]), i32(dy.shape[3])
        sh, sw, pt, pl, dh, dw = i32(sh), i32(sw), i32(pt), i32(pl), i32(dh), i32(dw)
        Kg = i32(u32(K) // u32(groups))
        plane = i32(cuda.blockIdx.x)
        n = i32(u32(plane) // u32(C))
        c = i32(u32(plane) % u32(C))
        tiles_x = i32(u32(W + TX - 1) // u32(TX))
        h0 = i32(i32(u32(cuda.blockIdx.y) // u32(tiles_x)) * TY)
        w0 = i32(i32(u32(cuda.blockIdx.y) % u32(tiles_x)) * TX)
        # The dY window: rows p_lo .. p_lo + rows − 1 hold every p that a row of the tile gathers from.
        p_lo = i32(i32(h0 + pt - i32(R - 1) * dh) // sh)
        q_lo = i32(i32(w0 + pl - i32(S - 1) * dw) // sw)
        rows = i32(i32(u32(TY - 1 + i32(R - 1) * dh) // u32(sh)) + 2)
        cols = i32(i32(u32(TX - 1 + i32(S - 1) * dw) // u32(sw)) + 2)
        window = cuda.shared.array((WH_, WW_), dt)
        tid = i32(cuda.threadIdx.x)
        h = i32(h0 + i32(u32(tid) // u32(TX)))
        x_col = i32(w0 + i32(u32(tid) % u32(TX)))
        acc = dt(0)
        for m in range(ZERO, Kg):
            k = i32(c * Kg + m)
            cuda.syncthreads()  # the previous channel's window is no longer read
            for e in range(tid, i32(rows * cols), NT):
                p = i32(p_lo + i32(u32(e) // u32(cols)))
                q = i32(q_lo + i32(u32(e) % u32(cols)))
                v = dt(0)
                if p >= 0 and p < P and q >= 0 and q < Q:
                    v = dy[n, k, p, q]
                window[i32(u32(e) // u32(cols)), i32(u32(e) % u32(cols))] = v
            cuda.syncthreads()
            for r in range(ZERO, R):
                # h + pt − r·dh = p·sh when output row p reads input row h; relative to the window's first
                # row it is non-negative, so an unsigned division finds p − p_lo.
                ph = i32(h + pt - r * dh - p_lo * sh)
                pi = i32(u32(ph) // u32(sh))
                if pi * sh == ph:
                    for s in range(ZERO, S):
                        qw = i32(x_col + pl - s * dw - q_lo * sw)
                        qi = i32(u32(qw) // u32(sw))
                        if qi * sw == qw:  # out-of-range p, q are zeros of the window
                            acc += window[pi, qi] * w[k, ZERO, r, s]
        if h < H and x_col < W:
            dx[n, c, h, x_col] = acc

    return conv2d_bwd_data_depthwise_kernel


def make_bwd_weight_depthwise(dt):
    NT_ = DW_WGRAD_THREADS
    NT, HALF, ZERO = const32(NT_), const32(NT_ // 2), const32(0)

    def conv2d_bwd_weight_depthwise_kernel(x, dy, partial, rows_per_split, sh, sw, pt, pl, dh, dw, groups):
        H, W = i32(x.shape[2]), i32(x.shape[3])
        K, R, S = i32(partial.shape[1]), i32(partial.shape[3]), i32(partial.shape[4])
        P, Q = i32(dy.shape[2]), i32(dy.shape[3])
        sh, sw, pt, pl, dh, dw = i32(sh), i32(sw), i32(pt), i32(pl), i32(dh), i32(dw)
        Kg = i32(u32(K) // u32(groups))
        k = i32(cuda.blockIdx.x)
        split = i32(cuda.blockIdx.y)
        c = i32(u32(k) // u32(Kg))
        row0 = i32(split * i32(rows_per_split))
        terms = i32(i32(min(i32(row0 + i32(rows_per_split)), i32(i32(x.shape[0]) * P)) - row0) * Q)
        sums = cuda.shared.array(NT_, dt)
        tid = i32(cuda.threadIdx.x)
        for r in range(ZERO, R):
            for s in range(ZERO, S):
                acc = dt(0)
                for e in range(tid, terms, NT):
                    row = i32(row0 + i32(u32(e) // u32(Q)))
                    q = i32(u32(e) % u32(Q))
                    p = i32(u32(row) % u32(P))
                    h = i32(p * sh - pt + r * dh)
                    col = i32(q * sw - pl + s * dw)
                    if h >= 0 and h < H and col >= 0 and col < W:
                        n = i32(u32(row) // u32(P))
                        acc += dy[n, k, p, q] * x[n, c, h, col]
                sums[tid] = acc
                cuda.syncthreads()
                stride = HALF
                while stride > 0:  # a fixed-order tree: the same sum every run
                    if tid < stride:
                        sums[tid] += sums[i32(tid + stride)]
                    cuda.syncthreads()
                    stride = i32(u32(stride) // u32(2))
                if tid == 0:
                    partial[split, k, ZERO, r, s] = sums[0]

    return conv2d_bwd_weight_depthwise_kernel
