"""conv2d by Winograd minimal filtering, F(m×m, 3×3) for m = 2 or 4 (Lavin & Gray, 2015):
3×3 kernels, stride 1, dilation 1, any padding (even negative: the input gradient uses it).

    out tile (m×m) = Aᵀ [ U ⊙ V ] A,   U = G g Gᵀ (α×α, α = m + 2),   V = Bᵀ d B,
    d = the α×α input patch under the tile. Summed over input channels c, the product
    becomes α² independent GEMMs:  M[ξν] (Kg × T) = U[ξν] (Kg × Cg) · V[ξν] (Cg × T)
    per group, T = N·TH·TW tiles, TH = ⌈P/m⌉, TW = ⌈Q/m⌉.

Four steps: weight transform (prange over k) → input transform (prange over input
planes (n, c)) → one batched ``np.matmul`` (BLAS, outside any prange so BLAS threads are
not nested) → output transform (prange over output planes (n, k)) with the bias and
ReLU fused. Edge tiles read zeros beyond the input and write only the P×Q valid outputs.
Deterministic: every sum runs in a fixed order (BLAS's order is fixed for given shapes).

Index names: n batch, c/k input/output channel, g group, ξ/ν the two transform axes,
t tile (row-major (n, th, tw)), m output tile size, α = m + 2 the input tile size.
Literals would promote float32 to float64 in Numba, so the transform constants come in
``cst`` = [2, 4, 5, 8] in the data dtype.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# G (α×3) in float64: the weight transform runs in float64 and rounds once on store.
_G = {
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}
# Not fastmath's nnan/ninf: the fused ReLU must keep NaN (NaN < 0 is false), as _epilogue does.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


# ---------------------------------------------------------------- 1-D transforms
@njit(inline="always")
def _bt4(d0, d1, d2, d3, d4, d5, c2, c4, c5):
    """Bᵀd for F(4, 3)."""
    t1 = d4 - c4 * d2
    t2 = d3 - c4 * d1
    t3 = d4 - d2
    t4 = c2 * (d3 - d1)
    return c4 * d0 - c5 * d2 + d4, t1 + t2, t1 - t2, t3 + t4, t3 - t4, c4 * d1 - c5 * d3 + d5


@njit(inline="always")
def _at4(m0, m1, m2, m3, m4, m5, c2, c4, c8):
    """Aᵀm for F(4, 3)."""
    s12, d12 = m1 + m2, m1 - m2
    s34, d34 = m3 + m4, m3 - m4
    return m0 + s12 + s34, d12 + c2 * d34, s12 + c4 * s34, d12 + c8 * d34 + m5


@njit(inline="always")
def _bt2(d0, d1, d2, d3):
    """Bᵀd for F(2, 3)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always")
def _at2(m0, m1, m2, m3):
    """Aᵀm for F(2, 3)."""
    return m0 + m1 + m2, m1 - m2 - m3


# ---------------------------------------------------------------- weight transform
@njit(parallel=True, cache=True)
def _weight_transform(w, G, U):
    # U[ξ·α+ν, k, c] = Σ_r,s G[ξ,r] w[k,c,r,s] G[ν,s], in float64 (G is float64), rounded
    # once on store. One prange iteration per k; the inner loops run over c (vectorised).
    K, Cg = w.shape[0], w.shape[1]
    a = G.shape[0]
    for k in prange(K):
        wk = np.empty((3, 3, Cg))  # w[k] as float64, c innermost
        for c in range(Cg):
            for r in range(3):
                for s in range(3):
                    wk[r, s, c] = w[k, c, r, s]
        gw = np.empty((3, Cg))  # (G w[k])[ξ, s, :] for one ξ
        for i in range(a):
            g0, g1, g2 = G[i, 0], G[i, 1], G[i, 2]
            for s in range(3):
                for c in range(Cg):
                    gw[s, c] = g0 * wk[0, s, c] + g1 * wk[1, s, c] + g2 * wk[2, s, c]
            for j in range(a):
                h0, h1, h2 = G[j, 0], G[j, 1], G[j, 2]
                dst = U[i * a + j, k]
                for c in range(Cg):
                    dst[c] = gw[0, c] * h0 + gw[1, c] * h1 + gw[2, c] * h2


# ---------------------------------------------------------------- input transform
@njit(parallel=True, cache=True, fastmath=_FAST)
def _input_transform(x, V, pt, pl, m, TH, TW, cst):
    # V[ξ·α+ν, c, (n·TH+th)·TW+tw] = (Bᵀ d B)[ξ,ν], d[i,j] = x[n, c, th·m−pt+i, tw·m−pl+j] (0 outside).
    # One prange iteration per input plane (n, c); per tile row: α zero-padded input rows →
    # Bᵀ down the columns (contiguous, vectorised) → B along each tile's α columns.
    N, C, H, W = x.shape
    a = m + 2
    Wp = TW * m + 2
    c2, c4, c5 = cst[0], cst[1], cst[2]
    j_lo = min(max(pl, 0), Wp)  # padded columns [j_lo, j_hi) hold input columns j − pl
    j_hi = max(min(W + pl, Wp), j_lo)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        rows = np.zeros((a, Wp), V.dtype)
        tmp = np.empty((a, Wp), V.dtype)
        for th in range(TH):
            for i in range(a):
                h = th * m - pt + i
                row = rows[i]
                if h < 0 or h >= H:
                    row[:] = 0
                    continue
                row[:j_lo] = 0
                src = x[n, c, h, j_lo - pl:]
                dst = row[j_lo:j_hi]
                for j in range(dst.shape[0]):
                    dst[j] = src[j]
                row[j_hi:] = 0
            t0 = (n * TH + th) * TW
            if m == 4:
                for j in range(Wp):
                    tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j], tmp[4, j], tmp[5, j] = _bt4(
                        rows[0, j], rows[1, j], rows[2, j], rows[3, j], rows[4, j], rows[5, j], c2, c4, c5)
                for i in range(6):
                    for tw in range(TW):
                        j = tw * 4
                        v0, v1, v2, v3, v4, v5 = _bt4(tmp[i, j], tmp[i, j + 1], tmp[i, j + 2], tmp[i, j + 3],
                                                      tmp[i, j + 4], tmp[i, j + 5], c2, c4, c5)
                        t = t0 + tw
                        V[i * 6, c, t] = v0
                        V[i * 6 + 1, c, t] = v1
                        V[i * 6 + 2, c, t] = v2
                        V[i * 6 + 3, c, t] = v3
                        V[i * 6 + 4, c, t] = v4
                        V[i * 6 + 5, c, t] = v5
            else:
                for j in range(Wp):
                    tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j] = _bt2(rows[0, j], rows[1, j], rows[2, j], rows[3, j])
                for i in range(4):
                    for tw in range(TW):
                        j = tw * 2
                        v0, v1, v2, v3 = _bt2(tmp[i, j], tmp[i, j + 1], tmp[i, j + 2], tmp[i, j + 3])
                        t = t0 + tw
                        V[i * 4, c, t] = v0
                        V[i * 4 + 1, c, t] = v1
                        V[i * 4 + 2, c, t] = v2
                        V[i * 4 + 3, c, t] = v3


# ---------------------------------------------------------------- output transform
@njit(parallel=True, cache=True, fastmath=_FAST)
def _output_transform(M, out, b, has_bias, relu, m, TH, TW, cst):
    # out[n, k, th·m+x, tw·m+y] = (Aᵀ M[·, k, t] A)[x, y] + b[k], ReLU'd; only p < P, q < Q written.
    # One prange iteration per output plane (n, k): Aᵀ over ξ for all tiles of a tile row
    # (contiguous in t), then A along ν into a row buffer, then the valid columns out.
    N, K, P, Q = out.shape
    a = m + 2
    c2, c4, c8 = cst[0], cst[1], cst[3]
    zero = c2 - c2
    for nk in prange(N * K):
        n = nk // K
        k = nk % K
        tmp = np.empty((m, a, TW), out.dtype)
        rowbuf = np.empty((m, TW * m), out.dtype)
        bv = b[k] if has_bias else zero
        for th in range(TH):
            t0 = (n * TH + th) * TW
            if m == 4:
                for nu in range(6):
                    for tw in range(TW):
                        t = t0 + tw
                        tmp[0, nu, tw], tmp[1, nu, tw], tmp[2, nu, tw], tmp[3, nu, tw] = _at4(
                            M[nu, k, t], M[6 + nu, k, t], M[12 + nu, k, t], M[18 + nu, k, t], M[24 + nu, k, t],
                            M[30 + nu, k, t], c2, c4, c8)
                for i in range(4):
                    for tw in range(TW):
                        j = tw * 4
                        rowbuf[i, j], rowbuf[i, j + 1], rowbuf[i, j + 2], rowbuf[i, j + 3] = _at4(
                            tmp[i, 0, tw], tmp[i, 1, tw], tmp[i, 2, tw], tmp[i, 3, tw], tmp[i, 4, tw], tmp[i, 5, tw],
                            c2, c4, c8)
            else:
                for nu in range(4):
                    for tw in range(TW):
                        t = t0 + tw
                        tmp[0, nu, tw], tmp[1, nu, tw] = _at2(M[nu, k, t], M[4 + nu, k, t], M[8 + nu, k, t],
                                                              M[12 + nu, k, t])
                for i in range(2):
                    for tw in range(TW):
                        j = tw * 2
                        rowbuf[i, j], rowbuf[i, j + 1] = _at2(tmp[i, 0, tw], tmp[i, 1, tw], tmp[i, 2, tw], tmp[i, 3, tw])
            for i in range(min(m, P - th * m)):
                dst = out[n, k, th * m + i]
                src = rowbuf[i]
                for q in range(Q):
                    v = src[q] + bv
                    if relu and v < zero:
                        v = zero
                    dst[q] = v


# ---------------------------------------------------------------- driver
def tiles(geom, m):
    """(TH, TW): output tiles per plane for tile size m."""
    return -(-geom.P // m), -(-geom.Q // m)


def winograd_conv(x, w, b, out, pad_top, pad_left, groups, m, relu=False):
    """out = conv2d(x, w, stride 1, dilation 1, padding top/left = pad_top/pad_left) (+ b, ReLU).

    The bottom/right padding is implied by out's P×Q. w is (K, C/groups, 3, 3).
    """
    N, C = x.shape[0], x.shape[1]
    K, Cg = w.shape[0], w.shape[1]
    P, Q = out.shape[2], out.shape[3]
    TH, TW = -(-P // m), -(-Q // m)
    T = N * TH * TW
    a2 = (m + 2) ** 2
    dtype = out.dtype
    cst = np.array([2, 4, 5, 8], dtype=dtype)
    U = np.empty((a2, K, Cg), dtype=dtype)
    _weight_transform(w, _G[m], U)
    V = np.empty((a2, C, T), dtype=dtype)
    _input_transform(x, V, pad_top, pad_left, m, TH, TW, cst)
    M = np.empty((a2, K, T), dtype=dtype)
    Kg = K // groups
    np.matmul(U.reshape(a2, groups, Kg, Cg), V.reshape(a2, groups, Cg, T), out=M.reshape(a2, groups, Kg, T))
    has_bias = b is not None
    _output_transform(M, out, b if has_bias else cst, has_bias, relu, m, TH, TW, cst)


def flipped_transposed(w, groups):
    """The weight of the input gradient: per group K ↔ C swapped and rotated 180°,
    (K, Cg, 3, 3) → (C, Kg, 3, 3), so dX = conv(dY, that, padding 2 − p on each side)."""
    K, Cg, R, S = w.shape
    w5 = w.reshape(groups, K // groups, Cg, R, S)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(w5.transpose(0, 2, 1, 3, 4)).reshape(groups * Cg, K // groups, R, S)
