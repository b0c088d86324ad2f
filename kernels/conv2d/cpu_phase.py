"""Dense strided conv2d with few input channels (the ResNet stem: 3 → 64 channels, 7×7,
stride 2) on phase-split planes, register-blocked over output channels and taps: the
``phase`` algorithm (forward and weight gradient). Same index notation as cpu_direct.

im2col + BLAS loses here to memory traffic: the column matrix is C·R·S = 147 rows of
P·Q each (7.4 MB per 224² image, written and read once more by BLAS) for a GEMM whose
reduction side is only K = 64 wide. Instead each padded input plane is split once into
its sh·sw stride phases (cpu_depthwise's phase trick), each of width Wph, and dy is
re-laid out with the same row width Wph (zero scratch columns q >= Q). Tap (c, r, s) of
output element i = p·Wph + q then reads phase plane (c, r·dh % sh, s·dw % sw) at the
fixed offset (r·dh // sh)·Wph + s·dw // sw + i: every tap is ONE contiguous stride-1
window of a plane, and

    dW[k, c, r, s] = Σ_n Σ_i dyf[n, k, i] · phase[n, c, ph(r, s)][off(r, s) + i]

is a dot product of two long contiguous vectors (the scratch columns of dyf are zero,
so the scratch elements they meet add nothing). A 4 × 4 tile of (k, tap) pairs runs
as one loop with sixteen accumulators: each element of four dy planes and four tap
windows is loaded once for sixteen FMAs, and nothing but the loads touches memory.
In float32 where convcore's 16-lane kernels run (AVX-512), _wgrad_rows runs the same
tile on dy where it lies, row by row with explicit vectors (a masked load for the last
Q % 16 columns of a row): nothing is widened.
That needs 24 vector registers; on hosts with 16 (AVX2) a 4 × 3 tile runs instead, over
chunks of the flat outputs that stay in L2 (wgrad_narrow).

The forward sums the same windows the other way, out[k, i] = Σ_t w[k, t]·window_t[i],
over strips of _STRIP flat outputs: a (4, _STRIP) accumulator tile stays in L1 while
the taps go by four at a time, so each window vector is loaded once for four output
channels (sixteen FMAs per four window loads and four accumulator loads and stores).
The strip length is a compile-time constant, so LLVM proves the four accumulator rows
disjoint and needs run-time alias checks only against the four windows.

Taps and output channels are padded to multiples of 4: padding taps read an all-zero
plane (with zero weights in the forward), padding channels are dropped.
"""
# ruff: noqa: E702 -- the 4 × 4 tile's loads and FMAs four to a line
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange, types

from .. import host
from ..gemm.simd import vfma, vload, vload_first, vsum, vzero
from ..precompile import njit_cached
from .cpu_direct import _column_range

_TILE = 4  # output channels × taps per register tile
_STRIP = 256  # flat outputs per forward accumulator tile (4 × 256 floats: 4 KB)
_NARROW_TAPS = 3  # taps per register tile of the narrow weight gradient (_wgrad_tiles_k4t3)
_CHUNK = 2048  # flat outputs per chunk of the narrow weight-gradient tile


def phase_applies(geom) -> bool:
    """Dense layers (the tap index runs over one group's C·R·S) with few input channels:
    the kernels loop over all C·R·S taps per output channel block, which only beats
    im2col + BLAS while C·R·S is small; tune need not time them on wider layers."""
    return geom.groups == 1 and geom.C <= 16


@njit(inline="always")
def _split_row(x, phases, row, pt, pl, sh, sw, Hph, Wph, zero):
    # Phase row ``row`` = (n, c, bh, i) of _split_batch: its sw rows (one per bw).
    N, C, H, W = x.shape
    n = row // (C * sh * Hph)
    c = (row // (sh * Hph)) % C
    bh = (row // Hph) % sh
    i = row % Hph
    h = i * sh + bh - pt
    for bw in range(sw):
        dst = phases[n, c * sh * sw + bh * sw + bw, i * Wph:(i + 1) * Wph]
        if h < 0 or h >= H:
            dst[:] = zero
            continue
        j_lo, j_hi = _column_range(sw, pl, bw, W, Wph)
        j_hi = max(j_hi, j_lo)
        dst[:j_lo] = zero
        dst[j_hi:] = zero
        # 0-based views from the first column inside x: no negative-index selects.
        src = x[n, c, h, j_lo * sw + bw - pl:]
        part = dst[j_lo:j_hi]
        if sw == 2:  # a literal stride: LLVM vectorises the de-interleave
            for u in range(part.shape[0]):
                part[u] = src[2 * u]
        else:
            for u in range(part.shape[0]):
                part[u] = src[u * sw]


@njit(inline="always")
def _widen_plane(dy, dyf, nk, Wph, zero):
    # Plane nk = (n, k) of dyf: dyf[n, k, p·Wph + q] = dy[n, k, p, q] for q < Q, 0 for
    # Q <= q < Wph and for the padding planes k >= K.
    N, K, P, Q = dy.shape
    n = nk // dyf.shape[1]
    k = nk % dyf.shape[1]
    dst = dyf[n, k]
    if k >= K:
        dst[:] = zero
        return
    for p in range(P):
        row = dst[p * Wph:(p + 1) * Wph]
        src = dy[n, k, p]
        for q in range(Q):
            row[q] = src[q]
        for q in range(Q, Wph):
            row[q] = zero


@njit(parallel=True, cache=True)
def _split_batch(x, phases, pt, pl, sh, sw, Hph, Wph, zero):
    # phases[n, c·sh·sw + bh·sw + bw, i·Wph + j] = x[n, c, i·sh + bh − pt, j·sw + bw − pl]
    # (0 outside x) for the first Hph·Wph elements of the C·sh·sw planes of each image.
    # One prange iteration per phase row (n, c, bh, i), each writing its sw rows.
    N, C = x.shape[0], x.shape[1]
    for row in prange(N * C * sh * Hph):
        _split_row(x, phases, row, pt, pl, sh, sw, Hph, Wph, zero)


@njit(parallel=True, cache=True)
def _widen_batch(dy, dyf, Wph, zero):
    # dyf from dy as in _widen_plane, one prange iteration per plane (n, k).
    for nk in prange(dyf.shape[0] * dyf.shape[1]):
        _widen_plane(dy, dyf, nk, Wph, zero)


@njit(parallel=True, cache=True)
def _split_and_widen(x, phases, dy, dyf, pt, pl, sh, sw, Hph, Wph, zero):
    # _split_batch and the widened dy planes of the weight gradient in ONE parallel
    # region (with OMP_WAIT_POLICY=PASSIVE each region costs tens of µs of wake-up):
    # iteration u widens dyf plane u (n, k) and splits its share of the N·C·sh·Hph phase
    # rows. (The phase rows first and the planes after, as before, gave a static schedule's
    # second thread nearly all the widening: the b1 224² stem's setup 0.67 -> 0.41 ms.)
    rows = x.shape[0] * x.shape[1] * sh * Hph
    planes = dyf.shape[0] * dyf.shape[1]
    for u in prange(planes):
        _widen_plane(dy, dyf, u, Wph, zero)
        for row in range(u * rows // planes, (u + 1) * rows // planes):
            _split_row(x, phases, row, pt, pl, sh, sw, Hph, Wph, zero)


@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_tiles(planes, dyf, tap_plane, tap_off, acc, L, first, zero):
    # acc[k, t] (+)= Σ_{i < L} dyf[k, i] · planes[tap_plane[t], tap_off[t] + i] for one image.
    # One prange iteration per 4 × 4 tile (k0..k0+3, t0..t0+3): it alone writes those 16
    # entries of acc, and the caller adds the images in order n = 0, 1, ...: a fixed
    # reduction order. (fastmath lets LLVM vectorise each sum; its order is fixed at
    # compile time, so results are still bitwise reproducible.)
    K4 = dyf.shape[0]
    n_tap_tiles = tap_plane.shape[0] // 4
    for tile in prange((K4 // 4) * n_tap_tiles):
        k0 = 4 * (tile // n_tap_tiles)
        t0 = 4 * (tile % n_tap_tiles)
        y0, y1, y2, y3 = dyf[k0], dyf[k0 + 1], dyf[k0 + 2], dyf[k0 + 3]
        x0 = planes[tap_plane[t0], tap_off[t0]:]
        x1 = planes[tap_plane[t0 + 1], tap_off[t0 + 1]:]
        x2 = planes[tap_plane[t0 + 2], tap_off[t0 + 2]:]
        x3 = planes[tap_plane[t0 + 3], tap_off[t0 + 3]:]
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
        a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
        for i in range(L):
            d0, d1, d2, d3 = y0[i], y1[i], y2[i], y3[i]
            v0, v1, v2, v3 = x0[i], x1[i], x2[i], x3[i]
            a00 += d0 * v0
            a01 += d0 * v1
            a02 += d0 * v2
            a03 += d0 * v3
            a10 += d1 * v0
            a11 += d1 * v1
            a12 += d1 * v2
            a13 += d1 * v3
            a20 += d2 * v0
            a21 += d2 * v1
            a22 += d2 * v2
            a23 += d2 * v3
            a30 += d3 * v0
            a31 += d3 * v1
            a32 += d3 * v2
            a33 += d3 * v3
        sums = ((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33))
        for j in range(4):
            row = acc[k0 + j]
            for u in range(4):
                row[t0 + u] = sums[j][u] if first else row[t0 + u] + sums[j][u]


def _wgrad_rows(planes, dy, n, tap_plane, tap_off, acc, Wph, first):
    # The 4 × 4 tile of _wgrad_tiles with dy read where it lies (no widened copy), float32
    # with explicit 16-lane vectors: acc[k, t] (+)= Σ_{p, q} dy[n, k, p, q] ·
    # planes[tap_plane[t], tap_off[t] + p·Wph + q]. Row by row, 16 columns a step (4 dy
    # and 4 window loads, 16 FMAs), the last Q % 16 columns by masked loads; each of the 16
    # sums is reduced (vsum, a fixed tree) once per tile and image. One prange iteration per
    # tile; padding channels k >= K re-read channel K − 1 (their rows of acc are dropped).
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    n_tap_tiles = tap_plane.shape[0] // 4
    length = planes.shape[1]
    full = Q // 16 * 16
    rest = Q - full
    for tile in prange((acc.shape[0] // 4) * n_tap_tiles):
        k0 = 4 * (tile // n_tap_tiles)
        t0 = 4 * (tile % n_tap_tiles)
        e0 = (n * K + min(k0, K - 1)) * P * Q
        e1 = (n * K + min(k0 + 1, K - 1)) * P * Q
        e2 = (n * K + min(k0 + 2, K - 1)) * P * Q
        e3 = (n * K + min(k0 + 3, K - 1)) * P * Q
        w0 = tap_plane[t0] * length + tap_off[t0]
        w1 = tap_plane[t0 + 1] * length + tap_off[t0 + 1]
        w2 = tap_plane[t0 + 2] * length + tap_off[t0 + 2]
        w3 = tap_plane[t0 + 3] * length + tap_off[t0 + 3]
        a00 = vzero(); a01 = vzero(); a02 = vzero(); a03 = vzero()
        a10 = vzero(); a11 = vzero(); a12 = vzero(); a13 = vzero()
        a20 = vzero(); a21 = vzero(); a22 = vzero(); a23 = vzero()
        a30 = vzero(); a31 = vzero(); a32 = vzero(); a33 = vzero()
        for p in range(P):
            f0, f1, f2, f3 = e0 + p * Q, e1 + p * Q, e2 + p * Q, e3 + p * Q
            o = p * Wph
            g0, g1, g2, g3 = w0 + o, w1 + o, w2 + o, w3 + o
            for q in range(0, full, 16):
                y0 = vload(dy, f0 + q); y1 = vload(dy, f1 + q); y2 = vload(dy, f2 + q); y3 = vload(dy, f3 + q)
                v0 = vload(planes, g0 + q); v1 = vload(planes, g1 + q)
                v2 = vload(planes, g2 + q); v3 = vload(planes, g3 + q)
                a00 = vfma(y0, v0, a00); a01 = vfma(y0, v1, a01); a02 = vfma(y0, v2, a02); a03 = vfma(y0, v3, a03)
                a10 = vfma(y1, v0, a10); a11 = vfma(y1, v1, a11); a12 = vfma(y1, v2, a12); a13 = vfma(y1, v3, a13)
                a20 = vfma(y2, v0, a20); a21 = vfma(y2, v1, a21); a22 = vfma(y2, v2, a22); a23 = vfma(y2, v3, a23)
                a30 = vfma(y3, v0, a30); a31 = vfma(y3, v1, a31); a32 = vfma(y3, v2, a32); a33 = vfma(y3, v3, a33)
            if rest > 0:
                y0 = vload_first(dy, f0 + full, rest); y1 = vload_first(dy, f1 + full, rest)
                y2 = vload_first(dy, f2 + full, rest); y3 = vload_first(dy, f3 + full, rest)
                v0 = vload_first(planes, g0 + full, rest); v1 = vload_first(planes, g1 + full, rest)
                v2 = vload_first(planes, g2 + full, rest); v3 = vload_first(planes, g3 + full, rest)
                a00 = vfma(y0, v0, a00); a01 = vfma(y0, v1, a01); a02 = vfma(y0, v2, a02); a03 = vfma(y0, v3, a03)
                a10 = vfma(y1, v0, a10); a11 = vfma(y1, v1, a11); a12 = vfma(y1, v2, a12); a13 = vfma(y1, v3, a13)
                a20 = vfma(y2, v0, a20); a21 = vfma(y2, v1, a21); a22 = vfma(y2, v2, a22); a23 = vfma(y2, v3, a23)
                a30 = vfma(y3, v0, a30); a31 = vfma(y3, v1, a31); a32 = vfma(y3, v2, a32); a33 = vfma(y3, v3, a33)
        sums = ((vsum(a00), vsum(a01), vsum(a02), vsum(a03)), (vsum(a10), vsum(a11), vsum(a12), vsum(a13)),
                (vsum(a20), vsum(a21), vsum(a22), vsum(a23)), (vsum(a30), vsum(a31), vsum(a32), vsum(a33)))
        for j in range(4):
            row = acc[k0 + j]
            for u in range(4):
                row[t0 + u] = sums[j][u] if first else row[t0 + u] + sums[j][u]


@functools.lru_cache(maxsize=None)
def _compiled_rows():
    # compiled in a child process, loaded from Numba's cache (kernels.precompile: register-
    # tiled kernels JIT-compiled in-process ran at half speed)
    f2, f4 = types.Array(types.float32, 2, "C"), types.Array(types.float32, 4, "C")
    taps = types.Array(types.intp, 1, "C", readonly=True)
    ip = types.intp
    return njit_cached(_wgrad_rows, types.void(f2, f4, ip, taps, taps, f2, ip, types.boolean), "_compiled_rows",
                       parallel=True)


def wgrad_rows() -> bool:
    """Whether the float32 weight gradient takes _wgrad_rows: where convcore's 16-lane kernels
    run (gemm.cpu.enabled, AVX-512)."""
    from ..gemm.cpu import enabled

    return enabled()


@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_tiles_k4t3(planes, dyf, tap_plane, tap_off, acc, L, first, zero):
    # _wgrad_tiles for hosts with 16 vector registers (AVX2): a 4 × 3 tile of (k, tap)
    # pairs (twelve accumulators, three windows and one dy vector: 16 registers; the
    # 4 × 4 tile needs 24 and LLVM spills), over chunks of _CHUNK flat outputs so that
    # four dy chunks (32 KB) and every tap's window of the chunk (12 planes at the 224²
    # stem, 130 KB) stay in L2 while the 49 tap tiles go by; full-length dot products
    # streamed all eight vectors from L3 for each tile. One prange iteration per block of
    # four output channels; it alone writes those rows of acc; the chunks add up in
    # order into its local sums, then the images in order n = 0, 1, ...: a fixed order.
    K4 = dyf.shape[0]
    n_taps = tap_plane.shape[0]
    for kt in prange(K4 // 4):
        k0 = 4 * kt
        sums = np.zeros((4, n_taps), acc.dtype)
        for c0 in range(0, L, _CHUNK):
            n = min(_CHUNK, L - c0)
            y0, y1 = dyf[k0, c0:c0 + n], dyf[k0 + 1, c0:c0 + n]
            y2, y3 = dyf[k0 + 2, c0:c0 + n], dyf[k0 + 3, c0:c0 + n]
            for t0 in range(0, n_taps, _NARROW_TAPS):
                x0 = planes[tap_plane[t0], tap_off[t0] + c0:]
                x1 = planes[tap_plane[t0 + 1], tap_off[t0 + 1] + c0:]
                x2 = planes[tap_plane[t0 + 2], tap_off[t0 + 2] + c0:]
                a00 = a01 = a02 = a10 = a11 = a12 = zero
                a20 = a21 = a22 = a30 = a31 = a32 = zero
                for i in range(n):
                    v0, v1, v2 = x0[i], x1[i], x2[i]
                    d = y0[i]
                    a00 += d * v0
                    a01 += d * v1
                    a02 += d * v2
                    d = y1[i]
                    a10 += d * v0
                    a11 += d * v1
                    a12 += d * v2
                    d = y2[i]
                    a20 += d * v0
                    a21 += d * v1
                    a22 += d * v2
                    d = y3[i]
                    a30 += d * v0
                    a31 += d * v1
                    a32 += d * v2
                part = ((a00, a01, a02), (a10, a11, a12), (a20, a21, a22), (a30, a31, a32))
                for j in range(4):
                    for u in range(3):
                        sums[j, t0 + u] += part[j][u]
        for j in range(4):
            row = acc[k0 + j]
            for t in range(n_taps):
                row[t] = sums[j, t] if first else row[t] + sums[j, t]


@njit(parallel=True, cache=True, fastmath=True)
def _fwd_tiles(planes, wt, tap_plane, tap_off, out, Wph, zero):
    # out[n, k, p, q] = Σ_t wt[k, t] · planes[n, tap_plane[t], tap_off[t] + p·Wph + q].
    # One prange iteration per (n, block of 4 output channels); it runs the strips of
    # the flat output i = p·Wph + q in order and alone writes its 4 planes of out.
    N, K4, n_taps = planes.shape[0], wt.shape[0], wt.shape[1]
    K, P, Q = out.shape[1], out.shape[2], out.shape[3]
    L = (P - 1) * Wph + Q
    n_blocks = K4 // 4
    for nb in prange(N * n_blocks):
        n = nb // n_blocks
        k0 = 4 * (nb % n_blocks)
        image = planes[n]
        acc = np.empty(4 * _STRIP, wt.dtype)
        for i0 in range(0, L, _STRIP):
            acc[:] = zero
            for t0 in range(0, n_taps, 4):
                x0 = image[tap_plane[t0], tap_off[t0] + i0:]
                x1 = image[tap_plane[t0 + 1], tap_off[t0 + 1] + i0:]
                x2 = image[tap_plane[t0 + 2], tap_off[t0 + 2] + i0:]
                x3 = image[tap_plane[t0 + 3], tap_off[t0 + 3] + i0:]
                w00, w01, w02, w03 = wt[k0, t0], wt[k0, t0 + 1], wt[k0, t0 + 2], wt[k0, t0 + 3]
                w10, w11, w12, w13 = wt[k0 + 1, t0], wt[k0 + 1, t0 + 1], wt[k0 + 1, t0 + 2], wt[k0 + 1, t0 + 3]
                w20, w21, w22, w23 = wt[k0 + 2, t0], wt[k0 + 2, t0 + 1], wt[k0 + 2, t0 + 2], wt[k0 + 2, t0 + 3]
                w30, w31, w32, w33 = wt[k0 + 3, t0], wt[k0 + 3, t0 + 1], wt[k0 + 3, t0 + 2], wt[k0 + 3, t0 + 3]
                for j in range(_STRIP):
                    v0, v1, v2, v3 = x0[j], x1[j], x2[j], x3[j]
                    acc[j] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
                    acc[_STRIP + j] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
                    acc[2 * _STRIP + j] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
                    acc[3 * _STRIP + j] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
            # Store the strip, dropping the scratch columns q >= Q of each flat row.
            i1 = min(i0 + _STRIP, L)
            for u in range(min(4, K - k0)):
                tile = acc[u * _STRIP:(u + 1) * _STRIP]
                for p in range(i0 // Wph, (i1 - 1) // Wph + 1):
                    q_lo, q_hi = max(i0 - p * Wph, 0), min(i1 - p * Wph, Q)
                    orow = out[n, k0 + u, p]
                    for q in range(q_lo, q_hi):
                        orow[q] = tile[p * Wph + q - i0]


def _round_up(value, multiple):
    return (value + multiple - 1) // multiple * multiple


@functools.lru_cache(maxsize=64)
def _taps(C, R, S, sh, sw, dh, dw, Wph, tap_multiple):
    """The tap table, padded to a multiple of ``tap_multiple`` taps, kept per layer shape
    (built with NumPy it cost 30 µs a call, 2% of the 224² stem's weight gradient at batch 1).
    Tap t = (c·R + r)·S + s reads plane c·sh·sw + (r·dh % sh)·sw + s·dw % sw at offset
    (r·dh // sh)·Wph + s·dw // sw; padding taps read the zero plane at offset 0. Read-only."""
    n_taps = _round_up(C * R * S, tap_multiple)
    c, r, s = np.meshgrid(np.arange(C), np.arange(R), np.arange(S), indexing="ij")
    tap_plane = np.full(n_taps, C * sh * sw, np.intp)
    tap_off = np.zeros(n_taps, np.intp)
    tap_plane[:C * R * S] = (c * sh * sw + ((r * dh) % sh) * sw + (s * dw) % sw).ravel()
    tap_off[:C * R * S] = (((r * dh) // sh) * Wph + (s * dw) // sw).ravel()
    tap_plane.flags.writeable = tap_off.flags.writeable = False
    return tap_plane, tap_off


def _setup(x, geom, dy=None, tap_multiple=_TILE):
    """The phase planes of every image, (N, C·sh·sw + 1, length), the last one all zero,
    long enough for the forward's whole strips; the tap table, padded to a multiple of
    ``tap_multiple`` taps (the register tile's width); Wph; L; and, given dy,
    the planes of its FIRST image widened to rows of Wph, (1, K rounded up to 4, P·Wph):
    the weight gradient widens one image at a time into that buffer, so it is still in
    cache when the tiles read it (a batch-wide copy, 26 MB at the 224² stem's batch 8,
    went out to memory and back)."""
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    C, R, S, P, Q = geom.C, geom.R, geom.S, geom.P, geom.Q
    Hph, Wph = P + ((R - 1) * dh) // sh, Q + ((S - 1) * dw) // sw
    tap_plane, tap_off = _taps(C, R, S, sh, sw, dh, dw, Wph, tap_multiple)
    L = (P - 1) * Wph + Q  # the last output row needs no scratch columns
    length = max(Hph * Wph, int(tap_off.max()) + _round_up(L, _STRIP))
    phases = np.empty((geom.N, C * sh * sw + 1, length), x.dtype)
    zero = x.dtype.type(0)
    if dy is None:
        dyf = None
        _split_batch(x, phases, pt, pl, sh, sw, Hph, Wph, zero)
    else:
        dyf = np.empty((1, _round_up(geom.K, _TILE), P * Wph), x.dtype)
        _split_and_widen(x, phases, dy[:1], dyf, pt, pl, sh, sw, Hph, Wph, zero)
    # The tails and the zero plane here, not in a second parallel region: with
    # OMP_WAIT_POLICY=PASSIVE each region costs tens of µs of thread wake-up.
    phases[:, :, Hph * Wph:] = 0
    phases[:, -1] = 0
    return phases, tap_plane, tap_off, Wph, L, dyf


def phase_fwd(x, w, out, geom):
    """The forward into ``out`` (N, K, P, Q) for a dense layer (groups == 1), any stride."""
    if geom.N == 0 or geom.P == 0 or geom.Q == 0:
        return
    phases, tap_plane, tap_off, Wph, _, _ = _setup(x, geom)
    crs = geom.C * geom.R * geom.S
    wt = np.zeros((_round_up(geom.K, _TILE), tap_plane.shape[0]), w.dtype)
    wt[:geom.K, :crs] = w.reshape(geom.K, crs)
    _fwd_tiles(phases, wt, tap_plane, tap_off, out, Wph, out.dtype.type(0))


def wgrad_narrow() -> bool:
    """The weight gradient by the 4 × 3 chunked tile (_wgrad_tiles_k4t3) on hosts without
    AVX-512 (16 vector registers), by the 4 × 4 tile elsewhere (32). Measured on the 224²
    stem (AMD Zen 1, AVX2, 2 threads, one image's tiles, ms): 4 × 3 chunked 4.8, 4 × 2
    chunked 5.5-5.8, 4 × 4 chunked 9.7-10.2, 4 × 4 whole rows (_wgrad_tiles) 9.0-10.4."""
    return host.narrow_registers()


def phase_wgrad(x, dy, out, geom):
    """dW into ``out`` (K, C, R, S) for a dense layer (groups == 1), any stride."""
    zero = out.dtype.type(0)
    if geom.N == 0 or geom.P == 0 or geom.Q == 0:
        out[...] = zero
        return
    narrow = wgrad_narrow()
    crs = geom.C * geom.R * geom.S
    if x.dtype == np.float32 and not narrow and wgrad_rows():
        # dy read where it lies, one parallel region per image: no widened copy of each
        # image's dy (0.09 ms an image at the 224² stem, a pass of its own). 2 threads,
        # in-process, interleaved, ms, flat tiles on the copy / rows / PyTorch: batch 1
        # 1.32 / 1.26 / 1.56, 1.29 / 1.25 / 1.48; batch 8 11.2 / 10.6 / 11.9, 11.4 / 10.9 / 12.0.
        phases, tap_plane, tap_off, Wph, _, _ = _setup(x, geom)
        dy = np.ascontiguousarray(dy)
        acc = np.empty((_round_up(geom.K, _TILE), tap_plane.shape[0]), np.float32)
        rows = _compiled_rows()
        for n in range(geom.N):
            rows(phases[n], dy, n, tap_plane, tap_off, acc, Wph, n == 0)
        out.reshape(geom.K, crs)[...] = acc[:geom.K, :crs]
        return
    tiles = _wgrad_tiles_k4t3 if narrow else _wgrad_tiles
    phases, tap_plane, tap_off, Wph, L, dyf = _setup(x, geom, dy, _NARROW_TAPS if narrow else _TILE)
    acc = np.empty((dyf.shape[1], tap_plane.shape[0]), x.dtype)
    for n in range(geom.N):
        if n > 0:
            _widen_batch(dy[n:n + 1], dyf, Wph, zero)
        tiles(phases[n], dyf[0], tap_plane, tap_off, acc, L, n == 0, zero)
    out.reshape(geom.K, crs)[...] = acc[:geom.K, :crs]
