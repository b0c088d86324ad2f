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
lanes do useful work at LeNet's 5×5). Here a register tile of OB = 6 output planes × 2 rows
(12 zmm accumulators) takes, per tap (input plane i, r, s), two masked row loads and six
broadcast weights into 12 FMAs; the rows of a tap that fall outside the input plane are
skipped (both) or loaded as zeros (one), and the columns outside it are masked off, so the
padding costs no reads. At LeNet's layer 58% of the FMA lanes are useful (14 of 16
columns; the tile's row pairs at the plane's top and bottom edges).

Threads: one prange iteration per (image, pair of output rows, block of OB output planes,
block of 16 columns); each writes only its own outputs. The packed weight (OB planes
innermost, zeros past O) is built once per call.
"""
# ruff: noqa: E702 -- the tile's six planes one line each
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.simd import LANES, vbroadcast_load, vfma, vload_lanes, vstore_first, vzero

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


@njit(inline="always")
def _clamp(value):
    return max(0, min(LANES, value))


@njit(inline="always")
def _store(of, at, Wo, a, b, count, second, plane):
    # one plane's two rows of the tile (the second if inside the output, the plane if < O)
    if plane:
        vstore_first(of, at, a, count)
        if second:
            vstore_first(of, at + Wo, b, count)


@njit(parallel=True, cache=True)
def _correlate(inp, wpk, out, ph, pw):
    N, I, Hi, Wi = inp.shape
    _, O, Ho, Wo = out.shape
    n_tiles, R, S = wpk.shape[0], wpk.shape[1], wpk.shape[2]
    row_pairs, col_blocks = (Ho + 1) // 2, (Wo + LANES - 1) // LANES
    inf, wf, of = inp.reshape(-1), wpk.reshape(-1), out.reshape(-1)
    plane = Hi * Wi
    tasks = N * row_pairs * n_tiles * col_blocks
    for task in prange(tasks):
        qb = task % col_blocks
        rest = task // col_blocks
        ot = rest % n_tiles
        rest //= n_tiles
        h0 = 2 * (rest % row_pairs)
        n = rest // row_pairs
        q0 = qb * LANES
        a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero(); a5 = vzero()
        b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero(); b5 = vzero()
        for r in range(R):
            i0 = h0 + r - ph
            # rows of this tap outside the input plane: skipped if both, else loaded as 0
            # (a second row past the output's last, Ho odd, is loaded but never stored)
            if i0 + 1 < 0 or i0 >= Hi:
                continue
            top = 0 <= i0
            bottom = i0 + 1 < Hi
            for s in range(S):
                c0 = q0 + s - pw  # input column of lane 0
                first = _clamp(-c0)
                end = _clamp(Wi - c0)
                end0 = end if top else 0
                end1 = end if bottom else 0
                at = (n * I * Hi + i0) * Wi + c0
                wk = ((ot * R + r) * S + s) * I * OB
                for i in range(I):
                    v0 = vload_lanes(inf, at + i * plane, first, end0)
                    v1 = vload_lanes(inf, at + i * plane + Wi, first, end1)
                    k = wk + i * OB
                    w = vbroadcast_load(wf, k); a0 = vfma(w, v0, a0); b0 = vfma(w, v1, b0)
                    w = vbroadcast_load(wf, k + 1); a1 = vfma(w, v0, a1); b1 = vfma(w, v1, b1)
                    w = vbroadcast_load(wf, k + 2); a2 = vfma(w, v0, a2); b2 = vfma(w, v1, b2)
                    w = vbroadcast_load(wf, k + 3); a3 = vfma(w, v0, a3); b3 = vfma(w, v1, b3)
                    w = vbroadcast_load(wf, k + 4); a4 = vfma(w, v0, a4); b4 = vfma(w, v1, b4)
                    w = vbroadcast_load(wf, k + 5); a5 = vfma(w, v0, a5); b5 = vfma(w, v1, b5)
        count = min(LANES, Wo - q0)
        second = h0 + 1 < Ho
        o0 = ot * OB
        at = ((n * O + o0) * Ho + h0) * Wo + q0
        step = Ho * Wo
        _store(of, at, Wo, a0, b0, count, second, True)
        _store(of, at + step, Wo, a1, b1, count, second, o0 + 1 < O)
        _store(of, at + 2 * step, Wo, a2, b2, count, second, o0 + 2 < O)
        _store(of, at + 3 * step, Wo, a3, b3, count, second, o0 + 3 < O)
        _store(of, at + 4 * step, Wo, a4, b4, count, second, o0 + 4 < O)
        _store(of, at + 5 * step, Wo, a5, b5, count, second, o0 + 5 < O)


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


def rows_dgrad(w, dy, dx, geom):
    """dX of a layer ``applies`` accepts: the correlation of dY with each filter turned 180°,
    K ↔ C swapped."""
    pt, _, pl, _ = geom.padding
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    correlate(dy, flipped, dx, geom.R - 1 - pt, geom.S - 1 - pl)
