"""conv2d forward with the output channels in 16-lane vectors (float32, AVX-512 hosts): the
``direct`` forward of layers with few input channels and a large strided kernel (the
ResNet stem, 3 → 64 channels 7×7 stride 2), where im2col writes a column matrix (147 rows
× every output pixel) that costs a third of the whole forward.

    out[n, k, p, q] = Σ_c,r,s w[k, c, r, s] · xp[n, c, p·sh + r·dh, q·sw + s·dw]

xp is x zero-padded once (so no tap needs a bounds check) and wide enough for the last
tile of a row to run past Q. The weight is packed as wp[kb, c, r, s, l] = w[kb·64 + l, c, r,
s] (channels past K zero). Register tile: 4 vectors of 16 output channels × 6 output pixels
of one row, 24 zmm accumulators across all C·R·S taps: per tap, 4 weight loads and 6 input
broadcasts feed 24 FMAs. A row of finished tiles goes to out's planes (channels in lanes
to NCHW) in 16×16 blocks transposed in registers (gemm.simd.transpose16): copied scalar,
the copy had cost 60% of the FMAs' time (2 threads, batch 8: 8.6 ms with it, 5.6 without).

Threads: one prange iteration per (image, block of 64 output channels, output row); each
writes only its own row of out.
"""
# ruff: noqa: E702 -- the tile's four vectors one line per pixel
from __future__ import annotations

import functools

import numpy as np
from numba import config, get_thread_id, njit, prange, types

from .. import host
from ..gemm.simd import load_at, store_at, transpose16, vfma, vload, vstore, vzero
from ..gemm.simd import vbroadcast_load as vb
from ..precompile import njit_cached
from ..workspace import scratch

KL = 64  # output channels per tile (4 vectors)
TQ = 6   # output pixels per tile
# Hosts with AVX2 but not AVX-512 (16 ymm registers): a 16-lane vector is two ymm, so the
# tile is 1 vector of 16 output channels × 6 pixels (12 ymm accumulators, 2 for the weights,
# 1 for the broadcast), not 4 × 6 (48 ymm: spilled).
KL_AVX2 = 16


@njit(inline="always")
def _tile(xp, xo, sw, dw, C, R, S, plane, row, wp, wo, acc, a):
    # acc[a + j·KL + l] = Σ_c,r,s wp[wo + ((c·R + r)·S + s)·KL + l] · xp[xo + c·plane + r·row + s·dw + j·sw],
    # j < TQ, l < KL.
    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero()
    b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero()
    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero()
    d0 = vzero(); d1 = vzero(); d2 = vzero(); d3 = vzero()
    e0 = vzero(); e1 = vzero(); e2 = vzero(); e3 = vzero()
    f0 = vzero(); f1 = vzero(); f2 = vzero(); f3 = vzero()
    for c in range(C):
        for r in range(R):
            xr = xo + c * plane + r * row
            wr = wo + (c * R + r) * S * KL
            for s in range(S):
                o = xr + s * dw
                u = wr + s * KL
                w0 = vload(wp, u); w1 = vload(wp, u + 16); w2 = vload(wp, u + 32); w3 = vload(wp, u + 48)
                x = vb(xp, o); a0 = vfma(x, w0, a0); a1 = vfma(x, w1, a1); a2 = vfma(x, w2, a2); a3 = vfma(x, w3, a3)
                x = vb(xp, o + sw); b0 = vfma(x, w0, b0); b1 = vfma(x, w1, b1); b2 = vfma(x, w2, b2); b3 = vfma(x, w3, b3)
                o2 = o + 2 * sw
                x = vb(xp, o2); c0 = vfma(x, w0, c0); c1 = vfma(x, w1, c1); c2 = vfma(x, w2, c2); c3 = vfma(x, w3, c3)
                x = vb(xp, o2 + sw); d0 = vfma(x, w0, d0); d1 = vfma(x, w1, d1); d2 = vfma(x, w2, d2); d3 = vfma(x, w3, d3)
                o4 = o + 4 * sw
                x = vb(xp, o4); e0 = vfma(x, w0, e0); e1 = vfma(x, w1, e1); e2 = vfma(x, w2, e2); e3 = vfma(x, w3, e3)
                x = vb(xp, o4 + sw); f0 = vfma(x, w0, f0); f1 = vfma(x, w1, f1); f2 = vfma(x, w2, f2); f3 = vfma(x, w3, f3)
    vstore(acc, a + 0, a0); vstore(acc, a + 16, a1); vstore(acc, a + 32, a2); vstore(acc, a + 48, a3)
    vstore(acc, a + 64, b0); vstore(acc, a + 80, b1); vstore(acc, a + 96, b2); vstore(acc, a + 112, b3)
    vstore(acc, a + 128, c0); vstore(acc, a + 144, c1); vstore(acc, a + 160, c2); vstore(acc, a + 176, c3)
    vstore(acc, a + 192, d0); vstore(acc, a + 208, d1); vstore(acc, a + 224, d2); vstore(acc, a + 240, d3)
    vstore(acc, a + 256, e0); vstore(acc, a + 272, e1); vstore(acc, a + 288, e2); vstore(acc, a + 304, e3)
    vstore(acc, a + 320, f0); vstore(acc, a + 336, f1); vstore(acc, a + 352, f2); vstore(acc, a + 368, f3)


@njit(inline="always")
def _tile_avx2(xp, xo, sw, dw, C, R, S, plane, row, wp, wo, acc, a):
    # _tile for KL_AVX2 = 16 output channels: acc[a + j·16 + l], j < TQ, l < 16.
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero(); e0 = vzero(); f0 = vzero()
    for c in range(C):
        for r in range(R):
            xr = xo + c * plane + r * row
            wr = wo + (c * R + r) * S * KL_AVX2
            for s in range(S):
                o = xr + s * dw
                w0 = vload(wp, wr + s * KL_AVX2)
                a0 = vfma(vb(xp, o), w0, a0); b0 = vfma(vb(xp, o + sw), w0, b0)
                o2 = o + 2 * sw
                c0 = vfma(vb(xp, o2), w0, c0); d0 = vfma(vb(xp, o2 + sw), w0, d0)
                o4 = o + 4 * sw
                e0 = vfma(vb(xp, o4), w0, e0); f0 = vfma(vb(xp, o4 + sw), w0, f0)
    vstore(acc, a + 0, a0); vstore(acc, a + 16, b0); vstore(acc, a + 32, c0)
    vstore(acc, a + 48, d0); vstore(acc, a + 64, e0); vstore(acc, a + 80, f0)


def _fwd_kvec(xp, wp, out, sh, sw, dh, dw, R, S, work):
    # out (N, K, P, Q) C-contiguous; xp (N, C, Hp, Wp) C-contiguous; wp (KB, C·R·S·KL).
    # A row's tiles go to this thread's row buffer row[q·KL + l] (pixel-major, as the
    # registers hold them), then to out: 16×16 blocks transposed in registers, scalar
    # copies for the last Q % 16 pixels and a partial last vector of channels.
    N, C, Hp, Wp = xp.shape
    K, P, Q = out.shape[1], out.shape[2], out.shape[3]
    blocks = wp.shape[0]
    kl = wp.shape[1] // (C * R * S)  # KL, or KL_AVX2 (the narrow tile)
    plane = Hp * Wp
    for task in prange(N * blocks * P):
        p = task % P
        kb = (task // P) % blocks
        n = task // (P * blocks)
        row = work[get_thread_id()]
        k0 = kb * kl
        kn = min(kl, K - k0)
        for q0 in range(0, Q, TQ):
            xo = (n * C * Hp + p * sh) * Wp + q0 * sw
            if kl == KL:
                _tile(xp, xo, sw, dw, C, R, S, plane, dh * Wp, wp, kb * C * R * S * KL, row, q0 * KL)
            else:
                _tile_avx2(xp, xo, sw, dw, C, R, S, plane, dh * Wp, wp, kb * C * R * S * KL_AVX2, row, q0 * KL_AVX2)
        full = Q // 16 * 16
        for v in range(0, kn, 16):
            o = ((n * K + k0 + v) * P + p) * Q  # out[n, k0 + v, p, 0]
            q_lo = 0
            if v + 16 <= kn:
                for q in range(0, full, 16):
                    transpose16(row, q * kl + v, kl, out, o + q, P * Q)
                q_lo = full
            for k in range(min(16, kn - v)):
                for q in range(q_lo, Q):
                    store_at(out, o + k * P * Q + q, load_at(row, q * kl + v + k))


@functools.lru_cache(maxsize=None)
def _compiled():
    # compiled in a child process, loaded from Numba's cache (kernels.precompile: register-
    # tiled kernels JIT-compiled in-process ran at half speed)
    f4 = types.Array(types.float32, 4, "C")
    sig = types.void(f4, types.Array(types.float32, 2, "C"), f4, types.intp, types.intp, types.intp, types.intp,
                     types.intp, types.intp, types.Array(types.float32, 2, "C"))
    return njit_cached(_fwd_kvec, sig, "_compiled", parallel=True)


def _avx2_host() -> bool:
    """AVX2 and FMA but convcore's 16-lane kernels off (no AVX-512): the narrow tile."""
    from ..gemm.cpu import enabled

    return not enabled() and host.avx2_fma()


def available() -> bool:
    """Whether this kernel runs here: with the wide tile where convcore's 16-lane kernels
    run (gemm.cpu.enabled), with the narrow one on AVX2 hosts without AVX-512."""
    from ..gemm.cpu import enabled

    return enabled() or _avx2_host()


def tile_channels() -> int:
    """Output channels per register tile: KL with convcore's 16-lane kernels, else KL_AVX2."""
    from ..gemm.cpu import enabled

    return KL if enabled() else KL_AVX2


def applies(x, out, geom) -> bool:
    """float32, one group, on a host where it runs (available)."""
    return x.dtype == out.dtype == np.float32 and geom.groups == 1 and available()


def kvec_fwd(x, w, out, geom):
    """out = conv2d(x, w) (one group, any stride, padding and dilation); out C-contiguous."""
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    pt, _, pl, _ = geom.padding
    # rows and columns the taps read (the last tile of a row runs up to TQ − 1 pixels past Q)
    Hp = (P - 1) * sh + (R - 1) * dh + 1
    Wp = (-(-Q // TQ) * TQ - 1) * sw + (S - 1) * dw + 1
    xp = scratch("conv2d.kvec_x", (N, C, Hp, Wp), np.float32)
    xp[...] = 0
    h0, h1 = max(0, pt), min(Hp, pt + H)  # rows of xp that hold input rows h − pt
    w0, w1 = max(0, pl), min(Wp, pl + W)
    if h1 > h0 and w1 > w0:
        xp[:, :, h0:h1, w0:w1] = x[:, :, h0 - pt:h1 - pt, w0 - pl:w1 - pl]
    kl = tile_channels()
    blocks = -(-K // kl)
    wp = np.zeros((blocks * kl, C, R, S), np.float32)
    wp[:K] = w
    wp = np.ascontiguousarray(wp.reshape(blocks, kl, C * R * S).transpose(0, 2, 1)).reshape(blocks, C * R * S * kl)
    work = scratch("conv2d.kvec_row", (config.NUMBA_NUM_THREADS, -(-Q // TQ) * TQ * kl), np.float32)
    _compiled()(xp, wp, out, sh, sw, dh, dw, R, S, work)
