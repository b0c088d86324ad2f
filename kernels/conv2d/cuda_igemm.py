"""conv2d as implicit GEMM on CUDA: forward, input gradient, weight gradient (CUTLASS's fprop/dgrad/wgrad).

One structure for the three directions. A block computes a BM×BN tile of C[M, N] = Σ_K A[M, K]·B[K, N],
staging BK-deep slices of A (``As``, BK×BM) and B (``Bs``, BK×BN), gathered from the tensors, through shared
memory; thread (tm, tn) keeps a TM×TN register tile whose rows are strided by DM and columns by DN, so its
stores to consecutive GEMM rows (forward, dgrad) or columns (wgrad) are coalesced. ``tile`` = (TM, TN, BK, DM, DN).
- forward: M = N·P·Q (n, p, q), N = K/g, K = C/g·R·S; A = the input gathered (zero outside the padding),
  B = the weight; blockIdx.z is the group. Bias and ReLU are fused in the epilogue.
- input gradient: M = N·H·W (n, h, w), N = C/g, K = K/g·R·S;
  dX[n,c,h,w] = Σ_k,r,s dY[n,k,(h+pt−r·dh)/sh,(w+pl−s·dw)/sw]·W[k,c,r,s]: A holds dY at the taps whose
  divisions are exact and in range, zero elsewhere (masked in the gather; for stride > 1 most taps are zero).
- weight gradient: M = K/g, N = C/g·R·S, K = N·P·Q split in slices of ``chunk`` rows (a multiple of BK);
  blockIdx.z = group·splits + split, and each split writes its whole tile to ``partial[split]`` — no atomics;
  the launcher's ordered sum over splits makes the result bitwise reproducible.

Index arithmetic is 32-bit. Numba types integer literals and ``range`` bounds as int64 and promotes int32
arithmetic to int64 (which is what cost 124-126 registers), so every index expression is cast back with
``i32(...)`` and the tile constants are int32: LLVM then emits 32-bit instructions. Divisions and remainders
go through ``u32`` (all their operands are non-negative here): LLVM narrows an unsigned 64-bit division of
zero-extended values to div.u32, but not a signed one (whose floor correction it cannot drop). This is exact because the
launchers only pick these kernels when every tensor has fewer than 2**31 elements. The simulator computes in
Python ints either way, so there the casts are plain ``int`` (numpy scalars would only slow it down).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from convcore._backend import cuda_simulated

if cuda_simulated():
    i32 = u32 = const32 = int
else:
    from numba import int32 as i32
    from numba import uint32 as u32

    const32 = np.int32


def _tile_constants(tile):
    TM, TN, BK, DM, DN = tile
    return tuple(const32(v) for v in (TM, TN, BK, DM, DN, TM * DM, TN * DN, DM * DN, BK * TM * DM, BK * TN * DN, 0))


def make_fwd_igemm(dt, tile, relu=False):
    TM_, TN_, A_SHAPE, B_SHAPE = tile[0], tile[1], (tile[2], tile[0] * tile[3]), (tile[2], tile[1] * tile[4])
    TM, TN, BK, DM, DN, BM, BN, NT, A_SIZE, B_SIZE, ZERO = _tile_constants(tile)

    def conv2d_fwd_igemm_kernel(x, w, b, has_bias, out, sh, sw, pt, pl, dh, dw, groups):
        H, W = i32(x.shape[2]), i32(x.shape[3])
        Cg, R, S = i32(w.shape[1]), i32(w.shape[2]), i32(w.shape[3])
        P, Q = i32(out.shape[2]), i32(out.shape[3])
        sh, sw, pt, pl, dh, dw = i32(sh), i32(sw), i32(pt), i32(pl), i32(dh), i32(dw)
        Kg = i32(u32(w.shape[0]) // u32(groups))
        M = i32(i32(x.shape[0]) * i32(P * Q))
        RS = i32(R * S)
        KK = i32(Cg * RS)
        g = i32(cuda.blockIdx.z)
        m0 = i32(cuda.blockIdx.x * BM)
        n0 = i32(cuda.blockIdx.y * BN)
        tid = i32(cuda.threadIdx.x)
        tm = i32(u32(tid) % u32(DM))
        tn = i32(u32(tid) // u32(DM))
        As = cuda.shared.array(A_SHAPE, dt)
        Bs = cuda.shared.array(B_SHAPE, dt)
        acc = cuda.local.array((TM_, TN_), dt)
        a_frag = cuda.local.array(TM_, dt)
        b_frag = cuda.local.array(TN_, dt)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = dt(0)
        for k0 in range(ZERO, KK, BK):
            # The input slice: consecutive threads take consecutive output pixels.
            for e in range(tid, A_SIZE, NT):
                kk = i32(u32(e) // u32(BM))
                mm = i32(u32(e) % u32(BM))
                m = i32(m0 + mm)
                kg = i32(k0 + kk)
                v = dt(0)
                if m < M and kg < KK:
                    q = i32(u32(m) % u32(Q))
                    t = i32(u32(m) // u32(Q))
                    p = i32(u32(t) % u32(P))
                    n = i32(u32(t) // u32(P))
                    c = i32(u32(kg) // u32(RS))
                    rs = i32(u32(kg) % u32(RS))
                    h = i32(p * sh - pt + i32(u32(rs) // u32(S)) * dh)
                    col = i32(q * sw - pl + i32(u32(rs) % u32(S)) * dw)
                    if h >= 0 and h < H and col >= 0 and col < W:
                        v = x[n, i32(g * Cg + c), h, col]
                As[kk, mm] = v
            # The weight slice: consecutive threads read consecutive (c, r, s), contiguous in w.
            for e in range(tid, B_SIZE, NT):
                nn = i32(u32(e) // u32(BK))
                kk = i32(u32(e) % u32(BK))
                kcol = i32(n0 + nn)
                kg = i32(k0 + kk)
                v = dt(0)
                if kcol < Kg and kg < KK:
                    rs = i32(u32(kg) % u32(RS))
                    v = w[i32(g * Kg + kcol), i32(u32(kg) // u32(RS)), i32(u32(rs) // u32(S)), i32(u32(rs) % u32(S))]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a_frag[i] = As[kk, i32(tm + i * DM)]
                for j in range(TN):
                    b_frag[j] = Bs[kk, i32(tn + j * DN)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a_frag[i] * b_frag[j]
            cuda.syncthreads()
        for i in range(TM):
            m = i32(m0 + tm + i * DM)
            if m < M:
                q = i32(u32(m) % u32(Q))
                t = i32(u32(m) // u32(Q))
                p = i32(u32(t) % u32(P))
                n = i32(u32(t) // u32(P))
                for j in range(TN):
                    kcol = i32(n0 + tn + j * DN)
                    if kcol < Kg:
                        k = i32(g * Kg + kcol)
                        v = acc[i, j]
                        if has_bias:
                            v += b[k]
                        if relu and v < dt(0):
                            v = dt(0)
                        out[n, k, p, q] = v

    return conv2d_fwd_igemm_kernel


def make_fwd_igemm_relu(dt, tile):
    return make_fwd_igemm(dt, tile, relu=True)


def make_bwd_data_igemm(dt, tile):
    TM_, TN_, A_SHAPE, B_SHAPE = tile[0], tile[1], (tile[2], tile[0] * tile[3]), (tile[2], tile[1] * tile[4])
    TM, TN, BK, DM, DN, BM, BN, NT, A_SIZE, B_SIZE, ZERO = _tile_constants(tile)

    def conv2d_bwd_data_igemm_kernel(w, dy, dx, sh, sw, pt, pl, dh, dw, groups):
        H, W = i32(dx.shape[2]), i32(dx.shape[3])
        Cg, R, S = i32(w.shape[1]), i32(w.shape[2]), i32(w.shape[3])
        P, Q = i32(dy.shape[2]), i32(dy.shape[3])
        sh, sw, pt, pl, dh, dw = i32(sh), i32(sw), i32(pt), i32(pl), i32(dh), i32(dw)
        Kg = i32(u32(w.shape[0]) // u32(groups))
        M = i32(i32(dx.shape[0]) * i32(H * W))
        RS = i32(R * S)
        KK = i32(Kg * RS)
        g = i32(cuda.blockIdx.z)
        m0 = i32(cuda.blockIdx.x * BM)
        n0 = i32(cuda.blockIdx.y * BN)
        tid = i32(cuda.threadIdx.x)
        tm = i32(u32(tid) % u32(DM))
        tn = i32(u32(tid) // u32(DM))
        As = cuda.shared.array(A_SHAPE, dt)
        Bs = cuda.shared.array(B_SHAPE, dt)
        acc = cuda.local.array((TM_, TN_), dt)
        a_frag = cuda.local.array(TM_, dt)
        b_frag = cuda.local.array(TN_, dt)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = dt(0)
        for k0 in range(ZERO, KK, BK):
            # The dY slice: consecutive threads take consecutive input pixels (n, h, w).
            for e in range(tid, A_SIZE, NT):
                kk = i32(u32(e) // u32(BM))
                mm = i32(u32(e) % u32(BM))
                m = i32(m0 + mm)
                kg = i32(k0 + kk)
                v = dt(0)
                if m < M and kg < KK:
                    x_col = i32(u32(m) % u32(W))
                    t = i32(u32(m) // u32(W))
                    h = i32(u32(t) % u32(H))
                    n = i32(u32(t) // u32(H))
                    k = i32(u32(kg) // u32(RS))
                    rs = i32(u32(kg) % u32(RS))
                    ph = i32(h + pt - i32(u32(rs) // u32(S)) * dh)  # = p·sh when output row p reads input row h
                    qw = i32(x_col + pl - i32(u32(rs) % u32(S)) * dw)
                    if ph >= 0 and qw >= 0:
                        p = i32(u32(ph) // u32(sh))
                        q = i32(u32(qw) // u32(sw))
                        if p * sh == ph and q * sw == qw and p < P and q < Q:
                            v = dy[n, i32(g * Kg + k), p, q]
                As[kk, mm] = v
            # The weight slice: consecutive threads read consecutive (r, s) of one (k, c), contiguous in w.
            for e in range(tid, B_SIZE, NT):
                nn = i32(u32(e) // u32(BK))
                kk = i32(u32(e) % u32(BK))
                c = i32(n0 + nn)
                kg = i32(k0 + kk)
                v = dt(0)
                if c < Cg and kg < KK:
                    rs = i32(u32(kg) % u32(RS))
                    v = w[i32(g * Kg + i32(u32(kg) // u32(RS))), c, i32(u32(rs) // u32(S)), i32(u32(rs) % u32(S))]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a_frag[i] = As[kk, i32(tm + i * DM)]
                for j in range(TN):
                    b_frag[j] = Bs[kk, i32(tn + j * DN)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a_frag[i] * b_frag[j]
            cuda.syncthreads()
        for i in range(TM):
            m = i32(m0 + tm + i * DM)
            if m < M:
                x_col = i32(u32(m) % u32(W))
                t = i32(u32(m) // u32(W))
                h = i32(u32(t) % u32(H))
                n = i32(u32(t) // u32(H))
                for j in range(TN):
                    c = i32(n0 + tn + j * DN)
                    if c < Cg:
                        dx[n, i32(g * Cg + c), h, x_col] = acc[i, j]

    return conv2d_bwd_data_igemm_kernel


def make_bwd_weight_igemm(dt, tile):
    TM_, TN_, A_SHAPE, B_SHAPE = tile[0], tile[1], (tile[2], tile[0] * tile[3]), (tile[2], tile[1] * tile[4])
    TM, TN, BK, DM, DN, BM, BN, NT, A_SIZE, B_SIZE, ZERO = _tile_constants(tile)

    def conv2d_bwd_weight_igemm_kernel(x, dy, partial, chunk, sh, sw, pt, pl, dh, dw, groups):
        # partial: (splits, K, C/g, R, S); split s sums the GEMM-K rows [s·chunk, (s+1)·chunk) ∩ [0, N·P·Q).
        H, W = i32(x.shape[2]), i32(x.shape[3])
        splits = i32(partial.shape[0])
        Cg, R, S = i32(partial.shape[2]), i32(partial.shape[3]), i32(partial.shape[4])
        P, Q = i32(dy.shape[2]), i32(dy.shape[3])
        sh, sw, pt, pl, dh, dw = i32(sh), i32(sw), i32(pt), i32(pl), i32(dh), i32(dw)
        Kg = i32(u32(partial.shape[1]) // u32(groups))
        RS = i32(R * S)
        CRS = i32(Cg * RS)
        NPQ = i32(i32(x.shape[0]) * i32(P * Q))
        g = i32(u32(cuda.blockIdx.z) // u32(splits))
        split = i32(u32(cuda.blockIdx.z) % u32(splits))
        j_begin = i32(split * i32(chunk))
        j_end = i32(min(i32(j_begin + i32(chunk)), NPQ))
        m0 = i32(cuda.blockIdx.x * BM)
        n0 = i32(cuda.blockIdx.y * BN)
        tid = i32(cuda.threadIdx.x)
        # Columns (c, r, s) vary fastest across threads: the partial stores are coalesced.
        tn = i32(u32(tid) % u32(DN))
        tm = i32(u32(tid) // u32(DN))
        As = cuda.shared.array(A_SHAPE, dt)
        Bs = cuda.shared.array(B_SHAPE, dt)
        acc = cuda.local.array((TM_, TN_), dt)
        a_frag = cuda.local.array(TM_, dt)
        b_frag = cuda.local.array(TN_, dt)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = dt(0)
        for k0 in range(j_begin, j_end, BK):
            # The dY slice: consecutive threads take consecutive rows (n, p, q), contiguous in dy.
            for e in range(tid, A_SIZE, NT):
                mm = i32(u32(e) // u32(BK))
                kk = i32(u32(e) % u32(BK))
                k = i32(m0 + mm)
                row = i32(k0 + kk)
                v = dt(0)
                if k < Kg and row < j_end:
                    q = i32(u32(row) % u32(Q))
                    t = i32(u32(row) // u32(Q))
                    v = dy[i32(u32(t) // u32(P)), i32(g * Kg + k), i32(u32(t) % u32(P)), q]
                As[kk, mm] = v
            # The input slice, gathered: consecutive threads take consecutive rows (n, p, q).
            for e in range(tid, B_SIZE, NT):
                nn = i32(u32(e) // u32(BK))
                kk = i32(u32(e) % u32(BK))
                crs = i32(n0 + nn)
                row = i32(k0 + kk)
                v = dt(0)
                if crs < CRS and row < j_end:
                    q = i32(u32(row) % u32(Q))
                    t = i32(u32(row) // u32(Q))
                    p = i32(u32(t) % u32(P))
                    n = i32(u32(t) // u32(P))
                    c = i32(u32(crs) // u32(RS))
                    rs = i32(u32(crs) % u32(RS))
                    h = i32(p * sh - pt + i32(u32(rs) // u32(S)) * dh)
                    col = i32(q * sw - pl + i32(u32(rs) % u32(S)) * dw)
                    if h >= 0 and h < H and col >= 0 and col < W:
                        v = x[n, i32(g * Cg + c), h, col]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a_frag[i] = As[kk, i32(tm + i * DM)]
                for j in range(TN):
                    b_frag[j] = Bs[kk, i32(tn + j * DN)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a_frag[i] * b_frag[j]
            cuda.syncthreads()
        for i in range(TM):
            k = i32(m0 + tm + i * DM)
            if k < Kg:
                for j in range(TN):
                    crs = i32(n0 + tn + j * DN)
                    if crs < CRS:
                        rs = i32(u32(crs) % u32(RS))
                        c = i32(u32(crs) // u32(RS))
                        partial[split, i32(g * Kg + k), c, i32(u32(rs) // u32(S)), i32(u32(rs) % u32(S))] = acc[i, j]

    return conv2d_bwd_weight_igemm_kernel
