"""float32 products whose two operands both run along the reduced index:

    out[t] (M×N) = Σ_r a[t, r] (M×K) · b[t, r]ᵀ (K×N),  a[t, r] and b[t, r] row-major,

the shape of every weight gradient: dW = Σ_n dY[n] · X[n]ᵀ over images and pixels (1×1 and
im2col layers), dU[ξν] = Ŷ[ξν] · V[ξν]ᵀ over tiles (Winograd). Given to the Goto-style
GEMM in kernels.gemm.cpu, one operand would be column-major, and its packing transposes it
element by element (half of a 1×1 weight gradient's time), after the batch has been copied
into one long reduced index. Here nothing is copied or packed.

Micro-kernel: a 3×8 tile of out in 24 zmm accumulators, each holding 16 partial sums along
the reduced index (lanes = 16 consecutive p): per 16 p it loads 3 vectors of a and 8 of b
and issues 24 FMAs. The lane partials of a task's block live in ``part`` between passes
over PB-long slices of the reduced index (the slice of 8 rows of b stays in L1 while the
tile sweeps the block's rows of a, kept in L2), and are summed across lanes once at the end
(a fixed tree: deterministic). Rows past M or N repeat the last row (read, never stored);
the last 1..15 p are read with masked loads.

Threads: one prange iteration per (t, MB-row block, NB-column block).
Index names: i row of out (a), j column (b), p the reduced index, r the summed batch.
"""
# ruff: noqa: E702 -- the micro-kernel writes its 3×8 register tile one row per line
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange, types

from ..precompile import njit_cached
from .simd import LANES, vfma, vload, vload_first, vstore, vsum

MT, NT = 3, 8     # register tile: rows of a × rows of b
PB = 512          # reduced-index slice per pass: 8 rows of b are 16 KB (L1: 48 KB)
MB, NB = 48, 32   # rows of a / of b per task: lane partials 48·32·16 floats (96 KB)


@njit(inline="always")
def _tile(a, a0, a1, a2, b, b0, b1, b2, b3, b4, b5, b6, b7, pn, rows, ra, rb, part, po):
    # part[po + (i·NT + j)·16 + lane] += Σ_{r < rows} Σ_{p ≡ lane (16), p < pn} a[a_i + r·ra + p] · b[b_j + r·rb + p]
    x00 = vload(part, po); x01 = vload(part, po + 16); x02 = vload(part, po + 32); x03 = vload(part, po + 48)
    x04 = vload(part, po + 64); x05 = vload(part, po + 80); x06 = vload(part, po + 96); x07 = vload(part, po + 112)
    x10 = vload(part, po + 128); x11 = vload(part, po + 144); x12 = vload(part, po + 160); x13 = vload(part, po + 176)
    x14 = vload(part, po + 192); x15 = vload(part, po + 208); x16 = vload(part, po + 224); x17 = vload(part, po + 240)
    x20 = vload(part, po + 256); x21 = vload(part, po + 272); x22 = vload(part, po + 288); x23 = vload(part, po + 304)
    x24 = vload(part, po + 320); x25 = vload(part, po + 336); x26 = vload(part, po + 352); x27 = vload(part, po + 368)
    full = pn - pn % LANES
    for r in range(rows):
        oa, ob = r * ra, r * rb
        for p in range(0, full, LANES):
            u0 = vload(a, oa + a0 + p); u1 = vload(a, oa + a1 + p); u2 = vload(a, oa + a2 + p)
            v = vload(b, ob + b0 + p); x00 = vfma(u0, v, x00); x10 = vfma(u1, v, x10); x20 = vfma(u2, v, x20)
            v = vload(b, ob + b1 + p); x01 = vfma(u0, v, x01); x11 = vfma(u1, v, x11); x21 = vfma(u2, v, x21)
            v = vload(b, ob + b2 + p); x02 = vfma(u0, v, x02); x12 = vfma(u1, v, x12); x22 = vfma(u2, v, x22)
            v = vload(b, ob + b3 + p); x03 = vfma(u0, v, x03); x13 = vfma(u1, v, x13); x23 = vfma(u2, v, x23)
            v = vload(b, ob + b4 + p); x04 = vfma(u0, v, x04); x14 = vfma(u1, v, x14); x24 = vfma(u2, v, x24)
            v = vload(b, ob + b5 + p); x05 = vfma(u0, v, x05); x15 = vfma(u1, v, x15); x25 = vfma(u2, v, x25)
            v = vload(b, ob + b6 + p); x06 = vfma(u0, v, x06); x16 = vfma(u1, v, x16); x26 = vfma(u2, v, x26)
            v = vload(b, ob + b7 + p); x07 = vfma(u0, v, x07); x17 = vfma(u1, v, x17); x27 = vfma(u2, v, x27)
        if full < pn:  # the last pn − full values: masked loads, zeros beyond
            p = full
            n = pn - p
            u0 = vload_first(a, oa + a0 + p, n); u1 = vload_first(a, oa + a1 + p, n); u2 = vload_first(a, oa + a2 + p, n)
            v = vload_first(b, ob + b0 + p, n); x00 = vfma(u0, v, x00); x10 = vfma(u1, v, x10); x20 = vfma(u2, v, x20)
            v = vload_first(b, ob + b1 + p, n); x01 = vfma(u0, v, x01); x11 = vfma(u1, v, x11); x21 = vfma(u2, v, x21)
            v = vload_first(b, ob + b2 + p, n); x02 = vfma(u0, v, x02); x12 = vfma(u1, v, x12); x22 = vfma(u2, v, x22)
            v = vload_first(b, ob + b3 + p, n); x03 = vfma(u0, v, x03); x13 = vfma(u1, v, x13); x23 = vfma(u2, v, x23)
            v = vload_first(b, ob + b4 + p, n); x04 = vfma(u0, v, x04); x14 = vfma(u1, v, x14); x24 = vfma(u2, v, x24)
            v = vload_first(b, ob + b5 + p, n); x05 = vfma(u0, v, x05); x15 = vfma(u1, v, x15); x25 = vfma(u2, v, x25)
            v = vload_first(b, ob + b6 + p, n); x06 = vfma(u0, v, x06); x16 = vfma(u1, v, x16); x26 = vfma(u2, v, x26)
            v = vload_first(b, ob + b7 + p, n); x07 = vfma(u0, v, x07); x17 = vfma(u1, v, x17); x27 = vfma(u2, v, x27)
    vstore(part, po, x00); vstore(part, po + 16, x01); vstore(part, po + 32, x02); vstore(part, po + 48, x03)
    vstore(part, po + 64, x04); vstore(part, po + 80, x05); vstore(part, po + 96, x06); vstore(part, po + 112, x07)
    vstore(part, po + 128, x10); vstore(part, po + 144, x11); vstore(part, po + 160, x12); vstore(part, po + 176, x13)
    vstore(part, po + 192, x14); vstore(part, po + 208, x15); vstore(part, po + 224, x16); vstore(part, po + 240, x17)
    vstore(part, po + 256, x20); vstore(part, po + 272, x21); vstore(part, po + 288, x22); vstore(part, po + 304, x23)
    vstore(part, po + 320, x24); vstore(part, po + 336, x25); vstore(part, po + 352, x26); vstore(part, po + 368, x27)


def _nt(a, b, out, accumulate):
    # a: (T, R, M, K), b: (T, R, N, K), unit stride along K; out: (T, M, N), unit column stride;
    # accumulate: out += the product instead of out =.
    T, R, M, K = a.shape
    N = b.shape[2]
    sa0, sa1, sa2 = a.strides[0] // 4, a.strides[1] // 4, a.strides[2] // 4
    sb0, sb1, sb2 = b.strides[0] // 4, b.strides[1] // 4, b.strides[2] // 4
    mt = (M + MB - 1) // MB
    nt = (N + NB - 1) // NB
    tile = MT * NT * LANES
    # the row block varies fastest: each thread's contiguous share of tasks then holds
    # every row block (a short last one included) for its columns (row block slowest, a
    # 64-row product split 48 + 16 gave one thread three quarters of the work)
    for task in prange(T * mt * nt):
        ib = task % mt
        jb = (task // mt) % nt
        t = task // (nt * mt)
        i0, i1 = ib * MB, min(M, (ib + 1) * MB)
        j0, j1 = jb * NB, min(N, (jb + 1) * NB)
        ti = (i1 - i0 + MT - 1) // MT
        tj = (j1 - j0 + NT - 1) // NT
        part = np.zeros(ti * tj * tile, dtype=np.float32)
        # Short reductions (K <= PB) go through the tile once with the batch r inside it
        # (one load and store of the lane partials in all); long ones slice by slice.
        passes = 1 if K <= PB else R
        rows = R if K <= PB else 1
        for r in range(passes):
            abase = t * sa0 + r * sa1
            bbase = t * sb0 + r * sb1
            for pc in range(0, K, PB):
                pn = min(PB, K - pc)
                for jt in range(tj):
                    j = j0 + jt * NT
                    b0 = bbase + min(j, N - 1) * sb2 + pc
                    b1 = bbase + min(j + 1, N - 1) * sb2 + pc
                    b2 = bbase + min(j + 2, N - 1) * sb2 + pc
                    b3 = bbase + min(j + 3, N - 1) * sb2 + pc
                    b4 = bbase + min(j + 4, N - 1) * sb2 + pc
                    b5 = bbase + min(j + 5, N - 1) * sb2 + pc
                    b6 = bbase + min(j + 6, N - 1) * sb2 + pc
                    b7 = bbase + min(j + 7, N - 1) * sb2 + pc
                    for it in range(ti):
                        i = i0 + it * MT
                        a0 = abase + min(i, M - 1) * sa2 + pc
                        a1 = abase + min(i + 1, M - 1) * sa2 + pc
                        a2 = abase + min(i + 2, M - 1) * sa2 + pc
                        _tile(a, a0, a1, a2, b, b0, b1, b2, b3, b4, b5, b6, b7, pn, rows, sa1, sb1, part,
                              (it * tj + jt) * tile)
        for it in range(ti):
            for ii in range(min(MT, i1 - i0 - it * MT)):
                for jt in range(tj):
                    for jj in range(min(NT, j1 - j0 - jt * NT)):
                        o = (it * tj + jt) * tile + (ii * NT + jj) * LANES
                        v = vsum(vload(part, o))
                        if accumulate:
                            v += out[t, i0 + it * MT + ii, j0 + jt * NT + jj]
                        out[t, i0 + it * MT + ii, j0 + jt * NT + jj] = v


@functools.lru_cache(maxsize=None)
def _compiled():
    f4 = types.Array(types.float32, 4, "A")
    f3 = types.Array(types.float32, 3, "A")
    # compiled in a child process, loaded from Numba's cache (see kernels.precompile)
    return njit_cached(_nt, types.void(f4, f4, f3, types.boolean), "_compiled", parallel=True)


def applies(a, b, out) -> bool:
    """Whether sgemm_nt takes these operands: float32, unit stride along the reduced index
    and along out's rows."""
    return (a.dtype == b.dtype == out.dtype == np.float32 and a.ndim == b.ndim == 4 and out.ndim == 3
            and (a.strides[3] == 4 or a.shape[3] <= 1) and (b.strides[3] == 4 or b.shape[3] <= 1)
            and (out.strides[2] == 4 or out.shape[2] <= 1))


def sgemm_nt(a, b, out, accumulate=False):
    """out[t] (+)= Σ_r a[t, r] @ b[t, r].T for a (T, R, M, K), b (T, R, N, K), out (T, M, N),
    float32 with unit stride along K (shapes are the caller's to check; see applies);
    ``accumulate`` adds to out instead of overwriting it."""
    if out.size == 0:
        return out
    if a.shape[1] == 0 or a.shape[3] == 0:
        if not accumulate:
            out[...] = 0
        return out
    _compiled()(a, b, out, accumulate)
    return out
