"""conv2d forward, input gradient and weight gradient: Numba CUDA kernels.

Index names are the field's notation (n, c/k, h/w, p/q, r/s as in cpu.py).
Thread mapping:
- forward, ``gemm`` (the default): implicit GEMM with M = N·P·Q, N = K/g, K = C/g·R·S.
  A block computes a BM×BN output tile (BM = TM·DM output pixels, BN = TN·DN output
  channels of one group; blockIdx.z is the group), staging BK-deep slices of the
  gathered input (As, BK×BM) and of the weight (Bs, BK×BN) through shared memory;
  each thread keeps a TM×TN register tile, its rows strided by DM so that stores to
  consecutive output columns q are coalesced. Bias and ReLU are fused in the epilogue.
- forward, ``direct``: one thread per output element (n, k, p, q), grid-stride loop.
- input gradient: one thread per input element (n, c, h, w), gathering the outputs
  that read it (no scatter, so no atomics).
- weight gradient: split-K without atomics: thread (split, k, c, r, s) sums its weight
  element over one fixed slice of the N·P output rows into a workspace, then a second
  kernel adds the slices in index order — deterministic, run after run.
- bias gradient: one thread per channel, summing in order.
Every launch goes on the output's stream (``out.stream``: the caller's current stream,
bound by ``CudaIO.empty``; 0, the default stream, for NumPy callers).
"""
from __future__ import annotations

from numba import cuda

from convcore._backend import cuda_simulated

from .._cuda_util import THREADS, grid_for, kernel

# Implicit-GEMM tile: (TM, TN) register tile per thread, (DM, DN) threads per block, BK
# reduction depth per shared-memory stage. The simulator runs each thread in Python
# (a 256-thread block with barriers is very slow there), so it gets a small tile of the
# same code; the offline PTX report compiles the GPU tile.
# float64 halves the register tile: a 4×4 double tile needs ~145 registers (> 128) with
# Numba's 64-bit index arithmetic.
IGEMM_TILES = {"float32": (4, 4, 8, 16, 16), "float64": (2, 2, 8, 16, 16)}
if cuda_simulated():
    IGEMM_TILES = {"float32": (2, 2, 8, 4, 4), "float64": (2, 2, 8, 4, 4)}

# Enough partial sums to fill a GPU; the simulator runs each thread in Python, so fewer there.
_TARGET_THREADS = 1024 if cuda_simulated() else 1 << 16


def make_fwd(dt):
    def conv2d_fwd_kernel(x, w, b, has_bias, out, sh, sw, pt, pl, dh, dw, groups):
        N, C, H, W = x.shape
        K, Cg, R, S = w.shape
        P = out.shape[2]
        Q = out.shape[3]
        Kg = K // groups
        total = N * K * P * Q
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            q = idx % Q
            t = idx // Q
            p = t % P
            t = t // P
            k = t % K
            n = t // K
            c0 = (k // Kg) * Cg
            acc = dt(0)
            for c in range(Cg):
                for r in range(R):
                    h = p * sh - pt + r * dh
                    if h >= 0 and h < H:
                        for s in range(S):
                            col = q * sw - pl + s * dw
                            if col >= 0 and col < W:
                                acc += x[n, c0 + c, h, col] * w[k, c, r, s]
            if has_bias:
                acc += b[k]
            out[n, k, p, q] = acc

    return conv2d_fwd_kernel


def make_fwd_igemm(dt, relu=False):
    TM, TN, BK, DM, DN = IGEMM_TILES[str(dt)]
    BM = TM * DM
    BN = TN * DN
    NT = DM * DN

    def conv2d_fwd_igemm_kernel(x, w, b, has_bias, out, sh, sw, pt, pl, dh, dw, groups):
        N, C, H, W = x.shape
        K, Cg, R, S = w.shape
        P = out.shape[2]
        Q = out.shape[3]
        Kg = K // groups
        M = N * P * Q
        KK = Cg * R * S
        RS = R * S
        g = cuda.blockIdx.z
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        tid = cuda.threadIdx.x
        tm = tid % DM
        tn = tid // DM
        As = cuda.shared.array((BK, BM), dt)
        Bs = cuda.shared.array((BK, BN), dt)
        acc = cuda.local.array((TM, TN), dt)
        a_frag = cuda.local.array(TM, dt)
        b_frag = cuda.local.array(TN, dt)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = dt(0)
        for k0 in range(0, KK, BK):
            # Gather the input slice: consecutive threads take consecutive output pixels.
            for e in range(tid, BK * BM, NT):
                kk = e // BM
                mm = e % BM
                m = m0 + mm
                kg = k0 + kk
                v = dt(0)
                if m < M and kg < KK:
                    q = m % Q
                    t = m // Q
                    p = t % P
                    n = t // P
                    c = kg // RS
                    rs = kg % RS
                    h = p * sh - pt + (rs // S) * dh
                    col = q * sw - pl + (rs % S) * dw
                    if h >= 0 and h < H and col >= 0 and col < W:
                        v = x[n, g * Cg + c, h, col]
                As[kk, mm] = v
            # The weight slice: consecutive threads read consecutive (c, r, s), contiguous in w.
            for e in range(tid, BK * BN, NT):
                nn = e // BK
                kk = e % BK
                kcol = n0 + nn
                kg = k0 + kk
                v = dt(0)
                if kcol < Kg and kg < KK:
                    rs = kg % RS
                    v = w[g * Kg + kcol, kg // RS, rs // S, rs % S]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a_frag[i] = As[kk, tm + i * DM]
                for j in range(TN):
                    b_frag[j] = Bs[kk, tn + j * DN]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a_frag[i] * b_frag[j]
            cuda.syncthreads()
        for i in range(TM):
            m = m0 + tm + i * DM
            if m < M:
                q = m % Q
                t = m // Q
                p = t % P
                n = t // P
                for j in range(TN):
                    kcol = n0 + tn + j * DN
                    if kcol < Kg:
                        k = g * Kg + kcol
                        v = acc[i, j]
                        if has_bias:
                            v += b[k]
                        if relu and v < dt(0):
                            v = dt(0)
                        out[n, k, p, q] = v

    return conv2d_fwd_igemm_kernel


def make_fwd_igemm_relu(dt):
    return make_fwd_igemm(dt, relu=True)


def make_bwd_data(dt):
    def conv2d_bwd_data_kernel(w, dy, dx, sh, sw, pt, pl, dh, dw, groups):
        N, C, H, W = dx.shape
        K, Cg, R, S = w.shape
        P = dy.shape[2]
        Q = dy.shape[3]
        Kg = K // groups
        total = N * C * H * W
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            x_col = idx % W
            t = idx // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
            g = c // Cg
            cl = c % Cg
            acc = dt(0)
            for r in range(R):
                ph = h + pt - r * dh  # = p·sh when output row p reads input row h
                if ph >= 0 and ph % sh == 0 and ph // sh < P:
                    p = ph // sh
                    for s in range(S):
                        qw = x_col + pl - s * dw
                        if qw >= 0 and qw % sw == 0 and qw // sw < Q:
                            q = qw // sw
                            for kl in range(Kg):
                                k = g * Kg + kl
                                acc += dy[n, k, p, q] * w[k, cl, r, s]
            dx[n, c, h, x_col] = acc

    return conv2d_bwd_data_kernel


def make_bwd_weight(dt):
    def conv2d_bwd_weight_kernel(x, dy, partial, rows_per_split, sh, sw, pt, pl, dh, dw, groups):
        # Thread (split, k, c, r, s) sums its weight element over output rows
        # [split·rows_per_split, (split+1)·rows_per_split) of the N·P rows, in order.
        N, C, H, W = x.shape
        splits, K, Cg, R, S = partial.shape
        P = dy.shape[2]
        Q = dy.shape[3]
        Kg = K // groups
        total = splits * K * Cg * R * S
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            s = idx % S
            t = idx // S
            r = t % R
            t = t // R
            cl = t % Cg
            t = t // Cg
            k = t % K
            split = t // K
            c = (k // Kg) * Cg + cl
            acc = dt(0)
            row_end = min((split + 1) * rows_per_split, N * P)
            for row in range(split * rows_per_split, row_end):
                n = row // P
                p = row % P
                h = p * sh - pt + r * dh
                if h >= 0 and h < H:
                    for q in range(Q):
                        col = q * sw - pl + s * dw
                        if col >= 0 and col < W:
                            acc += dy[n, k, p, q] * x[n, c, h, col]
            partial[split, k, cl, r, s] = acc

    return conv2d_bwd_weight_kernel


def make_sum_splits(dt):
    def sum_splits_kernel(partial, out):
        # One thread per output element; the splits are added in index order (deterministic).
        splits = partial.shape[0]
        size = partial.shape[1]
        for idx in range(cuda.grid(1), size, cuda.gridsize(1)):
            acc = dt(0)
            for split in range(splits):
                acc += partial[split, idx]
            out[idx] = acc

    return sum_splits_kernel


def make_bwd_bias(dt):
    def conv2d_bwd_bias_kernel(dy, out):
        # One thread per channel k, summing N·P·Q terms in order.
        N, K, P, Q = dy.shape
        for k in range(cuda.grid(1), K, cuda.gridsize(1)):
            acc = dt(0)
            for n in range(N):
                for p in range(P):
                    for q in range(Q):
                        acc += dy[n, k, p, q]
            out[k] = acc

    return conv2d_bwd_bias_kernel


def _geom_args(geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, pt, pl, dh, dw, geom.groups


def _choose(algorithm, geom):
    if algorithm != "auto":
        return algorithm
    # Depthwise and very shallow reductions leave the GEMM tile mostly empty.
    return "gemm" if geom.Cg * geom.R * geom.S >= 8 and geom.Kg >= 4 else "direct"


def candidates(direction, geom):
    """Every algorithm that can run this geometry, for convcore.tune."""
    return ["direct", "gemm"] if direction == "fwd" else ["direct"]


def conv2d_fwd(x, w, b, out, geom, algorithm, activation=None):
    has_bias = b is not None
    bias = b if has_bias else out.reshape(-1)[:1]  # never read
    if _choose(algorithm, geom) == "gemm":
        TM, TN, _, DM, DN = IGEMM_TILES[str(out.dtype)]
        factory = make_fwd_igemm_relu if activation == "relu" else make_fwd_igemm
        blocks = (-(-(geom.N * geom.P * geom.Q) // (TM * DM)), -(-geom.Kg // (TN * DN)), geom.groups)
        kernel(factory, out.dtype)[blocks, DM * DN, out.stream](x, w, bias, has_bias, out, *_geom_args(geom))
        return
    launch = kernel(make_fwd, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](x, w, bias, has_bias, out, *_geom_args(geom))
    if activation == "relu":
        kernel(make_relu_inplace, out.dtype)[grid_for(out.size), THREADS, out.stream](out.reshape(out.size))


def make_relu_inplace(dt):
    def relu_inplace_kernel(out):
        # One thread per element, grid-stride; NaN stays NaN (NaN < 0 is false).
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            if out[i] < dt(0):
                out[i] = dt(0)

    return relu_inplace_kernel


def conv2d_bwd_data(w, dy, out, geom, algorithm):
    launch = kernel(make_bwd_data, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](w, dy, out, *_geom_args(geom))


def conv2d_bwd_weight(x, dy, out, geom, algorithm):
    rows = geom.N * geom.P
    splits = max(1, min(rows, -(-_TARGET_THREADS // out.size)))
    rows_per_split = -(-rows // splits)
    splits = -(-rows // rows_per_split)
    partial = cuda.device_array((splits,) + tuple(out.shape), dtype=out.dtype, stream=out.stream)
    launch = kernel(make_bwd_weight, out.dtype)
    launch[grid_for(partial.size), THREADS, out.stream](x, dy, partial, rows_per_split, *_geom_args(geom))
    reduce = kernel(make_sum_splits, out.dtype)
    reduce[grid_for(out.size), THREADS, out.stream](partial.reshape(splits, out.size), out.reshape(out.size))


def conv2d_bwd_bias(dy, out):
    launch = kernel(make_bwd_bias, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](dy, out)


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature)}."""
    from numba import boolean, int64

    a4 = dt[:, :, :, ::1]
    geo = (int64,) * 7
    tile = IGEMM_TILES[str(dt)]
    tile_threads = tile[3] * tile[4]
    return {
        "conv2d_fwd": (make_fwd, (a4, a4, dt[::1], boolean, a4) + geo),
        "conv2d_fwd_igemm": (make_fwd_igemm, (a4, a4, dt[::1], boolean, a4) + geo, tile_threads),
        "conv2d_fwd_igemm_relu": (make_fwd_igemm_relu, (a4, a4, dt[::1], boolean, a4) + geo, tile_threads),
        "relu_inplace": (make_relu_inplace, (dt[::1],)),
        "conv2d_bwd_data": (make_bwd_data, (a4, a4, a4) + geo),
        "conv2d_bwd_weight": (make_bwd_weight, (a4, a4, dt[:, :, :, :, ::1], int64) + geo),
        "sum_splits": (make_sum_splits, (dt[:, ::1], dt[::1])),
        "conv2d_bwd_bias": (make_bwd_bias, (a4, dt[::1])),
    }



