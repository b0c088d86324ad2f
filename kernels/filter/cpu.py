"""filter2d: Numba CPU kernel.

out[b, i, j] = Σ_r,s k[r, s] · x[b, src(i + r − ar), src(j + s − as)] (k flipped when convolving),
with src() the boundary mode of convcore.reference.filter. Mode codes are indices into
``MODES``: 0 reflect, 1 constant, 2 nearest, 3 mirror, 4 wrap.
One ``prange`` iteration per output row (b, i); see _filter2d for the loop order.
"""
from __future__ import annotations

from numba import njit, prange

from .modes import source_index

_source = njit(inline="always")(source_index)


@njit(parallel=True, cache=True, fastmath=True)
def _filter2d(x, k, out, mode, cval, flip):
    # One prange iteration per output row (b, i), accumulated tap by tap into the row, so the
    # interior columns (windows wholly inside the image) form a contiguous, vectorised loop and
    # only the border columns pay for the boundary mode. Each element sums its taps in (r, s) order.
    B, H, W = x.shape
    R, S = k.shape
    ar = (R - 1) // 2 if flip else R // 2
    as_ = (S - 1) // 2 if flip else S // 2
    j_lo = min(as_, W)  # interior columns: j − as ≥ 0 and j − as + S ≤ W
    j_hi = max(W - S + 1 + as_, j_lo)
    for bi in prange(B * H):
        b = bi // H
        i = bi % H
        for j in range(W):
            out[b, i, j] = 0.0
        for r in range(R):
            kr = R - 1 - r if flip else r
            h = _source(i + r - ar, H, mode)
            for s in range(S):
                kv = k[kr, S - 1 - s if flip else s]
                offset = s - as_
                if h >= 0:
                    for j in range(j_lo, j_hi):
                        out[b, i, j] += kv * x[b, h, j + offset]
                else:
                    for j in range(j_lo, j_hi):
                        out[b, i, j] += kv * cval
                for j in range(j_lo):
                    w = _source(j + offset, W, mode)
                    out[b, i, j] += kv * (cval if h < 0 or w < 0 else x[b, h, w])
                for j in range(j_hi, W):
                    w = _source(j + offset, W, mode)
                    out[b, i, j] += kv * (cval if h < 0 or w < 0 else x[b, h, w])


def filter2d(x, k, out, mode, cval, convolve):
    _filter2d(x, k, out, mode, out.dtype.type(cval), convolve)
