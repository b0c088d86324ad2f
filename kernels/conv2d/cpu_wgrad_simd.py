"""Stride-1 dense conv2d weight gradient on flattened padded planes with explicit 16-lane
vectors: the ``direct`` weight gradient of small float32 layers (LeNet's) on AVX-512 hosts.

Same flat layout as cpu_kblock / cpu_flat_simd: x zero-padded to (N, C, Hp, Wp) and
flattened, tap t = r·S + s at flat offset offs[t] = r·dh·Wp + s·dw, so that

    dW[k, c, t] = Σ_n Σ_{i < L} dY'[n, k, i] · x[n, c].flat[offs[t] + i],  L = (P−1)·Wp + Q,

with dY' dy laid out at row width Wp (zeros in columns q >= Q) and zero-padded to whole
vectors. cpu_kblock's weight gradient sums each image's dot products to a scalar (16
horizontal reductions per pass of ~9 vectors, and a scalar tail); here a register tile of
4 output channels × 5 taps (20 zmm accumulators) is added lane by lane over every vector of
a block of images, into a per-task accumulator of lanes, reduced to scalars once at the end
(a fixed pairwise tree: deterministic). Per vector: 4 dY loads and 5 input loads feed 20 FMAs.

Threads: tasks (block of 4 output channels, input channel c) split evenly between one
prange iteration per thread (buffers allocated once per thread); a task owns dW[k0:k0 + 4,
c] and sums over the images in a fixed order, so the result does not depend on the thread
count. Images go in blocks whose packed dY planes and x planes stay in L1 across the tile's
passes over the taps; each task packs its block's dY planes at row width Wp itself.
"""
# ruff: noqa: E702 -- the tile's five taps one line each
from __future__ import annotations

import functools

import numpy as np
from numba import get_num_threads, njit, prange, types

from ..gemm.simd import vadd, vfma, vload, vload_first, vstore, vsum, vzero
from ..precompile import njit_cached
from .cpu_flat_simd import padded_flat

KB = 4            # output channels per tile
TT = 5            # taps per tile
VEC = 16          # float32 lanes
L1_BYTES = 24 * 1024  # the dY and x planes of one block of images


@njit(inline="always")
def _tile(xs, xb, x_step, yb, run, nb, offs, t0, T, n_vec, accm, am):
    # accm[am + (j·TT + u)·16 + l] += Σ_{m < nb} Σ_v yb[m·KB·run + j·run + 16v + l] ·
    # xs[xb + m·x_step + offs[t0 + u] + 16v + l] for j < 4, u < 5 (a tap past T repeats the
    # last one; its sums are never read): the 20 sums stay in registers over the block.
    o0 = offs[t0]; o1 = offs[min(t0 + 1, T - 1)]; o2 = offs[min(t0 + 2, T - 1)]
    o3 = offs[min(t0 + 3, T - 1)]; o4 = offs[min(t0 + 4, T - 1)]
    a00 = vzero(); a01 = vzero(); a02 = vzero(); a03 = vzero(); a04 = vzero()
    a10 = vzero(); a11 = vzero(); a12 = vzero(); a13 = vzero(); a14 = vzero()
    a20 = vzero(); a21 = vzero(); a22 = vzero(); a23 = vzero(); a24 = vzero()
    a30 = vzero(); a31 = vzero(); a32 = vzero(); a33 = vzero(); a34 = vzero()
    for m in range(nb):
        xm = xb + m * x_step
        d = m * KB * run
        for v in range(n_vec):
            i = v * VEC
            y0 = vload(yb, d + i); y1 = vload(yb, d + run + i); y2 = vload(yb, d + 2 * run + i); y3 = vload(yb, d + 3 * run + i)
            x = vload(xs, xm + o0 + i)
            a00 = vfma(y0, x, a00); a10 = vfma(y1, x, a10); a20 = vfma(y2, x, a20); a30 = vfma(y3, x, a30)
            x = vload(xs, xm + o1 + i)
            a01 = vfma(y0, x, a01); a11 = vfma(y1, x, a11); a21 = vfma(y2, x, a21); a31 = vfma(y3, x, a31)
            x = vload(xs, xm + o2 + i)
            a02 = vfma(y0, x, a02); a12 = vfma(y1, x, a12); a22 = vfma(y2, x, a22); a32 = vfma(y3, x, a32)
            x = vload(xs, xm + o3 + i)
            a03 = vfma(y0, x, a03); a13 = vfma(y1, x, a13); a23 = vfma(y2, x, a23); a33 = vfma(y3, x, a33)
            x = vload(xs, xm + o4 + i)
            a04 = vfma(y0, x, a04); a14 = vfma(y1, x, a14); a24 = vfma(y2, x, a24); a34 = vfma(y3, x, a34)
    b = am
    vstore(accm, b + 0, vadd(vload(accm, b + 0), a00)); vstore(accm, b + 16, vadd(vload(accm, b + 16), a01))
    vstore(accm, b + 32, vadd(vload(accm, b + 32), a02)); vstore(accm, b + 48, vadd(vload(accm, b + 48), a03))
    vstore(accm, b + 64, vadd(vload(accm, b + 64), a04))
    b = am + TT * VEC
    vstore(accm, b + 0, vadd(vload(accm, b + 0), a10)); vstore(accm, b + 16, vadd(vload(accm, b + 16), a11))
    vstore(accm, b + 32, vadd(vload(accm, b + 32), a12)); vstore(accm, b + 48, vadd(vload(accm, b + 48), a13))
    vstore(accm, b + 64, vadd(vload(accm, b + 64), a14))
    b = am + 2 * TT * VEC
    vstore(accm, b + 0, vadd(vload(accm, b + 0), a20)); vstore(accm, b + 16, vadd(vload(accm, b + 16), a21))
    vstore(accm, b + 32, vadd(vload(accm, b + 32), a22)); vstore(accm, b + 48, vadd(vload(accm, b + 48), a23))
    vstore(accm, b + 64, vadd(vload(accm, b + 64), a24))
    b = am + 3 * TT * VEC
    vstore(accm, b + 0, vadd(vload(accm, b + 0), a30)); vstore(accm, b + 16, vadd(vload(accm, b + 16), a31))
    vstore(accm, b + 32, vadd(vload(accm, b + 32), a32)); vstore(accm, b + 48, vadd(vload(accm, b + 48), a33))
    vstore(accm, b + 64, vadd(vload(accm, b + 64), a34))


@njit(inline="always")
def _pack_dy(dyf, base, P, Q, yb, dst, Wp):
    # yb[dst + p·Wp + q] = dyf[base + p·Q + q] for q < Q, by whole vectors: the lanes a row's
    # last vector writes past Q are zeros (a masked load), so yb's gaps (columns q >= Q,
    # zeroed once) only ever receive zeros.
    for p in range(P):
        for q in range(0, Q, VEC):
            vstore(yb, dst + p * Wp + q, vload_first(dyf, base + p * Q + q, min(VEC, Q - q)))


def _wgrad_simd(xs, plane, dyf, Wp, run, n_vec, offs, dw, P, Q, images_per_block, workers):
    # dw (K, C, T) = Σ_n Σ_i dY'[n, k].flat[i] · xs[(n·C + c)·plane + offs[t] + i] for i <
    # 16·n_vec, dY' each dy plane at row width Wp, packed per block of images into the
    # task's buffer yb (run >= 16·n_vec per plane). A short last block of channels packs
    # and computes its last channel again (not stored).
    K, C, T = dw.shape
    N = dyf.shape[0] // (K * P * Q)
    passes = (T + TT - 1) // TT
    kblocks = (K + KB - 1) // KB
    tasks = kblocks * C
    for worker in prange(workers):
        # buffers allocated once per worker, not per task (an allocation in the prange
        # body costs about a microsecond, as long as a small task)
        accm = np.empty(passes * KB * TT * VEC, np.float32)
        yb = np.zeros(images_per_block * KB * run, np.float32)
        for task in range(worker * tasks // workers, (worker + 1) * tasks // workers):
            k0 = task // C * KB
            c = task % C
            accm[:] = 0.0
            for n0 in range(0, N, images_per_block):
                nb = min(images_per_block, N - n0)
                for m in range(nb):
                    for j in range(KB):
                        _pack_dy(dyf, ((n0 + m) * K + min(k0 + j, K - 1)) * P * Q, P, Q, yb, (m * KB + j) * run, Wp)
                for p in range(passes):
                    _tile(xs, (n0 * C + c) * plane, C * plane, yb, run, nb, offs, p * TT, T, n_vec, accm,
                          p * KB * TT * VEC)
            for j in range(min(KB, K - k0)):
                for t in range(T):
                    dw[k0 + j, c, t] = vsum(vload(accm, ((t // TT * KB + j) * TT + t % TT) * VEC))


@functools.lru_cache(maxsize=None)
def _compiled():
    # compiled in a child process, loaded from Numba's cache (kernels.precompile), as
    # cpu_flat_simd's kernel
    f1, i1 = types.Array(types.float32, 1, "C"), types.Array(types.int64, 1, "C")
    n = types.intp
    sig = types.void(f1, n, f1, n, n, n, i1, types.Array(types.float32, 3, "C"), n, n, n, n)
    return njit_cached(_wgrad_simd, sig, "_compiled", parallel=True)


def available() -> bool:
    """Whether this kernel runs here: as cpu_flat_simd's wide tile (AVX-512 hosts)."""
    from ..gemm.cpu import enabled

    return enabled()


def applies(geom, dtype) -> bool:
    """float32 dense stride-1 layers (padding >= 0) on a host where it runs, with a task
    (block of output channels, input channel) for each of two threads. Any layout of x,
    dy and out: wgrad_simd packs x and dy itself."""
    return (np.dtype(dtype) == np.float32 and available() and geom.groups == 1 and geom.stride == (1, 1)
            and min(geom.padding) >= 0 and -(-geom.K // KB) * geom.C >= 2)


def wgrad_simd(x, dy, out, padding, dilation):
    """out = conv2d_weight(x, out.shape, dy) for a dense stride-1 layer, padding (top,
    bottom, left, right) (each >= 0) and dilation (dh, dw)."""
    (pt, pb, pl, pr), (dh, dw) = padding, dilation
    N, C, H, W = x.shape
    K, _, R, S = out.shape
    P, Q = dy.shape[2], dy.shape[3]
    Hp, Wp = H + pt + pb, W + pl + pr
    plane = Hp * Wp
    L = (P - 1) * Wp + Q
    n_vec = -(-L // VEC)
    # the last tap's whole vectors read up to 15 past the last plane (offs[-1] + L == plane)
    xs = padded_flat(x, padding, "conv2d.wgrad_simd_x", VEC)
    # each dy plane at row width Wp, whole vectors, and the last row's last vector
    run = -(-max(P * Wp, n_vec * VEC, (P - 1) * Wp + -(-Q // VEC) * VEC) // VEC) * VEC
    offs = (np.arange(R)[:, None] * dh * Wp + np.arange(S)[None, :] * dw).reshape(-1).astype(np.int64)
    per_image = (KB * run + plane) * 4
    dst = out if out.flags.c_contiguous else np.empty(out.shape, np.float32)
    _compiled()(xs, plane, np.ascontiguousarray(dy).reshape(-1), Wp, run, n_vec, offs, dst.reshape(K, C, R * S), P, Q,
                max(1, L1_BYTES // per_image), min(get_num_threads(), -(-K // KB) * C))
    if dst is not out:
        out[...] = dst
