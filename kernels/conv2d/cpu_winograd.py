"""conv2d by Winograd minimal filtering, F(m×m, 3×3) for m = 2 or 4 (Lavin & Gray, 2015):
3×3 kernels, stride 1, dilation 1, any padding (even negative: the input gradient uses it).

    out tile (m×m) = Aᵀ [ U ⊙ V ] A,   U = G g Gᵀ (α×α, α = m + 2),   V = Bᵀ d B,
    d = the α×α input patch under the tile. Summed over input channels c, the product
    becomes α² independent GEMMs:  M[ξν] (Kg × T) = U[ξν] (Kg × Cg) · V[ξν] (Cg × T)
    per group, T = N·TH·TW tiles, TH = ⌈P/m⌉, TW = ⌈Q/m⌉.

Four steps: weight transform (prange over k), then for each chunk of G images (sized so
that the chunk's V and M stay in cache, _chunk_images) input transform (prange over blocks
of input planes (n, c)) → one batched product (``kernels.gemm.cpu.matmul``: convcore's
GEMM, its AVX-512 tile or, without AVX-512, its narrow one (``enabled(winograd=True)``), or
BLAS; outside any prange so threads are not nested) → output transform
(prange over blocks of output planes (n, k)) with the bias and ReLU fused. Edge tiles read
zeros beyond the input and write only the P×Q valid outputs. Deterministic: every sum runs
in a fixed order (the GEMM's order is fixed for given shapes and threads).

The transforms' strided passes (the input's stride-m phases, the output's interleave) use
raw offsets (kernels.gemm.simd.load_at/store_at): Numba's wraparound code for a signed
index kept them scalar, at 1 ns per element. Per plane, one thread, in cache (8×64×56²,
F(4×4)): input 5.5 → 3.2 µs, output 3.7 → 3.2 µs; the whole forward at 2 threads 4.6 ms
unchunked (5.0-9.3 before these changes, the machine is noisy) → 3.6 ms in chunks of 2 images.

Index names: n batch, c/k input/output channel, g group, ξ/ν the two transform axes,
t tile (row-major (n, th, tw)), m output tile size, α = m + 2 the input tile size.
Literals would promote float32 to float64 in Numba, so the transform constants come in
``cst`` = [2, 4, 5, 8] in the data dtype.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

import numpy as np
from numba import njit, prange

from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.cpu import matmul
from ..gemm.simd import load_at, store_at, transpose16
from ..workspace import images_per_chunk, scratch

# G (α×3); cast to the data dtype per call.
_G = {
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}
# Not fastmath's nnan/ninf: the fused ReLU must keep NaN (NaN < 0 is false), as _epilogue does.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
# The transforms' prange runs over this many blocks of planes (small planes: one scratch
# allocation per plane would cost as much as the transform).
_BLOCKS = 256


# ---------------------------------------------------------------- 1-D transforms
@njit(inline="always")
def _bt4(d0, d1, d2, d3, d4, d5, c2, c4, c5):
    """Bᵀd for F(4, 3)."""
    t1 = d4 - c4 * d2
    t2 = d3 - c4 * d1
    t3 = d4 - d2
    t4 = c2 * (d3 - d1)
    return c4 * d0 - c5 * d2 + d4, t1 + t2, t1 - t2, t3 + t4, t3 - t4, c4 * d1 - c5 * d3 + d5


@njit(inline="always")
def _at4(m0, m1, m2, m3, m4, m5, c2, c4, c8):
    """Aᵀm for F(4, 3)."""
    s12, d12 = m1 + m2, m1 - m2
    s34, d34 = m3 + m4, m3 - m4
    return m0 + s12 + s34, d12 + c2 * d34, s12 + c4 * s34, d12 + c8 * d34 + m5


@njit(inline="always")
def _bt2(d0, d1, d2, d3):
    """Bᵀd for F(2, 3)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always")
def _at2(m0, m1, m2, m3):
    """Aᵀm for F(2, 3)."""
    return m0 + m1 + m2, m1 - m2 - m3


# ---------------------------------------------------------------- shared passes
@njit(inline="always")
def _b_along(E, V, c, t0, n, m, c2, c4, c5):
    # V[ξ·α+ν, c, t0 + t] = (E[ξ, :, t] B)[ν] for t < n: B along the patch rows, one
    # contiguous loop over n tiles per ξ (vectorised).
    a = m + 2
    for i in range(a):
        e0, e1, e2, e3 = E[i, 0], E[i, 1], E[i, 2], E[i, 3]
        v0, v1, v2, v3 = V[i * a, c, t0:], V[i * a + 1, c, t0:], V[i * a + 2, c, t0:], V[i * a + 3, c, t0:]
        if m == 4:
            e4, e5 = E[i, 4], E[i, 5]
            v4, v5 = V[i * a + 4, c, t0:], V[i * a + 5, c, t0:]
            for t in range(n):
                v0[t], v1[t], v2[t], v3[t], v4[t], v5[t] = _bt4(e0[t], e1[t], e2[t], e3[t], e4[t], e5[t], c2, c4, c5)
        else:
            for t in range(n):
                v0[t], v1[t], v2[t], v3[t] = _bt2(e0[t], e1[t], e2[t], e3[t])


@njit(inline="always")
def _gather(src, base, idx, dst, n, zero):
    # dst[r·n + t] = src[base + idx[r, t]] for t < n, or 0 where idx[r, t] < 0 (padding):
    # the small-plane transforms' patch planes.
    for r in range(idx.shape[0]):
        row = idx[r]
        for t in range(n):
            o = row[t]
            v = load_at(src, base + max(o, 0))  # always in bounds; padding selected away
            store_at(dst, r * n + t, v if o >= 0 else zero)


@njit(inline="always")
def _at_passes(M, k, t0, n, tmp, Y, m, c2, c4, c8):
    # Y[i, j, t] = (Aᵀ M[·, k, t0 + t] A)[i, j] for t < n: Aᵀ over ξ into tmp[i, ν, t], then
    # A over ν, each one contiguous loop over n tiles (vectorised).
    a = m + 2
    for nu in range(a):
        m0, m1, m2, m3 = M[nu, k, t0:], M[a + nu, k, t0:], M[2 * a + nu, k, t0:], M[3 * a + nu, k, t0:]
        if m == 4:
            m4, m5 = M[4 * a + nu, k, t0:], M[5 * a + nu, k, t0:]
            y0, y1, y2, y3 = tmp[0, nu], tmp[1, nu], tmp[2, nu], tmp[3, nu]
            for t in range(n):
                y0[t], y1[t], y2[t], y3[t] = _at4(m0[t], m1[t], m2[t], m3[t], m4[t], m5[t], c2, c4, c8)
        else:
            y0, y1 = tmp[0, nu], tmp[1, nu]
            for t in range(n):
                y0[t], y1[t] = _at2(m0[t], m1[t], m2[t], m3[t])
    for i in range(m):
        s0, s1, s2, s3 = tmp[i, 0], tmp[i, 1], tmp[i, 2], tmp[i, 3]
        if m == 4:
            s4, s5 = tmp[i, 4], tmp[i, 5]
            y0, y1, y2, y3 = Y[i, 0], Y[i, 1], Y[i, 2], Y[i, 3]
            for t in range(n):
                y0[t], y1[t], y2[t], y3[t] = _at4(s0[t], s1[t], s2[t], s3[t], s4[t], s5[t], c2, c4, c8)
        else:
            y0, y1 = Y[i, 0], Y[i, 1]
            for t in range(n):
                y0[t], y1[t] = _at2(s0[t], s1[t], s2[t], s3[t])


# ---------------------------------------------------------------- weight transform
@njit(inline="always")
def _transform_taps(wk, G, U, kk, flip):
    # U[ξ·α+ν, kk, c] = Σ_r,s G[ξ,r] w'[r, s, c] G[ν,s] from the taps of one output channel,
    # wk[r·3 + s, c] = w'[r, s, c] or, for flip, w'[2 − r, 2 − s, c] (the rotation read
    # here). The inner loops run over c (vectorised).
    Cg = U.shape[2]
    a = G.shape[0]
    gw = np.empty((3, Cg), G.dtype)  # (G w')[ξ, s, :] for one ξ
    for i in range(a):
        g0, g1, g2 = G[i, 0], G[i, 1], G[i, 2]
        for s in range(3):
            t0, t1, t2 = (8 - s, 5 - s, 2 - s) if flip else (s, 3 + s, 6 + s)  # taps (0, s), (1, s), (2, s)
            for c in range(Cg):
                gw[s, c] = g0 * wk[t0, c] + g1 * wk[t1, c] + g2 * wk[t2, c]
        for j in range(a):
            h0, h1, h2 = G[j, 0], G[j, 1], G[j, 2]
            dst = U[i * a + j, kk]
            for c in range(Cg):
                dst[c] = gw[0, c] * h0 + gw[1, c] * h1 + gw[2, c] * h2


@njit(parallel=True, cache=True)
def _weight_transform(w, G, U, k0, flip):
    # U[ξ·α+ν, k − k0, c] = Σ_r,s G[ξ,r] w'[k,c,r,s] G[ν,s] for the U.shape[1] output channels
    # k from k0, in G's dtype (the data dtype: float32 keeps twice the SIMD lanes; its
    # rounding here is small next to the transforms'). w' = w, or for flip the input
    # gradient's weight w'[k, c, r, s] = w[c, k, 2 − r, 2 − s] (K ↔ C and rotated 180°, one
    # group: no flipped copy of w). One prange iteration per k: w'[k] transposed to c
    # innermost, then _transform_taps. Any dtype (float32 goes to _weight_transform_f32).
    KB, Cg = U.shape[1], U.shape[2]
    for kk in prange(KB):
        k = k0 + kk
        wk = np.empty((9, Cg), G.dtype)
        for c in range(Cg):
            for r in range(3):
                for s in range(3):
                    wk[r * 3 + s, c] = w[c, k, r, s] if flip else w[k, c, r, s]
        _transform_taps(wk, G, U, kk, flip)


@njit(parallel=True, cache=True)
def _weight_transform_f32(w, G, U, k0, flip):
    # _weight_transform for C-contiguous float32 w (AVX-512 hosts): the transposition of
    # w'[k] (its 9 taps of each c, 36 bytes apart) in 16×16 register blocks (gemm.simd.
    # transpose16; element by element it was most of the transform's time: 2 threads,
    # 512→512 channels, 0.6-2.7 ms of ~3). A block whose 16-float rows would read past the
    # end of w, and the last Cg % 16 channels, go element by element.
    KB, Cg = U.shape[1], U.shape[2]
    Cw = w.shape[1]
    size = w.size
    full = Cg // 16 * 16
    for kk in prange(KB):
        k = k0 + kk
        wk = np.empty((16, Cg), np.float32)  # rows 9..15: scratch of the 16×16 blocks
        base, stride = (k * 9, Cw * 9) if flip else (k * Cw * 9, 9)  # w'[k, c, 0, 0] at base + c·stride
        for c0 in range(0, full, 16):
            src = base + c0 * stride
            if src + 15 * stride + 16 <= size:
                transpose16(w, src, stride, wk, c0, Cg)
            else:
                for c in range(c0, c0 + 16):
                    for t in range(9):
                        store_at(wk, t * Cg + c, load_at(w, base + c * stride + t))
        for c in range(full, Cg):
            for t in range(9):
                store_at(wk, t * Cg + c, load_at(w, base + c * stride + t))
        _transform_taps(wk, G, U, kk, flip)


def _run_weight_transform(w, G, U, k0, flip):
    """The weight transform of U.shape[1] output channels from k0 (see _weight_transform)."""
    if w.dtype == U.dtype == np.float32 and gemm_enabled():
        _weight_transform_f32(np.ascontiguousarray(w), G, U, k0, flip)
    else:
        _weight_transform(w, G, U, k0, flip)


# ---------------------------------------------------------------- input transform
@njit(parallel=True, cache=True, fastmath=_FAST)
def _input_transform(x, V, pt, pl, m, TH, TW, cst):
    # V[ξ·α+ν, c, (n·TH+th)·TW+tw] = (Bᵀ d B)[ξ,ν], d[i,j] = x[n, c, th·m−pt+i, tw·m−pl+j] (0 outside).
    # prange over blocks of input planes (n, c); one iteration writes each plane's tiles.
    # Per plane, first the phase planes X[r, j, u·TW+v] = xpad[m·u + r, m·v + j] (r < m,
    # j < α; xpad the zero-padded plane): then d[i, j] of every tile is one contiguous run,
    # X[i % m, j, (i // m)·TW:][:TH·TW] in the tile index, so Bᵀ down the tile columns
    # (into E[ξ, j, tile]) and B along them (into V) are long contiguous loops over all
    # TH·TW tiles of the plane (vectorised). Filling X is the only strided pass. x is
    # C-contiguous (raw offsets).
    N, C, H, W = x.shape
    a = m + 2
    L = TH * TW
    c2, c4, c5 = cst[0], cst[1], cst[2]
    zero = c2 - c2
    XL = (TH + 1) * TW  # one phase plane of X
    Wp = TW * m + 2  # padded row: columns [j_lo, j_hi) hold input columns q − pl
    j_lo = min(max(pl, 0), Wp)
    j_hi = max(min(W + pl, Wp), j_lo)
    per = -(-(N * C) // _BLOCKS)  # planes per prange block: scratch allocated once per block
    for blk in prange(-(-(N * C) // per)):
        row = np.empty(Wp, V.dtype)
        X = np.empty((m, a, XL), V.dtype)
        E = np.empty((a, a, L), V.dtype)
        for nc in range(blk * per, min((blk + 1) * per, N * C)):
            n = nc // C
            c = nc % C
            for u in range(TH + 1):
                for r in range(m):
                    h = m * u + r - pt
                    base = r * a * XL + u * TW  # X[r, 0, u·TW]
                    if h < 0 or h >= H:
                        for j in range(a):
                            for v in range(TW):
                                store_at(X, base + j * XL + v, zero)
                        continue
                    # the padded row, then its α stride-m phases (raw offsets: Numba's
                    # wraparound code for signed indices would keep these loops scalar)
                    xo = ((n * C + c) * H + h) * W - pl
                    for q in range(j_lo):
                        store_at(row, q, zero)
                    for q in range(j_lo, j_hi):
                        store_at(row, q, load_at(x, xo + q))
                    for q in range(j_hi, Wp):
                        store_at(row, q, zero)
                    # unrolled per m: the α loads of one v form one interleaved group, which
                    # LLVM vectorises with shuffles
                    if m == 4:
                        for v in range(TW):
                            q = 4 * v
                            store_at(X, base + v, load_at(row, q))
                            store_at(X, base + XL + v, load_at(row, q + 1))
                            store_at(X, base + 2 * XL + v, load_at(row, q + 2))
                            store_at(X, base + 3 * XL + v, load_at(row, q + 3))
                            store_at(X, base + 4 * XL + v, load_at(row, q + 4))
                            store_at(X, base + 5 * XL + v, load_at(row, q + 5))
                    else:
                        for v in range(TW):
                            q = 2 * v
                            store_at(X, base + v, load_at(row, q))
                            store_at(X, base + XL + v, load_at(row, q + 1))
                            store_at(X, base + 2 * XL + v, load_at(row, q + 2))
                            store_at(X, base + 3 * XL + v, load_at(row, q + 3))
            for j in range(a):
                d0, d1 = X[0, j], X[1, j]
                if m == 4:
                    d2, d3, d4, d5 = X[2, j], X[3, j], X[0, j, TW:], X[1, j, TW:]
                    for t in range(L):
                        E[0, j, t], E[1, j, t], E[2, j, t], E[3, j, t], E[4, j, t], E[5, j, t] = _bt4(
                            d0[t], d1[t], d2[t], d3[t], d4[t], d5[t], c2, c4, c5)
                else:
                    d2, d3 = X[0, j, TW:], X[1, j, TW:]
                    for t in range(L):
                        E[0, j, t], E[1, j, t], E[2, j, t], E[3, j, t] = _bt2(d0[t], d1[t], d2[t], d3[t])
            _b_along(E, V, c, n * L, L, m, c2, c4, c5)


@njit(parallel=True, cache=True, fastmath=_FAST)
def _input_transform_gather(x, idx, V, m, TH, TW, nb, cst):
    # _input_transform for small planes: prange over (input channel c, block of nb images),
    # so that every loop runs over all of the block's tiles (a 7² or 14² plane has 16-49:
    # per-row loops that short cost more in loop overhead than in copying). The patch
    # planes X[i, j, tile] = d[i, j] are gathered through idx[i·α+j, tile] (the offset of
    # d[i, j] from the block's first plane x[n0, c], −1 where the patch reads padding: see
    # _gather_index), then Bᵀ down the patch columns and B along them as in
    # _input_transform. x is C-contiguous.
    N, C, H, W = x.shape
    a = m + 2
    L = TH * TW
    c2, c4, c5 = cst[0], cst[1], cst[2]
    zero = c2 - c2
    blocks = -(-N // nb)
    for it in prange(C * blocks):
        c = it // blocks
        n0 = (it % blocks) * nb
        BL = (min(N, n0 + nb) - n0) * L
        X = np.empty((a, a, BL), V.dtype)
        E = np.empty((a, a, BL), V.dtype)
        _gather(x, (n0 * C + c) * H * W, idx, X, BL, zero)
        for j in range(a):
            d0, d1, d2, d3 = X[0, j], X[1, j], X[2, j], X[3, j]
            if m == 4:
                d4, d5 = X[4, j], X[5, j]
                for t in range(BL):
                    E[0, j, t], E[1, j, t], E[2, j, t], E[3, j, t], E[4, j, t], E[5, j, t] = _bt4(
                        d0[t], d1[t], d2[t], d3[t], d4[t], d5[t], c2, c4, c5)
            else:
                for t in range(BL):
                    E[0, j, t], E[1, j, t], E[2, j, t], E[3, j, t] = _bt2(d0[t], d1[t], d2[t], d3[t])
        _b_along(E, V, c, n0 * L, BL, m, c2, c4, c5)


# Planes with fewer tile columns than this take the gathering/scattering transforms
# (_output_transform_scatter, the weight gradient's _grad_output_transform_gather); their
# blocks hold enough images for _TILE_RUN tiles.
_GATHER_TW = 16
# ... and _input_transform_gather, from fewer than this: from 12 tile columns the row-by-row
# input transform is ahead (2 threads, in-process, interleaved, two runs, time rows /
# gather: F(4×4) 2×64×56² (14 columns) 0.74-0.76, 52² (13) 0.74-0.85, 48² (12) 0.78-0.83,
# 40² (10) 0.84-0.87, 32² (8) 0.94-1.09; F(2×2) 4×128×28² (14) 0.79-0.84, 24² (12) 0.78-
# 0.99, 20² (10) 0.98-1.03; 8×128×28² F(4×4) (7) 1.05-1.09). The other two transforms
# stay on the gather below 16: the output's scatter was ahead at every width measured
# (1.00-1.56), the gradient's gather from F(2×2)'s 10-14 columns (1.10-1.45).
_GATHER_TW_INPUT = 12
_TILE_RUN = 256


def _block_images(N, L):
    """Images per block of the gathered transforms: at least _TILE_RUN tiles, blocks balanced."""
    want = min(N, max(1, -(-_TILE_RUN // L)))
    return -(-N // -(-N // want))


@functools.lru_cache(maxsize=64)
def _gather_index(C, H, W, pt, pl, m, TH, TW, nb, a):
    """idx[i·a+j, b·L + u·TW + v] = offset of x[n0 + b, c, m·u + i − pt, m·v + j − pl] from
    x[n0, c] (x C-contiguous, C channels of H×W), −1 outside the plane; i, j < a (the
    patch: α for the input transform, m for the output's tile)."""
    i = np.arange(a)[:, None, None, None]
    j = np.arange(a)[None, :, None, None]
    h = m * np.arange(TH)[:, None] + i - pt  # (a, 1, TH, 1)
    w = m * np.arange(TW)[None, :] + j - pl  # (1, a, 1, TW)
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)  # (a, a, TH, TW)
    offset = (h * W + w)[:, :, None] + (np.arange(nb) * (C * H * W))[:, None, None]  # (a, a, nb, TH, TW)
    idx = np.where(inside[:, :, None], offset, -1).reshape(a * a, nb * TH * TW)
    idx.setflags(write=False)
    return idx


def input_transform(x, V, pt, pl, m, TH, TW, cst):
    """V = Bᵀ d B for every (input channel, tile) of x (C-contiguous): the gathered kernel
    for planes of few tile columns, the row-by-row one otherwise."""
    if TW < _GATHER_TW_INPUT:
        N, C, H, W = x.shape
        nb = _block_images(N, TH * TW)
        _input_transform_gather(x, _gather_index(C, H, W, pt, pl, m, TH, TW, nb, m + 2), V, m, TH, TW, nb, cst)
    else:
        _input_transform(x, V, pt, pl, m, TH, TW, cst)


# ---------------------------------------------------------------- output transform
@njit(parallel=True, cache=True, fastmath=_FAST)
def _output_transform(M, out, b, has_bias, relu, m, TH, TW, cst):
    # out[n, k, th·m+i, tw·m+j] = (Aᵀ M[·, k, t] A)[i, j] + b[k], ReLU'd; only p < P, q < Q written.
    # prange over blocks of output planes (n, k); one iteration writes each plane. Aᵀ over
    # ξ, then A over ν, each for all TH·TW tiles of the plane at once (contiguous in t:
    # vectorised), into Y[i, j, tile]; then Y is scattered to the plane with bias and ReLU.
    N, K, P, Q = out.shape
    a = m + 2
    L = TH * TW
    c2, c4, c8 = cst[0], cst[1], cst[3]
    zero = c2 - c2
    per = -(-(N * K) // _BLOCKS)  # planes per prange block: scratch allocated once per block
    for blk in prange(-(-(N * K) // per)):
        tmp = np.empty((m, a, L), out.dtype)
        Y = np.empty((m, m, L), out.dtype)
        for nk in range(blk * per, min((blk + 1) * per, N * K)):
            n = nk // K
            k = nk % K
            t0 = n * L
            bv = b[k] if has_bias else zero
            _at_passes(M, k, t0, L, tmp, Y, m, c2, c4, c8)
            # Y back to the plane, tile columns interleaved (raw offsets: Numba's wraparound
            # code for signed indices would keep this loop scalar); q < Q only.
            full = Q // m  # tile columns whose m outputs are all inside the plane
            for th in range(TH):
                for i in range(min(m, P - th * m)):
                    o = ((n * K + k) * P + th * m + i) * Q
                    y = i * m * L + th * TW  # Y[i, 0, th·TW]
                    if m == 4:
                        for tw in range(full):
                            q = o + 4 * tw
                            store_at(out, q, _bias_relu(load_at(Y, y + tw), bv, relu, zero))
                            store_at(out, q + 1, _bias_relu(load_at(Y, y + L + tw), bv, relu, zero))
                            store_at(out, q + 2, _bias_relu(load_at(Y, y + 2 * L + tw), bv, relu, zero))
                            store_at(out, q + 3, _bias_relu(load_at(Y, y + 3 * L + tw), bv, relu, zero))
                    else:
                        for tw in range(full):
                            q = o + 2 * tw
                            store_at(out, q, _bias_relu(load_at(Y, y + tw), bv, relu, zero))
                            store_at(out, q + 1, _bias_relu(load_at(Y, y + L + tw), bv, relu, zero))
                    for j in range(Q - full * m):  # the last, partial tile column
                        store_at(out, o + full * m + j, _bias_relu(load_at(Y, y + j * L + full), bv, relu, zero))


@njit(parallel=True, cache=True, fastmath=_FAST)
def _output_transform_scatter(M, out, idx, b, has_bias, relu, m, TH, TW, nb, cst):
    # _output_transform for small planes: prange over (output channel k, block of nb
    # images), Aᵀ and A as loops over all of the block's tiles, then Y[i, j, tile] goes to
    # out through idx[i·m+j, tile] (the offset from out[n0, k], −1 past P×Q: _gather_index).
    N, K, P, Q = out.shape
    a = m + 2
    L = TH * TW
    c2, c4, c8 = cst[0], cst[1], cst[3]
    zero = c2 - c2
    blocks = -(-N // nb)
    for it in prange(K * blocks):
        k = it // blocks
        n0 = (it % blocks) * nb
        BL = (min(N, n0 + nb) - n0) * L
        tmp = np.empty((m, a, BL), out.dtype)
        Y = np.empty((m, m, BL), out.dtype)
        t0 = n0 * L
        bv = b[k] if has_bias else zero
        _at_passes(M, k, t0, BL, tmp, Y, m, c2, c4, c8)
        base = (n0 * K + k) * P * Q
        for ij in range(m * m):
            row = idx[ij]
            for t in range(BL):
                o = row[t]
                if o >= 0:
                    store_at(out, base + o, _bias_relu(load_at(Y, ij * BL + t), bv, relu, zero))


def output_transform(M, out, b, has_bias, relu, m, TH, TW, cst):
    """out = Aᵀ M A (+ b, ReLU) for every (output channel, tile): the scattering kernel for
    planes of few tile columns, the row-by-row one otherwise. out is C-contiguous."""
    if TW < _GATHER_TW:
        N, K, P, Q = out.shape
        nb = _block_images(N, TH * TW)
        idx = _gather_index(K, P, Q, 0, 0, m, TH, TW, nb, m)
        _output_transform_scatter(M, out, idx, b, has_bias, relu, m, TH, TW, nb, cst)
    else:
        _output_transform(M, out, b, has_bias, relu, m, TH, TW, cst)


@njit(inline="always")
def _bias_relu(v, bv, relu, zero):
    v = v + bv
    if relu and v < zero:  # NaN < 0 is false: NaN stays
        v = zero
    return v


# ---------------------------------------------------------------- driver
def tiles(geom, m):
    """(TH, TW): output tiles per plane for tile size m."""
    return -(-geom.P // m), -(-geom.Q // m)


def winograd_conv(x, w, b, out, pad_top, pad_left, groups, m, relu=False, flip=False):
    """out = conv2d(x, w, stride 1, dilation 1, padding top/left = pad_top/pad_left) (+ b, ReLU).

    The bottom/right padding is implied by out's P×Q. w is (K, C/groups, 3, 3); with flip,
    w is the weight of the layer whose input gradient this is, used rotated 180° with K ↔ C
    per group (flipped_transposed).
    """
    if flip and groups > 1:
        w, flip = flipped_transposed(w, groups), False
    N, C = x.shape[0], x.shape[1]
    K, Cg = (w.shape[1], w.shape[0]) if flip else (w.shape[0], w.shape[1])
    P, Q = out.shape[2], out.shape[3]
    TH, TW = -(-P // m), -(-Q // m)
    a2 = (m + 2) ** 2
    dtype = out.dtype
    cst = np.array([2, 4, 5, 8], dtype=dtype)
    x = np.ascontiguousarray(x)  # the transforms read x and write out by raw offsets
    if not out.flags.c_contiguous:
        raise ValueError(f"winograd_conv: out must be C-contiguous, got strides {out.strides}")
    Kg = K // groups
    L = TH * TW
    has_bias = b is not None
    G = _chunk_images(N, C, K, L, a2, dtype.itemsize)
    kb = _pipelined_rows(w, K, Cg, a2, groups, G >= N, dtype)
    U = None if kb else _transformed_weight(w, m, dtype, flip)
    for n0 in range(0, N, G):
        xs, outs = x[n0:n0 + G], out[n0:n0 + G]
        T = xs.shape[0] * L
        V = scratch("winograd.V", (a2, C, T), dtype)
        input_transform(xs, V, pad_top, pad_left, m, TH, TW, cst)
        M = scratch("winograd.M", (a2, K, T), dtype)
        if kb:
            # kb output channels at a time: their weight transform, still in cache, then
            # their products (one group)
            Ub = scratch("winograd.U_rows", (a2, kb, Cg), dtype)
            G_m = _G[m].astype(dtype)
            for k0 in range(0, K, kb):
                rows = min(kb, K - k0)
                _run_weight_transform(w, G_m, Ub[:, :rows], k0, flip)
                matmul(Ub[:, :rows], V, out=M[:, k0:k0 + rows], winograd=True)
        else:
            matmul(U.reshape(a2, groups, Kg, Cg), V.reshape(a2, groups, Cg, T), out=M.reshape(a2, groups, Kg, T),
                   winograd=True)
        output_transform(M, outs, b if has_bias else cst, has_bias, relu, m, TH, TW, cst)


# A per-call weight transform over _PIPELINE_BYTES runs interleaved with the products, a
# block of output channels at a time (_PIPELINE_BLOCK bytes of U, a multiple of the GEMM's
# 12 rows), so the GEMM reads each block from cache rather than memory (2 threads, batch 8,
# interleaved, forward time pipelined / whole: 512→512 channels at 7², F(2×2) (U 16.8 MB)
# 0.95, F(4×4) (37.7 MB) 0.95, input gradient 0.99; 256 channels at 14²: F(2×2) 4.2 MB 1.00,
# F(4×4) 9.4 MB 1.03). Only for one group and one chunk of images (over several chunks the
# whole U is computed once and reused).
_PIPELINE_BYTES = 12 << 20
_PIPELINE_BLOCK = 2 << 20


def _pipelined_rows(w, K, Cg, a2, groups, one_chunk, dtype):
    """Output channels per block of the interleaved weight transform; 0: transform U whole."""
    per_row = a2 * Cg * np.dtype(dtype).itemsize
    reused = _REUSE.get() is not None and _REUSE.get()[1] is w
    if reused or groups > 1 or not one_chunk or K * per_row <= _PIPELINE_BYTES:
        return 0
    return max(12, _PIPELINE_BLOCK // per_row // 12 * 12)


# Images go through the three steps G at a time (workspace.images_per_chunk: V and M,
# α²·(C + K)·G·L values, still in cache when the next step reads them), but never fewer
# than _MIN_TILES tiles, which would thin the GEMMs more than the cache saves (2 threads,
# forward, ms, whole batch / chunks of 2, 4, 8, 16 MB: 8×128×28² 3.63 / 4.38, 4.59, 3.89,
# 3.56; 8×256×14² F(2×2) 4.88 / 5.79, 5.74, 5.19, 4.89).
_MIN_TILES = 384


def _chunk_images(N, C, K, L, a2, itemsize):
    """Images per pass through the three steps (L tiles each)."""
    return images_per_chunk(N, a2 * (C + K) * L * itemsize, -(-_MIN_TILES // L))


# The weight transform, kept across calls by a layer that knows its weight did not change
# (nn.Conv2d in eval mode): within ``reusing_weight_transform(store, weight, version)``,
# a call on that very weight array reuses the transform ``store`` holds for ``version``.
# Measured (2 threads): 512→512 channels, F(2×2) 2.3 ms and F(4×4) 2.8-3.2 ms per call, a
# quarter of that layer's forward at batch 8; 64→64 channels 0.07 ms.
_REUSE = contextvars.ContextVar("winograd_weight_reuse", default=None)


@contextlib.contextmanager
def reusing_weight_transform(store: dict, weight, version):
    """Calls on ``weight`` (the same array object) in this block reuse the transforms kept
    in ``store`` (a dict the caller owns) while ``version`` is what it was when they were made."""
    token = _REUSE.set((store, weight, version))
    try:
        yield
    finally:
        _REUSE.reset(token)


def _transformed_weight(w, m, dtype, flip=False):
    reuse = _REUSE.get()
    key = None
    if reuse is not None and reuse[1] is w and not flip:
        store, _, version = reuse
        key = (version, m, np.dtype(dtype).str, w.shape)
        if key in store:
            return store[key]
    K, Cg = (w.shape[1], w.shape[0]) if flip else (w.shape[0], w.shape[1])
    shape = ((m + 2) ** 2, K, Cg)
    # A transform the layer keeps is an array of its own; a per-call one is scratch.
    U = np.empty(shape, dtype=dtype) if key is not None else scratch("winograd.U", shape, dtype)
    _run_weight_transform(w, _G[m].astype(dtype), U, 0, flip)
    if key is not None:
        store.clear()  # one live transform per layer: older versions are stale
        store[key] = U
    return U


def flipped_transposed(w, groups):
    """The weight of the input gradient: per group K ↔ C swapped and rotated 180°,
    (K, Cg, 3, 3) → (C, Kg, 3, 3), so dX = conv(dY, that, padding 2 − p on each side)."""
    K, Cg, R, S = w.shape
    w5 = w.reshape(groups, K // groups, Cg, R, S)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(w5.transpose(0, 2, 1, 3, 4)).reshape(groups * Cg, K // groups, R, S)
