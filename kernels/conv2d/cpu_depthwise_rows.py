"""Depthwise 3×3 conv2d, padding 1, stride 1 or 2 (stride 2 on output planes at most
MAX_WIDTH columns wide): MobileNet's 3×3 depthwise layers, float32 where convcore's 16-lane
kernels run (gemm.cpu.enabled: AVX-512 hosts; on AVX2 the 20 live vectors would spill): 16
output columns of a row in one vector.

Same index notation as cpu_direct. Why not cpu_depthwise_strips there: its strips, masks
and block table cost more than the work (8×512×14², 2 threads: 0.42-0.46 ms,
while reading and writing the same 6.4 MB in cache took 0.04). Here a plane is taken 16
output columns at a time, all its rows in order, each output row 9 FMAs and one masked
store, all in registers:

- forward: out[p] = b + Σ_{r,s} w[r, s] · x[p·sh + r − 1] at columns q·sw + s − 1, from a
  window of the three input rows around p·sh (stride 1: one new row per output row, three
  masked loads, its columns shifted by −1, 0, +1; stride 2: two new rows, each 32 columns
  in two loads split into even and odd lanes, and the columns one before split again for
  the left tap); masks make a column past either edge of the row read as 0 and keep
  everything outside the row unread; bias and ReLU applied before the store;
- input gradient, stride 1: the forward of dY with each 3×3 filter turned 180° (dX = full
  correlation of dY with the rotated filter, cropped by 1 = the same layer); stride 2: dX's
  even and odd rows and columns each take their own taps (one for even-even, up to four for
  odd-odd) from dY rows m, m + 1 and columns n, n + 1, even and odd columns summed in two
  vectors and interleaved (simd.vzip_lo/hi) for the store;
- weight gradient: dW[c, r, s] = Σ_n Σ_p dY[n, c, p] · (the forward's window vector for
  tap r, s), nine vector accumulators per channel summed over images, column blocks and rows
  in a fixed order, then across lanes by a fixed tree (deterministic).

Stride-1 planes wider than MAX_WIDTH go row by row instead (_fwd_wide, _wgrad_wide): each
16-column block of an output row from 9 loads of its three input rows, reading memory in
order; plain loads without masks for the blocks with no column past either edge (8×32×112²,
time / masked everywhere: 0.72-0.76 in all three directions). At 8×32×112² (50 KB planes)
the column-block sweeps, banded or not, ran level with the strips (time / strips: forward
1.01, input gradient 0.94, weight gradient 1.06), the row-by-row kernels at 0.60-0.64; at
56² the sweeps are faster (forward 0.125 vs 0.18-0.20 ms at 2×128×56²). Wider stride-2
layers keep the strips.

Operands past AHEAD_BYTES come from memory, where a column sweep's first pass down a
plane waits on every row (the hardware prefetchers follow the row-by-row kernels, not the
sweeps): there the sweeps prefetch each thread's next plane into L2, a slice per row step
(_ahead). Time with / without, 2 threads, caches flushed before each call: 8×64×112²
stride 2 forward 0.57-0.64, weight gradient 0.40-0.43 (input gradient 0.94-0.97, the
row-by-row stride-1 kernels 1.05-1.11: neither prefetches); against the previous kernels,
interleaved: stride-2 weight gradient 0.62-0.70, forward 0.80-1.02.

Threads: one prange iteration per output plane (forward, input gradient: each writes its own
plane) or per channel (weight gradient: its 9 weights).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.simd import (
    LANES,
    lanes,
    prefetch_l2,
    vbroadcast,
    vbroadcast_load,
    veven,
    vfma,
    vload,
    vload_lanes,
    vmul,
    vodd,
    vrelu,
    vstore_first,
    vsum,
    vzero,
    vzip_hi,
    vzip_lo,
)

MAX_WIDTH = 64  # output columns
# Inputs past this many bytes (the 112² layers, 12.8-25.7 MB at batch 8) come from memory,
# not cache: the kernels then prefetch each thread's next plane into L2 while they work on
# this one (_ahead). Below it (56² at batch 2, 14² at batch 8: 3.2 MB) the prefetches only
# cost (2×128×56² stride-2 weight gradient: 0.12 vs 0.06 ms).
AHEAD_BYTES = 8 << 20


def applies(geom, dtype) -> bool:
    """Depthwise (one filter per channel), 3×3, dilation 1, padding 1 on every side, stride 1
    or (output planes at most MAX_WIDTH columns wide) stride 2, float32, where convcore's
    16-lane kernels run."""
    return (geom.Cg == 1 and geom.Kg == 1 and geom.R == geom.S == 3
            and (geom.stride == (1, 1) or geom.stride == (2, 2) and geom.Q <= MAX_WIDTH)
            and geom.dilation == (1, 1) and tuple(geom.padding) == (1, 1, 1, 1)
            and np.dtype(dtype) == np.float32 and gemm_enabled())


@njit(inline="always")
def _edges(q0, W, Q, stride):
    # the lane ranges of _row's loads for the block of output columns from q0 (per block, not
    # per row: the masks stay out of the row loop). Lanes of output columns q >= Q read 0
    # too, so that a weight gradient's zero dY lanes never meet an Inf there (0 · Inf): at
    # stride 2 the loads stop at column 2Q (2Q − 1 for the left tap's), not at W.
    if stride == 1:
        return 1 if q0 == 0 else 0, lanes(W - q0), lanes(W - q0 - 1), 0, 0
    c0 = 2 * q0
    inner, left = min(W, 2 * Q), min(W, 2 * Q - 1)
    return 1 if c0 == 0 else 0, lanes(left - c0 + 1), lanes(inner - c0), lanes(left - c0 - 15), lanes(inner - c0 - 16)


@njit(inline="always")
def _row(xf, at, q0, edges, stride):
    # input columns q·stride − 1, q·stride, q·stride + 1 of the row at xf[at:] for the 16
    # output columns q = q0 + lane, 0 past either edge of the row and past the output row.
    # Stride 2: 32 columns from 2·q0 (and from one column before) in two vectors each,
    # split into even and odd lanes.
    first, n0, n1, n2, n3 = edges
    if stride == 1:
        return (vload_lanes(xf, at + q0 - 1, first, n0), vload_lanes(xf, at + q0, 0, n0),
                vload_lanes(xf, at + q0 + 1, 0, n1))
    c0 = 2 * q0
    lo = vload_lanes(xf, at + c0, 0, n1)
    hi = vload_lanes(xf, at + c0 + 16, 0, n3)
    left_lo = vload_lanes(xf, at + c0 - 1, first, n0)
    left_hi = vload_lanes(xf, at + c0 + 15, 0, n2)
    return veven(left_lo, left_hi), veven(lo, hi), vodd(lo, hi)


@njit(inline="always")
def _row_inside(xf, at, q0, valid):
    # _row at stride 1 for a block whose columns q0 − 1 .. q0 + 16 all lie inside the row:
    # plain loads, no masks (0 for a row outside the plane: valid False)
    if not valid:
        return vzero(), vzero(), vzero()
    return vload(xf, at + q0 - 1), vload(xf, at + q0), vload(xf, at + q0 + 1)


@njit(inline="always")
def _inside(q0, W):
    # a 16-column block of a stride-1 row-by-row kernel with no column past either edge
    return q0 > 0 and q0 + LANES < W


@njit(inline="always")
def _weights(wf, c, flip):
    # channel c's 9 taps, each in all lanes, row-major (flip: the filter turned 180°)
    k = c * 9
    if flip:
        return (vbroadcast_load(wf, k + 8), vbroadcast_load(wf, k + 7), vbroadcast_load(wf, k + 6),
                vbroadcast_load(wf, k + 5), vbroadcast_load(wf, k + 4), vbroadcast_load(wf, k + 3),
                vbroadcast_load(wf, k + 2), vbroadcast_load(wf, k + 1), vbroadcast_load(wf, k))
    return (vbroadcast_load(wf, k), vbroadcast_load(wf, k + 1), vbroadcast_load(wf, k + 2),
            vbroadcast_load(wf, k + 3), vbroadcast_load(wf, k + 4), vbroadcast_load(wf, k + 5),
            vbroadcast_load(wf, k + 6), vbroadcast_load(wf, k + 7), vbroadcast_load(wf, k + 8))


@njit(inline="always")
def _taps(ws, bias, a, b, c):
    # bias + Σ_{r,s} ws[3r + s] · (a, b, c)[r][s]: one output row of 16 columns
    acc = vfma(ws[0], a[0], bias)
    acc = vfma(ws[1], a[1], acc); acc = vfma(ws[2], a[2], acc)  # noqa: E702
    acc = vfma(ws[3], b[0], acc); acc = vfma(ws[4], b[1], acc); acc = vfma(ws[5], b[2], acc)  # noqa: E702
    return vfma(ws[8], c[2], vfma(ws[7], c[1], vfma(ws[6], c[0], acc)))


@njit(inline="always")
def _store_row(of, at, acc, count, relu):
    vstore_first(of, at, vrelu(acc) if relu else acc, count)


@njit(inline="always")
def _chunk(size, steps):
    # floats of a plane of ``size`` to prefetch per step, whole 64-byte lines, over ``steps``
    return (-(-size // steps) + 15) // 16 * 16


@njit(inline="always")
def _ahead(af, at, size, k, chunk):
    # prefetch into L2 part k (``chunk`` floats) of the plane of ``size`` floats at af[at:]:
    # a kernel's row steps over one plane fetch the next one; addresses past the array (the
    # last plane's "next") are harmless, prefetches never fault
    lo = k * chunk
    for i in range(lo, min(size, lo + chunk), 16):
        prefetch_l2(af, at + i)


@njit(inline="always")
def _split(H, P, stride):
    # output rows 0..P−1 whose window's last row p·stride + 1 is inside the plane (the rest,
    # at most one, read the bottom padding): two loops, not a test per row in one
    return max(0, min(P, (H - 2) // stride + 1))


@njit(inline="always")
def _fwd_plane(xf, wf, b, of, t, C, H, W, P, Q, has_bias, relu, flip, stride, ahead):
    # output plane t (image t // C, channel c = t % C): x ⋆ w[c] at ``stride`` (+ b[c], ReLU);
    # flip: w[c] turned 180° (the input gradient, stride 1). Inlined into one kernel per
    # stride, where it is a constant and the branches on it fold.
    c = t % C
    ws = _weights(wf, c, flip)
    bias = vbroadcast(b[c]) if has_bias else vzero()
    base = t * H * W
    inside = _split(H, P, stride)
    zero = (vzero(), vzero(), vzero())
    chunk = _chunk(H * W, -(-Q // LANES) * P)
    k = 0  # row steps, for _ahead: plane t + 1 is this thread's next (prange's contiguous runs)
    for q0 in range(0, Q, LANES):  # 16 output columns at a time, all rows
        edges = _edges(q0, W, Q, stride)
        count = min(LANES, Q - q0)
        # the window: input rows p·stride − 1 (a: the top padding at p = 0), p·stride (b),
        # p·stride + 1 (c: the bottom padding past row H − 1)
        a = zero
        b_ = _row(xf, base, q0, edges, stride)
        for p in range(inside):
            if ahead:
                _ahead(xf, base + H * W, H * W, k, chunk)
                k += 1
            if stride != 1:
                b_ = _row(xf, base + p * stride * W, q0, edges, stride)
            c_ = _row(xf, base + (p * stride + 1) * W, q0, edges, stride)
            _store_row(of, (t * P + p) * Q + q0, _taps(ws, bias, a, b_, c_), count, relu)
            if stride == 1:
                a, b_ = b_, c_
            else:
                a = c_
        for p in range(inside, P):
            if ahead:
                _ahead(xf, base + H * W, H * W, k, chunk)
                k += 1
            if stride != 1:
                b_ = _row(xf, base + p * stride * W, q0, edges, stride)
            _store_row(of, (t * P + p) * Q + q0, _taps(ws, bias, a, b_, zero), count, relu)
            a, b_ = b_, zero


@njit(inline="always")
def _grads(sums, g, a, b, c):
    # sums[3r + s] + g · (a, b, c)[r][s]
    return (vfma(g, a[0], sums[0]), vfma(g, a[1], sums[1]), vfma(g, a[2], sums[2]),
            vfma(g, b[0], sums[3]), vfma(g, b[1], sums[4]), vfma(g, b[2], sums[5]),
            vfma(g, c[0], sums[6]), vfma(g, c[1], sums[7]), vfma(g, c[2], sums[8]))


@njit(inline="always")
def _wgrad_channel(xf, gf, dw, c, N, C, H, W, P, Q, stride, ahead):
    # dw[c, 0, r, s] = Σ_n Σ_p Σ_q dy[n, c, p, q] · x[n, c, p·stride + r − 1, q·stride + s − 1]
    sums = (vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero())
    inside = _split(H, P, stride)
    zero = (vzero(), vzero(), vzero())
    steps = -(-Q // LANES) * P
    chunk, gchunk = _chunk(H * W, steps), _chunk(P * Q, steps)
    for n in range(N):
        base = (n * C + c) * H * W
        gbase = (n * C + c) * P * Q
        # this thread's next planes of x and dY: image n + 1's, else channel c + 1's first
        nxt = base + C * H * W if n + 1 < N else (c + 1) * H * W
        gnxt = gbase + C * P * Q if n + 1 < N else (c + 1) * P * Q
        k = 0
        for q0 in range(0, Q, LANES):
            edges = _edges(q0, W, Q, stride)
            count = min(LANES, Q - q0)
            a = zero
            b_ = _row(xf, base, q0, edges, stride)
            for p in range(inside):
                if ahead:
                    _ahead(xf, nxt, H * W, k, chunk)
                    _ahead(gf, gnxt, P * Q, k, gchunk)
                    k += 1
                if stride != 1:
                    b_ = _row(xf, base + p * stride * W, q0, edges, stride)
                c_ = _row(xf, base + (p * stride + 1) * W, q0, edges, stride)
                sums = _grads(sums, vload_lanes(gf, gbase + p * Q + q0, 0, count), a, b_, c_)
                if stride == 1:
                    a, b_ = b_, c_
                else:
                    a = c_
            for p in range(inside, P):
                if ahead:
                    _ahead(xf, nxt, H * W, k, chunk)
                    _ahead(gf, gnxt, P * Q, k, gchunk)
                    k += 1
                if stride != 1:
                    b_ = _row(xf, base + p * stride * W, q0, edges, stride)
                sums = _grads(sums, vload_lanes(gf, gbase + p * Q + q0, 0, count), a, b_, zero)
                a, b_ = b_, zero
    for tap in range(9):
        dw[c, 0, tap // 3, tap % 3] = vsum(sums[tap])


@njit(inline="always")
def _dgrad2_plane(gf, wf, of, t, C, H, W, P, Q):
    # dX plane t of a stride-2 layer: dX[2m + 1 − r, 2n + 1 − s] gets w[r, s] · dY[m, n]. So
    # dX row 2m takes tap row 1 from dY row m; row 2m + 1 tap row 0 from dY row m + 1 and
    # tap row 2 from row m. Even columns 2n take tap column 1 from dY column n (g), odd
    # columns 2n + 1 tap column 0 from column n + 1 (g1) and tap column 2 from column n.
    # Even and odd columns are summed in separate vectors, interleaved for the store.
    k = (t % C) * 9
    w00 = vbroadcast_load(wf, k); w01 = vbroadcast_load(wf, k + 1); w02 = vbroadcast_load(wf, k + 2)  # noqa: E702
    w10 = vbroadcast_load(wf, k + 3); w11 = vbroadcast_load(wf, k + 4); w12 = vbroadcast_load(wf, k + 5)  # noqa: E702
    w20 = vbroadcast_load(wf, k + 6); w21 = vbroadcast_load(wf, k + 7); w22 = vbroadcast_load(wf, k + 8)  # noqa: E702
    gbase = t * P * Q
    xbase = t * H * W
    for n0 in range(0, Q, LANES):  # 16 dY columns: 32 dX columns from 2·n0
        count, count1 = lanes(Q - n0), lanes(Q - n0 - 1)
        lo_count, hi_count = lanes(W - 2 * n0), lanes(W - 2 * n0 - LANES)
        g = vload_lanes(gf, gbase + n0, 0, count)
        g1 = vload_lanes(gf, gbase + n0 + 1, 0, count1)
        for m in range(P):
            if m + 1 < P:
                h = vload_lanes(gf, gbase + (m + 1) * Q + n0, 0, count)
                h1 = vload_lanes(gf, gbase + (m + 1) * Q + n0 + 1, 0, count1)
            else:
                h = vzero(); h1 = vzero()  # noqa: E702
            at = xbase + 2 * m * W + 2 * n0
            even = vmul(w11, g)
            odd = vfma(w12, g, vmul(w10, g1))
            vstore_first(of, at, vzip_lo(even, odd), lo_count)
            vstore_first(of, at + LANES, vzip_hi(even, odd), hi_count)
            if 2 * m + 1 < H:
                even = vfma(w21, g, vmul(w01, h))
                odd = vfma(w22, g, vfma(w20, g1, vfma(w02, h, vmul(w00, h1))))
                vstore_first(of, at + W, vzip_lo(even, odd), lo_count)
                vstore_first(of, at + W + LANES, vzip_hi(even, odd), hi_count)
            g, g1 = h, h1


@njit(parallel=True, cache=True)
def _fwd_wide(x, w, b, out, has_bias, relu, flip):
    # Stride 1, planes wider than MAX_WIDTH: row by row, every 16-column block of an output
    # row from its three input rows (9 loads, no window carried down a column block: over
    # planes past L1 that sweep ran 1.3-1.4× slower, 8×32×112²), so memory is read in order.
    N, C, H, W = x.shape
    xf, wf, of = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    for t in prange(N * C):
        ws = _weights(wf, t % C, flip)
        bias = vbroadcast(b[t % C]) if has_bias else vzero()
        base = t * H * W
        zero = (vzero(), vzero(), vzero())
        for p in range(H):
            row = base + p * W
            for q0 in range(0, W, LANES):
                if _inside(q0, W):
                    a = _row_inside(xf, row - W, q0, p > 0)
                    b_ = _row_inside(xf, row, q0, True)
                    c_ = _row_inside(xf, row + W, q0, p + 1 < H)
                    _store_row(of, row + q0, _taps(ws, bias, a, b_, c_), LANES, relu)
                    continue
                edges = _edges(q0, W, W, 1)
                a = _row(xf, row - W, q0, edges, 1) if p > 0 else zero
                b_ = _row(xf, row, q0, edges, 1)
                c_ = _row(xf, row + W, q0, edges, 1) if p + 1 < H else zero
                _store_row(of, row + q0, _taps(ws, bias, a, b_, c_), min(LANES, W - q0), relu)


@njit(parallel=True, cache=True)
def _wgrad_wide(x, dy, dw):
    # the weight gradient of _fwd_wide's layers, in the same order
    N, C, H, W = x.shape
    xf, gf = x.reshape(-1), dy.reshape(-1)
    for c in prange(C):
        sums = (vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero(), vzero())
        zero = (vzero(), vzero(), vzero())
        for n_ in range(N):
            base = (n_ * C + c) * H * W
            for p in range(H):
                row = base + p * W
                for q0 in range(0, W, LANES):
                    if _inside(q0, W):
                        a = _row_inside(xf, row - W, q0, p > 0)
                        b_ = _row_inside(xf, row, q0, True)
                        c_ = _row_inside(xf, row + W, q0, p + 1 < H)
                        sums = _grads(sums, vload(gf, row + q0), a, b_, c_)
                        continue
                    edges = _edges(q0, W, W, 1)
                    a = _row(xf, row - W, q0, edges, 1) if p > 0 else zero
                    b_ = _row(xf, row, q0, edges, 1)
                    c_ = _row(xf, row + W, q0, edges, 1) if p + 1 < H else zero
                    sums = _grads(sums, vload_lanes(gf, row + q0, 0, min(LANES, W - q0)), a, b_, c_)
        for tap in range(9):
            dw[c, 0, tap // 3, tap % 3] = vsum(sums[tap])


@njit(inline="always")
def _fwd_planes(x, w, b, out, has_bias, relu, flip, stride, ahead):
    N, C, H, W = x.shape
    xf, wf, of = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    for t in prange(N * C):
        _fwd_plane(xf, wf, b, of, t, C, H, W, out.shape[2], out.shape[3], has_bias, relu, flip, stride, ahead)


@njit(inline="always")
def _wgrad_channels(x, dy, dw, stride, ahead):
    N, C, H, W = x.shape
    xf, gf = x.reshape(-1), dy.reshape(-1)
    for c in prange(C):
        _wgrad_channel(xf, gf, dw, c, N, C, H, W, dy.shape[2], dy.shape[3], stride, ahead)


# One kernel per stride and prefetching or not (both constants there, their branches folded:
# a flag passed at run time had cost the in-cache layers 12-36%); prange over output planes
# (forward) or channels (weight gradient).
@njit(parallel=True, cache=True)
def _fwd1(x, w, b, out, has_bias, relu, flip):
    _fwd_planes(x, w, b, out, has_bias, relu, flip, 1, False)


@njit(parallel=True, cache=True)
def _fwd1_ahead(x, w, b, out, has_bias, relu, flip):
    _fwd_planes(x, w, b, out, has_bias, relu, flip, 1, True)


@njit(parallel=True, cache=True)
def _fwd2(x, w, b, out, has_bias, relu, flip):
    _fwd_planes(x, w, b, out, has_bias, relu, flip, 2, False)


@njit(parallel=True, cache=True)
def _fwd2_ahead(x, w, b, out, has_bias, relu, flip):
    _fwd_planes(x, w, b, out, has_bias, relu, flip, 2, True)


@njit(parallel=True, cache=True)
def _dgrad2(dy, w, dx):
    N, C, P, Q = dy.shape
    gf, wf, of = dy.reshape(-1), w.reshape(-1), dx.reshape(-1)
    for t in prange(N * C):
        _dgrad2_plane(gf, wf, of, t, C, dx.shape[2], dx.shape[3], P, Q)


@njit(parallel=True, cache=True)
def _wgrad1(x, dy, dw):
    _wgrad_channels(x, dy, dw, 1, False)


@njit(parallel=True, cache=True)
def _wgrad1_ahead(x, dy, dw):
    _wgrad_channels(x, dy, dw, 1, True)


@njit(parallel=True, cache=True)
def _wgrad2(x, dy, dw):
    _wgrad_channels(x, dy, dw, 2, False)


@njit(parallel=True, cache=True)
def _wgrad2_ahead(x, dy, dw):
    _wgrad_channels(x, dy, dw, 2, True)


def _from_memory(*arrays):
    # the kernel's operands together past AHEAD_BYTES: they come from memory, not cache
    return sum(a.nbytes for a in arrays) > AHEAD_BYTES


def _sweeps(stride, kernels, ahead_kernels, *arrays):
    # the column-sweep kernel for ``stride``, prefetching where the arrays come from memory
    return (ahead_kernels if _from_memory(*arrays) else kernels)[stride - 1]


def rows_fwd(x, w, b, out, relu, stride=1):
    has_bias = b is not None
    b = b if has_bias else w.reshape(-1)[:1]
    if stride == 1 and out.shape[3] > MAX_WIDTH:
        _fwd_wide(x, w, b, out, has_bias, relu, False)
    else:
        _sweeps(stride, (_fwd1, _fwd2), (_fwd1_ahead, _fwd2_ahead), x, out)(x, w, b, out, has_bias, relu, False)


def rows_dgrad(w, dy, dx, stride=1):
    if stride == 2:
        _dgrad2(dy, w, dx)
    elif dy.shape[3] > MAX_WIDTH:
        _fwd_wide(dy, w, w.reshape(-1)[:1], dx, False, False, True)
    else:
        _sweeps(1, (_fwd1,), (_fwd1_ahead,), dy, dx)(dy, w, w.reshape(-1)[:1], dx, False, False, True)


def rows_wgrad(x, dy, dw, stride=1):
    if stride == 1 and dy.shape[3] > MAX_WIDTH:
        _wgrad_wide(x, dy, dw)
    else:
        _sweeps(stride, (_wgrad1, _wgrad2), (_wgrad1_ahead, _wgrad2_ahead), x, dy)(x, dy, dw)
