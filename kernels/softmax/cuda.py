"""softmax, log_softmax and cross-entropy: Numba CUDA kernels.

Arrays arrive as (outer, length, inner) views with the softmax axis in the middle; a
"row" is the ``length`` elements of one (outer, inner) pair.
- inner == 1 and rows of LONG_ROW+ elements (ImageNet logits): one BLOCK per row, grid-stride over rows.
  Its ROW_THREADS threads read the row with a stride of ROW_THREADS (coalesced), keep
  partial maxima / sums, and combine them in a fixed shared-memory tree: deterministic.
- otherwise (short rows; softmax over the channels of an image): one thread per row,
  reduced in order; adjacent threads read adjacent memory when inner > 1.
Cross-entropy: one thread, or for long rows one block, per row of the (N, C) logits writes that row's loss; one block
then sums the N losses (strided partial sums + a fixed tree, no atomics). Literals are
dt(...) so float32 kernels stay float32 (expf, logf).
"""
from __future__ import annotations

import math

from numba import cuda

from convcore._backend import cuda_simulated

from .._cuda_util import MAX_BLOCKS, THREADS, grid_for, kernel

REDUCE_THREADS = 128  # one block sums the per-row losses
# Threads per row in the block-per-row kernels. The simulator runs every thread in Python
# (and a block's threads in lock step), so it uses one warp's worth.
ROW_THREADS = 32 if cuda_simulated() else 128
# Rows at least this long get a block each; shorter ones (MNIST's 10 classes) one thread,
# which then reads the whole row from its own cache lines with no synchronisation.
LONG_ROW = 64


@cuda.jit(device=True, inline=True)
def _block_max(partial, j, value, threads):
    # Fixed tree over the block's partial maxima; an explicit compare, so NaN never wins
    # (a NaN in the row still makes Σ e^(x − m) NaN, as in the one-thread-per-row kernel).
    partial[j] = value
    cuda.syncthreads()
    step = threads // 2
    while step > 0:
        if j < step and partial[j + step] > partial[j]:
            partial[j] = partial[j + step]
        cuda.syncthreads()
        step //= 2
    result = partial[0]
    cuda.syncthreads()  # partial is reused by the next reduction
    return result


@cuda.jit(device=True, inline=True)
def _block_sum(partial, j, value, threads):
    partial[j] = value
    cuda.syncthreads()
    step = threads // 2
    while step > 0:
        if j < step:
            partial[j] += partial[j + step]
        cuda.syncthreads()
        step //= 2
    result = partial[0]
    cuda.syncthreads()
    return result


@cuda.jit(device=True, inline=True)
def _block_row_max_sumexp(x, n, partial, j, threads, minus_inf, zero):
    """(max, Σ e^(x − max)) of row n of x, by the whole block (every thread gets both)."""
    m = minus_inf
    for c in range(j, x.shape[1], threads):
        if x[n, c] > m:  # noqa: PLR1730
            m = x[n, c]
    m = _block_max(partial, j, m, threads)
    total = zero
    for c in range(j, x.shape[1], threads):
        total += math.exp(x[n, c] - m)
    return m, _block_sum(partial, j, total, threads)


def make_softmax_rows(dt):
    T = ROW_THREADS

    def softmax_rows_kernel(x, out, log):
        # x, out: (rows, length); block b handles rows b, b + gridDim, ...
        partial = cuda.shared.array(T, dt)
        j = cuda.threadIdx.x
        rows, length = x.shape
        for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            m = -dt(math.inf)
            for k in range(j, length, T):
                if x[row, k] > m:  # noqa: PLR1730
                    m = x[row, k]
            m = _block_max(partial, j, m, T)
            total = dt(0)
            for k in range(j, length, T):
                e = math.exp(x[row, k] - m)
                if not log:
                    out[row, k] = e  # keep e^(x − m): one exp per element
                total += e
            total = _block_sum(partial, j, total, T)
            if log:
                log_total = math.log(total)
                for k in range(j, length, T):
                    out[row, k] = (x[row, k] - m) - log_total
            else:
                for k in range(j, length, T):
                    out[row, k] = out[row, k] / total

    return softmax_rows_kernel


def make_softmax_rows_bwd(dt):
    T = ROW_THREADS

    def softmax_rows_bwd_kernel(dy, y, out, log):
        # softmax: dx = y ⊙ (dy − Σ dy ⊙ y);  log_softmax: dx = dy − e^y ⊙ Σ dy. Block per row.
        partial = cuda.shared.array(T, dt)
        j = cuda.threadIdx.x
        rows, length = y.shape
        for row in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            acc = dt(0)
            for k in range(j, length, T):
                acc += dy[row, k] if log else dy[row, k] * y[row, k]
            acc = _block_sum(partial, j, acc, T)
            for k in range(j, length, T):
                if log:
                    out[row, k] = dy[row, k] - math.exp(y[row, k]) * acc
                else:
                    out[row, k] = y[row, k] * (dy[row, k] - acc)

    return softmax_rows_bwd_kernel


def make_softmax(dt):
    def softmax_kernel(x, out, log):
        outer, length, inner = x.shape
        for row in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
            o = row // inner
            i = row % inner
            m = x[o, 0, i]
            for k in range(1, length):
                if x[o, k, i] > m:  # noqa: PLR1730 (explicit compare: NaN never becomes the max)
                    m = x[o, k, i]
            total = dt(0)
            if log:
                for k in range(length):
                    total += math.exp(x[o, k, i] - m)
                log_total = math.log(total)  # (x − m) − log Σ: never rounds m + log Σ at a large m
                for k in range(length):
                    out[o, k, i] = (x[o, k, i] - m) - log_total
            else:  # keep e^(x − m) in out, then normalise: one exp per element
                for k in range(length):
                    e = math.exp(x[o, k, i] - m)
                    out[o, k, i] = e
                    total += e
                for k in range(length):
                    out[o, k, i] = out[o, k, i] / total

    return softmax_kernel


def make_softmax_bwd(dt):
    def softmax_bwd_kernel(dy, y, out, log):
        # softmax: dx = y ⊙ (dy − Σ dy ⊙ y);  log_softmax: dx = dy − e^y ⊙ Σ dy
        outer, length, inner = y.shape
        for row in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
            o = row // inner
            i = row % inner
            acc = dt(0)
            for k in range(length):
                acc += dy[o, k, i] if log else dy[o, k, i] * y[o, k, i]
            for k in range(length):
                if log:
                    out[o, k, i] = dy[o, k, i] - math.exp(y[o, k, i]) * acc
                else:
                    out[o, k, i] = y[o, k, i] * (dy[o, k, i] - acc)

    return softmax_bwd_kernel


def make_cross_entropy_rows_block(dt):
    T = ROW_THREADS

    def cross_entropy_rows_block_kernel(x, t, losses):
        # Block per row: losses[n] = m − x[n, t[n]] + log Σ_c e^(x[n,c] − m).
        partial = cuda.shared.array(T, dt)
        j = cuda.threadIdx.x
        N, C = x.shape
        for n in range(cuda.blockIdx.x, N, cuda.gridDim.x):
            m, total = _block_row_max_sumexp(x, n, partial, j, T, -dt(math.inf), dt(0))
            if j == 0:
                losses[n] = (m - x[n, t[n]]) + math.log(total)

    return cross_entropy_rows_block_kernel


def make_cross_entropy_rows(dt):
    def cross_entropy_rows_kernel(x, t, losses):
        N, C = x.shape
        for n in range(cuda.grid(1), N, cuda.gridsize(1)):
            m = x[n, 0]
            for c in range(1, C):
                if x[n, c] > m:  # noqa: PLR1730 (explicit compare: NaN never becomes the max)
                    m = x[n, c]
            total = dt(0)
            for c in range(C):
                total += math.exp(x[n, c] - m)
            losses[n] = (m - x[n, t[n]]) + math.log(total)

    return cross_entropy_rows_kernel


def make_cross_entropy_bwd(dt):
    def cross_entropy_bwd_kernel(x, t, g, g_stride, divisor, out):
        # out[n, c] = g[n·g_stride] / divisor · (softmax(x[n])[c] − [c = t[n]]), one thread per row.
        N, C = x.shape
        for n in range(cuda.grid(1), N, cuda.gridsize(1)):
            m = x[n, 0]
            for c in range(1, C):
                if x[n, c] > m:  # noqa: PLR1730 (explicit compare: NaN never becomes the max)
                    m = x[n, c]
            total = dt(0)
            for c in range(C):
                total += math.exp(x[n, c] - m)
            scale = g[n * g_stride] / divisor
            target = t[n]
            for c in range(C):
                p = math.exp(x[n, c] - m) / total
                out[n, c] = scale * (p - dt(1)) if c == target else scale * p

    return cross_entropy_bwd_kernel


def make_sum_losses(dt):
    def sum_losses_kernel(losses, out, divisor):
        # A single block: thread j sums losses j, j + T, j + 2T, ... then a fixed tree.
        partial = cuda.shared.array(REDUCE_THREADS, dt)
        j = cuda.threadIdx.x
        acc = dt(0)
        for n in range(j, losses.shape[0], REDUCE_THREADS):
            acc += losses[n]
        partial[j] = acc
        cuda.syncthreads()
        step = REDUCE_THREADS // 2
        while step > 0:
            if j < step:
                partial[j] += partial[j + step]
            cuda.syncthreads()
            step //= 2
        if j == 0:
            out[0] = partial[0] / divisor

    return sum_losses_kernel


def make_cross_entropy_bwd_block(dt):
    T = ROW_THREADS

    def cross_entropy_bwd_block_kernel(x, t, g, g_stride, divisor, out):
        # out[n, c] = g[n·g_stride] / divisor · (softmax(x[n])[c] − [c = t[n]]), one block per row.
        partial = cuda.shared.array(T, dt)
        j = cuda.threadIdx.x
        N, C = x.shape
        for n in range(cuda.blockIdx.x, N, cuda.gridDim.x):
            m, total = _block_row_max_sumexp(x, n, partial, j, T, -dt(math.inf), dt(0))
            scale = g[n * g_stride] / divisor
            target = t[n]
            for c in range(j, C, T):
                p = math.exp(x[n, c] - m) / total
                out[n, c] = scale * (p - dt(1)) if c == target else scale * p

    return cross_entropy_bwd_block_kernel


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature[, threads])}."""
    from numba import boolean, int64

    a3, a2, a1 = dt[:, :, ::1], dt[:, ::1], dt[::1]
    return {
        "softmax": (make_softmax, (a3, a3, boolean)),
        "softmax_bwd": (make_softmax_bwd, (a3, a3, a3, boolean)),
        "softmax_rows": (make_softmax_rows, (a2, a2, boolean), ROW_THREADS),
        "softmax_rows_bwd": (make_softmax_rows_bwd, (a2, a2, a2, boolean), ROW_THREADS),
        "cross_entropy_rows": (make_cross_entropy_rows, (a2, int64[::1], a1)),
        "cross_entropy_rows_block": (make_cross_entropy_rows_block, (a2, int64[::1], a1), ROW_THREADS),
        "sum_losses": (make_sum_losses, (a1, a1, dt), REDUCE_THREADS),
        "cross_entropy_bwd": (make_cross_entropy_bwd, (a2, int64[::1], a1, int64, dt, a2)),
        "cross_entropy_bwd_block": (make_cross_entropy_bwd_block, (a2, int64[::1], a1, int64, dt, a2), ROW_THREADS),
    }


def _rows_launch(factory, rows, out, *args):
    # One thread per row (inner > 1).
    kernel(factory, out.dtype)[grid_for(rows), THREADS, out.stream](*args)


def _block_rows_launch(factory, rows, out, *args):
    # One block of ROW_THREADS per row.
    kernel(factory, out.dtype)[max(1, min(rows, MAX_BLOCKS)), ROW_THREADS, out.stream](*args)


def _softmax(x, out, layout, log):
    if layout[2] == 1 and layout[1] >= LONG_ROW:
        rows = (layout[0], layout[1])
        _block_rows_launch(make_softmax_rows, layout[0], out, x.reshape(rows), out.reshape(rows), log)
    else:
        _rows_launch(make_softmax, layout[0] * layout[2], out, x.reshape(layout), out.reshape(layout), log)


def _softmax_bwd(dy, y, out, layout, log):
    if layout[2] == 1 and layout[1] >= LONG_ROW:
        rows = (layout[0], layout[1])
        _block_rows_launch(make_softmax_rows_bwd, layout[0], out, dy.reshape(rows), y.reshape(rows),
                           out.reshape(rows), log)
    else:
        _rows_launch(make_softmax_bwd, layout[0] * layout[2], out,
                     dy.reshape(layout), y.reshape(layout), out.reshape(layout), log)


def softmax_fwd(x, out, layout):
    _softmax(x, out, layout, False)


def log_softmax_fwd(x, out, layout):
    _softmax(x, out, layout, True)


def softmax_bwd(dy, y, out, layout):
    _softmax_bwd(dy, y, out, layout, False)


def log_softmax_bwd(dy, y, out, layout):
    _softmax_bwd(dy, y, out, layout, True)


def cross_entropy_fwd(x, t, losses, out, reduction):
    if x.shape[1] >= LONG_ROW:
        _block_rows_launch(make_cross_entropy_rows_block, x.shape[0], losses, x, t, losses)
    else:
        _rows_launch(make_cross_entropy_rows, x.shape[0], losses, x, t, losses)
    if out is not None:
        divisor = out.dtype.type(x.shape[0] if reduction == "mean" else 1)
        kernel(make_sum_losses, out.dtype)[1, REDUCE_THREADS, out.stream](losses, out, divisor)


def cross_entropy_bwd(x, t, g, reduction, out):
    divisor = out.dtype.type(x.shape[0] if reduction == "mean" else 1)
    args = (x, t, g, 1 if reduction == "none" else 0, divisor, out)
    if x.shape[1] >= LONG_ROW:
        _block_rows_launch(make_cross_entropy_bwd_block, x.shape[0], out, *args)
    else:
        _rows_launch(make_cross_entropy_bwd, x.shape[0], out, *args)
