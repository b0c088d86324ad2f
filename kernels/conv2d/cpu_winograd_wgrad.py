"""conv2d weight gradient by Winograd F(m×m, 3×3), m = 2 or 4: the adjoint of cpu_winograd's forward.

The forward computes each output tile as  y = Aᵀ [U ⊙ V] A  with U = G g Gᵀ and V = Bᵀ d B.
Its weight gradient, summed over the tiles t and the batch, is therefore

    dU[ξν] (Kg × Cg) = Σ_t Ŷ[ξν] (Kg × T) · V[ξν]ᵀ (T × Cg),   Ŷ_t = A dy_t Aᵀ  (α×α from m×m),
    dW[k, c] = Gᵀ dU[·, k, c] G  (3×3 from α×α),

one GEMM per (ξ, ν) reduced over the T = N·TH·TW tiles: α² = 16 (F(2×2)) or 36 (F(4×4))
products per tile and (k, c) pair instead of 9·m² = 36 or 144, and no im2col matrix (the
direct GEMM path builds C·9 × N·P·Q of it). Edge tiles read zero gradient beyond P×Q.

Steps: V by cpu_winograd's input transform (the forward's, same padding) → Ŷ (prange over
blocks of gradient planes (n, k)) → one batched product (``kernels.gemm.cpu.matmul``, outside any prange) →
the inverse weight transform (prange over k). Deterministic: fixed order everywhere.
Index names as in cpu_winograd; A is α×m (the forward's Aᵀ transposed).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.cpu import matmul
from ..gemm.nt import sgemm_nt
from ..gemm.simd import load_at, store_at
from ..workspace import scratch
from . import cpu_winograd
from .cpu_winograd import _BLOCKS, _FAST, _G, _block_images, _chunk_images, _gather, _gather_index, input_transform

# gemm.nt for dU where the reduction over tiles is long, or the product has few rows (its
# transposed packing of V then weighs more against the FMAs); else the Goto GEMM (its B
# packed transposed). 2 threads, ms, nt / Goto, in chunks of images: 8×64×56² F(4×4) 4.1 /
# 4.5; 2×64×56² (392 tiles) 0.98 / 1.05; 8×128×28² (392) 4.8 / 4.6; 8×256×14² F(2×2) (392)
# 6.9 / 5.5; 2×256×14² (98) 3.4 / 1.7.
_NT_MIN_TILES = 1024
_NT_MAX_ROWS = 64

@njit(inline="always")
def _a4(d0, d1, d2, d3, c2, c4, c8):
    """A d for F(4, 3): A (6×4) has rows 1 0 0 0 / 1 1 1 1 / 1 −1 1 −1 / 1 2 4 8 / 1 −2 4 −8 / 0 0 0 1."""
    s02, s13 = d0 + d2, d1 + d3
    t02, t13 = d0 + c4 * d2, c2 * d1 + c8 * d3
    return d0, s02 + s13, s02 - s13, t02 + t13, t02 - t13, d3


@njit(inline="always")
def _a2(d0, d1):
    """A d for F(2, 3): A (4×2) has rows 1 0 / 1 1 / 1 −1 / 0 −1."""
    return d0, d0 + d1, d0 - d1, -d1


@njit(inline="always")
def _a_passes(D, E, Y, k, t0, n, m, c2, c4, c8):
    # Y[ξ·α+ν, k, t0 + t] = (A D[:, :, t] Aᵀ)[ξ, ν] for t < n: A along j into E[i, ν, t],
    # then along i, each one contiguous loop over n tiles (vectorised).
    a = m + 2
    for i in range(m):
        d0, d1 = D[i, 0], D[i, 1]
        e0, e1, e2, e3 = E[i, 0], E[i, 1], E[i, 2], E[i, 3]
        if m == 4:
            d2, d3 = D[i, 2], D[i, 3]
            e4, e5 = E[i, 4], E[i, 5]
            for t in range(n):
                e0[t], e1[t], e2[t], e3[t], e4[t], e5[t] = _a4(d0[t], d1[t], d2[t], d3[t], c2, c4, c8)
        else:
            for t in range(n):
                e0[t], e1[t], e2[t], e3[t] = _a2(d0[t], d1[t])
    for nu in range(a):
        f0, f1 = E[0, nu], E[1, nu]
        y0, y1, y2, y3 = Y[nu, k, t0:], Y[a + nu, k, t0:], Y[2 * a + nu, k, t0:], Y[3 * a + nu, k, t0:]
        if m == 4:
            f2, f3 = E[2, nu], E[3, nu]
            y4, y5 = Y[4 * a + nu, k, t0:], Y[5 * a + nu, k, t0:]
            for t in range(n):
                y0[t], y1[t], y2[t], y3[t], y4[t], y5[t] = _a4(f0[t], f1[t], f2[t], f3[t], c2, c4, c8)
        else:
            for t in range(n):
                y0[t], y1[t], y2[t], y3[t] = _a2(f0[t], f1[t])


@njit(parallel=True, cache=True, fastmath=_FAST)
def _grad_output_transform(dy, Y, m, TH, TW, cst):
    # Y[ξ·α+ν, k, (n·TH+th)·TW+tw] = Σ_i,j A[ξ,i] dy[n, k, th·m+i, tw·m+j] A[ν,j] (0 beyond P×Q).
    # prange over blocks of gradient planes (n, k); per plane, the m×m tiles are split into
    # their m² phases D[i, j, tile] (raw offsets: Numba's wraparound code for signed indices
    # would keep that strided pass scalar), then A runs along j and along i for all TH·TW
    # tiles at once (contiguous in the tile index: vectorised). dy is C-contiguous.
    N, K, P, Q = dy.shape
    a = m + 2
    L = TH * TW
    c2, c4, c8 = cst[0], cst[1], cst[3]
    zero = c2 - c2
    full = Q // m  # tile columns whose m gradient columns are all inside the plane
    per = -(-(N * K) // _BLOCKS)  # planes per prange block: scratch allocated once per block
    for blk in prange(-(-(N * K) // per)):
        D = np.empty((m, m, L), Y.dtype)
        E = np.empty((m, a, L), Y.dtype)
        for nk in range(blk * per, min((blk + 1) * per, N * K)):
            n = nk // K
            k = nk % K
            for th in range(TH):
                for i in range(m):
                    d = (i * m) * L + th * TW  # D[i, 0, th·TW]
                    p = th * m + i
                    if p >= P:
                        for j in range(m):
                            for tw in range(TW):
                                store_at(D, d + j * L + tw, zero)
                        continue
                    o = ((n * K + k) * P + p) * Q
                    if m == 4:
                        for tw in range(full):
                            q = o + 4 * tw
                            store_at(D, d + tw, load_at(dy, q))
                            store_at(D, d + L + tw, load_at(dy, q + 1))
                            store_at(D, d + 2 * L + tw, load_at(dy, q + 2))
                            store_at(D, d + 3 * L + tw, load_at(dy, q + 3))
                    else:
                        for tw in range(full):
                            q = o + 2 * tw
                            store_at(D, d + tw, load_at(dy, q))
                            store_at(D, d + L + tw, load_at(dy, q + 1))
                    for tw in range(full, TW):  # the last, partial tile column
                        for j in range(m):
                            q = tw * m + j
                            store_at(D, d + j * L + tw, load_at(dy, o + q) if q < Q else zero)
            _a_passes(D, E, Y, k, n * L, L, m, c2, c4, c8)


@njit(parallel=True, cache=True, fastmath=_FAST)
def _grad_output_transform_gather(dy, idx, Y, m, TH, TW, nb, cst):
    # _grad_output_transform for small planes: prange over (output channel k, block of nb
    # images); the tile phases D[i, j, tile] are gathered through idx[i·m+j, tile] (offset
    # from dy[n0, k], −1 past P×Q: _gather_index), then A along j and along i as loops over
    # all of the block's tiles. dy is C-contiguous.
    N, K, P, Q = dy.shape
    a = m + 2
    L = TH * TW
    c2, c4, c8 = cst[0], cst[1], cst[3]
    zero = c2 - c2
    blocks = -(-N // nb)
    for it in prange(K * blocks):
        k = it // blocks
        n0 = (it % blocks) * nb
        BL = (min(N, n0 + nb) - n0) * L
        D = np.empty((m, m, BL), Y.dtype)
        E = np.empty((m, a, BL), Y.dtype)
        _gather(dy, (n0 * K + k) * P * Q, idx, D, BL, zero)
        _a_passes(D, E, Y, k, n0 * L, BL, m, c2, c4, c8)


def grad_output_transform(dy, Y, m, TH, TW, cst):
    """Y = A dy Aᵀ per (output channel, tile) of dy (C-contiguous): the gathering kernel
    for planes of few tile columns (as the forward's transforms), the row-by-row one otherwise."""
    if TW < cpu_winograd._GATHER_TW:
        N, K, P, Q = dy.shape
        nb = _block_images(N, TH * TW)
        _grad_output_transform_gather(dy, _gather_index(K, P, Q, 0, 0, m, TH, TW, nb, m), Y, m, TH, TW, nb, cst)
    else:
        _grad_output_transform(dy, Y, m, TH, TW, cst)


@njit(parallel=True, cache=True)
def _inverse_weight_transform(dU, G, dw):
    # dw[k, c, r, s] = Σ_ξ,ν G[ξ,r] dU[ξ·α+ν, k, c] G[ν,s]. One prange iteration per k; the
    # inner loops run over c (vectorised) into tmp[r·3+s, c], then scatter to dw[k].
    K, Cg = dw.shape[0], dw.shape[1]
    a = G.shape[0]
    for k in prange(K):
        gu = np.zeros((3, a, Cg), dU.dtype)  # (Gᵀ dU)[r, ν, c]
        for xi in range(a):
            for nu in range(a):
                src = dU[xi * a + nu, k]
                for r in range(3):
                    g = G[xi, r]
                    if g != 0:
                        dst = gu[r, nu]
                        for c in range(Cg):
                            dst[c] += g * src[c]
        tmp = np.zeros((9, Cg), dU.dtype)
        for r in range(3):
            for s in range(3):
                dst = tmp[r * 3 + s]
                for nu in range(a):
                    g = G[nu, s]
                    if g != 0:
                        src = gu[r, nu]
                        for c in range(Cg):
                            dst[c] += g * src[c]
        for c in range(Cg):
            for t in range(9):
                dw[k, c, t // 3, t % 3] = tmp[t, c]


def winograd_wgrad(x, dy, out, pad_top, pad_left, groups, m):
    """out (K, C/groups, 3, 3) = conv2d_weight(x, dy) for stride 1, dilation 1 and padding
    top/left = pad_top/pad_left (the bottom/right padding is implied by dy's P×Q)."""
    N, C = x.shape[0], x.shape[1]
    K, Cg = out.shape[0], out.shape[1]
    P, Q = dy.shape[2], dy.shape[3]
    TH, TW = -(-P // m), -(-Q // m)
    L = TH * TW
    a2 = (m + 2) ** 2
    dtype = out.dtype
    Kg = K // groups
    cst = np.array([2, 4, 5, 8], dtype=dtype)
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    dU = scratch("winograd_wgrad.dU", (a2, groups, Kg, Cg), dtype)
    # G images at a time (cache-sized chunks, as the forward's), dU summed over the chunks.
    G = _chunk_images(N, C, K, L, a2, dtype.itemsize)
    for n0 in range(0, N, G):
        xs, dys = x[n0:n0 + G], dy[n0:n0 + G]
        T = xs.shape[0] * L
        V = scratch("winograd_wgrad.V", (a2, C, T), dtype)
        input_transform(xs, V, pad_top, pad_left, m, TH, TW, cst)
        Y = scratch("winograd_wgrad.Y", (a2, K, T), dtype)
        grad_output_transform(dys, Y, m, TH, TW, cst)
        if (T >= _NT_MIN_TILES or Kg <= _NT_MAX_ROWS) and dtype == np.float32 and gemm_enabled():
            # both operands run along the tiles: the dot-product kernel reads them in place
            sgemm_nt(Y.reshape(a2 * groups, 1, Kg, T), V.reshape(a2 * groups, 1, Cg, T), dU.reshape(a2 * groups, Kg, Cg),
                     accumulate=n0 > 0)
        elif n0 == 0:
            matmul(Y.reshape(a2, groups, Kg, T), V.reshape(a2, groups, Cg, T).transpose(0, 1, 3, 2), out=dU)
        else:
            dU += matmul(Y.reshape(a2, groups, Kg, T), V.reshape(a2, groups, Cg, T).transpose(0, 1, 3, 2),
                         out=scratch("winograd_wgrad.dU_chunk", (a2, groups, Kg, Cg), dtype))
    _inverse_weight_transform(dU.reshape(a2, K, Cg), _G[m].astype(dtype), out)
