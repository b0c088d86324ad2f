"""Depthwise 3×3 conv2d, stride 1, padding 1, on planes at most MAX_WIDTH columns wide
(MobileNet's 56², 28², 14² and 7² layers), float32 where convcore's 16-lane kernels run
(gemm.cpu.enabled: AVX-512 hosts; on AVX2 the 20 live vectors would spill): 16 columns of
a row in one vector.

Same index notation as cpu_direct. Why not cpu_depthwise_strips there: on such planes its
strips, masks and block table cost more than the work (8×512×14², 2 threads: 0.42-0.46 ms,
while reading and writing the same 6.4 MB in cache took 0.04). Here a plane is taken 16
columns at a time, all its rows in order, each row 3 masked loads, 9 FMAs and one masked
store, all in registers:

- forward: out[p] = b + Σ_{r,s} w[r, s] · x[p + r − 1] shifted by s − 1 columns, with a
  window of the three input rows around p, each row loaded three times (lanes shifted by
  −1, 0, +1; masked so that a column past either edge of the row reads as 0 and nothing
  outside the row is read), bias and ReLU applied before the store;
- input gradient: the forward of dY with each 3×3 filter turned 180° (stride 1, padding 1:
  dX = full correlation of dY with the rotated filter, cropped by 1 = the same layer);
- weight gradient: dW[c, r, s] = Σ_n Σ_p dY[n, c, p] · x[n, c, p + r − 1] shifted by s − 1,
  nine vector accumulators per channel summed over images, column blocks and rows in a
  fixed order, then across lanes by a fixed tree (deterministic).

Wider planes keep the strips: at 8×32×112² (25 MB moved, past the cache) the two ran level
(time rows / strips: forward 1.01, input gradient 0.94, weight gradient 1.06), against 0.46-
0.52 at 2×128×56² and 0.28-0.34 at 8×512×14².

Threads: one prange iteration per output plane (forward, input gradient: each writes its own
plane) or per channel (weight gradient: its 9 weights).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.simd import LANES, vbroadcast, vbroadcast_load, vfma, vload_lanes, vrelu, vstore_first, vsum, vzero

MAX_WIDTH = 64


def applies(geom, dtype) -> bool:
    """Depthwise (one filter per channel), 3×3, stride 1, dilation 1, padding 1 on every side,
    planes at most MAX_WIDTH columns wide, float32, where convcore's 16-lane kernels run."""
    return (geom.Cg == 1 and geom.Kg == 1 and geom.R == geom.S == 3 and geom.stride == (1, 1)
            and geom.dilation == (1, 1) and tuple(geom.padding) == (1, 1, 1, 1) and geom.W <= MAX_WIDTH
            and np.dtype(dtype) == np.float32 and gemm_enabled())


@njit(inline="always")
def _row(xf, at, q0, W):
    # columns q − 1, q, q + 1 of the row at xf[at:at + W], for the 16 columns q = q0 + lane
    # (lanes past the row 0, and the columns past either edge of the row 0)
    n = min(LANES, W - q0)
    return (vload_lanes(xf, at + q0 - 1, 1 if q0 == 0 else 0, n), vload_lanes(xf, at + q0, 0, n),
            vload_lanes(xf, at + q0 + 1, 0, min(n, W - q0 - 1)))


@njit(parallel=True, cache=True)
def _fwd(x, w, b, out, has_bias, relu, flip):
    # out[n, c] = x[n, c] ⋆ w[c] (+ b[c], ReLU); flip: w[c] turned 180° (the input gradient)
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    wf = w.reshape(-1)
    plane = H * W
    for t in prange(N * C):
        c = t % C
        k = c * 9
        if flip:
            w00 = vbroadcast_load(wf, k + 8); w01 = vbroadcast_load(wf, k + 7); w02 = vbroadcast_load(wf, k + 6)  # noqa: E702
            w10 = vbroadcast_load(wf, k + 5); w11 = vbroadcast_load(wf, k + 4); w12 = vbroadcast_load(wf, k + 3)  # noqa: E702
            w20 = vbroadcast_load(wf, k + 2); w21 = vbroadcast_load(wf, k + 1); w22 = vbroadcast_load(wf, k)  # noqa: E702
        else:
            w00 = vbroadcast_load(wf, k); w01 = vbroadcast_load(wf, k + 1); w02 = vbroadcast_load(wf, k + 2)  # noqa: E702
            w10 = vbroadcast_load(wf, k + 3); w11 = vbroadcast_load(wf, k + 4); w12 = vbroadcast_load(wf, k + 5)  # noqa: E702
            w20 = vbroadcast_load(wf, k + 6); w21 = vbroadcast_load(wf, k + 7); w22 = vbroadcast_load(wf, k + 8)  # noqa: E702
        bias = vbroadcast(b[c]) if has_bias else vzero()
        base = t * plane
        for q0 in range(0, W, LANES):  # 16 columns at a time, all rows
            a0 = vzero(); a1 = vzero(); a2 = vzero()  # noqa: E702  (row p − 1: the top padding)
            b0, b1, b2 = _row(xf, base, q0, W)  # row p
            for p in range(H):
                if p + 1 < H:
                    c0, c1, c2 = _row(xf, base + (p + 1) * W, q0, W)
                else:
                    c0 = vzero(); c1 = vzero(); c2 = vzero()  # noqa: E702  (the bottom padding)
                acc = vfma(w00, a0, bias)
                acc = vfma(w01, a1, acc); acc = vfma(w02, a2, acc)  # noqa: E702
                acc = vfma(w10, b0, acc); acc = vfma(w11, b1, acc); acc = vfma(w12, b2, acc)  # noqa: E702
                acc = vfma(w20, c0, acc); acc = vfma(w21, c1, acc); acc = vfma(w22, c2, acc)  # noqa: E702
                if relu:
                    acc = vrelu(acc)
                vstore_first(of, base + p * W + q0, acc, min(LANES, W - q0))
                a0, a1, a2 = b0, b1, b2
                b0, b1, b2 = c0, c1, c2


@njit(parallel=True, cache=True)
def _wgrad(x, dy, dw):
    # dw[c, 0, r, s] = Σ_n Σ_p Σ_q dy[n, c, p, q] · x[n, c, p + r − 1, q + s − 1]
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    gf = dy.reshape(-1)
    plane = H * W
    for c in prange(C):
        s00 = vzero(); s01 = vzero(); s02 = vzero()  # noqa: E702
        s10 = vzero(); s11 = vzero(); s12 = vzero()  # noqa: E702
        s20 = vzero(); s21 = vzero(); s22 = vzero()  # noqa: E702
        for n in range(N):
            base = (n * C + c) * plane
            for q0 in range(0, W, LANES):
                a0 = vzero(); a1 = vzero(); a2 = vzero()  # noqa: E702
                b0, b1, b2 = _row(xf, base, q0, W)
                for p in range(H):
                    if p + 1 < H:
                        c0, c1, c2 = _row(xf, base + (p + 1) * W, q0, W)
                    else:
                        c0 = vzero(); c1 = vzero(); c2 = vzero()  # noqa: E702
                    g = vload_lanes(gf, base + p * W + q0, 0, min(LANES, W - q0))
                    s00 = vfma(g, a0, s00); s01 = vfma(g, a1, s01); s02 = vfma(g, a2, s02)  # noqa: E702
                    s10 = vfma(g, b0, s10); s11 = vfma(g, b1, s11); s12 = vfma(g, b2, s12)  # noqa: E702
                    s20 = vfma(g, c0, s20); s21 = vfma(g, c1, s21); s22 = vfma(g, c2, s22)  # noqa: E702
                    a0, a1, a2 = b0, b1, b2
                    b0, b1, b2 = c0, c1, c2
        dw[c, 0, 0, 0] = vsum(s00); dw[c, 0, 0, 1] = vsum(s01); dw[c, 0, 0, 2] = vsum(s02)  # noqa: E702
        dw[c, 0, 1, 0] = vsum(s10); dw[c, 0, 1, 1] = vsum(s11); dw[c, 0, 1, 2] = vsum(s12)  # noqa: E702
        dw[c, 0, 2, 0] = vsum(s20); dw[c, 0, 2, 1] = vsum(s21); dw[c, 0, 2, 2] = vsum(s22)  # noqa: E702


def rows_fwd(x, w, b, out, relu):
    has_bias = b is not None
    _fwd(x, w, b if has_bias else w.reshape(-1)[:1], out, has_bias, relu, False)


def rows_dgrad(w, dy, dx):
    _fwd(dy, w, w.reshape(-1)[:1], dx, False, False, True)


def rows_wgrad(x, dy, dw):
    _wgrad(x, dy, dw)
