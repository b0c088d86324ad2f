"""Stride-1 dense conv2d forward for layers with 12 to 16 output channels (float32, AVX-512
hosts, and AVX2 ones with a shorter run): all output channels in one 16-lane vector, a run
of TJ = 25 consecutive output pixels in registers (TJ_AVX2 = 6 on AVX2 hosts). LeNet conv2
(6 → 16 channels, 5×5, 14² → 10²) is the case: the flat kernel (cpu_flat_simd) computes
whole padded rows there, 14 columns for 10 outputs, and blocks of 3 channels for 16 (18),
1.6 times the work.

    out[n, k, p, q] = Σ_c,r,s w[k, c, r, s] · x[n, c, p + r·dh − pt, q + s·dw − pl]

Per image, the input goes first into shifted copies xs[c, s, h, q] = xpad[c, h, q + s·dw]
(h < Hp = P + dh·(R − 1), q < Q; xpad the zero-padded plane): tap (c, r, s) of output pixel
j = p·Q + q then reads xs at ((c·S + s)·Hp + r·dh)·Q + j, so the pixels of a run are
consecutive whatever the row width. Register tile: 25 zmm accumulators (pixel j0 + i, all
channels in lanes) across all C·R·S taps: per tap, one weight vector (wp[t, l] = w[l, c, r,
s], zero past K) and 25 broadcast inputs feed 25 FMAs. An image's tiles go pixel-major into
a thread buffer, then to out's planes in 16×16 blocks transposed in registers.

Where the output plane holds a 5×5 block of pixels (AVX-512 hosts), the 25 accumulators
are such a block instead (_block), read from the image itself (unpadded) or from a
zero-padded copy of it: per tap five row bases, the columns immediate offsets, no shifted
copies (their C·S·Hp·Q floats, 16.8 KB at LeNet conv2, with the output buffer and the
weights had overflowed the 32 KiB L1). The last block of a row or column is moved back to
end at the plane's edge, overlapping the one before. Block time / shifted-copy time, 2
threads, same process: LeNet conv2 batch 128 0.87 (0.325 vs 0.376 ms; PyTorch 0.390),
batch 8 0.75, 8×16×28² 'same' 0.93, 16×16×12² → 16 3×3 0.72, 8×32×14² 'same' 3×3 1.02 (15
rows of blocks for 14).

On AVX2 hosts (16 ymm registers) a 16-lane vector is two ymm: the 6-pixel run holds 12
accumulators, and its pixels still run on across rows, so LeNet conv2's 100 outputs are
17 runs (2% idle lanes), where cpu_kvec's per-row tiles of 6 would compute 12 per row of 10.
That run reads the input itself (a padded layer: the image zero-padded in its own prange
iteration) through six window offsets, one per pixel (_tile_avx2_px), not shifted copies:
on AMD Zen 1 an image's copies (C·S·Hp·Q floats), its output buffer and the weights
overflowed the 32 KiB L1 (LeNet conv2 at batch 128, 2 threads, kernel alone: 0.93-0.96 ms,
against 1.39-1.47 ms for the public call with copies).

Threads: one prange iteration per image; each writes only its own image of out. The wide
tile's last run of an image reads up to TJ − 1 values past its copies, into zero slack;
the AVX2 run's last pixels repeat the image's last window (_window), never copied out.
"""
# ruff: noqa: E702 -- the tile's 25 accumulators five to a line
from __future__ import annotations

import functools

import numpy as np
from numba import config, get_thread_id, njit, prange, types

from ..gemm.simd import load_at, store_at, transpose16, vfma, vload, vload_first, vstore, vzero
from ..gemm.simd import vbroadcast_load as vb
from ..precompile import njit_cached
from ..workspace import scratch

TJ = 25  # output pixels per register tile
BLOCK = 5  # _block's output pixels: BLOCK × BLOCK (25 accumulators)
LANES = 16
# Hosts with AVX2 but not AVX-512 (16 ymm registers): a 16-lane vector is two ymm, so the
# run is 6 pixels (12 ymm accumulators, 2 for the weights, 1 for the broadcast), not 25
# (50 ymm: spilled).
TJ_AVX2 = 6


@njit(inline="always")
def _tile(xs, xo, offs, wp, buf, bo):
    # buf[bo + i·16 + l] = Σ_t wp[t·16 + l] · xs[xo + offs[t] + i], i < TJ.
    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero()
    b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero()
    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero()
    d0 = vzero(); d1 = vzero(); d2 = vzero(); d3 = vzero(); d4 = vzero()
    e0 = vzero(); e1 = vzero(); e2 = vzero(); e3 = vzero(); e4 = vzero()
    for t in range(offs.shape[0]):
        o = xo + offs[t]
        u = vload(wp, t * LANES)
        a0 = vfma(vb(xs, o), u, a0); a1 = vfma(vb(xs, o + 1), u, a1); a2 = vfma(vb(xs, o + 2), u, a2)
        a3 = vfma(vb(xs, o + 3), u, a3); a4 = vfma(vb(xs, o + 4), u, a4)
        b0 = vfma(vb(xs, o + 5), u, b0); b1 = vfma(vb(xs, o + 6), u, b1); b2 = vfma(vb(xs, o + 7), u, b2)
        b3 = vfma(vb(xs, o + 8), u, b3); b4 = vfma(vb(xs, o + 9), u, b4)
        c0 = vfma(vb(xs, o + 10), u, c0); c1 = vfma(vb(xs, o + 11), u, c1); c2 = vfma(vb(xs, o + 12), u, c2)
        c3 = vfma(vb(xs, o + 13), u, c3); c4 = vfma(vb(xs, o + 14), u, c4)
        d0 = vfma(vb(xs, o + 15), u, d0); d1 = vfma(vb(xs, o + 16), u, d1); d2 = vfma(vb(xs, o + 17), u, d2)
        d3 = vfma(vb(xs, o + 18), u, d3); d4 = vfma(vb(xs, o + 19), u, d4)
        e0 = vfma(vb(xs, o + 20), u, e0); e1 = vfma(vb(xs, o + 21), u, e1); e2 = vfma(vb(xs, o + 22), u, e2)
        e3 = vfma(vb(xs, o + 23), u, e3); e4 = vfma(vb(xs, o + 24), u, e4)
    vstore(buf, bo + 0, a0); vstore(buf, bo + 16, a1); vstore(buf, bo + 32, a2); vstore(buf, bo + 48, a3)
    vstore(buf, bo + 64, a4)
    vstore(buf, bo + 80, b0); vstore(buf, bo + 96, b1); vstore(buf, bo + 112, b2); vstore(buf, bo + 128, b3)
    vstore(buf, bo + 144, b4)
    vstore(buf, bo + 160, c0); vstore(buf, bo + 176, c1); vstore(buf, bo + 192, c2); vstore(buf, bo + 208, c3)
    vstore(buf, bo + 224, c4)
    vstore(buf, bo + 240, d0); vstore(buf, bo + 256, d1); vstore(buf, bo + 272, d2); vstore(buf, bo + 288, d3)
    vstore(buf, bo + 304, d4)
    vstore(buf, bo + 320, e0); vstore(buf, bo + 336, e1); vstore(buf, bo + 352, e2); vstore(buf, bo + 368, e3)
    vstore(buf, bo + 384, e4)


@njit(inline="always")
def _block(src, xo, C, R, S, HWp, Wp, dh, dw, wp, buf, bo, Q):
    # A 5×5 block of output pixels from the (padded) image itself, no shifted copies:
    # buf[bo + (i·Q + j)·16 + l] = Σ_{c,r,s} wp[t·16 + l] · src[xo + c·HWp + (i + r·dh)·Wp + j + s·dw]
    # for i, j < 5, t = (c·R + r)·S + s; five row bases per tap, the columns immediates.
    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero()
    b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero()
    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero()
    d0 = vzero(); d1 = vzero(); d2 = vzero(); d3 = vzero(); d4 = vzero()
    e0 = vzero(); e1 = vzero(); e2 = vzero(); e3 = vzero(); e4 = vzero()
    t = 0
    for c in range(C):
        for r in range(R):
            row = xo + c * HWp + r * dh * Wp
            for s in range(S):
                u = vload(wp, t * LANES)
                t += 1
                o = row + s * dw
                a0 = vfma(vb(src, o), u, a0); a1 = vfma(vb(src, o + 1), u, a1); a2 = vfma(vb(src, o + 2), u, a2)
                a3 = vfma(vb(src, o + 3), u, a3); a4 = vfma(vb(src, o + 4), u, a4)
                o += Wp
                b0 = vfma(vb(src, o), u, b0); b1 = vfma(vb(src, o + 1), u, b1); b2 = vfma(vb(src, o + 2), u, b2)
                b3 = vfma(vb(src, o + 3), u, b3); b4 = vfma(vb(src, o + 4), u, b4)
                o += Wp
                c0 = vfma(vb(src, o), u, c0); c1 = vfma(vb(src, o + 1), u, c1); c2 = vfma(vb(src, o + 2), u, c2)
                c3 = vfma(vb(src, o + 3), u, c3); c4 = vfma(vb(src, o + 4), u, c4)
                o += Wp
                d0 = vfma(vb(src, o), u, d0); d1 = vfma(vb(src, o + 1), u, d1); d2 = vfma(vb(src, o + 2), u, d2)
                d3 = vfma(vb(src, o + 3), u, d3); d4 = vfma(vb(src, o + 4), u, d4)
                o += Wp
                e0 = vfma(vb(src, o), u, e0); e1 = vfma(vb(src, o + 1), u, e1); e2 = vfma(vb(src, o + 2), u, e2)
                e3 = vfma(vb(src, o + 3), u, e3); e4 = vfma(vb(src, o + 4), u, e4)
    o = bo
    vstore(buf, o, a0); vstore(buf, o + 16, a1); vstore(buf, o + 32, a2); vstore(buf, o + 48, a3); vstore(buf, o + 64, a4)
    o += Q * LANES
    vstore(buf, o, b0); vstore(buf, o + 16, b1); vstore(buf, o + 32, b2); vstore(buf, o + 48, b3); vstore(buf, o + 64, b4)
    o += Q * LANES
    vstore(buf, o, c0); vstore(buf, o + 16, c1); vstore(buf, o + 32, c2); vstore(buf, o + 48, c3); vstore(buf, o + 64, c4)
    o += Q * LANES
    vstore(buf, o, d0); vstore(buf, o + 16, d1); vstore(buf, o + 32, d2); vstore(buf, o + 48, d3); vstore(buf, o + 64, d4)
    o += Q * LANES
    vstore(buf, o, e0); vstore(buf, o + 16, e1); vstore(buf, o + 32, e2); vstore(buf, o + 48, e3); vstore(buf, o + 64, e4)


@njit(inline="always")
def _tile_avx2_px(xf, o0, o1, o2, o3, o4, o5, offs, wp, buf, bo):
    # _tile_avx2 from the padded input itself: buf[bo + i·16 + l] = Σ_t wp[t·16 + l] ·
    # xf[oi + offs[t]], pixel i's window at oi (six bases, as the run crosses rows).
    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero(); a5 = vzero()
    for t in range(offs.shape[0]):
        d = offs[t]
        u = vload(wp, t * LANES)
        a0 = vfma(vb(xf, o0 + d), u, a0); a1 = vfma(vb(xf, o1 + d), u, a1); a2 = vfma(vb(xf, o2 + d), u, a2)
        a3 = vfma(vb(xf, o3 + d), u, a3); a4 = vfma(vb(xf, o4 + d), u, a4); a5 = vfma(vb(xf, o5 + d), u, a5)
    vstore(buf, bo + 0, a0); vstore(buf, bo + 16, a1); vstore(buf, bo + 32, a2)
    vstore(buf, bo + 48, a3); vstore(buf, bo + 64, a4); vstore(buf, bo + 80, a5)


@njit(inline="always")
def _window(j, PQ, Q, Wp, img):
    # the flat index in the padded input of output pixel j's window (pixels past the
    # plane, in an image's last run, repeat its last one: computed, never copied out)
    j = min(j, PQ - 1)
    return img + (j // Q) * Wp + j % Q


@njit(inline="always")
def _fill(x, n, xs, pt, pl, dw, S, Hp, Q):
    # xs[((c·S + s)·Hp + h)·Q + q] = x[n, c, h − pt, q + s·dw − pl], 0 outside x.
    # Rows of at most 16: one masked load (lanes past the row's input columns read as 0)
    # and 16-lane stores, whose lanes past Q land in the next row's place before that row
    # is written (the last row's in the slack); scalar copies cost 40% of the forward.
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    zero = np.float32(0)
    if Q <= LANES and pt == 0 and pl == 0 and Hp == H and W >= Q + (S - 1) * dw:
        # No padding (LeNet): every row is a whole input row, no zero rows or columns, so
        # no tests per row (0.059 -> 0.040 ms for LeNet conv2's 128 images, 2 threads).
        for c in range(C):
            src = (n * C + c) * H * W
            for s in range(S):
                base = (c * S + s) * Hp * Q
                for h in range(H):
                    vstore(xs, base + h * Q, vload_first(x, src + s * dw + h * W, Q))
        return
    if Q <= LANES:
        for c in range(C):
            for s in range(S):
                shift = s * dw - pl
                q_lo = min(max(0, -shift), Q)
                q_hi = max(min(Q, W - shift), q_lo)
                for h in range(Hp):
                    base = ((c * S + s) * Hp + h) * Q
                    hi = h - pt
                    if hi < 0 or hi >= H or q_lo > 0:
                        vstore(xs, base, vzero())
                    if 0 <= hi < H:
                        xo = ((n * C + c) * H + hi) * W + shift
                        vstore(xs, base + q_lo, vload_first(x, xo + q_lo, q_hi - q_lo))
        return
    for c in range(C):
        for s in range(S):
            shift = s * dw - pl  # column q reads input column q + shift
            q_lo = min(max(0, -shift), Q)
            q_hi = max(min(Q, W - shift), q_lo)
            for h in range(Hp):
                base = ((c * S + s) * Hp + h) * Q
                hi = h - pt
                if hi < 0 or hi >= H:
                    for q in range(Q):
                        store_at(xs, base + q, zero)
                    continue
                xo = ((n * C + c) * H + hi) * W + shift
                for q in range(q_lo):
                    store_at(xs, base + q, zero)
                for q in range(q_lo, q_hi):
                    store_at(xs, base + q, load_at(x, xo + q))
                for q in range(q_hi, Q):
                    store_at(xs, base + q, zero)


@njit(inline="always")
def _to_planes(buf, out, n):
    # out[n, k].flat[j] = buf[j·16 + k]: 16×16 blocks transposed in registers, scalar
    # copies for the last PQ % 16 pixels and for fewer than 16 channels
    K, PQ = out.shape[1], out.shape[2] * out.shape[3]
    full = PQ // LANES * LANES
    o = n * K * PQ  # out[n, 0, 0, 0]
    j_lo = 0
    if K == LANES:
        for j in range(0, full, LANES):
            transpose16(buf, j * LANES, LANES, out, o + j, PQ)
        j_lo = full
    for k in range(K):
        for j in range(j_lo, PQ):
            store_at(out, o + k * PQ + j, load_at(buf, j * LANES + k))


@njit(inline="always")
def padded(x, pt, pl, Hp, Wp):
    """Whether the (Hp, Wp) planes the kernels read differ from x's own: padding, or a
    plane wider than x's (then an image is copied, copy_padded, into a zeroed buffer)."""
    return pt != 0 or pl != 0 or Hp != x.shape[2] or Wp != x.shape[3]


@njit(inline="always")
def copy_padded(x, n, dst, pt, pl, Hp, Wp):
    """dst[(c·Hp + h + pt)·Wp + w + pl] = x[n, c, h, w] for the rows and columns of image
    n inside the (Hp, Wp) plane; the rest of dst is left as it is (its zeros)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    h_lo, h_hi = max(0, -pt), min(H, Hp - pt)
    w_lo, w_hi = max(0, -pl), min(W, Wp - pl)
    for c in range(C):
        for h in range(h_lo, h_hi):
            o = (c * Hp + h + pt) * Wp + pl
            dst[o + w_lo:o + w_hi] = x[n, c, h, w_lo:w_hi]


def _fwd_kvec16_px(x, wp, offs, out, pt, pl, Hp, Wp, xp_work, buf_work):
    # The AVX2 run without shifted copies, from x (N, C, H, W) C-contiguous itself where
    # unpadded, else from this thread's zero-padded copy of the image, xp_work[t] as
    # (C, Hp, Wp) with Hp = P + dh·(R − 1), Wp = Q + dw·(S − 1) (np.pad of the whole batch,
    # serial, had cost 20% of an 8×6×28² → 16 5×5 'same' forward). offs[t] = (c·Hp +
    # r·dh)·Wp + s·dw. An image's shifted copies (C·S·Hp·Q floats), its output buffer and
    # the weights overflowed Zen 1's 32 KiB L1 on LeNet conv2.
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    PQ = P * Q
    copy = padded(x, pt, pl, Hp, Wp)
    xf = x.reshape(-1)
    for n in prange(N):
        buf = buf_work[get_thread_id()]
        src = xf
        img = n * C * H * W
        if copy:
            src = xp_work[get_thread_id()]
            src[:] = 0
            copy_padded(x, n, src, pt, pl, Hp, Wp)
            img = 0
        for j0 in range(0, PQ, TJ_AVX2):
            _tile_avx2_px(src, _window(j0, PQ, Q, Wp, img), _window(j0 + 1, PQ, Q, Wp, img),
                          _window(j0 + 2, PQ, Q, Wp, img), _window(j0 + 3, PQ, Q, Wp, img),
                          _window(j0 + 4, PQ, Q, Wp, img), _window(j0 + 5, PQ, Q, Wp, img),
                          offs, wp, buf, j0 * LANES)
        _to_planes(buf, out, n)


def _fwd_kvec16_blocks(x, wp, out, R, S, pt, pl, dh, dw, Hp, Wp, xp_work, buf_work):
    # The 5×5 pixel blocks (AVX-512 hosts, P and Q at least BLOCK), from x itself where
    # unpadded, else from this thread's zero-padded copy of the image (as _fwd_kvec16_px).
    # Blocks at p0 = min(p, P − 5), q0 = min(q, Q − 5): the last of a row or column
    # overlaps the one before, its shared pixels computed twice, the same way.
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    copy = padded(x, pt, pl, Hp, Wp)
    xf = x.reshape(-1)
    for n in prange(N):
        buf = buf_work[get_thread_id()]
        src, img = xf, n * C * H * W
        if copy:
            src, img = xp_work[get_thread_id()], 0
            src[:] = 0
            copy_padded(x, n, src, pt, pl, Hp, Wp)
        for p in range(0, P, BLOCK):
            p0 = min(p, P - BLOCK)
            for q in range(0, Q, BLOCK):
                q0 = min(q, Q - BLOCK)
                _block(src, img + p0 * Wp + q0, C, R, S, Hp * Wp, Wp, dh, dw, wp, buf, (p0 * Q + q0) * LANES, Q)
        _to_planes(buf, out, n)


def _fwd_kvec16(x, wp, offs, out, pt, pl, dw, S, Hp, xs_work, buf_work):
    # out (N, K, P, Q) and x (N, C, H, W) C-contiguous; wp (C·R·S·16,); offs (C·R·S,);
    # The wide tile's run of TJ pixels (AVX-512 hosts).
    N = x.shape[0]
    P, Q = out.shape[2], out.shape[3]
    PQ = P * Q
    for n in prange(N):
        xs = xs_work[get_thread_id()]
        buf = buf_work[get_thread_id()]
        _fill(x, n, xs, pt, pl, dw, S, Hp, Q)
        for j0 in range(0, PQ, TJ):
            _tile(xs, j0, offs, wp, buf, j0 * LANES)
        _to_planes(buf, out, n)


@functools.lru_cache(maxsize=None)
def _compiled():
    # compiled in a child process, loaded from Numba's cache (kernels.precompile: register-
    # tiled kernels JIT-compiled in-process ran at half speed)
    f1, f2, f4 = (types.Array(types.float32, d, "C") for d in (1, 2, 4))
    ip = types.intp
    i8 = types.Array(types.int64, 1, "C")
    copies = njit_cached(_fwd_kvec16, types.void(f4, f1, i8, f4, ip, ip, ip, ip, ip, f2, f2), "_compiled", parallel=True)
    windows = njit_cached(_fwd_kvec16_px, types.void(f4, f1, i8, f4, ip, ip, ip, ip, f2, f2), "_compiled",
                          parallel=True)
    blocks = njit_cached(_fwd_kvec16_blocks, types.void(f4, f1, f4, ip, ip, ip, ip, ip, ip, ip, ip, f2, f2),
                         "_compiled", parallel=True)
    return copies, windows, blocks


# An image's shifted copies stay in L2 (C·S·Hp·Q floats at most).
_MAX_COPY = 1 << 16


def run_pixels() -> int:
    """Output pixels per register tile: TJ where convcore's 16-lane kernels run
    (gemm.cpu.enabled), TJ_AVX2 on AVX2 hosts without AVX-512 (cpu_kvec.available)."""
    from ..gemm.cpu import enabled

    return TJ if enabled() else TJ_AVX2


def applies(x, out, geom) -> bool:
    """float32 on a host where it runs (cpu_kvec.available: with the 25-pixel run where
    convcore's 16-lane kernels do, with the 6-pixel one on AVX2 hosts), dense stride 1, 12
    to 16 output channels (at least 3/4 of the lanes used), at least 8 images (one per
    prange iteration) and an image's copies within _MAX_COPY floats."""
    from .cpu_kvec import available

    Hp = geom.P + geom.dilation[0] * (geom.R - 1)
    return (x.dtype == out.dtype == np.float32 and available() and geom.groups == 1 and geom.stride == (1, 1)
            and 12 <= geom.K <= LANES and geom.N >= 8 and geom.C * geom.S * Hp * geom.Q <= _MAX_COPY)


@functools.lru_cache(maxsize=64)
def _copy_offsets(C, R, S, Hp, Q, dh):
    # tap (c, r, s) reads the shifted copies at ((c·S + s)·Hp + r·dh)·Q + j (7 us a call
    # to build, 2% of LeNet conv2's forward)
    return (((np.arange(C)[:, None, None] * S + np.arange(S)[None, None, :]) * Hp
             + np.arange(R)[None, :, None] * dh) * Q).reshape(-1).astype(np.int64)


def _blocks_fit(P, Q):
    # the 5×5 pixel blocks (_fwd_kvec16_blocks) need an output plane of 5 × 5 or more
    return P >= BLOCK and Q >= BLOCK


def kvec16_fwd(x, w, out, geom):
    """out = conv2d(x, w) for a dense stride-1 layer with at most 16 output channels (any
    padding and dilation); out C-contiguous."""
    x = np.ascontiguousarray(x)
    K, C, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    (pt, _, pl, _), (dh, dw) = geom.padding, geom.dilation
    threads = config.NUMBA_NUM_THREADS
    tj = run_pixels()
    buf = scratch("conv2d.kvec16_out", (threads, -(-(P * Q) // tj) * tj * LANES), np.float32)
    wp = np.zeros((C, R, S, LANES), np.float32)
    wp[..., :K] = w.transpose(1, 2, 3, 0)
    copies, windows, blocks = _compiled()
    Hp = P + dh * (R - 1)
    if tj == TJ and _blocks_fit(P, Q):
        Wp = Q + dw * (S - 1)
        xp = scratch("conv2d.kvec16_x", (threads, C * Hp * Wp), np.float32)
        blocks(x, wp.reshape(-1), out, R, S, pt, pl, dh, dw, Hp, Wp, xp, buf)
        return
    if tj == TJ_AVX2:
        Wp = Q + dw * (S - 1)
        xp = scratch("conv2d.kvec16_x", (threads, C * Hp * Wp), np.float32)
        offs = ((np.arange(C)[:, None, None] * Hp + np.arange(R)[None, :, None] * dh) * Wp
                + np.arange(S)[None, None, :] * dw).reshape(-1).astype(np.int64)
        windows(x, wp.reshape(-1), offs, out, pt, pl, Hp, Wp, xp, buf)
        return
    size = C * S * Hp * Q
    # slack the last run reads past the copies (and the last row's 16-lane copy spills into)
    xs = scratch("conv2d.kvec16_x", (threads, size + max(tj, LANES)), np.float32)
    xs[:, size:] = 0
    copies(x, wp.reshape(-1), _copy_offsets(C, R, S, Hp, Q, dh), out, pt, pl, dw, S, Hp, xs, buf)
