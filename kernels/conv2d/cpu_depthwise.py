"""Depthwise conv2d (C/groups == 1): dedicated CPU kernels. Same index notation as cpu_direct."""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uintp

from .cpu_direct import _column_range


# ---------------------------------------------------------------- depthwise (Cg == 1)
# Each output channel k reads one input channel c = k // M (M = K / C, the channel
# multiplier), so a whole (n, k) plane is independent.
#
# Strided layers: the zero-padded input plane is split into its sh·sw phase planes,
#     phase[bh·sw + bw][i, j] = padded[i·sh + bh, j·sw + bw],
# each of width Wph = Q + ((S−1)·dw) // sw, flattened. Tap (r, s) reads padded row
# p·sh + r·dh = (p + r·dh // sh)·sh + r·dh % sh, i.e. phase (r·dh % sh, s·dw % sw) at a
# fixed offset (r·dh // sh)·Wph + s·dw // sw: a stride-1 read, so every tap is ONE long
# contiguous loop over (P−1)·Wph + Q elements, as in the stride-1 kernels below (output
# columns q >= Q of each row are scratch). A strided inner loop would be a gather that
# LLVM does not vectorise; here only the phase split (one pass over the plane) is strided.
@njit(inline="always")
def _phase_dims(P, Q, R, S, sh, sw, dh, dw):
    Hph = P + ((R - 1) * dh) // sh
    Wph = Q + ((S - 1) * dw) // sw
    return Hph, Wph, (P - 1) * Wph + Q


@njit(inline="always")
def _tap_offset(r, s, sh, sw, dh, dw, Wph):
    """(phase, flat offset in that phase) of tap (r, s)."""
    return ((r * dh) % sh) * sw + (s * dw) % sw, ((r * dh) // sh) * Wph + (s * dw) // sw


@njit(inline="always")
def _split_phases_w2(src, pt, pl, sh, Hph, Wph):
    # _split_phases at column stride 2 (the common case): each source row is read once,
    # de-interleaved in one loop over column pairs (2u, 2u + 1), which LLVM vectorises.
    # Source column m = 2j + bw − pl, so even columns go to phase ba = pl % 2 at
    # j = u + ja, odd ones to phase 1 − ba at j = u + jb.
    H, W = src.shape
    buf = np.zeros((sh * 2, Hph * Wph), src.dtype)
    ba = pl % 2
    ja = (pl - ba) // 2
    jb = (pl + ba) // 2
    ua = max(min((W + 1) // 2, Wph - ja), 0)  # even source columns inside the phase row
    ub = max(min(W // 2, Wph - jb), 0)
    u_both = min(ua, ub)
    for h in range(H):
        hp = h + pt
        i = hp // sh
        if i >= Hph:
            break  # rows below are read by no tap
        bh = hp % sh
        srow = src[h]
        da = buf[bh * 2 + ba, i * Wph + ja:(i + 1) * Wph]
        db = buf[bh * 2 + 1 - ba, i * Wph + jb:(i + 1) * Wph]
        for u in range(u_both):
            da[u] = srow[2 * u]
            db[u] = srow[2 * u + 1]
        for u in range(u_both, ua):
            da[u] = srow[2 * u]
        for u in range(u_both, ub):
            db[u] = srow[2 * u + 1]
    return buf


@njit(inline="always")
def _split_phases(src, pt, pl, sh, sw, Hph, Wph, zero):
    # buf[bh·sw + bw, i·Wph + j] = src[i·sh + bh − pt, j·sw + bw − pl] (0 outside src).
    if sw == 2:
        return _split_phases_w2(src, pt, pl, sh, Hph, Wph)
    H, W = src.shape
    buf = np.empty((sh * sw, Hph * Wph), src.dtype)
    for bh in range(sh):
        for bw in range(sw):
            ph = buf[bh * sw + bw]
            j_lo, j_hi = _column_range(sw, pl, bw, W, Wph)
            j_hi = max(j_hi, j_lo)
            for i in range(Hph):
                row = ph[i * Wph:(i + 1) * Wph]
                h = i * sh + bh - pt
                if h < 0 or h >= H:
                    row[:] = zero
                    continue
                srow = src[h]
                row[:j_lo] = zero
                row[j_hi:] = zero
                for j in range(j_lo, j_hi):  # j·sw + bw − pl >= 0 here: no wraparound select
                    row[j] = srow[uintp(j * sw + bw - pl)]
    return buf


@njit(inline="always")
def _crop_rows(acc, dst, Wb):
    # dst[p, q] = acc[p·Wb + q]: drop the scratch columns of a flat accumulator (row views,
    # so the copy is contiguous and free of Numba's negative-index select).
    P, Q = dst.shape
    for p in range(P):
        drow = dst[p]
        arow = acc[p * Wb:p * Wb + Q]
        for q in range(Q):
            drow[q] = arow[q]


# Taps are fused four at a time: one pass over the L-long accumulator per four taps
# (four loads and FMAs per store) instead of one load-FMA-store pass per tap. Four keeps
# LLVM's runtime alias checks (one per read view against the written one) under its limit
# of eight, so the fused loop still vectorises. ``offs[t]`` is tap t's flat offset into the
# (padded or phase-split) plane buffer; tap t = r·S + s.
@njit(inline="always")
def _fwd_taps(acc, xf, offs, wk, L):
    # acc[i] += Σ_t wk[t]·xf[offs[t] + i]
    T = offs.shape[0]
    t = 0
    while t + 4 <= T:
        x0, x1, x2, x3 = xf[offs[t]:], xf[offs[t + 1]:], xf[offs[t + 2]:], xf[offs[t + 3]:]
        w0, w1, w2, w3 = wk[t], wk[t + 1], wk[t + 2], wk[t + 3]
        for i in range(L):
            acc[i] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i]
        t += 4
    while t < T:
        x0, w0 = xf[offs[t]:], wk[t]
        for i in range(L):
            acc[i] += w0 * x0[i]
        t += 1


@njit(inline="always")
def _wgrad_taps(dwk, yb, xf, offs, L, zero):
    # dwk[t] += Σ_i yb[i]·xf[offs[t] + i], four dot products per pass over yb.
    T = offs.shape[0]
    t = 0
    while t + 4 <= T:
        x0, x1, x2, x3 = xf[offs[t]:], xf[offs[t + 1]:], xf[offs[t + 2]:], xf[offs[t + 3]:]
        s0 = s1 = s2 = s3 = zero
        for i in range(L):
            y = yb[i]
            s0 += y * x0[i]
            s1 += y * x1[i]
            s2 += y * x2[i]
            s3 += y * x3[i]
        dwk[t] += s0
        dwk[t + 1] += s1
        dwk[t + 2] += s2
        dwk[t + 3] += s3
        t += 4
    while t < T:
        x0 = xf[offs[t]:]
        s0 = zero
        for i in range(L):
            s0 += yb[i] * x0[i]
        dwk[t] += s0
        t += 1


@njit(inline="always")
def _tap_offsets(R, S, sh, sw, dh, dw, Hph, Wph):
    # Flat offset of each tap (r, s) in a phase-split plane buffer (sh·sw, Hph·Wph).
    offs = np.empty(R * S, np.int64)
    for r in range(R):
        for s in range(S):
            ph, off = _tap_offset(r, s, sh, sw, dh, dw, Wph)
            offs[r * S + s] = ph * Hph * Wph + off
    return offs


@njit(inline="always")
def _crop_plane(buf, Wb, top, left, dst, zero):
    # dst[h, x] = buf[(h + top)·Wb + left + x] where that lies inside the buffer's rows and
    # columns, else 0: conv_transpose geometries have negative bottom/right padding
    # (output_padding rows that no window reaches, gradient 0).
    H, W = dst.shape
    Hv = min(H, buf.shape[0] // Wb - top)
    Wv = min(W, Wb - left)
    for h in range(H):
        drow = dst[h]
        if h < Hv:
            base = (h + top) * Wb + left
            brow = buf[base:base + Wv]
            for x_col in range(Wv):
                drow[x_col] = brow[x_col]
            drow[Wv:] = zero
        else:
            drow[:] = zero


@njit(parallel=True, cache=True, fastmath=True)
def _fwd_depthwise(x, w, out, sh, sw, pt, pl, dh, dw, zero):
    # One prange iteration per output plane (n, k).
    N, C = x.shape[0], x.shape[1]
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    Hph, Wph, L = _phase_dims(P, Q, R, S, sh, sw, dh, dw)
    offs = _tap_offsets(R, S, sh, sw, dh, dw, Hph, Wph)
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        xb = _split_phases(x[n, k // M], pt, pl, sh, sw, Hph, Wph, zero)
        acc = np.zeros(L, out.dtype)
        _fwd_taps(acc, xb.reshape(-1), offs, w[k, 0].reshape(-1), L)
        _crop_rows(acc, out[n, k], Wph)


@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_depthwise(w, dy, dx, sh, sw, pt, pl, dh, dw, zero):
    # One prange iteration per input plane (n, c): the M output planes of c are
    # scattered (in a fixed order) into the phase planes of this plane only.
    N, C, H, W = dx.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    Hph, Wph, L = _phase_dims(P, Q, R, S, sh, sw, dh, dw)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        xb = np.zeros((sh * sw, Hph * Wph), dx.dtype)
        for m in range(M):
            k = c * M + m
            yb = _pad_plane(dy[n, k], 0, 0, P, Wph, dy.dtype)  # zero in columns q >= Q
            for r in range(R):
                for s in range(S):
                    wv = w[k, 0, r, s]
                    ph, off = _tap_offset(r, s, sh, sw, dh, dw, Wph)
                    xs = xb[ph, off:]
                    for i in range(L):
                        xs[i] += wv * yb[i]
        # Scatter the phase planes back: dx[i·sh + bh − pt, j·sw + bw − pl] = phase[bh·sw + bw][i, j].
        # Rows/columns past the phase planes are read by no tap: their gradient is 0.
        xp = dx[n, c]
        xp[:, :] = zero
        for bh in range(sh):
            for bw in range(sw):
                ph = xb[bh * sw + bw]
                j_lo, j_hi = _column_range(sw, pl, bw, W, Wph)
                for i in range(Hph):
                    h = i * sh + bh - pt
                    if h < 0 or h >= H:
                        continue
                    xrow = xp[h]
                    prow = ph[i * Wph:(i + 1) * Wph]
                    for j in range(j_lo, j_hi):  # j·sw + bw − pl >= 0 here
                        xrow[uintp(j * sw + bw - pl)] = prow[j]


@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_depthwise(x, dy, dw_out, sh, sw, pt, pl, dh, dw, zero):
    # One prange iteration per output channel k; each tap is a long dot product per
    # image, summed over n in a fixed order (deterministic; float32 stays float32).
    N, C = x.shape[0], x.shape[1]
    K, _, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    Hph, Wph, L = _phase_dims(P, Q, R, S, sh, sw, dh, dw)
    offs = _tap_offsets(R, S, sh, sw, dh, dw, Hph, Wph)
    for k in prange(K):
        c = k // M
        dwk = dw_out[k, 0].reshape(-1)
        dwk[:] = zero
        for n in range(N):
            xb = _split_phases(x[n, c], pt, pl, sh, sw, Hph, Wph, zero)
            yb = _pad_plane(dy[n, k], 0, 0, P, Wph, dy.dtype)  # zero in columns q >= Q
            _wgrad_taps(dwk, yb, xb.reshape(-1), offs, L, zero)


# Stride 1: the plane is copied into a zero-padded buffer of width Wp = Q + (S−1)·dw,
# flattened, so every tap is ONE long contiguous loop over (P−1)·Wp + Q elements
# (output columns q >= Q of each row are scratch, dropped when copying back). Rows of
# ~56 would leave most of the work in LLVM's scalar remainder loop; this has none.
@njit(inline="always")
def _pad_plane(src, pt, pl, Hp, Wp, dtype):
    buf = np.zeros(Hp * Wp, dtype)
    H, W = src.shape
    width = min(W, Wp - pl)
    for h in range(min(H, Hp - pt)):
        base = (h + pt) * Wp + pl
        brow = buf[base:base + width]  # row views: a contiguous copy, no negative-index select
        srow = src[h]
        for x_col in range(width):
            brow[x_col] = srow[x_col]
    return buf


@njit(parallel=True, cache=True, fastmath=True)
def _fwd_depthwise_s1(x, w, out, pt, pl, dh, dw, zero):
    # One prange iteration per output plane (n, k).
    N, C = x.shape[0], x.shape[1]
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    Wp = Q + (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    offs = _tap_offsets(R, S, 1, 1, dh, dw, Hp, Wp)
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        xb = _pad_plane(x[n, k // M], pt, pl, Hp, Wp, x.dtype)
        acc = np.zeros(L, out.dtype)
        _fwd_taps(acc, xb, offs, w[k, 0].reshape(-1), L)
        _crop_rows(acc, out[n, k], Wp)


@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_depthwise_s1(w, dy, dx, pt, pl, dh, dw, zero):
    # One prange iteration per input plane (n, c): the M output planes of c are
    # scattered (in a fixed order) into a padded buffer of this plane only.
    N, C, H, W = dx.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    Wp = Q + (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        xb = np.zeros(Hp * Wp, dx.dtype)
        for m in range(M):
            k = c * M + m
            yb = _pad_plane(dy[n, k], 0, 0, P, Wp, dy.dtype)  # zero in columns q >= Q
            for r in range(R):
                for s in range(S):
                    wv = w[k, 0, r, s]
                    xs = xb[r * dh * Wp + s * dw:]
                    for i in range(L):
                        xs[i] += wv * yb[i]
        _crop_plane(xb, Wp, pt, pl, dx[n, c], zero)  # Hp = pt + H + pb, Wp = pl + W + pr

@njit(parallel=True, cache=True, fastmath=True)
def _wgrad_depthwise_s1(x, dy, dw_out, pt, pl, dh, dw, zero):
    # One prange iteration per output channel k; each tap is a long dot product per
    # image, summed over n in a fixed order (deterministic; float32 stays float32).
    N, C = x.shape[0], x.shape[1]
    K, _, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    Wp = Q + (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    offs = _tap_offsets(R, S, 1, 1, dh, dw, Hp, Wp)
    for k in prange(K):
        c = k // M
        dwk = dw_out[k, 0].reshape(-1)
        dwk[:] = zero
        for n in range(N):
            xb = _pad_plane(x[n, c], pt, pl, Hp, Wp, x.dtype)
            yb = _pad_plane(dy[n, k], 0, 0, P, Wp, dy.dtype)  # zero in columns q >= Q
            _wgrad_taps(dwk, yb, xb, offs, L, zero)
