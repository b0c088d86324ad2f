"""linear forward and gradients: Numba CUDA kernels.

Index names: m row (all leading axes of the input together), n output feature,
k input feature. The three products are one tiled shared-memory GEMM pattern in the
three layouts the layer needs:
- forward   out[m, n] = Σ_k x[m, k] · w[n, k] (+ b[n])     (A·Bᵀ)
- input     dx[m, k]  = Σ_n dy[m, n] · w[n, k]              (A·B)
- weight    dw[n, k]  = Σ_m dy[m, n] · x[m, k]              (Aᵀ·B)
Thread mapping: a TILE×TILE block computes a TILE×TILE output tile, thread (ty, tx)
owning output (row0 + ty, col0 + tx). Per step each thread loads one element of each
input tile into shared memory (coalesced along the contiguous axis), the block syncs,
and each thread adds TILE products. Shared tiles are padded to TILE+1 columns so the
column reads of the transposed operand hit distinct banks. Out-of-range loads read 0,
writes are guarded. Each output element is summed by one thread in k order: deterministic.
The bias gradient is one thread per column, summing rows in order (no atomics).
"""
from __future__ import annotations

from numba import cuda

from .._cuda_util import THREADS, grid_for, kernel

TILE = 16
PADDED = TILE + 1  # shared tiles are TILE x PADDED (a global, so Numba sees a constant shape)
_MAX_GRID_Y = 65535


def make_matmul_nt(dt):
    def linear_fwd_kernel(x, w, b, has_bias, out):
        M, K = x.shape
        N = w.shape[0]
        xs = cuda.shared.array((TILE, PADDED), dt)  # x[m0 + i, k0 + j]
        ws = cuda.shared.array((TILE, PADDED), dt)  # w[n0 + i, k0 + j]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        n = cuda.blockIdx.x * TILE + tx
        for m0 in range(cuda.blockIdx.y * TILE, M, cuda.gridDim.y * TILE):
            m = m0 + ty
            acc = dt(0)
            for k0 in range(0, K, TILE):
                k = k0 + tx
                xs[ty, tx] = x[m, k] if m < M and k < K else dt(0)
                nl = cuda.blockIdx.x * TILE + ty
                ws[ty, tx] = w[nl, k] if nl < N and k < K else dt(0)
                cuda.syncthreads()
                for kk in range(TILE):
                    acc += xs[ty, kk] * ws[tx, kk]
                cuda.syncthreads()
            if m < M and n < N:
                if has_bias:
                    acc += b[n]
                out[m, n] = acc

    return linear_fwd_kernel


def make_matmul_nn(dt):
    def linear_bwd_input_kernel(dy, w, dx):
        M, N = dy.shape
        K = w.shape[1]
        gs = cuda.shared.array((TILE, PADDED), dt)  # dy[m0 + i, n0 + j]
        ws = cuda.shared.array((TILE, PADDED), dt)  # w[n0 + i, k0 + j]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        k = cuda.blockIdx.x * TILE + tx
        for m0 in range(cuda.blockIdx.y * TILE, M, cuda.gridDim.y * TILE):
            m = m0 + ty
            acc = dt(0)
            for n0 in range(0, N, TILE):
                nc = n0 + tx
                gs[ty, tx] = dy[m, nc] if m < M and nc < N else dt(0)
                nr = n0 + ty
                ws[ty, tx] = w[nr, k] if nr < N and k < K else dt(0)
                cuda.syncthreads()
                for nn in range(TILE):
                    acc += gs[ty, nn] * ws[nn, tx]
                cuda.syncthreads()
            if m < M and k < K:
                dx[m, k] = acc

    return linear_bwd_input_kernel


def make_matmul_tn(dt):
    def linear_bwd_weight_kernel(dy, x, dw):
        M, N = dy.shape
        K = x.shape[1]
        gs = cuda.shared.array((TILE, PADDED), dt)  # dy[m0 + i, n0 + j]
        xs = cuda.shared.array((TILE, PADDED), dt)  # x[m0 + i, k0 + j]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        k = cuda.blockIdx.x * TILE + tx
        for n0 in range(cuda.blockIdx.y * TILE, N, cuda.gridDim.y * TILE):
            n = n0 + ty
            acc = dt(0)
            for m0 in range(0, M, TILE):
                mr = m0 + ty
                nc = n0 + tx
                gs[ty, tx] = dy[mr, nc] if mr < M and nc < N else dt(0)
                xs[ty, tx] = x[mr, k] if mr < M and k < K else dt(0)
                cuda.syncthreads()
                for mm in range(TILE):
                    acc += gs[mm, ty] * xs[mm, tx]
                cuda.syncthreads()
            if n < N and k < K:
                dw[n, k] = acc

    return linear_bwd_weight_kernel


def make_sum_rows(dt):
    def linear_bwd_bias_kernel(dy, db):
        # One thread per column n, rows summed in order; neighbouring threads read
        # neighbouring columns (coalesced).
        M, N = dy.shape
        for n in range(cuda.grid(1), N, cuda.gridsize(1)):
            acc = dt(0)
            for m in range(M):
                acc += dy[m, n]
            db[n] = acc

    return linear_bwd_bias_kernel


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature, threads)}."""
    from numba import boolean

    a2 = dt[:, ::1]
    tile_threads = TILE * TILE
    return {
        "linear_fwd": (make_matmul_nt, (a2, a2, dt[::1], boolean, a2), tile_threads),
        "linear_bwd_input": (make_matmul_nn, (a2, a2, a2), tile_threads),
        "linear_bwd_weight": (make_matmul_tn, (a2, a2, a2), tile_threads),
        "linear_bwd_bias": (make_sum_rows, (a2, dt[::1])),
    }


def _tiles(rows, cols):
    """Grid for a rows×cols output: x over column tiles, y over row tiles (capped, the kernels loop)."""
    return (-(-cols // TILE), max(1, min(-(-rows // TILE), _MAX_GRID_Y)))


def linear_fwd(x, w, b, out):
    has_bias = b is not None
    bias = b if has_bias else out.reshape(out.size)[:1]  # never read
    launch = kernel(make_matmul_nt, out.dtype)
    launch[_tiles(*out.shape), (TILE, TILE), out.stream](x, w, bias, has_bias, out)


def linear_bwd(dy, x, w, grad_input, grad_weight, grad_bias):
    if grad_input.size:
        launch = kernel(make_matmul_nn, grad_input.dtype)
        launch[_tiles(*grad_input.shape), (TILE, TILE), grad_input.stream](dy, w, grad_input)
    if grad_weight.size:
        launch = kernel(make_matmul_tn, grad_weight.dtype)
        launch[_tiles(*grad_weight.shape), (TILE, TILE), grad_weight.stream](dy, x, grad_weight)
    if grad_bias.size:
        launch = kernel(make_sum_rows, grad_bias.dtype)
        launch[grid_for(grad_bias.size), THREADS, grad_bias.stream](dy, grad_bias)
