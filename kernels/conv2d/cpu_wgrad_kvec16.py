"""Stride-1 dense 5×5 conv2d weight gradient for layers with 12 to 16 output channels
(float32 where convcore's 16-lane kernels run): all output channels in one 16-lane vector,
the 25 taps of one input channel in registers. LeNet conv2 (6 → 16 channels, 14² → 10²,
batch 128) is the case; cpu_kvec16 is its forward, the same idea turned round.

    dW[k, c, r, s] = Σ_n Σ_{p, q} dY[n, k, p, q] · x[n, c, p + r − pt, q + s − pl]

Why not cpu_wgrad_simd's flat planes there: its tile of 4 output channels × 5 taps reads
each image's dY and x planes 4 × 5 = 20 times over (once per task and pass), packs dY again
for each input channel, and multiplies the flat plane's 136 positions for 100 outputs; its
tasks ran at about a quarter of the FMA rate (LeNet conv2: 1.05 ms, 57 GFLOP/s). Here each
image's dY goes once into pixel-major order (dyp[j·16 + k] = dY[n, k].flat[j], by 16×16
register transposes, lanes past K zero) and its x into a zero-padded copy (C, Hp, Wp);
then for each input channel c, 25 zmm accumulators (tap r, s; all k in lanes) take, per
output pixel (p, q), one dY vector and 25 broadcast inputs xp[c, p + r, q + s] into 25 FMAs:
every lane useful at 16 channels, nothing read twice per image but the broadcasts (in L1).

Threads: the images go in B = min(N, 16) fixed blocks, one prange iteration each; a block
sums its images in order into its own slot of part (B, C, 25, 16), and the slots are summed
in order at the end, so the result does not depend on the thread count.
"""
# ruff: noqa: E702 -- the tile's 25 accumulators five to a line
from __future__ import annotations

import functools

import numpy as np
from numba import config, get_thread_id, njit, prange, types

from ..gemm.simd import load_at, store_at, transpose16, vfma, vload, vstore
from ..gemm.simd import vbroadcast_load as vb
from ..precompile import njit_cached
from ..workspace import scratch
from .cpu_kvec16 import copy_padded, padded

LANES = 16
TAPS = 25        # the tile: a 5×5 filter's taps
BLOCKS = 16      # image blocks (partial sums) at most


def applies(geom, dtype) -> bool:
    """float32 where convcore's 16-lane kernels run, dense stride 1 without dilation, 5×5
    filters, 12 to 16 output channels (3/4 of the lanes or more), 8 images or more."""
    from ..gemm.cpu import enabled

    return (np.dtype(dtype) == np.float32 and enabled() and geom.groups == 1 and geom.stride == (1, 1)
            and geom.dilation == (1, 1) and geom.R == geom.S == 5 and 12 <= geom.K <= LANES and geom.N >= 8)


@njit(inline="always")
def _to_pixels(dyf, o, K, PQ, dyp):
    # dyp[j·16 + k] = dyf[o + k·PQ + j]: 16×16 blocks transposed in registers where K = 16,
    # scalar copies for the last PQ % 16 pixels and for fewer channels
    j_lo = 0
    if K == LANES:
        j_lo = PQ // LANES * LANES
        for j in range(0, j_lo, LANES):
            transpose16(dyf, o + j, PQ, dyp, j * LANES, LANES)
    for k in range(K):
        for j in range(j_lo, PQ):
            store_at(dyp, j * LANES + k, load_at(dyf, o + k * PQ + j))


@njit(inline="always")
def _tile(xp, xo, Wp, dyp, P, Q, acc, ao):
    # acc[ao + (r·5 + s)·16 + k] += Σ_{p, q} dyp[(p·Q + q)·16 + k] · xp[xo + (p + r)·Wp + q + s]
    o = ao
    a0 = vload(acc, o); a1 = vload(acc, o + 16); a2 = vload(acc, o + 32); a3 = vload(acc, o + 48); a4 = vload(acc, o + 64)
    o = ao + 80
    b0 = vload(acc, o); b1 = vload(acc, o + 16); b2 = vload(acc, o + 32); b3 = vload(acc, o + 48); b4 = vload(acc, o + 64)
    o = ao + 160
    c0 = vload(acc, o); c1 = vload(acc, o + 16); c2 = vload(acc, o + 32); c3 = vload(acc, o + 48); c4 = vload(acc, o + 64)
    o = ao + 240
    d0 = vload(acc, o); d1 = vload(acc, o + 16); d2 = vload(acc, o + 32); d3 = vload(acc, o + 48); d4 = vload(acc, o + 64)
    o = ao + 320
    e0 = vload(acc, o); e1 = vload(acc, o + 16); e2 = vload(acc, o + 32); e3 = vload(acc, o + 48); e4 = vload(acc, o + 64)
    for p in range(P):
        r0 = xo + p * Wp
        r1 = r0 + Wp
        r2 = r1 + Wp
        r3 = r2 + Wp
        r4 = r3 + Wp
        g = p * Q * LANES
        for q in range(Q):
            v = vload(dyp, g + q * LANES)
            a0 = vfma(vb(xp, r0 + q), v, a0); a1 = vfma(vb(xp, r0 + q + 1), v, a1); a2 = vfma(vb(xp, r0 + q + 2), v, a2)
            a3 = vfma(vb(xp, r0 + q + 3), v, a3); a4 = vfma(vb(xp, r0 + q + 4), v, a4)
            b0 = vfma(vb(xp, r1 + q), v, b0); b1 = vfma(vb(xp, r1 + q + 1), v, b1); b2 = vfma(vb(xp, r1 + q + 2), v, b2)
            b3 = vfma(vb(xp, r1 + q + 3), v, b3); b4 = vfma(vb(xp, r1 + q + 4), v, b4)
            c0 = vfma(vb(xp, r2 + q), v, c0); c1 = vfma(vb(xp, r2 + q + 1), v, c1); c2 = vfma(vb(xp, r2 + q + 2), v, c2)
            c3 = vfma(vb(xp, r2 + q + 3), v, c3); c4 = vfma(vb(xp, r2 + q + 4), v, c4)
            d0 = vfma(vb(xp, r3 + q), v, d0); d1 = vfma(vb(xp, r3 + q + 1), v, d1); d2 = vfma(vb(xp, r3 + q + 2), v, d2)
            d3 = vfma(vb(xp, r3 + q + 3), v, d3); d4 = vfma(vb(xp, r3 + q + 4), v, d4)
            e0 = vfma(vb(xp, r4 + q), v, e0); e1 = vfma(vb(xp, r4 + q + 1), v, e1); e2 = vfma(vb(xp, r4 + q + 2), v, e2)
            e3 = vfma(vb(xp, r4 + q + 3), v, e3); e4 = vfma(vb(xp, r4 + q + 4), v, e4)
    o = ao
    vstore(acc, o, a0); vstore(acc, o + 16, a1); vstore(acc, o + 32, a2); vstore(acc, o + 48, a3); vstore(acc, o + 64, a4)
    o = ao + 80
    vstore(acc, o, b0); vstore(acc, o + 16, b1); vstore(acc, o + 32, b2); vstore(acc, o + 48, b3); vstore(acc, o + 64, b4)
    o = ao + 160
    vstore(acc, o, c0); vstore(acc, o + 16, c1); vstore(acc, o + 32, c2); vstore(acc, o + 48, c3); vstore(acc, o + 64, c4)
    o = ao + 240
    vstore(acc, o, d0); vstore(acc, o + 16, d1); vstore(acc, o + 32, d2); vstore(acc, o + 48, d3); vstore(acc, o + 64, d4)
    o = ao + 320
    vstore(acc, o, e0); vstore(acc, o + 16, e1); vstore(acc, o + 32, e2); vstore(acc, o + 48, e3); vstore(acc, o + 64, e4)


def _wgrad(x, dy, part, pt, pl, xp_work, dyp_work):
    # part (B, C·25·16): block b's sums over images b·per .. (b + 1)·per − 1;
    # xp_work (threads, C·Hp·Wp), dyp_work (threads, P·Q·16)
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    Hp, Wp = P + 4, Q + 4
    B = part.shape[0]
    per = -(-N // B)
    copy = padded(x, pt, pl, Hp, Wp)
    xf, dyf = x.reshape(-1), dy.reshape(-1)
    for b in prange(B):
        xp = xp_work[get_thread_id()]
        dyp = dyp_work[get_thread_id()]
        acc = part[b]
        acc[:] = 0
        if copy:
            xp[:] = 0  # the padding; copy_padded rewrites only the inside, image by image
        if K < LANES:
            dyp[:] = 0
        for n in range(b * per, min(N, (b + 1) * per)):
            src, img = xf, n * C * H * W  # unpadded ('valid'): the image itself
            if copy:
                src, img = xp, 0
                copy_padded(x, n, xp, pt, pl, Hp, Wp)
            _to_pixels(dyf, n * K * P * Q, K, P * Q, dyp)
            for c in range(C):
                _tile(src, img + c * Hp * Wp, Wp, dyp, P, Q, acc, c * TAPS * LANES)


@functools.lru_cache(maxsize=None)
def _compiled():
    # compiled in a child process, loaded from Numba's cache (kernels.precompile: register-
    # tiled kernels JIT-compiled in-process ran at half speed)
    f1, f2, f4 = (types.Array(types.float32, d, "C") for d in (1, 2, 4))
    ip = types.intp
    return njit_cached(_wgrad, types.void(f4, f4, f2, ip, ip, f2, f2), "_compiled", parallel=True)


def wgrad_kvec16(x, dy, out, geom):
    """out = the weight gradient (K, C, 5, 5) of a layer ``applies`` accepts; x and dy
    C-contiguous float32."""
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    N, C = x.shape[0], x.shape[1]
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    pt, _, pl, _ = geom.padding
    threads = config.NUMBA_NUM_THREADS
    blocks = min(N, BLOCKS)
    part = scratch("conv2d.wgrad_kvec16_part", (blocks, C * TAPS * LANES), np.float32)
    xp = scratch("conv2d.wgrad_kvec16_x", (threads, C * (P + 4) * (Q + 4)), np.float32)
    dyp = scratch("conv2d.wgrad_kvec16_dy", (threads, P * Q * LANES), np.float32)
    _compiled()(x, dy, part, pt, pl, xp, dyp)
    sums = part.reshape(blocks, C, TAPS, LANES).sum(axis=0)  # in block order: deterministic
    out[...] = sums[:, :, :K].transpose(2, 0, 1).reshape(K, C, 5, 5)
