"""conv2d as implicit GEMM on CUDA: forward, input gradient, weight gradient (CUTLASS's fprop/dgrad/wgrad).

One structure for the three directions. A block computes a BM×BN tile of C[M, N] = Σ_K A[M, K]·B[K, N],
staging BK-deep slices of A (``As``, BK×BM) and B (``Bs``, BK×BN, + skew), gathered from the tensors, through shared
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

The gathers do no division in the K loop (dgrad at stride > 1 keeps one per tap to test divisibility).
Each thread fills the same slots of ``As``/``Bs`` at every step:
- the A slices of forward and dgrad (input / dY): thread ``tid`` owns GEMM row ``tid % BM`` (needs
  threads % BM == 0) and ``A_PER`` consecutive slice rows; its (n, p, q) or (n, h, w) is decomposed once,
  before the loop;
- the weight slices, and both wgrad slices: thread ``tid`` owns slice row ``tid % BK`` (threads % BK == 0)
  and columns ``tid // BK + j·threads/BK``; the wgrad block's input columns (c, r·dh, s·dw) are tabulated
  once in shared memory. These slices are stored with rows skewed by 32/BK words (``_skewed``), so the
  column-strided stores of a warp hit 32 different banks.
The GEMM-K index each thread reads, (c, r, s), (k, r, s) or (n, p, q), is kept decomposed and stepped by
``_advance`` (BK, and 1 between a thread's consecutive slice rows, in mixed radix: adds and compares).
``_check_tile`` rejects, when the kernel is built, a tile that breaks these divisibilities.

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


def _skewed(tile, width):
    """Shape of a (BK, width) shared slice written by slot (tid % BK, tid // BK + ...): rows padded by 32/BK
    words, so a warp's 32 stores (BK rows × 32/BK columns) fall in 32 different banks, not 32/BK."""
    return tile[2], width + max(1, 32 // tile[2])


def _check_tile(tile, a_rows_fixed):
    """The gathers give each thread fixed slice rows and GEMM rows/columns (see the module docstring);
    that needs these divisibilities. A tile that breaks them fails here, at kernel-build time."""
    TM, TN, BK, DM, DN = tile
    BM, BN, NT = TM * DM, TN * DN, DM * DN
    rules = {"threads % BK == 0": NT % BK == 0, "BK*BM % threads == 0": BK * BM % NT == 0,
             "BK*BN % threads == 0": BK * BN % NT == 0}
    if a_rows_fixed:
        rules["threads % BM == 0"] = NT % BM == 0
    broken = [rule for rule, holds in rules.items() if not holds]
    if broken:
        raise ValueError(f"implicit-GEMM tile {tile} (TM, TN, BK, DM, DN) breaks {', '.join(broken)}")


@cuda.jit(device=True, inline=True)
def _advance(hi, mid, lo, d_hi, d_mid, d_lo, MID, LO):
    """(hi, mid, lo) + (d_hi, d_mid, d_lo) in the mixed radix (·, MID, LO), digits mid < MID, lo < LO:
    a GEMM-K index kept decomposed (e.g. (c, r, s) of c·R·S + r·S + s) and stepped without a division."""
    lo = i32(lo + d_lo)
    if lo >= LO:
        lo = i32(lo - LO)
        mid = i32(mid + 1)
    mid = i32(mid + d_mid)
    if mid >= MID:
        mid = i32(mid - MID)
        hi = i32(hi + 1)
    return i32(hi + d_hi), mid, lo


def make_fwd_igemm(dt, tile, relu=False):
    _check_tile(tile, a_rows_fixed=True)
    TM_, TN_, A_SHAPE, B_SHAPE = tile[0], tile[1], (tile[2], tile[0] * tile[3]), _skewed(tile, tile[1] * tile[4])
    TM, TN, BK, DM, DN, BM, BN, NT, A_SIZE, B_SIZE, ZERO = _tile_constants(tile)
    A_PER, B_PER, B_STEP = const32(A_SIZE // NT), const32(B_SIZE // NT), const32(NT // BK)

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
        # BK in the radix of (c, r, s): the step of every GEMM-K counter below.
        dc = i32(u32(BK) // u32(RS))
        dr = i32(u32(i32(u32(BK) % u32(RS))) // u32(S))
        ds = i32(u32(i32(u32(BK) % u32(RS))) % u32(S))
        # The input slice: thread tid gathers output pixel m = m0 + tid % BM (consecutive threads take
        # consecutive pixels) at slice rows ka .. ka + A_PER - 1, whose (c, r, s) at k0 = 0 is (ca, ra, sa).
        mm = i32(u32(tid) % u32(BM))
        ka = i32(i32(u32(tid) // u32(BM)) * A_PER)
        m = i32(m0 + mm)
        q = i32(u32(m) % u32(Q))
        t = i32(u32(m) // u32(Q))
        n = i32(u32(t) // u32(P))
        h0 = i32(i32(u32(t) % u32(P)) * sh - pt)
        w0 = i32(q * sw - pl)
        m_ok = m < M
        ca = i32(u32(ka) // u32(RS))
        ra = i32(u32(i32(u32(ka) % u32(RS))) // u32(S))
        sa = i32(u32(i32(u32(ka) % u32(RS))) % u32(S))
        # The weight slice: thread tid reads slice row kb = tid % BK, (cb, rb, sb), of filters
        # n0 + tid // BK + j·B_STEP: consecutive threads read consecutive (c, r, s), contiguous in w.
        kb = i32(u32(tid) % u32(BK))
        nb = i32(u32(tid) // u32(BK))
        cb = i32(u32(kb) // u32(RS))
        rb = i32(u32(i32(u32(kb) % u32(RS))) // u32(S))
        sb = i32(u32(i32(u32(kb) % u32(RS))) % u32(S))
        xc = i32(g * Cg)
        wk = i32(g * Kg + n0)
        for _k0 in range(ZERO, KK, BK):
            c, r, s = ca, ra, sa
            for j in range(A_PER):
                h = i32(h0 + r * dh)
                col = i32(w0 + s * dw)
                v = dt(0)
                if m_ok and c < Cg and h >= 0 and h < H and col >= 0 and col < W:
                    v = x[n, i32(xc + c), h, col]
                As[i32(ka + j), mm] = v
                c, r, s = _advance(c, r, s, ZERO, ZERO, const32(1), R, S)
            ca, ra, sa = _advance(ca, ra, sa, dc, dr, ds, R, S)
            for j in range(B_PER):
                nn = i32(nb + j * B_STEP)
                v = dt(0)
                if i32(n0 + nn) < Kg and cb < Cg:
                    v = w[i32(wk + nn), cb, rb, sb]
                Bs[kb, nn] = v
            cb, rb, sb = _advance(cb, rb, sb, dc, dr, ds, R, S)
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
    _check_tile(tile, a_rows_fixed=True)
    TM_, TN_, A_SHAPE, B_SHAPE = tile[0], tile[1], (tile[2], tile[0] * tile[3]), _skewed(tile, tile[1] * tile[4])
    TM, TN, BK, DM, DN, BM, BN, NT, A_SIZE, B_SIZE, ZERO = _tile_constants(tile)
    A_PER, B_PER, B_STEP = const32(A_SIZE // NT), const32(B_SIZE // NT), const32(NT // BK)

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
        # BK in the radix of (k, r, s).
        dk = i32(u32(BK) // u32(RS))
        dr = i32(u32(i32(u32(BK) % u32(RS))) // u32(S))
        ds = i32(u32(i32(u32(BK) % u32(RS))) % u32(S))
        # The dY slice: thread tid gathers for input pixel m = m0 + tid % BM (consecutive threads take
        # consecutive pixels (n, h, w)) at slice rows ka .. ka + A_PER - 1, (ka_k, ra, sa) at k0 = 0.
        mm = i32(u32(tid) % u32(BM))
        ka = i32(i32(u32(tid) // u32(BM)) * A_PER)
        m = i32(m0 + mm)
        t = i32(u32(m) // u32(W))
        n = i32(u32(t) // u32(H))
        hp = i32(i32(u32(t) % u32(H)) + pt)  # = p·sh + r·dh when output row p reads input row h at tap r
        wp = i32(i32(u32(m) % u32(W)) + pl)
        m_ok = m < M
        stride1 = sh == 1 and sw == 1
        ka_k = i32(u32(ka) // u32(RS))
        ra = i32(u32(i32(u32(ka) % u32(RS))) // u32(S))
        sa = i32(u32(i32(u32(ka) % u32(RS))) % u32(S))
        # The weight slice: thread tid reads slice row kb = tid % BK, (kb_k, rb, sb), for channels
        # n0 + tid // BK + j·B_STEP: consecutive threads read consecutive (r, s) of one (k, c).
        kb = i32(u32(tid) % u32(BK))
        nb = i32(u32(tid) // u32(BK))
        kb_k = i32(u32(kb) // u32(RS))
        rb = i32(u32(i32(u32(kb) % u32(RS))) // u32(S))
        sb = i32(u32(i32(u32(kb) % u32(RS))) % u32(S))
        gk = i32(g * Kg)
        for _k0 in range(ZERO, KK, BK):
            k, r, s = ka_k, ra, sa
            for j in range(A_PER):
                ph = i32(hp - r * dh)
                qw = i32(wp - s * dw)
                v = dt(0)
                if m_ok and k < Kg and ph >= 0 and qw >= 0:
                    if stride1:
                        p, q = ph, qw
                    else:
                        p = i32(u32(ph) // u32(sh))
                        q = i32(u32(qw) // u32(sw))
                    if p * sh == ph and q * sw == qw and p < P and q < Q:
                        v = dy[n, i32(gk + k), p, q]
                As[i32(ka + j), mm] = v
                k, r, s = _advance(k, r, s, ZERO, ZERO, const32(1), R, S)
            ka_k, ra, sa = _advance(ka_k, ra, sa, dk, dr, ds, R, S)
            for j in range(B_PER):
                nn = i32(nb + j * B_STEP)
                c = i32(n0 + nn)
                v = dt(0)
                if c < Cg and kb_k < Kg:
                    v = w[i32(gk + kb_k), c, rb, sb]
                Bs[kb, nn] = v
            kb_k, rb, sb = _advance(kb_k, rb, sb, dk, dr, ds, R, S)
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
    _check_tile(tile, a_rows_fixed=False)
    TM_, TN_, A_SHAPE, B_SHAPE = tile[0], tile[1], _skewed(tile, tile[0] * tile[3]), _skewed(tile, tile[1] * tile[4])
    TM, TN, BK, DM, DN, BM, BN, NT, A_SIZE, B_SIZE, ZERO = _tile_constants(tile)
    A_PER, B_PER, STEP = const32(A_SIZE // NT), const32(B_SIZE // NT), const32(NT // BK)
    BN_ = tile[1] * tile[4]

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
        PQ = i32(P * Q)
        NPQ = i32(i32(x.shape[0]) * PQ)
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
        # Per GEMM column of the block, (c, r·dh, s·dw) of the input it gathers (c = Cg: out of range), in
        # shared memory: filled once, read at every step without a division, and no registers held.
        x_tab = cuda.shared.array((3, BN_), np.int32)
        for e in range(tid, BN, NT):
            crs = i32(n0 + e)
            rs = i32(u32(crs) % u32(RS))
            x_tab[0, e] = min(i32(u32(crs) // u32(RS)), Cg)
            x_tab[1, e] = i32(i32(u32(rs) // u32(S)) * dh)
            x_tab[2, e] = i32(i32(u32(rs) % u32(S)) * dw)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = dt(0)
        # Both slices: thread tid takes GEMM-K row `row` = k0 + tid % BK (consecutive threads take consecutive
        # rows (n, p, q), contiguous in dy) and columns tid // BK + j·STEP; (n, p, q) of row is stepped by BK.
        kr = i32(u32(tid) % u32(BK))
        nb = i32(u32(tid) // u32(BK))
        dn = i32(u32(BK) // u32(PQ))
        dp = i32(u32(i32(u32(BK) % u32(PQ))) // u32(Q))
        dq = i32(u32(i32(u32(BK) % u32(PQ))) % u32(Q))
        row = i32(j_begin + kr)
        n = i32(u32(row) // u32(PQ))
        p = i32(u32(i32(u32(row) % u32(PQ))) // u32(Q))
        q = i32(u32(i32(u32(row) % u32(PQ))) % u32(Q))
        gk = i32(g * Kg + m0)
        xc = i32(g * Cg)
        cuda.syncthreads()  # x_tab
        for _k0 in range(j_begin, j_end, BK):
            row_ok = row < j_end
            for j in range(A_PER):
                mm = i32(nb + j * STEP)
                v = dt(0)
                if row_ok and i32(m0 + mm) < Kg:
                    v = dy[n, i32(gk + mm), p, q]
                As[kr, mm] = v
            h0 = i32(p * sh - pt)
            w0 = i32(q * sw - pl)
            for j in range(B_PER):
                nn = i32(nb + j * STEP)
                c = i32(x_tab[0, nn])
                h = i32(h0 + x_tab[1, nn])
                col = i32(w0 + x_tab[2, nn])
                v = dt(0)
                if row_ok and c < Cg and h >= 0 and h < H and col >= 0 and col < W:
                    v = x[n, i32(xc + c), h, col]
                Bs[kr, nn] = v
            row = i32(row + BK)
            n, p, q = _advance(n, p, q, dn, dp, dq, P, Q)
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
