"""softmax, log_softmax and cross-entropy: Numba CPU kernels.

Arrays arrive as (outer, length, inner) views with the softmax axis in the middle; a
"row" is the ``length`` elements of one (outer, inner) pair. One ``prange`` iteration
per row (contiguous when the axis is the last one, the common case): max, then
Σ e^(x − max), then the write. Cross-entropy rows are the N rows of the (N, C) logits.
No fastmath: NaN and −inf must behave exactly as in the reference.
"""
from __future__ import annotations

import math

from numba import njit, prange


@njit(inline="always")
def _row_max(x, o, i):
    m = x[o, 0, i]
    for k in range(1, x.shape[1]):
        if x[o, k, i] > m:  # noqa: PLR1730 (explicit compare: NaN never becomes the max)
            m = x[o, k, i]
    return m


@njit(parallel=True, cache=True)
def _softmax(x, out, log):
    outer, length, inner = x.shape
    for row in prange(outer * inner):
        o, i = row // inner, row % inner
        m = _row_max(x, o, i)
        total = x.dtype.type(0)
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


@njit(parallel=True, cache=True)
def _softmax_bwd(dy, y, out, log):
    # softmax: dx = y ⊙ (dy − Σ dy ⊙ y);  log_softmax: dx = dy − e^y ⊙ Σ dy
    outer, length, inner = y.shape
    for row in prange(outer * inner):
        o, i = row // inner, row % inner
        acc = y.dtype.type(0)
        for k in range(length):
            acc += dy[o, k, i] if log else dy[o, k, i] * y[o, k, i]
        for k in range(length):
            if log:
                out[o, k, i] = dy[o, k, i] - math.exp(y[o, k, i]) * acc
            else:
                out[o, k, i] = y[o, k, i] * (dy[o, k, i] - acc)


@njit(inline="always")
def _logsumexp(x, n):
    m = x[n, 0]
    for c in range(1, x.shape[1]):
        if x[n, c] > m:  # noqa: PLR1730 (explicit compare: NaN never becomes the max)
            m = x[n, c]
    total = x.dtype.type(0)
    for c in range(x.shape[1]):
        total += math.exp(x[n, c] - m)
    return m, total


@njit(parallel=True, cache=True)
def _cross_entropy_rows(x, t, losses):
    # losses[n] = logsumexp(x[n]) − x[n, t[n]], one prange iteration per row.
    for n in prange(x.shape[0]):
        m, total = _logsumexp(x, n)
        losses[n] = (m - x[n, t[n]]) + math.log(total)


@njit(cache=True)
def _sum_in_order(losses, out, divisor):
    acc = losses.dtype.type(0)
    for n in range(losses.shape[0]):
        acc += losses[n]
    out[0] = acc / divisor


@njit(parallel=True, cache=True)
def _cross_entropy_bwd(x, t, g, g_stride, divisor, out):
    # out[n, c] = g[n·g_stride] / divisor · (softmax(x[n])[c] − [c = t[n]]), one prange iteration per row.
    for n in prange(x.shape[0]):
        m, total = _logsumexp(x, n)
        scale = g[n * g_stride] / divisor
        for c in range(x.shape[1]):
            p = math.exp(x[n, c] - m) / total
            out[n, c] = scale * (p - 1) if c == t[n] else scale * p


def softmax_fwd(x, out, layout):
    _softmax(x.reshape(layout), out.reshape(layout), False)


def log_softmax_fwd(x, out, layout):
    _softmax(x.reshape(layout), out.reshape(layout), True)


def softmax_bwd(dy, y, out, layout):
    _softmax_bwd(dy.reshape(layout), y.reshape(layout), out.reshape(layout), False)


def log_softmax_bwd(dy, y, out, layout):
    _softmax_bwd(dy.reshape(layout), y.reshape(layout), out.reshape(layout), True)


def cross_entropy_fwd(x, t, losses, out, reduction):
    _cross_entropy_rows(x, t, losses)
    if out is not None:
        _sum_in_order(losses, out, out.dtype.type(x.shape[0] if reduction == "mean" else 1))


def cross_entropy_bwd(x, t, g, reduction, out):
    divisor = out.dtype.type(x.shape[0] if reduction == "mean" else 1)
    _cross_entropy_bwd(x, t, g, 1 if reduction == "none" else 0, divisor, out)
