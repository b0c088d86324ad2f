"""Stride-1 dense conv2d on flattened padded planes, register-blocked over output
channels: the ``direct`` kernels for dense stride-1 layers (groups == 1). Same index
notation as cpu_direct; the flat layout is that of cpu_flat: the input zero-padded to
(N, C, Hp, Wp), tap t = (c·R + r)·S + s of output (p, q) reading flat element
offs[t] + p·Wp + q, so each tap is one contiguous loop over the L = (P−1)·Wp + Q flat
outputs (columns q >= Q of each row are scratch, dropped when cropping).

Forward: one prange iteration per (image, or pair of images, block of four output
channels). Per pass over an accumulator strip, four taps are fused (as in
cpu_depthwise._fwd_taps) AND four output channels share each input load: per 16-lane
vector, 4 input loads, 4 accumulator loads and stores feed 16 FMAs (the old cpu_flat
forward: 4 loads + 1 load/store per 4 FMAs); a pair of images shares each weight
broadcast (AVX-512 hosts only: see _pair). The accumulator rows sit _STRIP elements apart in one buffer: a compile-time
distance, so LLVM's runtime alias check treats them as one group (at most eight input
views plus that group stays within its limit of eight checks) and the loop vectorises
(zmm FMAs on this AVX-512 machine, checked with inspect_asm). Planes longer than _STRIP
flat outputs run strip by strip.

Input gradient: where a padded input plane fits one strip, a scatter, one prange
iteration per (image, block of four input channels), the K planes of dy as the taps of
the same fused loop; else the forward kernel on dy zero-padded by dil·(R−1) − pad, with
the weight rotated 180° and K ↔ C swapped (cpu_winograd.flipped_transposed).

Weight gradient: one prange iteration per (block of four k, input channel c), 16 dot
products (four k × four taps) per pass over each image, summed over n in a fixed order;
on hosts without AVX-512 8 (four k × two taps), whose sums and loads fit 16 registers
(AMD Zen, 1 thread, ms, two / four taps: 128×6×14² → 16 5×5 3.72 / 5.46, 8×35×19² → 50
3×3 3.51 / 5.81, batch 2 0.49 / 0.77).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uintp

from .. import host
from .cpu_depthwise import _crop_plane, _fwd_taps
from .cpu_flat import pad_input
from .cpu_winograd import flipped_transposed

_STRIP = 512  # flat outputs per accumulator row: 4 rows = 8 KiB (float32), L1-resident
# The input gradient's scatter starts each pass at a multiple of _ALIGN elements of its
# accumulator rows: 32 bytes of float32 (an AVX2 vector), 64 of float64. A compile-time
# constant: computed from the dtype's itemsize (a run-time field of Numba's arrays), the
# kernel ran 12% slower.
_ALIGN = 8


@njit(inline="always")
def _taps_k4(acc, xf, offs, wt, L):
    # acc[j·_STRIP + i] += Σ_t wt[j, t]·xf[offs[t] + i] for j < 4, i < L.
    # Unsigned indices: no negative-index select (see cpu_gemm), and the four rows stay
    # constant offsets of one pointer.
    T = offs.shape[0]
    t = 0
    while t + 4 <= T:
        x0, x1, x2, x3 = xf[offs[t]:], xf[offs[t + 1]:], xf[offs[t + 2]:], xf[offs[t + 3]:]
        w00, w01, w02, w03 = wt[0, t], wt[0, t + 1], wt[0, t + 2], wt[0, t + 3]
        w10, w11, w12, w13 = wt[1, t], wt[1, t + 1], wt[1, t + 2], wt[1, t + 3]
        w20, w21, w22, w23 = wt[2, t], wt[2, t + 1], wt[2, t + 2], wt[2, t + 3]
        w30, w31, w32, w33 = wt[3, t], wt[3, t + 1], wt[3, t + 2], wt[3, t + 3]
        for i in range(L):
            u = uintp(i)
            v0, v1, v2, v3 = x0[u], x1[u], x2[u], x3[u]
            acc[u] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
            acc[u + uintp(_STRIP)] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
            acc[u + uintp(2 * _STRIP)] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
            acc[u + uintp(3 * _STRIP)] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
        t += 4
    while t < T:
        x0 = xf[offs[t]:]
        w00, w10, w20, w30 = wt[0, t], wt[1, t], wt[2, t], wt[3, t]
        for i in range(L):
            u = uintp(i)
            v0 = x0[u]
            acc[u] += w00 * v0
            acc[u + uintp(_STRIP)] += w10 * v0
            acc[u + uintp(2 * _STRIP)] += w20 * v0
            acc[u + uintp(3 * _STRIP)] += w30 * v0
        t += 1


@njit(inline="always")
def _taps_k2(acc, xf, offs, wt, L):
    # _taps_k4 for a block of two output channels (the K % 4 tail).
    T = offs.shape[0]
    t = 0
    while t + 4 <= T:
        x0, x1, x2, x3 = xf[offs[t]:], xf[offs[t + 1]:], xf[offs[t + 2]:], xf[offs[t + 3]:]
        w00, w01, w02, w03 = wt[0, t], wt[0, t + 1], wt[0, t + 2], wt[0, t + 3]
        w10, w11, w12, w13 = wt[1, t], wt[1, t + 1], wt[1, t + 2], wt[1, t + 3]
        for i in range(L):
            u = uintp(i)
            v0, v1, v2, v3 = x0[u], x1[u], x2[u], x3[u]
            acc[u] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
            acc[u + uintp(_STRIP)] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
        t += 4
    while t < T:
        x0 = xf[offs[t]:]
        w00, w10 = wt[0, t], wt[1, t]
        for i in range(L):
            u = uintp(i)
            v0 = x0[u]
            acc[u] += w00 * v0
            acc[u + uintp(_STRIP)] += w10 * v0
        t += 1


@njit(inline="always")
def _crop_strip(row, i0, Li, Wp, dst):
    # dst[p, q] = row[p·Wp + q − i0] for the valid outputs (q < Q) of flat range [i0, i0 + Li).
    P, Q = dst.shape
    p_hi = min(P, (i0 + Li - 1) // Wp + 1)
    for p in range(i0 // Wp, p_hi):
        q_lo = max(0, i0 - p * Wp)
        q_hi = min(Q, i0 + Li - p * Wp)
        drow = dst[p]
        src = row[p * Wp - i0 + q_lo:]
        for q in range(q_hi - q_lo):
            drow[q_lo + q] = src[q]


@njit(inline="always")
def _taps_k4_pair(acc, xf, xg, offs, wt, L):
    # _taps_k4 on two images at once (rows 0-3: xf, rows 4-7: xg), each weight broadcast
    # feeding 8 FMAs: twice the work per pass setup (alias checks, 16 broadcasts), which
    # on short planes (LeNet: 9 vectors per pass) cost as much as the pass itself.
    T = offs.shape[0]
    t = 0
    while t + 4 <= T:
        x0, x1, x2, x3 = xf[offs[t]:], xf[offs[t + 1]:], xf[offs[t + 2]:], xf[offs[t + 3]:]
        g0, g1, g2, g3 = xg[offs[t]:], xg[offs[t + 1]:], xg[offs[t + 2]:], xg[offs[t + 3]:]
        w00, w01, w02, w03 = wt[0, t], wt[0, t + 1], wt[0, t + 2], wt[0, t + 3]
        w10, w11, w12, w13 = wt[1, t], wt[1, t + 1], wt[1, t + 2], wt[1, t + 3]
        w20, w21, w22, w23 = wt[2, t], wt[2, t + 1], wt[2, t + 2], wt[2, t + 3]
        w30, w31, w32, w33 = wt[3, t], wt[3, t + 1], wt[3, t + 2], wt[3, t + 3]
        for i in range(L):
            u = uintp(i)
            v0, v1, v2, v3 = x0[u], x1[u], x2[u], x3[u]
            acc[u] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
            acc[u + uintp(_STRIP)] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
            acc[u + uintp(2 * _STRIP)] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
            acc[u + uintp(3 * _STRIP)] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
            v0, v1, v2, v3 = g0[u], g1[u], g2[u], g3[u]
            acc[u + uintp(4 * _STRIP)] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
            acc[u + uintp(5 * _STRIP)] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
            acc[u + uintp(6 * _STRIP)] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
            acc[u + uintp(7 * _STRIP)] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
        t += 4
    if t < T:  # the T % 4 tail, one image at a time
        _taps_k4(acc, xf, offs[t:], wt[:, t:], L)
        _taps_k4(acc[4 * _STRIP:], xg, offs[t:], wt[:, t:], L)


@njit(inline="always")
def _fwd_one(acc, xs, offs, wf, k0, K, i0, Li, Wp, out_n, zero):
    # The output channels k0 .. min(k0 + 4, K) of one image over flat strip [i0, i0 + Li).
    if k0 + 4 <= K:
        for j in range(4):
            acc[j * _STRIP:j * _STRIP + Li] = zero
        _taps_k4(acc, xs, offs, wf[k0:k0 + 4], Li)
        for j in range(4):
            _crop_strip(acc[j * _STRIP:], i0, Li, Wp, out_n[k0 + j])
        return
    k = k0  # the K % 4 tail: a pair, then a single channel
    if k + 2 <= K:
        acc[:Li] = zero
        acc[_STRIP:_STRIP + Li] = zero
        _taps_k2(acc, xs, offs, wf[k:k + 2], Li)
        for j in range(2):
            _crop_strip(acc[j * _STRIP:], i0, Li, Wp, out_n[k + j])
        k += 2
    if k < K:
        acc[:Li] = zero
        _fwd_taps(acc, xs, offs, wf[k], Li)
        _crop_strip(acc, i0, Li, Wp, out_n[k])


@njit(parallel=True, cache=True, fastmath=True)
def _fwd_kblock(xp, w, out, dh, dw, pair, zero):
    # out[n, k, p, q] = Σ_c,r,s xp[n, c, p + r·dh, q + s·dw] · w[k, c, r, s]  (xp padded).
    # One prange iteration per (block of 1 + pair images, block of four k); the last k
    # block takes the K % 4 tail as a pair (_taps_k2) and a single channel
    # (cpu_depthwise._fwd_taps), one image at a time. xp is shared read-only.
    N, C, Hp, Wp = xp.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    L = (P - 1) * Wp + Q
    T = C * R * S
    offs = np.empty(T, np.int64)
    for c in range(C):
        for r in range(R):
            for s in range(S):
                offs[(c * R + r) * S + s] = c * Hp * Wp + r * dh * Wp + s * dw
    wf = w.reshape(K, T)
    xall = xp.reshape(-1)
    KB = (K + 3) // 4
    NB = pair + 1
    for it in prange((N + NB - 1) // NB * KB):
        n = (it // KB) * NB
        k0 = (it % KB) * 4
        m = min(n + NB, N)  # images n .. m − 1
        # Image n's flat view runs on to the end of the batch, so the last vector of each
        # row strip may read past the plane into the next image (outputs i >= L, dropped
        # by the crop): L rounded up to whole 16-lane vectors where the buffer allows
        # (the last image's view is the shortest), and the loops need no short remainder.
        Le = min((L + 15) // 16 * 16, xall.shape[0] - (m - 1) * C * Hp * Wp - offs[T - 1])
        buf = np.empty(8 * _STRIP + 16, out.dtype)
        acc = buf[(-buf.ctypes.data) % 64 // out.itemsize:]  # 64-byte aligned rows (3-4% faster)
        for i0 in range(0, Le, _STRIP):
            Li = min(_STRIP, Le - i0)
            if m - n == 2 and k0 + 4 <= K:
                for j in range(8):
                    acc[j * _STRIP:j * _STRIP + Li] = zero
                _taps_k4_pair(acc, xall[n * C * Hp * Wp + i0:], xall[(n + 1) * C * Hp * Wp + i0:], offs,
                              wf[k0:k0 + 4], Li)
                for j in range(8):
                    _crop_strip(acc[j * _STRIP:], i0, Li, Wp, out[n + j // 4, k0 + j % 4])
            else:
                for nn in range(n, m):
                    _fwd_one(acc, xall[nn * C * Hp * Wp + i0:], offs, wf, k0, K, i0, Li, Wp, out[nn], zero)


@njit(inline="always")
def _wgrad_taps_k4(dwc, y0, y1, y2, y3, xf, offs, L, zero):
    # dwc[j, t] += Σ_i yj[i]·xf[offs[t] + i]: four taps × four output channels, 16 dot
    # products per pass (each input and dy load shared by four FMAs).
    T = offs.shape[0]
    t = 0
    while t < T:
        m = min(4, T - t)  # the R·S % 4 tail repeats the last tap (its sums are dropped)
        x0, x1 = xf[offs[t]:], xf[offs[t + min(1, m - 1)]:]
        x2, x3 = xf[offs[t + min(2, m - 1)]:], xf[offs[t + min(3, m - 1)]:]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
        s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
        for i in range(L):
            v0, v1, v2, v3 = x0[i], x1[i], x2[i], x3[i]
            a, b, c, d = y0[i], y1[i], y2[i], y3[i]
            s00 += a * v0
            s01 += a * v1
            s02 += a * v2
            s03 += a * v3
            s10 += b * v0
            s11 += b * v1
            s12 += b * v2
            s13 += b * v3
            s20 += c * v0
            s21 += c * v1
            s22 += c * v2
            s23 += c * v3
            s30 += d * v0
            s31 += d * v1
            s32 += d * v2
            s33 += d * v3
        dwc[0, t] += s00
        dwc[1, t] += s10
        dwc[2, t] += s20
        dwc[3, t] += s30
        if m > 1:
            dwc[0, t + 1] += s01
            dwc[1, t + 1] += s11
            dwc[2, t + 1] += s21
            dwc[3, t + 1] += s31
        if m > 2:
            dwc[0, t + 2] += s02
            dwc[1, t + 2] += s12
            dwc[2, t + 2] += s22
            dwc[3, t + 2] += s32
        if m > 3:
            dwc[0, t + 3] += s03
            dwc[1, t + 3] += s13
            dwc[2, t + 3] += s23
            dwc[3, t + 3] += s33
        t += 4


@njit(inline="always")
def _wgrad_taps_k4_t2(dwc, y0, y1, y2, y3, xf, offs, L, zero):
    # _wgrad_taps_k4 two taps at a time, for hosts with 16 vector registers (AVX2): its 16
    # sums and 8 loads need 24 (LLVM spilled 5 and shuffled the rest every iteration);
    # these 8 sums, 4 dy and 2 input loads fit.
    T = offs.shape[0]
    t = 0
    while t < T:
        m = min(2, T - t)  # an odd R·S repeats the last tap (its sums are dropped)
        x0, x1 = xf[offs[t]:], xf[offs[t + m - 1]:]
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = zero
        for i in range(L):
            v0, v1 = x0[i], x1[i]
            a, b, c, d = y0[i], y1[i], y2[i], y3[i]
            s00 += a * v0
            s01 += a * v1
            s10 += b * v0
            s11 += b * v1
            s20 += c * v0
            s21 += c * v1
            s30 += d * v0
            s31 += d * v1
        dwc[0, t] += s00
        dwc[1, t] += s10
        dwc[2, t] += s20
        dwc[3, t] += s30
        if m > 1:
            dwc[0, t + 1] += s01
            dwc[1, t + 1] += s11
            dwc[2, t + 1] += s21
            dwc[3, t + 1] += s31
        t += 2


@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_kblock(xp, dyp, dw_out, L, dh, dw, two_taps, zero):
    # dw[k, c, r, s] = Σ_n Σ_i<L dyp[n, k, i] · xp[n, c].flat[r·dh·Wp + s·dw + i], with dyp
    # dy padded to row width Wp (zeros in columns q >= Q; K padded to a multiple of four
    # with zero planes). One prange iteration per (block of four k, input channel c): it
    # owns dw[k0:k0 + 4, c] and sums over n in a fixed order (deterministic).
    N, C, Hp, Wp = xp.shape
    K, _, R, S = dw_out.shape
    offs = np.empty(R * S, np.int64)
    for r in range(R):
        for s in range(S):
            offs[r * S + s] = r * dh * Wp + s * dw
    KB = (K + 3) // 4
    for it in prange(KB * C):
        k0 = (it // C) * 4
        c = it % C
        dwc = np.zeros((4, R * S), dw_out.dtype)
        for n in range(N):
            if two_taps:
                _wgrad_taps_k4_t2(dwc, dyp[n, k0], dyp[n, k0 + 1], dyp[n, k0 + 2], dyp[n, k0 + 3],
                                  xp[n, c].reshape(-1), offs, L, zero)
            else:
                _wgrad_taps_k4(dwc, dyp[n, k0], dyp[n, k0 + 1], dyp[n, k0 + 2], dyp[n, k0 + 3],
                               xp[n, c].reshape(-1), offs, L, zero)
        for j in range(min(4, K - k0)):
            dwk = dw_out[k0 + j, c].reshape(-1)
            for t in range(R * S):
                dwk[t] = dwc[j, t]


def wgrad_two_taps() -> bool:
    """The weight gradient two taps a pass (_wgrad_taps_k4_t2) on hosts without AVX-512
    (16 vector registers), four elsewhere (32)."""
    return host.narrow_registers()


def kblock_wgrad(x, dy, out, geom):
    (pt, pb, pl, pr), (dh, dw) = geom.padding, geom.dilation
    xp = pad_input(x, pt, pb, pl, pr)
    Wp = xp.shape[3]
    L = (geom.P - 1) * Wp + geom.Q
    dyp = np.zeros((geom.N, (geom.K + 3) // 4 * 4, geom.P * Wp), dy.dtype)
    dyp.reshape(geom.N, -1, geom.P, Wp)[:, :geom.K, :, :geom.Q] = dy
    _wgrad_kblock(xp, dyp, out, L, dh, dw, wgrad_two_taps(), out.dtype.type(0))


@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_scatter_kblock(wt, dy, dx, R, S, Wp, pt, pl, dh, dw, zero):
    # dx[n, c, h, x] = Σ_k,r,s dy[n, k, p, q] · w[k, c, r, s] with h = p − pt + r·dh,
    # x = q − pl + s·dw; wt[r·S + s, c, k] = w[k, c, r, s]; Wp = pl + W + pr, the padded
    # plane's row width. One prange iteration per (n, block of four c): it owns the padded
    # planes (Hp·Wp <= _STRIP) of its four channels; tap (r, s) adds Σ_k wt[rs, c, k]·dy[n, k]
    # at offset r·dh·Wp + s·dw of each, through _taps_k4 with the K planes of dy as its
    # taps (each dy load shared by four channels).
    # The iteration first copies dy[n] to yb, each plane with rows Wp wide (zeros in q >= Q)
    # between V leading and 16 trailing zeros (in the loop: np.pad of the whole dy, serial,
    # had cost a sixth of lenet_5x5_14_b128's input gradient). Then each tap's pass starts
    # at the aligned a <= shift (_ALIGN) of its accumulator rows, reading the leading
    # zeros there, and runs a whole number of 16-lane vectors into the trailing ones: no
    # split stores, no scalar remainder loop (AMD Zen 1, 2 threads, kernel alone, ms, 128×6×14²
    # ← 16 5×5: 2.09 unaligned, 1.73 aligned; before either, 2.3-2.5 with np.pad).
    N, K, P, Q = dy.shape
    C = wt.shape[1]
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    V = _ALIGN
    PL = V + P * Wp + 16   # yb's plane stride
    offs = np.empty(K, np.int64)
    for k in range(K):
        offs[k] = k * PL
    CB = (C + 3) // 4
    for it in prange(N * CB):
        n = it // CB
        c0 = (it % CB) * 4
        yb = np.zeros(K * PL, dx.dtype)
        for k in range(K):
            for p in range(P):
                o = k * PL + V + p * Wp
                yb[o:o + Q] = dy[n, k, p]
        buf = np.zeros(4 * _STRIP + 16, dx.dtype)
        acc = buf[(-buf.ctypes.data) % 64 // dx.itemsize:]  # 64-byte aligned
        for r in range(R):
            for s in range(S):
                shift = r * dh * Wp + s * dw
                a = shift - shift % V
                Le = min((L + shift - a + 15) // 16 * 16, _STRIP - a)
                ys = yb[V - (shift - a):]
                wrs = wt[r * S + s]
                if c0 + 4 <= C:
                    _taps_k4(acc[a:], ys, offs, wrs[c0:c0 + 4], Le)
                else:
                    c = c0
                    if c + 2 <= C:
                        _taps_k2(acc[a:], ys, offs, wrs[c:c + 2], Le)
                        c += 2
                    if c < C:
                        _fwd_taps(acc[(c - c0) * _STRIP + a:], ys, offs, wrs[c], Le)
        for j in range(min(4, C - c0)):
            _crop_plane(acc[j * _STRIP:j * _STRIP + Hp * Wp], Wp, pt, pl, dx[n, c0 + j], zero)


def kblock_fwd(x, w, out, geom):
    (pt, pb, pl, pr), (dh, dw) = geom.padding, geom.dilation
    _fwd_kblock(pad_input(x, pt, pb, pl, pr), np.ascontiguousarray(w), out, dh, dw, _pair(geom.N, geom.K),
                out.dtype.type(0))


def _pair(N, K):
    """Two images per prange iteration where that still leaves 16 or more iterations
    (two threads; odd_3x3_c35_k50_19_b2 would get 13), on AVX-512 hosts. Not on hosts with
    16 vector registers, where the pair's 8 accumulator rows, 8 input loads and 16 weights
    spill (AMD Zen 1, 2 threads, separate processes, median ms, single / pair: 128×6×14² →
    16 5×5 1.86-1.92 / 2.01-2.06; 16×16×20² → 32 3×3 1.03-1.07 / 1.14-1.15)."""
    if wgrad_two_taps():
        return 0
    return int(N // 2 * ((K + 3) // 4) >= 16)


def kblock_dgrad(w, dy, out, geom):
    """The input gradient: scattered four input channels at a time where a padded plane
    fits one accumulator strip; else the forward conv of dY padded by dil·(R−1) − pad
    with W rotated 180° and K ↔ C (stride 1). Padding larger than dil·(R−1) would need
    cropping dY from the top/left there: the caller keeps those layers on
    cpu_flat.flat_dgrad (see kblock_applies_dgrad)."""
    (pt, pb, pl, pr), (dh, dw) = geom.padding, geom.dilation
    if _scatter_fits(geom):
        Wp = pl + geom.W + pr
        wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(geom.R * geom.S, geom.C, geom.K)
        _dgrad_scatter_kblock(wt, dy, out, geom.R, geom.S, Wp, pt, pl, dh, dw, out.dtype.type(0))
        return
    fh, fw = dh * (geom.R - 1), dw * (geom.S - 1)
    dyp = pad_input(dy, fh - pt, fh - pb, fw - pl, fw - pr)
    _fwd_kblock(dyp, flipped_transposed(w, 1), out, dh, dw, _pair(geom.N, geom.C), out.dtype.type(0))


def _scatter_fits(geom):
    (pt, pb, pl, pr) = geom.padding
    return (geom.H + pt + pb) * (geom.W + pl + pr) <= _STRIP


def kblock_applies_dgrad(geom):
    """Channels enough to fill a block of four (below that cpu_flat's scatter measured
    faster: lenet_5x5_32_b128, C = 1, 0.53 vs 0.78 ms), and, for the forward-conv form,
    no top/left cropping of dY."""
    (pt, _, pl, _), (dh, dw) = geom.padding, geom.dilation
    return geom.C >= 4 and (_scatter_fits(geom) or (pt <= dh * (geom.R - 1) and pl <= dw * (geom.S - 1)))
