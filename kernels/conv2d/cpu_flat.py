"""Stride-1 dense conv2d (groups == 1) on flattened padded planes, for small planes and
few channels (LeNet-like layers), where im2col + BLAS spends more time copying columns
than multiplying. Same index notation as cpu_direct.

The input is zero-padded once to (N, C, Hp, Wp) with Wp = Q + (S−1)·dw, so tap (c, r, s)
of output (p, q) reads flat element c·Hp·Wp + (p + r·dh)·Wp + q + s·dw of the image: for
a fixed tap that is ONE contiguous loop over the L = (P−1)·Wp + Q flat outputs (columns
q >= Q of each row are scratch, dropped at the end), and the C·R·S taps of a whole image
run through the fused four-tap loop of the depthwise kernels. (The forward, the weight
gradient and the input gradient where it is a forward conv run register-blocked in
cpu_kblock; this module keeps the input-gradient scatter and pad_input.)

The input gradient scatters each tap into a padded buffer of its input plane, summing
the K output planes four at a time through the same fused loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu_depthwise import _crop_plane, _fwd_taps


def pad_input(x, top, bottom, left, right):
    """x zero-padded by (top, bottom, left, right); x itself when there is no padding.
    Negative bottom/right padding (conv_transpose's output_padding) crops instead."""
    x = x[:, :, :x.shape[2] + min(bottom, 0), :x.shape[3] + min(right, 0)]
    bottom, right = max(bottom, 0), max(right, 0)
    if top == bottom == left == right == 0:
        return np.ascontiguousarray(x)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


@njit(parallel=True, cache=True, fastmath=True)
def _dgrad_flat(w_t, dyp, dx, pt, pl, dh, dw, zero):
    # dx[n, c, h, x] = Σ_k,r,s dy[n, k, p, q] · w[k, c, r, s] with h = p − pt + r·dh,
    # x = q − pl + s·dw. dyp is dy with its rows padded to width Wp = W + pl + pr (zeros in
    # columns q >= Q), w_t[c, r, s, k] = w[k, c, r, s]. One prange iteration per input
    # plane (n, c): it scatters into a padded buffer of its own plane only; for each tap
    # the K output planes are summed four at a time (the fused loop of the forward).
    N, K, P, Wp = dyp.shape
    C, R, S = w_t.shape[0], w_t.shape[1], w_t.shape[2]
    Q = Wp - (S - 1) * dw
    Hp = P + (R - 1) * dh
    L = (P - 1) * Wp + Q
    offs = np.empty(K, np.int64)
    for k in range(K):
        offs[k] = k * P * Wp
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        xb = np.zeros(Hp * Wp, dx.dtype)
        yf = dyp[n].reshape(-1)
        for r in range(R):
            for s in range(S):
                _fwd_taps(xb[r * dh * Wp + s * dw:], yf, offs, w_t[c, r, s], L)
        _crop_plane(xb, Wp, pt, pl, dx[n, c], zero)  # Hp = pt + H + pb, Wp = pl + W + pr


def flat_dgrad(w, dy, out, geom):
    (_, _, pl, pr), (dh, dw) = geom.padding, geom.dilation
    w_t = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
    dyp = np.pad(dy, ((0, 0), (0, 0), (0, 0), (0, pl + geom.W + pr - geom.Q)))
    _dgrad_flat(w_t, dyp, out, geom.padding[0], pl, dh, dw, out.dtype.type(0))
