"""Stride-1 dense conv2d forward on flattened padded planes with explicit 16-lane vectors:
the ``direct`` forward of small float32 layers (LeNet's) on AVX-512 hosts, and with a
shorter strip (STRIP_AVX2) on AVX2 hosts.

Same flat layout as cpu_kblock / cpu_flat: x zero-padded to (N, C, Hp, Wp) and flattened,
tap t = (c·R + r)·S + s reading flat offset offs[t] + p·Wp + q for output (p, q), so an
output plane is one run of L = (P−1)·Wp + Q flat positions (columns q >= Q are scratch,
dropped when cropping). cpu_kblock keeps its accumulators in memory (a load and a store
per FMA group); here a register tile of 3 output channels × 9 vectors (144 flat outputs,
27 zmm accumulators) stays in registers across all C·R·S taps: per tap, 9 input loads and
3 weight broadcasts feed 27 FMAs (8 vectors, 24 accumulators, where whole strips of 128
fit a plane's L flat outputs in fewer lanes than strips of 144). Then the tile is cropped
into out.

Threads: one prange iteration per (image, block of 3 output channels); each writes only its
own output planes. Each thread zero-pads the image of its task into a buffer of its own
(in L1 at LeNet's sizes), once per image it takes in a row. Reads run up to one strip past
a plane's L flat outputs, into the next channel's plane or the zero slack after the
image's: those lanes are never stored.
"""
# ruff: noqa: E702 -- the tile's nine vectors one line each
from __future__ import annotations

import functools

import numpy as np
from numba import config, get_thread_id, njit, prange, types

from ..gemm.simd import load_at, store_at, vbroadcast_load, vfma, vload, vload_first, vstore, vzero
from ..precompile import njit_cached
from ..workspace import scratch

V = 9                 # vectors per strip
STRIP = V * 16        # flat outputs per strip
STRIP8 = 8 * 16       # the 8-vector strip, where whole strips of it fit a plane's L better
KB = 3                # output channels per tile
LANES = 16
# Hosts with AVX2 but not AVX-512 (16 ymm registers): a 16-lane vector is two ymm, so the
# strip is 2 vectors (3 × 4 = 12 ymm accumulators, 3 broadcasts, one input half), not 9
# (54 ymm: spilled).
STRIP_AVX2 = 2 * 16


@njit(inline="always")
def _strip3(xf, xb, offs, w, w0, w1, w2, acc):
    # acc[j·STRIP + i] = Σ_t w[w_j + t] · xf[xb + offs[t] + i], j < 3, i < STRIP: 27 zmm
    # accumulators, 3 broadcasts and one input vector at a time (31 of 32 registers).
    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero(); a5 = vzero(); a6 = vzero(); a7 = vzero(); a8 = vzero()
    b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero(); b5 = vzero(); b6 = vzero(); b7 = vzero(); b8 = vzero()
    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero(); c5 = vzero(); c6 = vzero(); c7 = vzero(); c8 = vzero()
    for t in range(offs.shape[0]):
        o = xb + offs[t]
        u = vbroadcast_load(w, w0 + t)
        y = vbroadcast_load(w, w1 + t)
        z = vbroadcast_load(w, w2 + t)
        v = vload(xf, o + 0); a0 = vfma(u, v, a0); b0 = vfma(y, v, b0); c0 = vfma(z, v, c0)
        v = vload(xf, o + 16); a1 = vfma(u, v, a1); b1 = vfma(y, v, b1); c1 = vfma(z, v, c1)
        v = vload(xf, o + 32); a2 = vfma(u, v, a2); b2 = vfma(y, v, b2); c2 = vfma(z, v, c2)
        v = vload(xf, o + 48); a3 = vfma(u, v, a3); b3 = vfma(y, v, b3); c3 = vfma(z, v, c3)
        v = vload(xf, o + 64); a4 = vfma(u, v, a4); b4 = vfma(y, v, b4); c4 = vfma(z, v, c4)
        v = vload(xf, o + 80); a5 = vfma(u, v, a5); b5 = vfma(y, v, b5); c5 = vfma(z, v, c5)
        v = vload(xf, o + 96); a6 = vfma(u, v, a6); b6 = vfma(y, v, b6); c6 = vfma(z, v, c6)
        v = vload(xf, o + 112); a7 = vfma(u, v, a7); b7 = vfma(y, v, b7); c7 = vfma(z, v, c7)
        v = vload(xf, o + 128); a8 = vfma(u, v, a8); b8 = vfma(y, v, b8); c8 = vfma(z, v, c8)
    s = 0 * STRIP
    vstore(acc, s + 0, a0); vstore(acc, s + 16, a1); vstore(acc, s + 32, a2); vstore(acc, s + 48, a3); vstore(acc, s + 64, a4)
    vstore(acc, s + 80, a5); vstore(acc, s + 96, a6); vstore(acc, s + 112, a7); vstore(acc, s + 128, a8)
    s = 1 * STRIP
    vstore(acc, s + 0, b0); vstore(acc, s + 16, b1); vstore(acc, s + 32, b2); vstore(acc, s + 48, b3); vstore(acc, s + 64, b4)
    vstore(acc, s + 80, b5); vstore(acc, s + 96, b6); vstore(acc, s + 112, b7); vstore(acc, s + 128, b8)
    s = 2 * STRIP
    vstore(acc, s + 0, c0); vstore(acc, s + 16, c1); vstore(acc, s + 32, c2); vstore(acc, s + 48, c3); vstore(acc, s + 64, c4)
    vstore(acc, s + 80, c5); vstore(acc, s + 96, c6); vstore(acc, s + 112, c7); vstore(acc, s + 128, c8)


@njit(inline="always")
def _strip3_v8(xf, xb, offs, w, w0, w1, w2, acc):
    # _strip3 for a strip of STRIP8 = 128 flat outputs (8 vectors, 24 accumulators).
    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero(); a5 = vzero(); a6 = vzero(); a7 = vzero()
    b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero(); b5 = vzero(); b6 = vzero(); b7 = vzero()
    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero(); c5 = vzero(); c6 = vzero(); c7 = vzero()
    for t in range(offs.shape[0]):
        o = xb + offs[t]
        u = vbroadcast_load(w, w0 + t)
        y = vbroadcast_load(w, w1 + t)
        z = vbroadcast_load(w, w2 + t)
        v = vload(xf, o + 0); a0 = vfma(u, v, a0); b0 = vfma(y, v, b0); c0 = vfma(z, v, c0)
        v = vload(xf, o + 16); a1 = vfma(u, v, a1); b1 = vfma(y, v, b1); c1 = vfma(z, v, c1)
        v = vload(xf, o + 32); a2 = vfma(u, v, a2); b2 = vfma(y, v, b2); c2 = vfma(z, v, c2)
        v = vload(xf, o + 48); a3 = vfma(u, v, a3); b3 = vfma(y, v, b3); c3 = vfma(z, v, c3)
        v = vload(xf, o + 64); a4 = vfma(u, v, a4); b4 = vfma(y, v, b4); c4 = vfma(z, v, c4)
        v = vload(xf, o + 80); a5 = vfma(u, v, a5); b5 = vfma(y, v, b5); c5 = vfma(z, v, c5)
        v = vload(xf, o + 96); a6 = vfma(u, v, a6); b6 = vfma(y, v, b6); c6 = vfma(z, v, c6)
        v = vload(xf, o + 112); a7 = vfma(u, v, a7); b7 = vfma(y, v, b7); c7 = vfma(z, v, c7)
    s = 0 * STRIP
    vstore(acc, s + 0, a0); vstore(acc, s + 16, a1); vstore(acc, s + 32, a2); vstore(acc, s + 48, a3); vstore(acc, s + 64, a4)
    vstore(acc, s + 80, a5); vstore(acc, s + 96, a6); vstore(acc, s + 112, a7)
    s = 1 * STRIP
    vstore(acc, s + 0, b0); vstore(acc, s + 16, b1); vstore(acc, s + 32, b2); vstore(acc, s + 48, b3); vstore(acc, s + 64, b4)
    vstore(acc, s + 80, b5); vstore(acc, s + 96, b6); vstore(acc, s + 112, b7)
    s = 2 * STRIP
    vstore(acc, s + 0, c0); vstore(acc, s + 16, c1); vstore(acc, s + 32, c2); vstore(acc, s + 48, c3); vstore(acc, s + 64, c4)
    vstore(acc, s + 80, c5); vstore(acc, s + 96, c6); vstore(acc, s + 112, c7)


@njit(inline="always")
def _strip3_avx2(xf, xb, offs, w, w0, w1, w2, acc):
    # _strip3 for a strip of STRIP_AVX2 = 32 flat outputs: acc[j·STRIP + i], i < 32.
    a0 = vzero(); a1 = vzero(); b0 = vzero(); b1 = vzero(); c0 = vzero(); c1 = vzero()
    for t in range(offs.shape[0]):
        o = xb + offs[t]
        u = vbroadcast_load(w, w0 + t)
        y = vbroadcast_load(w, w1 + t)
        z = vbroadcast_load(w, w2 + t)
        v = vload(xf, o + 0); a0 = vfma(u, v, a0); b0 = vfma(y, v, b0); c0 = vfma(z, v, c0)
        v = vload(xf, o + 16); a1 = vfma(u, v, a1); b1 = vfma(y, v, b1); c1 = vfma(z, v, c1)
    vstore(acc, 0, a0); vstore(acc, 16, a1)
    vstore(acc, STRIP, b0); vstore(acc, STRIP + 16, b1)
    vstore(acc, 2 * STRIP, c0); vstore(acc, 2 * STRIP + 16, c1)


@njit(inline="always")
def _pad_image(xs, n, C, H, W, xf, pt, pl, Hp, Wp):
    # xf[(c·Hp + h)·Wp + j] = x[n, c, h − pt, j − pl] (xs: x flat, C-contiguous), 0 outside
    # x, then zeros past the planes: whole vectors (the rows are short: loops over them ran
    # scalar, 0.18 ms of LeNet conv2's 0.5 ms input gradient). Each row is zeroed by vectors
    # that may run into the next row, then its input row is stored by a masked load (lanes
    # past W read 0) that may too: rows go in order, so every spill is overwritten later or
    # lands in the zero slack.
    for c in range(C):
        for h in range(Hp):
            row = (c * Hp + h) * Wp
            hi = h - pt
            if 0 <= hi < H:
                for j in range(0, pl, LANES):
                    vstore(xf, row + j, vzero())
                s0 = ((n * C + c) * H + hi) * W
                for j in range(0, W, LANES):
                    vstore(xf, row + pl + j, vload_first(xs, s0 + j, min(LANES, W - j)))
                for j in range(pl + W, Wp, LANES):
                    vstore(xf, row + j, vzero())
            else:
                for j in range(0, Wp, LANES):
                    vstore(xf, row + j, vzero())
    for j in range(C * Hp * Wp, C * Hp * Wp + STRIP, LANES):
        vstore(xf, j, vzero())


def _fwd_flat_simd(xs, C, H, W, pt, pl, Hp, Wp, offs, w, out, strip_len, work, filled):
    # out[n, k, p, q] = Σ_t w[k, t] · xpad[n].flat[offs[t] + p·Wp + q], xpad the (N, C, H, W)
    # input xs (flat) zero-padded, pt on top, pl on the left, into Hp × Wp planes; w is
    # (K, T) float32, out C-contiguous; strip_len STRIP, STRIP8 or STRIP_AVX2 (the narrow
    # tile). Each thread pads the image of its task into its own row of work, in L1 (C·Hp·Wp
    # floats, then zero slack), unless its last task padded that image (filled[thread]):
    # tasks of an image are consecutive, so each thread pads each of its images once. (The
    # whole batch padded before the kernel: 0.18 ms of LeNet conv2's 0.5 ms input gradient,
    # dY's 10² planes padded to 18², 3.2 times the data.)
    N, K, P, Q = out.shape
    T = offs.shape[0]
    L = (P - 1) * Wp + Q
    strips = (L + strip_len - 1) // strip_len
    pairs = (K + KB - 1) // KB
    for task in prange(N * pairs):
        n = task // pairs
        k0 = task % pairs * KB
        k1 = min(k0 + KB - 1, K - 1)  # a short last block computes its last channel again
        thread = get_thread_id()
        xf = work[thread]
        if filled[thread] != n:
            _pad_image(xs, n, C, H, W, xf, pt, pl, Hp, Wp)
            filled[thread] = n
        acc = np.empty(3 * STRIP, np.float32)
        for strip in range(strips):
            i0 = strip * strip_len
            if strip_len == STRIP:
                _strip3(xf, i0, offs, w, k0 * T, min(k0 + 1, K - 1) * T, k1 * T, acc)
            elif strip_len == STRIP8:
                _strip3_v8(xf, i0, offs, w, k0 * T, min(k0 + 1, K - 1) * T, k1 * T, acc)
            else:
                _strip3_avx2(xf, i0, offs, w, k0 * T, min(k0 + 1, K - 1) * T, k1 * T, acc)
            # crop into out (raw offsets: Numba's wraparound code for the signed acc index
            # made this copy cost as much as the FMAs)
            for j in range(k1 - k0 + 1):
                o = ((n * K + k0 + j) * P) * Q
                for p in range(i0 // Wp, min(P, (i0 + strip_len - 1) // Wp + 1)):
                    row = j * STRIP + p * Wp - i0  # acc index of (p, 0)
                    for q in range(max(0, i0 - p * Wp), min(Q, i0 + strip_len - p * Wp)):
                        store_at(out, o + p * Q + q, load_at(acc, row + q))


@functools.lru_cache(maxsize=None)
def _compiled():
    # compiled in a child process, loaded from Numba's cache (see kernels.precompile: this
    # kernel's in-process JIT copy ran 1.6x slower)
    f1, n, i1 = types.Array(types.float32, 1, "C"), types.intp, types.Array(types.int64, 1, "C")
    f2 = types.Array(types.float32, 2, "C")
    sig = types.void(f1, n, n, n, n, n, n, n, i1, f2, types.Array(types.float32, 4, "C"), n, f2, i1)
    return njit_cached(_fwd_flat_simd, sig, "_compiled", parallel=True)


def strip_length(L: int | None = None) -> int:
    """Flat outputs per register tile: STRIP where convcore's 16-lane kernels run
    (gemm.cpu.enabled), or STRIP8 where whole strips of it cover a plane's L flat outputs
    in fewer lanes (LeNet conv2's input gradient at batch 128, L = 248: 256 against 288;
    2-core Zen 5, ms, 0.53-0.56 -> 0.50-0.52, PyTorch 0.43-0.46); STRIP_AVX2 on AVX2
    hosts without AVX-512 (cpu_kvec.available)."""
    from ..gemm.cpu import enabled

    if not enabled():
        return STRIP_AVX2
    if L is not None and -(-L // STRIP8) * STRIP8 < -(-L // STRIP) * STRIP:
        return STRIP8
    return STRIP


def available() -> bool:
    """Whether this kernel runs here: as cpu_kvec (either tile)."""
    from .cpu_kvec import available

    return available()


def applies(x, out, geom) -> bool:
    """float32 on a host where it runs (available), with 16+ (image, channel block) tasks
    (below, cpu_kblock's forward was as fast: 3×5×9×8 → 7)."""
    return (x.dtype == out.dtype == np.float32 and available() and geom.groups == 1 and geom.stride == (1, 1)
            and geom.N * -(-geom.K // KB) >= 16)


def padded_flat(x, padding, tag, slack):
    """x (N, C, H, W) float32 zero-padded by padding (top, bottom, left, right) straight into
    a reused flat scratch buffer (np.pad and a second copy cost 2-4 ms at 128×16×18², more
    than the kernel), followed by ``slack`` zeros for the whole vectors read past the end."""
    pt, pb, pl, pr = padding
    N, C, H, W = x.shape
    Hp, Wp = H + pt + pb, W + pl + pr
    size = N * C * Hp * Wp
    xf = scratch(tag, (size + slack,), np.float32)
    if pt or pb or pl or pr:
        xf[:] = 0
    else:
        xf[size:] = 0
    xf[:size].reshape(N, C, Hp, Wp)[:, :, pt:pt + H, pl:pl + W] = x
    return xf


def flat_simd_fwd(x, w, out, padding, dilation):
    """out = conv2d(x, w) for a dense stride-1 layer, padding (top, bottom, left, right)
    (each >= 0) and dilation (dh, dw); out C-contiguous."""
    (pt, pb, pl, pr), (dh, dw) = padding, dilation
    N, C, H, W = x.shape
    Hp, Wp = H + pt + pb, W + pl + pr
    K, _, R, S = w.shape
    offs = ((np.arange(C)[:, None, None] * Hp + np.arange(R)[None, :, None] * dh) * Wp
            + np.arange(S)[None, None, :] * dw).reshape(-1).astype(np.int64)
    P, Q = out.shape[2], out.shape[3]
    threads = config.NUMBA_NUM_THREADS
    # per thread: an image's padded planes, a strip of zeros the last strip reads past them
    # into, and a vector the padding's last stores may spill into
    work = scratch("conv2d.flat_simd", (threads, C * Hp * Wp + STRIP + LANES), np.float32)
    _compiled()(np.ascontiguousarray(x).reshape(-1), C, H, W, pt, pl, Hp, Wp, offs, np.ascontiguousarray(w).reshape(K, -1),
                out, strip_length((P - 1) * Wp + Q), work, np.full(threads, -1, np.int64))
