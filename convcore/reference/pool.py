"""NumPy references for max and average pooling (PyTorch semantics).

A plain loop over output positions (p, q), vectorised over (N, C): each window's
valid rows and columns are listed explicitly, so padding, dilation and ceil_mode
need no cleverness. Float32 inputs are computed in float64 and rounded once.
"""
from __future__ import annotations

import numpy as np


def _window(start, size, kernel, dilation):
    """Valid input positions of one window, and PyTorch's fallback first index.

    PyTorch starts at the first tap inside the input (``while h0 < 0: h0 += d``);
    when no tap lands inside, that start is still what it reports as the index."""
    taps = start + dilation * np.arange(kernel)
    first = taps[taps >= 0][0] if (taps >= 0).any() else taps[-1]
    return taps[(taps >= 0) & (taps < size)], int(first)


def max_pool2d(input, out_hw, kernel_size, stride, padding, dilation):
    """out[n,c,p,q] = max over taps h = p·sh − ph + r·dh, w = q·sw − pw + s·dw inside the input.

    Returns (out, indices): indices are flat h·W + w into the input plane, int64. As
    PyTorch: NaN wins (the last NaN in scan order), otherwise the first maximum.
    """
    x = input.astype(np.float64)
    N, C, H, W = x.shape
    P, Q = out_hw
    out = np.empty((N, C, P, Q))
    indices = np.empty((N, C, P, Q), dtype=np.int64)
    for p in range(P):
        rows, row0 = _window(p * stride[0] - padding[0], H, kernel_size[0], dilation[0])
        for q in range(Q):
            cols, col0 = _window(q * stride[1] - padding[1], W, kernel_size[1], dilation[1])
            positions = (rows[:, None] * W + cols[None, :]).ravel()
            if positions.size == 0:
                out[:, :, p, q] = -np.inf
                indices[:, :, p, q] = row0 * W + col0
                continue
            values = x[:, :, rows][:, :, :, cols].reshape(N, C, -1)
            best = values.max(axis=-1)
            is_nan = np.isnan(values)
            last_nan = values.shape[-1] - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
            first_max = np.argmax(values == best[..., None], axis=-1)
            out[:, :, p, q] = best
            indices[:, :, p, q] = positions[np.where(is_nan.any(axis=-1), last_nan, first_max)]
    return out.astype(input.dtype), indices


def max_pool2d_backward(grad_output, input_shape, indices):
    """dx[n,c,i] = Σ over outputs (p, q) whose argmax index is i of dy[n,c,p,q]."""
    N, C, H, W = input_shape
    grad = np.zeros((N, C, H * W))
    dy = grad_output.astype(np.float64).reshape(N, C, -1)
    idx = indices.reshape(N, C, -1)
    for n in range(N):
        for c in range(C):
            np.add.at(grad[n, c], idx[n, c], dy[n, c])
    return grad.reshape(input_shape).astype(grad_output.dtype)


def _avg_windows(P, Q, H, W, kernel_size, stride, padding, count_include_pad):
    """For each (p, q): row slice, column slice and divisor, as PyTorch's avg_pool2d."""
    for p in range(P):
        h0 = p * stride[0] - padding[0]
        h1 = min(h0 + kernel_size[0], H + padding[0])
        for q in range(Q):
            w0 = q * stride[1] - padding[1]
            w1 = min(w0 + kernel_size[1], W + padding[1])
            pool_size = (h1 - h0) * (w1 - w0)
            hs, he, ws, we = max(h0, 0), min(h1, H), max(w0, 0), min(w1, W)
            divisor = pool_size if count_include_pad else (he - hs) * (we - ws)
            yield p, q, slice(hs, he), slice(ws, we), divisor, he > hs and we > ws


def avg_pool2d(input, out_hw, kernel_size, stride, padding, count_include_pad):
    """out[n,c,p,q] = Σ of the window's taps inside the input / divisor (0 for an empty window)."""
    x = input.astype(np.float64)
    N, C, H, W = x.shape
    out = np.zeros((N, C) + tuple(out_hw))
    for p, q, rows, cols, divisor, nonempty in _avg_windows(*out_hw, H, W, kernel_size, stride, padding,
                                                           count_include_pad):
        if nonempty:
            out[:, :, p, q] = x[:, :, rows, cols].sum(axis=(2, 3)) / divisor
    return out.astype(input.dtype)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride, padding, count_include_pad):
    """The adjoint of avg_pool2d: each window spreads dy / divisor over its taps."""
    H, W = input_shape[2:]
    dy = grad_output.astype(np.float64)
    grad = np.zeros(input_shape)
    for p, q, rows, cols, divisor, nonempty in _avg_windows(*dy.shape[2:], H, W, kernel_size, stride, padding,
                                                           count_include_pad):
        if nonempty:
            grad[:, :, rows, cols] += (dy[:, :, p, q] / divisor)[:, :, None, None]
    return grad.astype(grad_output.dtype)
