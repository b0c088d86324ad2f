"""softmax, log_softmax and cross-entropy: Numba CUDA kernels.

Arrays arrive as (outer, length, inner) views with the softmax axis in the middle; a
"row" is the ``length`` elements of one (outer, inner) pair. One thread per row,
grid-stride: max, then Σ e^(x − max), then the write — each row reduced in order by one
thread, so results are deterministic (and adjacent threads read adjacent memory when
inner > 1). Cross-entropy: one thread per row of the (N, C) logits writes that row's
loss; one block then sums the N losses (strided partial sums + a fixed shared-memory
tree, no atomics). Literals are dt(...) so float32 kernels stay float32 (expf, logf).
"""
from __future__ import annotations

import math

from numba import cuda

from .._cuda_util import THREADS, grid_for, kernel

REDUCE_THREADS = 128  # one block sums the per-row losses


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


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature[, threads])}."""
    from numba import boolean, int64

    a3, a2, a1 = dt[:, :, ::1], dt[:, ::1], dt[::1]
    return {
        "softmax": (make_softmax, (a3, a3, boolean)),
        "softmax_bwd": (make_softmax_bwd, (a3, a3, a3, boolean)),
        "cross_entropy_rows": (make_cross_entropy_rows, (a2, int64[::1], a1)),
        "sum_losses": (make_sum_losses, (a1, a1, dt), REDUCE_THREADS),
        "cross_entropy_bwd": (make_cross_entropy_bwd, (a2, int64[::1], a1, int64, dt, a2)),
    }


def _rows_launch(factory, rows, dtype, *args):
    kernel(factory, dtype)[grid_for(rows), THREADS](*args)


def softmax_fwd(x, out, layout):
    _rows_launch(make_softmax, layout[0] * layout[2], out.dtype, x.reshape(layout), out.reshape(layout), False)


def log_softmax_fwd(x, out, layout):
    _rows_launch(make_softmax, layout[0] * layout[2], out.dtype, x.reshape(layout), out.reshape(layout), True)


def softmax_bwd(dy, y, out, layout):
    _rows_launch(make_softmax_bwd, layout[0] * layout[2], out.dtype,
                 dy.reshape(layout), y.reshape(layout), out.reshape(layout), False)


def log_softmax_bwd(dy, y, out, layout):
    _rows_launch(make_softmax_bwd, layout[0] * layout[2], out.dtype,
                 dy.reshape(layout), y.reshape(layout), out.reshape(layout), True)


def cross_entropy_fwd(x, t, losses, out, reduction):
    _rows_launch(make_cross_entropy_rows, x.shape[0], losses.dtype, x, t, losses)
    if out is not None:
        divisor = out.dtype.type(x.shape[0] if reduction == "mean" else 1)
        kernel(make_sum_losses, out.dtype)[1, REDUCE_THREADS](losses, out, divisor)


def cross_entropy_bwd(x, t, g, reduction, out):
    divisor = out.dtype.type(x.shape[0] if reduction == "mean" else 1)
    _rows_launch(make_cross_entropy_bwd, x.shape[0], out.dtype, x, t, g, 1 if reduction == "none" else 0, divisor, out)
