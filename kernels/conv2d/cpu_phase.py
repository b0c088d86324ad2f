"""Dense strided conv2d with few input channels (the ResNet stem: 3 → 64 channels, 7×7,
stride 2) on phase-split planes, register-blocked over output channels and taps: the
``phase`` algorithm (weight gradient). Same index notation as cpu_direct.

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
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu_depthwise import _split_phases

_TILE = 4  # output channels × taps per register tile


def phase_applies(geom) -> bool:
    """Dense layers only (the tap index runs over one group's C·R·S)."""
    return geom.groups == 1


@njit(parallel=True, cache=True)
def _split_batch(x, phases, pt, pl, sh, sw, Hph, Wph, zero):
    # phases[n, c, bh·sw + bw, i·Wph + j] = x[n, c, i·sh + bh − pt, j·sw + bw − pl] (0 outside).
    # One prange iteration per input plane (n, c).
    N, C = x.shape[0], x.shape[1]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        buf = _split_phases(x[n, c], pt, pl, sh, sw, Hph, Wph, zero)
        for f in range(buf.shape[0]):
            dst = phases[n, c, f]
            src = buf[f]
            for i in range(src.shape[0]):
                dst[i] = src[i]


@njit(parallel=True, cache=True)
def _widen_rows(dy, dyf, Wph, zero):
    # dyf[n, k, p·Wph + q] = dy[n, k, p, q] for q < Q, 0 for Q <= q < Wph and for the
    # padding planes k >= K. One prange iteration per plane (n, k).
    N, K, P, Q = dy.shape
    K4 = dyf.shape[1]
    for nk in prange(N * K4):
        n = nk // K4
        k = nk % K4
        dst = dyf[n, k]
        if k >= K:
            dst[:] = zero
            continue
        for p in range(P):
            row = dst[p * Wph:(p + 1) * Wph]
            src = dy[n, k, p]
            for q in range(Q):
                row[q] = src[q]
            for q in range(Q, Wph):
                row[q] = zero


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


def _round_up(value, multiple):
    return (value + multiple - 1) // multiple * multiple


def _tap_table(geom, Wph, n_taps):
    """(plane, offset) of each tap t = (c·R + r)·S + s in the (C·sh·sw, Hph·Wph) planes of
    one image; the padding taps t >= C·R·S read plane 0 at offset 0 (results dropped)."""
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    tap_plane = np.zeros(n_taps, np.intp)
    tap_off = np.zeros(n_taps, np.intp)
    for c in range(geom.C):
        for r in range(geom.R):
            for s in range(geom.S):
                t = (c * geom.R + r) * geom.S + s
                tap_plane[t] = c * sh * sw + ((r * dh) % sh) * sw + (s * dw) % sw
                tap_off[t] = ((r * dh) // sh) * Wph + (s * dw) // sw
    return tap_plane, tap_off


def phase_wgrad(x, dy, out, geom):
    """dW into ``out`` (K, C, R, S) for a dense layer (groups == 1), any stride."""
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    N, C, K, P, Q = geom.N, geom.C, geom.K, geom.P, geom.Q
    zero = out.dtype.type(0)
    if N == 0 or P == 0 or Q == 0:
        out[...] = zero
        return
    Hph, Wph = P + ((geom.R - 1) * dh) // sh, Q + ((geom.S - 1) * dw) // sw
    n_taps, K4 = _round_up(C * geom.R * geom.S, _TILE), _round_up(K, _TILE)
    tap_plane, tap_off = _tap_table(geom, Wph, n_taps)
    phases = np.empty((N, C, sh * sw, Hph * Wph), x.dtype)
    _split_batch(x, phases, pt, pl, sh, sw, Hph, Wph, zero)
    dyf = np.empty((N, K4, P * Wph), x.dtype)
    _widen_rows(dy, dyf, Wph, zero)
    acc = np.empty((K4, n_taps), x.dtype)
    L = (P - 1) * Wph + Q  # the last output row needs no scratch columns
    for n in range(N):
        _wgrad_tiles(phases[n].reshape(C * sh * sw, Hph * Wph), dyf[n], tap_plane, tap_off, acc, L, n == 0, zero)
    out.reshape(K, C * geom.R * geom.S)[...] = acc[:K, :C * geom.R * geom.S]
