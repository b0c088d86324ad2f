"""Dense stride-1 correlation onto few output planes, 16 columns of a row in one vector:
the input gradient of layers with MIN_PLANES to OB input channels (LeNet's second layer, 16
→ 6 channels 5×5 on 14² planes) and the forward of layers with as many output channels
(LeNet's first, 1 → 6 channels 5×5 on 32² planes), float32 where convcore's 16-lane kernels
run (gemm.cpu.enabled).

    out[n, o, h, w] = Σ_{i, r, s} wt[o, i, r, s] · inp[n, i, h + r − ph, w + s − pw]

(inp read as 0 outside its plane). The forward is that with inp = x, wt = W, ph = pad_top,
pw = pad_left; the input gradient with inp = dY, wt = W with K ↔ C swapped and each filter
turned 180°, ph = R − 1 − pad_top, pw = S − 1 − pad_left.

Why not cpu_flat_simd's flat planes there: dY padded by R − 1 on every side turns 10² into
18² planes, so a 14² output plane is 248 flat positions of which 196 are kept, and every
tap of every kept position is multiplied, the padding's zeros included (35% of the FMA
lanes do useful work at LeNet's 5×5). Here a register tile of OB = 6 output planes × RB = 4
rows (24 zmm accumulators) takes, per tap (input plane i, r, s), four masked row loads and
six broadcast weights into 24 FMAs; the rows of a tap that fall outside the input plane are
skipped (all four) or loaded as zeros, and the columns outside it are masked off, so the
padding costs no reads. At LeNet conv2's input gradient 14 of 16 columns are useful, and the
tile computes 16 rows for 14. Four rows rather than two (12 accumulators): time 4 rows / 2
rows, 2 threads, same process, LeNet conv1's forward (one input plane: the per-tap set-up
weighs most) 0.61-0.67, 8×3×32² 'same' forward 0.79-0.81, 8×6×32² → 32 3×3 input gradient
0.87-0.88; LeNet conv2's input gradient 1.03-1.04 (the extra edge rows).

Threads: one prange iteration per (image, block of RB output rows, block of OB output
planes, block of 16 columns); each writes only its own outputs. The packed weight (OB
planes innermost, zeros past O) is built once per call.

The weight gradient of the forward's layers (_wgrad): dW[k, c, r, s] = Σ_n Σ_{p,q} dY[n, k,
p, q] · x[n, c, p + r − pt, q + s − pl] by a tile of KW = 3 output channels × SW = 5 taps
of a filter row (15 accumulators of 16 output columns), per (image, output row, column
block) 3 dY loads and 5 shifted x loads into 15 FMAs; the masks (x's columns inside the
row and before the output row's end, so a dY lane of 0 never meets an Inf past it) are
made once per column block, outside the image and row loops (inside them the kernel ran
3.7× slower). One prange iteration per (block of images, c, r, block of taps, block of
output channels); each sums its 15 accumulators across lanes into its own slot, and the
IMAGE_BLOCKS fixed blocks are added in order (deterministic for any thread count). LeNet
conv1 (128×1×32² → 6 5×5), 2 threads: 0.23-0.26 ms, against 0.36-0.44 by cpu_wgrad_simd
and 0.62-0.92 by PyTorch.
"""
# ruff: noqa: E702 -- the tile's six planes one line each
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.simd import LANES, lanes, vbroadcast_load, vfma, vload_lanes, vstore_first, vsum, vzero
from .cpu_winograd import flipped_transposed

OB = 6        # output planes per tile
MIN_PLANES = 4  # at 3 input channels half the tile's FMAs would feed padding planes


def _dense_stride1(geom, dtype):
    return (geom.groups == 1 and geom.stride == (1, 1) and geom.dilation == (1, 1)
            and np.dtype(dtype) == np.float32 and gemm_enabled())


def applies(geom, dtype) -> bool:
    """The input gradient of a dense stride-1 layer without dilation whose input has
    MIN_PLANES to OB channels, float32, where convcore's 16-lane kernels run."""
    return _dense_stride1(geom, dtype) and MIN_PLANES <= geom.C <= OB


def applies_fwd(geom, dtype) -> bool:
    """The forward of such a layer with MIN_PLANES to OB output channels."""
    return _dense_stride1(geom, dtype) and MIN_PLANES <= geom.K <= OB


def applies_wgrad(geom, dtype) -> bool:
    """Its weight gradient (the same layers as applies_fwd)."""
    return applies_fwd(geom, dtype)


RB = 4        # output rows per tile


@njit(inline="always")
def _store(of, at, Wo, a, b, c, d, count, rows, plane):
    # one plane's RB rows of the tile (those inside the output: ``rows``; the plane if < O)
    if plane:
        vstore_first(of, at, a, count)
        if rows > 1:
            vstore_first(of, at + Wo, b, count)
        if rows > 2:
            vstore_first(of, at + 2 * Wo, c, count)
        if rows > 3:
            vstore_first(of, at + 3 * Wo, d, count)


@njit(parallel=True, cache=True)
def _correlate(inp, wpk, out, ph, pw):
    N, I, Hi, Wi = inp.shape
    _, O, Ho, Wo = out.shape
    n_tiles, R, S = wpk.shape[0], wpk.shape[1], wpk.shape[2]
    row_blocks, col_blocks = (Ho + RB - 1) // RB, (Wo + LANES - 1) // LANES
    inf, wf, of = inp.reshape(-1), wpk.reshape(-1), out.reshape(-1)
    plane = Hi * Wi
    tasks = N * row_blocks * n_tiles * col_blocks
    for task in prange(tasks):
        qb = task % col_blocks
        rest = task // col_blocks
        ot = rest % n_tiles
        rest //= n_tiles
        h0 = RB * (rest % row_blocks)
        n = rest // row_blocks
        q0 = qb * LANES
        a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero(); a5 = vzero()
        b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero(); b5 = vzero()
        c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero(); c5 = vzero()
        d0 = vzero(); d1 = vzero(); d2 = vzero(); d3 = vzero(); d4 = vzero(); d5 = vzero()
        for r in range(R):
            i0 = h0 + r - ph
            # rows of this tap outside the input plane: skipped if all, else loaded as 0
            # (rows past the output's last are loaded but never stored)
            if i0 + RB - 1 < 0 or i0 >= Hi:
                continue
            for s in range(S):
                col = q0 + s - pw  # input column of lane 0
                first = lanes(-col)
                end = lanes(Wi - col)
                e0 = end if 0 <= i0 < Hi else 0
                e1 = end if 0 <= i0 + 1 < Hi else 0
                e2 = end if 0 <= i0 + 2 < Hi else 0
                e3 = end if 0 <= i0 + 3 < Hi else 0
                at = (n * I * Hi + i0) * Wi + col
                wk = ((ot * R + r) * S + s) * I * OB
                for i in range(I):
                    o = at + i * plane
                    v0 = vload_lanes(inf, o, first, e0)
                    v1 = vload_lanes(inf, o + Wi, first, e1)
                    v2 = vload_lanes(inf, o + 2 * Wi, first, e2)
                    v3 = vload_lanes(inf, o + 3 * Wi, first, e3)
                    k = wk + i * OB
                    w = vbroadcast_load(wf, k)
                    a0 = vfma(w, v0, a0); b0 = vfma(w, v1, b0); c0 = vfma(w, v2, c0); d0 = vfma(w, v3, d0)
                    w = vbroadcast_load(wf, k + 1)
                    a1 = vfma(w, v0, a1); b1 = vfma(w, v1, b1); c1 = vfma(w, v2, c1); d1 = vfma(w, v3, d1)
                    w = vbroadcast_load(wf, k + 2)
                    a2 = vfma(w, v0, a2); b2 = vfma(w, v1, b2); c2 = vfma(w, v2, c2); d2 = vfma(w, v3, d2)
                    w = vbroadcast_load(wf, k + 3)
                    a3 = vfma(w, v0, a3); b3 = vfma(w, v1, b3); c3 = vfma(w, v2, c3); d3 = vfma(w, v3, d3)
                    w = vbroadcast_load(wf, k + 4)
                    a4 = vfma(w, v0, a4); b4 = vfma(w, v1, b4); c4 = vfma(w, v2, c4); d4 = vfma(w, v3, d4)
                    w = vbroadcast_load(wf, k + 5)
                    a5 = vfma(w, v0, a5); b5 = vfma(w, v1, b5); c5 = vfma(w, v2, c5); d5 = vfma(w, v3, d5)
        count = min(LANES, Wo - q0)
        rows = min(RB, Ho - h0)
        o0 = ot * OB
        at = ((n * O + o0) * Ho + h0) * Wo + q0
        step = Ho * Wo
        _store(of, at, Wo, a0, b0, c0, d0, count, rows, True)
        _store(of, at + step, Wo, a1, b1, c1, d1, count, rows, o0 + 1 < O)
        _store(of, at + 2 * step, Wo, a2, b2, c2, d2, count, rows, o0 + 2 < O)
        _store(of, at + 3 * step, Wo, a3, b3, c3, d3, count, rows, o0 + 3 < O)
        _store(of, at + 4 * step, Wo, a4, b4, c4, d4, count, rows, o0 + 4 < O)
        _store(of, at + 5 * step, Wo, a5, b5, c5, d5, count, rows, o0 + 5 < O)


KW = 3        # the weight gradient's tile: KW output channels × SW taps of a filter row
SW = 5
IMAGE_BLOCKS = 16  # the weight gradient's partial sums: fixed blocks of images


@njit(inline="always")
def _x_lanes(c0, end, W):
    # the lanes of 16 input columns from c0 inside the row (0 <= column < W) and before
    # ``end`` (the output row's last column): (first, end) for vload_lanes
    first = lanes(-c0)
    return first, max(first, min(end, W - c0))


@njit(parallel=True, cache=True)
def _wgrad(x, dy, part, pt, pl, R, S):
    # part[b, k, c, r, s] = Σ_{n in block b} Σ_{p, q} dy[n, k, p, q] · x[n, c, p + r − pt, q + s − pl]
    # One prange iteration per (block of images b, input channel c, filter row r, block of
    # SW taps from s0, block of KW output channels from k0): 15 accumulators of 16 columns,
    # per (image, output row, 16-column block) KW dY loads and SW shifted x loads into 15
    # FMAs; a tap or channel past S or K computes a copy of the last one, not stored.
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    B = part.shape[0]
    per = -(-N // B)
    s_blocks, k_blocks = -(-S // SW), -(-K // KW)
    xf, gf = x.reshape(-1), dy.reshape(-1)
    for task in prange(B * C * R * s_blocks * k_blocks):
        kb = task % k_blocks
        rest = task // k_blocks
        sb = rest % s_blocks
        rest //= s_blocks
        r = rest % R
        rest //= R
        c = rest % C
        b = rest // C
        k0, s0 = kb * KW, sb * SW
        ka, kb_, kc = k0, min(k0 + 1, K - 1), min(k0 + 2, K - 1)
        # the input column of output column 0 for each tap of the block
        sa, sb_, sc = s0 - pl, min(s0 + 1, S - 1) - pl, min(s0 + 2, S - 1) - pl
        sd, se = min(s0 + 3, S - 1) - pl, min(s0 + 4, S - 1) - pl
        a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero()
        b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero()
        c0_ = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero(); c4 = vzero()
        for q0 in range(0, Q, LANES):
            # masks per column block, out of the image and row loops
            end = min(LANES, Q - q0)  # lanes of output columns q < Q
            fa, ea = _x_lanes(q0 + sa, end, W)
            fb, eb = _x_lanes(q0 + sb_, end, W)
            fc, ec = _x_lanes(q0 + sc, end, W)
            fd, ed = _x_lanes(q0 + sd, end, W)
            fe, ee = _x_lanes(q0 + se, end, W)
            for n in range(b * per, min(N, (b + 1) * per)):
                for p in range(max(0, pt - r), min(P, H + pt - r)):  # rows p + r − pt inside x
                    at = ((n * C + c) * H + p + r - pt) * W + q0
                    g = n * K * P * Q + p * Q + q0
                    ga = vload_lanes(gf, g + ka * P * Q, 0, end)
                    gb = vload_lanes(gf, g + kb_ * P * Q, 0, end)
                    gc = vload_lanes(gf, g + kc * P * Q, 0, end)
                    v = vload_lanes(xf, at + sa, fa, ea)
                    a0 = vfma(ga, v, a0); b0 = vfma(gb, v, b0); c0_ = vfma(gc, v, c0_)
                    v = vload_lanes(xf, at + sb_, fb, eb)
                    a1 = vfma(ga, v, a1); b1 = vfma(gb, v, b1); c1 = vfma(gc, v, c1)
                    v = vload_lanes(xf, at + sc, fc, ec)
                    a2 = vfma(ga, v, a2); b2 = vfma(gb, v, b2); c2 = vfma(gc, v, c2)
                    v = vload_lanes(xf, at + sd, fd, ed)
                    a3 = vfma(ga, v, a3); b3 = vfma(gb, v, b3); c3 = vfma(gc, v, c3)
                    v = vload_lanes(xf, at + se, fe, ee)
                    a4 = vfma(ga, v, a4); b4 = vfma(gb, v, b4); c4 = vfma(gc, v, c4)
        sums = ((vsum(a0), vsum(a1), vsum(a2), vsum(a3), vsum(a4)),
                (vsum(b0), vsum(b1), vsum(b2), vsum(b3), vsum(b4)),
                (vsum(c0_), vsum(c1), vsum(c2), vsum(c3), vsum(c4)))
        for j in range(KW):
            if k0 + j < K:
                for u in range(SW):
                    if s0 + u < S:
                        part[b, k0 + j, c, r, s0 + u] = sums[j][u]


def pack(wt):
    """wt (O, I, R, S) as (⌈O/OB⌉, R, S, I, OB): a tap's OB weights side by side, zeros
    for the planes past O."""
    O, I, R, S = wt.shape
    tiles = -(-O // OB)
    padded = np.zeros((tiles * OB, I, R, S), np.float32)
    padded[:O] = wt
    return np.ascontiguousarray(padded.reshape(tiles, OB, I, R, S).transpose(0, 3, 4, 2, 1))


def correlate(inp, wt, out, ph, pw):
    """out[n, o, h, w] = Σ_{i, r, s} wt[o, i, r, s] · inp[n, i, h + r − ph, w + s − pw]
    (module docstring), all float32 and C-contiguous; every element of out is written."""
    _correlate(inp, pack(wt), out, ph, pw)


def rows_fwd(x, w, out, geom):
    """out = conv2d(x, w) (no bias) of a layer ``applies_fwd`` accepts."""
    pt, _, pl, _ = geom.padding
    correlate(np.ascontiguousarray(x), np.ascontiguousarray(w), out, pt, pl)


def rows_wgrad(x, dy, out, geom):
    """out (K, C, R, S) = the weight gradient of a layer ``applies_wgrad`` accepts; the images'
    partial sums (IMAGE_BLOCKS fixed blocks) added in order: the result does not depend on
    the thread count."""
    pt, _, pl, _ = geom.padding
    blocks = min(geom.N, IMAGE_BLOCKS)
    part = np.empty((blocks,) + tuple(out.shape), np.float32)
    _wgrad(np.ascontiguousarray(x), np.ascontiguousarray(dy), part, pt, pl, geom.R, geom.S)
    out[...] = part.sum(axis=0)


def rows_dgrad(w, dy, dx, geom):
    """dX of a layer ``applies`` accepts: the correlation of dY with each filter turned 180°,
    K ↔ C swapped."""
    pt, _, pl, _ = geom.padding
    correlate(dy, flipped_transposed(w, 1), dx, geom.R - 1 - pt, geom.S - 1 - pl)
