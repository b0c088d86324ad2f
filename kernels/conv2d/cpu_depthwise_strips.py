"""Depthwise conv2d (C/groups == 1) on the CPU in row strips that stay in L1.

Same index notation as cpu_direct. A depthwise layer does 2·R·S flops per byte moved, so
it is bound by memory: these kernels read each input plane once and write each output
plane once, with everything in between in a per-thread buffer of a few KiB, allocated
once per chunk of planes (not per plane) outside the hot loops.

Phase planes of width Q. Tap (r, s) of output (p, q) reads input row p·sh + r·dh − pt and
column q·sw + s·dw − pl. Writing r·dh − pt = rs·sh + bh and s·dw − pl = cs·sw + bw
(floor division, 0 <= bh < sh, 0 <= bw < sw), that is row p + rs, column q + cs of the
phase plane (bh, bw), which holds input rows i·sh + bh and columns j·sw + bw (0 outside the
input). Stored as rows of exactly Q columns and flattened, every tap is then one
contiguous loop over the strip at a constant offset rs·Q + cs, and the output strip is
the output plane's own memory (no scratch columns, no crop). The columns a tap wraps
into (q + cs outside [0, Q): the neighbouring row) are padding; a per-column mask
selects 0 there. That holds when W <= Q·sw, i.e. the layer pads the right edge at
least as much as 'same' does (every MobileNet/ResNet depthwise layer): a wrapped
column q + cs >= Q is input column >= Q·sw >= W. Other layers use cpu_depthwise.

The input gradient is the same loop the other way round: phase (bh, bw) of dX at (i, j)
sums w[r, s]·dY[i − rs, j − cs] over the taps of that phase, a stride-1 loop over dY
(whose rows are Q long already) into Q-wide phase rows, interleaved back into dX rows
(written in place at stride 1 when W == Q). The weight gradient is Σ dY[u]·x_phase[u +
offset] per tap over the same strips: dot products, accumulated per channel in a fixed
order (images, then strips, then the vector lanes' fixed reduction), so deterministic.

Taps are grouped into passes of up to three taps sharing a column shift (so one mask
per pass, and few enough read streams that LLVM's runtime alias checks stay under its
limit and the loop vectorises); a missing third tap has weight 0. The pass table is
built once per geometry in Python (``plan``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import get_num_threads, njit, prange, uintp

# Strip sizing: the input phase rows, output rows and masks of one strip fit in this many
# bytes (L1 is 32-48 KiB on current x86 cores).
STRIP_BYTES = 24 * 1024
# Chunks of planes per thread: each chunk allocates its buffer once.
CHUNKS_PER_THREAD = 4

# Pass table columns.
OUT_PH, MASK, FIRST, SHIFT, T0 = 0, 1, 2, 3, 4  # then (in_phase, row_shift, tap) x 3
NCOL = T0 + 9


def applies(geom) -> bool:
    """The layers these kernels compute: depthwise with the right edge padded enough."""
    return geom.Cg == 1 and geom.W <= geom.Q * geom.stride[1]


def _split(v, stride):
    return v // stride, v % stride  # floor division: (shift, phase)


@lru_cache(maxsize=256)
def plan(direction, R, S, sh, sw, pt, pl, dh, dw, P, Q, out_rows, itemsize):
    """(passes, masks, d_min, d_span, strip_rows, empty_out_phases) for one geometry; a
    pass's row shifts are counted from d_min (the strip buffer's first row).

    direction "fwd"/"wgrad": output rows p read input phase rows p + rs of phase (bh, bw);
    "dgrad": dX phase rows i (phase (bh, bw)) read dY rows i − rs. ``out_rows`` is the
    number of rows of the strip-mined output (P, or ceil(H / sh) dX phase rows)."""
    taps = []  # (out_phase, in_phase, row_shift d, column shift, tap index)
    for r in range(R):
        rs, bh = _split(r * dh - pt, sh)
        for s in range(S):
            cs, bw = _split(s * dw - pl, sw)
            ph = bh * sw + bw
            if direction == "dgrad":
                out_ph, in_ph, d, shift = ph, 0, -rs, -cs
            else:
                out_ph, in_ph, d, shift = 0, ph, rs, cs
            if not -Q < shift < Q:
                continue  # every output column reads padding
            taps.append((out_ph, in_ph, d, shift, r * S + s))
    n_out = sh * sw if direction == "dgrad" else 1
    n_in = 1 if direction == "dgrad" else sh * sw
    d_vals = [t[2] for t in taps] or [0]
    d_min, d_span = min(d_vals), max(d_vals) - min(d_vals)
    shifts = sorted({t[3] for t in taps if t[3] != 0})
    # Strip rows: input phase rows + output rows (+ masks, 1 byte a column) within STRIP_BYTES.
    per_row = Q * (itemsize * (n_in + n_out) + len(shifts))
    rows = max(1, min(out_rows, STRIP_BYTES // per_row - d_span))
    masks = np.ones((max(len(shifts), 1), rows * Q), np.uint8)
    q = np.arange(rows * Q) % Q
    for m, shift in enumerate(shifts):
        masks[m] = (q + shift >= 0) & (q + shift < Q)
    passes = []
    seen = set()
    groups = {}
    for t in taps:
        groups.setdefault((t[0], t[3]), []).append(t)
    for (out_ph, shift), members in sorted(groups.items()):
        for g in range(0, len(members), 3):
            chunk = members[g:g + 3]
            row = [out_ph, shifts.index(shift) if shift else -1, out_ph not in seen, shift]
            seen.add(out_ph)
            for t in chunk:
                row += [t[1], t[2] - d_min, t[4]]
            for _ in range(3 - len(chunk)):
                row += [chunk[0][1], chunk[0][2] - d_min, -1]  # weight 0, a valid offset
            passes.append(row)
    passes = np.array(passes, np.int64).reshape(-1, NCOL)
    empty = np.array([ph for ph in range(n_out) if ph not in seen], np.int64)
    return passes, masks, d_min, d_span, rows, empty


# ---------------------------------------------------------------- strip producers / consumers
# Everything below indexes flat arrays with unsigned (uintp) indices: array views made in
# the hot loops cost a reference count each, and signed indices a negative-index select.
@njit(inline="always")
def _fill(buf, start, n, zero):
    for i in range(n):
        buf[uintp(start + i)] = zero


@njit(inline="always")
def _load_phase_rows(xf, sbase, H, W, buf, row0, nrows, sh, sw, Q, plane, zero):
    """Phase (bh, bw) rows t in [0, nrows) of a strip: buf[Q + ph·plane + t·Q + j] =
    src[(row0 + t)·sh + bh, j·sw + bw] for j in [0, Q), 0 outside src, where src is the
    H×W plane at xf[sbase:]."""
    if sh == 1 and sw == 1 and W == Q:
        # The strip's rows are contiguous in src and in buf: one flat copy.
        t_lo = min(max(-row0, 0), nrows)
        t_hi = max(min(H - row0, nrows), t_lo)
        _fill(buf, Q, t_lo * Q, zero)
        _fill(buf, Q + t_hi * Q, (nrows - t_hi) * Q, zero)
        d = Q + t_lo * Q
        s = sbase + (row0 + t_lo) * W
        for i in range((t_hi - t_lo) * W):
            buf[uintp(d + i)] = xf[uintp(s + i)]
        return
    for bh in range(sh):
        for t in range(nrows):
            h = (row0 + t) * sh + bh
            if h < 0 or h >= H:
                for bw in range(sw):
                    _fill(buf, Q + (bh * sw + bw) * plane + t * Q, Q, zero)
                continue
            srow = sbase + h * W
            if sw == 1:
                n = min(W, Q)
                d = Q + bh * plane + t * Q
                for j in range(n):
                    buf[uintp(d + j)] = xf[uintp(srow + j)]
                _fill(buf, d + n, Q - n, zero)
            elif sw == 2:
                # De-interleave even and odd columns in one loop (LLVM vectorises it).
                de = Q + (bh * 2) * plane + t * Q
                do = de + plane
                ne = min((W + 1) // 2, Q)
                no = min(W // 2, Q)
                for j in range(no):
                    buf[uintp(de + j)] = xf[uintp(srow + 2 * j)]
                    buf[uintp(do + j)] = xf[uintp(srow + 2 * j + 1)]
                for j in range(no, ne):
                    buf[uintp(de + j)] = xf[uintp(srow + 2 * j)]
                _fill(buf, de + ne, Q - ne, zero)
                _fill(buf, do + no, Q - no, zero)
            else:
                for bw in range(sw):
                    d = Q + (bh * sw + bw) * plane + t * Q
                    n = min((W - bw + sw - 1) // sw, Q) if W > bw else 0
                    for j in range(n):
                        buf[uintp(d + j)] = xf[uintp(srow + j * sw + bw)]
                    _fill(buf, d + n, Q - n, zero)


@njit(inline="always")
def _store_phase_rows(obuf, dxf, dbase, H, W, i0, nrows, sh, sw, Q, oplane):
    """dst[i·sh + bh, j·sw + bw] = obuf[ph·oplane + (i − i0)·Q + j] for rows i in
    [i0, i0 + nrows) and every column of the H×W plane dst at dxf[dbase:] (W <= Q·sw)."""
    for t in range(nrows):
        for bh in range(sh):
            h = (i0 + t) * sh + bh
            if h >= H:
                break
            drow = dbase + h * W
            if sw == 1:
                s = bh * oplane + t * Q
                for j in range(W):
                    dxf[uintp(drow + j)] = obuf[uintp(s + j)]
            elif sw == 2:
                se = (bh * 2) * oplane + t * Q
                so = se + oplane
                for j in range(W // 2):
                    dxf[uintp(drow + 2 * j)] = obuf[uintp(se + j)]
                    dxf[uintp(drow + 2 * j + 1)] = obuf[uintp(so + j)]
                if W % 2:
                    dxf[uintp(drow + W - 1)] = obuf[uintp(se + W // 2)]
            else:
                for bw in range(sw):
                    s = (bh * sw + bw) * oplane + t * Q
                    n = (W - bw + sw - 1) // sw if W > bw else 0
                    for j in range(n):
                        dxf[uintp(drow + j * sw + bw)] = obuf[uintp(s + j)]


# ---------------------------------------------------------------- the passes
@njit(inline="always")
def _tap_base(passes, pi, t, Q, plane):
    return Q + passes[pi, T0 + 3 * t] * plane + passes[pi, T0 + 3 * t + 1] * Q + passes[pi, SHIFT]


@njit(inline="always")
def _tap_weight(passes, pi, t, wf, wbase, zero):
    tap = passes[pi, T0 + 3 * t + 2]
    return wf[wbase + tap] if tap >= 0 else zero


@njit(inline="always")
def _run_passes(acc, abase, oplane, buf, plane, Q, passes, masks, wf, wbase, L, accumulate, zero):
    """acc[abase + out_ph·oplane + u] (+)= Σ over the passes' taps of w·buf[tap base + u],
    for u in [0, L)."""
    mlen = masks.shape[1]
    mf = masks.reshape(-1)
    for pi in range(passes.shape[0]):
        ob = abase + passes[pi, OUT_PH] * oplane
        b0, b1, b2 = _tap_base(passes, pi, 0, Q, plane), _tap_base(passes, pi, 1, Q, plane), _tap_base(passes, pi, 2, Q, plane)
        w0 = _tap_weight(passes, pi, 0, wf, wbase, zero)
        w1 = _tap_weight(passes, pi, 1, wf, wbase, zero)
        w2 = _tap_weight(passes, pi, 2, wf, wbase, zero)
        first = passes[pi, FIRST] != 0 and not accumulate
        mk = passes[pi, MASK]
        if mk < 0:
            if first:
                for i in range(L):
                    acc[uintp(ob + i)] = w0 * buf[uintp(b0 + i)] + w1 * buf[uintp(b1 + i)] + w2 * buf[uintp(b2 + i)]
            else:
                for i in range(L):
                    acc[uintp(ob + i)] += w0 * buf[uintp(b0 + i)] + w1 * buf[uintp(b1 + i)] + w2 * buf[uintp(b2 + i)]
        else:
            mb = mk * mlen
            if first:
                for i in range(L):
                    v = w0 * buf[uintp(b0 + i)] + w1 * buf[uintp(b1 + i)] + w2 * buf[uintp(b2 + i)]
                    acc[uintp(ob + i)] = v if mf[uintp(mb + i)] else zero
            else:
                for i in range(L):
                    v = w0 * buf[uintp(b0 + i)] + w1 * buf[uintp(b1 + i)] + w2 * buf[uintp(b2 + i)]
                    acc[uintp(ob + i)] += v if mf[uintp(mb + i)] else zero


@njit(inline="always")
def _chunk(c, nchunks, total):
    return c * total // nchunks, (c + 1) * total // nchunks


# ---------------------------------------------------------------- forward
@njit(parallel=True, cache=True, fastmath=True)
def fwd(x, w, out, bias, has_bias, relu, sh, sw, passes, masks, d_min, d_span, rows, nthreads, zero):
    # One chunk of output planes (n, k) per prange iteration; strips of ``rows`` output rows,
    # computed in place in the output plane, the bias and ReLU applied while in cache.
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    xf, wf, of = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    plane = (rows + d_span) * Q + Q  # one phase plane of the strip, with a row of margin
    total = N * K
    nchunks = min(total, CHUNKS_PER_THREAD * nthreads)
    for ch in prange(nchunks):
        lo, hi = _chunk(ch, nchunks, total)
        buf = np.zeros(Q + sh * sw * plane, x.dtype)
        for nk in range(lo, hi):
            n = nk // K
            k = nk % K
            sbase = (n * C + k // M) * H * W
            b = bias[k] if has_bias else zero
            for p0 in range(0, P, rows):
                pb = min(rows, P - p0)
                L = pb * Q
                ob = nk * P * Q + p0 * Q
                _load_phase_rows(xf, sbase, H, W, buf, p0 + d_min, pb + d_span, sh, sw, Q, plane, zero)
                _run_passes(of, ob, 0, buf, plane, Q, passes, masks, wf, k * R * S, L, False, zero)
                if passes.shape[0] == 0:
                    _fill(of, ob, L, zero)
                if has_bias and relu:
                    for i in range(L):
                        of[uintp(ob + i)] = max(of[uintp(ob + i)] + b, zero)
                elif has_bias:
                    for i in range(L):
                        of[uintp(ob + i)] += b
                elif relu:
                    for i in range(L):
                        of[uintp(ob + i)] = max(of[uintp(ob + i)], zero)


# ---------------------------------------------------------------- input gradient
@njit(parallel=True, cache=True, fastmath=True)
def dgrad(w, dy, dx, sh, sw, passes, masks, d_min, d_span, rows, empty, nthreads, zero):
    # One chunk of input planes (n, c) per prange iteration; strips of ``rows`` dX phase
    # rows; the M output planes of c accumulate in a fixed order.
    N, C, H, W = dx.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    wf, dyf, dxf = w.reshape(-1), dy.reshape(-1), dx.reshape(-1)
    Hph = (H + sh - 1) // sh
    plane = (rows + d_span) * Q + Q
    oplane = rows * Q
    direct = sh == 1 and sw == 1 and W == Q  # dX rows are the phase rows: accumulate in place
    total = N * C
    nchunks = min(total, CHUNKS_PER_THREAD * nthreads)
    for ch in prange(nchunks):
        lo, hi = _chunk(ch, nchunks, total)
        buf = np.zeros(Q + plane, dy.dtype)
        obuf = np.zeros(1 if direct else sh * sw * oplane, dy.dtype)
        for nc in range(lo, hi):
            n = nc // C
            c = nc % C
            dbase = nc * H * W
            for i0 in range(0, Hph, rows):
                ib = min(rows, Hph - i0)
                L = ib * Q
                acc = dxf if direct else obuf
                abase = dbase + i0 * Q if direct else 0
                for m in range(M):
                    k = c * M + m
                    _load_phase_rows(dyf, (n * K + k) * P * Q, P, Q, buf, i0 + d_min, ib + d_span, 1, 1, Q, plane, zero)
                    _run_passes(acc, abase, oplane, buf, plane, Q, passes, masks, wf, k * R * S, L, m > 0, zero)
                for e in range(empty.shape[0]):
                    _fill(acc, abase + empty[e] * oplane, L, zero)
                if not direct:
                    _store_phase_rows(obuf, dxf, dbase, H, W, i0, ib, sh, sw, Q, oplane)


# ---------------------------------------------------------------- weight gradient
@njit(parallel=True, cache=True, fastmath=True)
def wgrad(x, dy, dw_out, sh, sw, passes, masks, d_min, d_span, rows, nthreads, zero):
    # One chunk of output channels k per prange iteration; per tap a dot product over
    # images and strips in a fixed order (deterministic), summed in float64.
    N, C, H, W = x.shape
    K, _, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    xf, dyf = x.reshape(-1), dy.reshape(-1)
    mlen = masks.shape[1]
    mf = masks.reshape(-1)
    plane = (rows + d_span) * Q + Q
    nchunks = min(K, CHUNKS_PER_THREAD * nthreads)
    for ch in prange(nchunks):
        lo, hi = _chunk(ch, nchunks, K)
        buf = np.zeros(Q + sh * sw * plane, x.dtype)
        tot = np.zeros(R * S, np.float64)
        for k in range(lo, hi):
            c = k // M
            tot[:] = 0.0
            for n in range(N):
                sbase = (n * C + c) * H * W
                for p0 in range(0, P, rows):
                    pb = min(rows, P - p0)
                    L = pb * Q
                    yb = (n * K + k) * P * Q + p0 * Q
                    _load_phase_rows(xf, sbase, H, W, buf, p0 + d_min, pb + d_span, sh, sw, Q, plane, zero)
                    for pi in range(passes.shape[0]):
                        b0, b1, b2 = _tap_base(passes, pi, 0, Q, plane), _tap_base(passes, pi, 1, Q, plane), _tap_base(passes, pi, 2, Q, plane)
                        s0 = s1 = s2 = zero
                        mk = passes[pi, MASK]
                        if mk < 0:
                            for i in range(L):
                                v = dyf[uintp(yb + i)]
                                s0 += v * buf[uintp(b0 + i)]
                                s1 += v * buf[uintp(b1 + i)]
                                s2 += v * buf[uintp(b2 + i)]
                        else:
                            mb = mk * mlen
                            for i in range(L):
                                v = dyf[uintp(yb + i)] if mf[uintp(mb + i)] else zero
                                s0 += v * buf[uintp(b0 + i)]
                                s1 += v * buf[uintp(b1 + i)]
                                s2 += v * buf[uintp(b2 + i)]
                        for t, sv in ((0, s0), (1, s1), (2, s2)):
                            tap = passes[pi, T0 + 3 * t + 2]
                            if tap >= 0:
                                tot[tap] += sv
            for t in range(R * S):
                dw_out[k, 0, t // S, t % S] = tot[t]


# ---------------------------------------------------------------- launchers
def _geom(geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, pt, pl, dh, dw


def launch_fwd(x, w, b, out, geom, relu):
    sh, sw, pt, pl, dh, dw = _geom(geom)
    passes, masks, d_min, d_span, rows, _ = plan("fwd", geom.R, geom.S, sh, sw, pt, pl, dh, dw,
                                                geom.P, geom.Q, geom.P, out.dtype.itemsize)
    zero = out.dtype.type(0)
    has_bias = b is not None
    fwd(x, w, out, b if has_bias else out.reshape(-1)[:1], has_bias, relu, sh, sw, passes, masks,
        d_min, d_span, rows, get_num_threads(), zero)


def launch_dgrad(w, dy, dx, geom):
    sh, sw, pt, pl, dh, dw = _geom(geom)
    hph = -(-geom.H // sh)
    passes, masks, d_min, d_span, rows, empty = plan("dgrad", geom.R, geom.S, sh, sw, pt, pl, dh, dw,
                                                     geom.P, geom.Q, hph, dx.dtype.itemsize)
    dgrad(w, dy, dx, sh, sw, passes, masks, d_min, d_span, rows, empty, get_num_threads(), dx.dtype.type(0))


def launch_wgrad(x, dy, dw_out, geom):
    sh, sw, pt, pl, dh, dw = _geom(geom)
    passes, masks, d_min, d_span, rows, _ = plan("wgrad", geom.R, geom.S, sh, sw, pt, pl, dh, dw,
                                                geom.P, geom.Q, geom.P, dw_out.dtype.itemsize)
    wgrad(x, dy, dw_out, sh, sw, passes, masks, d_min, d_span, rows, get_num_threads(), dw_out.dtype.type(0))
