"""NumPy references for the dense (fully connected) layer, ``torch.nn.functional.linear``.

out[..., o] = Σ_i input[..., i] · weight[o, i] + bias[o]; computed in float64.
"""
from __future__ import annotations

import numpy as np


def linear(input, weight, bias=None):
    x, w = np.asarray(input, np.float64), np.asarray(weight, np.float64)
    out = np.einsum("...i,oi->...o", x, w)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return out.astype(np.asarray(input).dtype)


def linear_backward(grad_output, input, weight):
    """(grad_input, grad_weight, grad_bias): dX = dY·W, dW = Σ_rows dYᵀ·X, db = Σ_rows dY."""
    dtype = np.asarray(input).dtype
    g = np.asarray(grad_output, np.float64)
    x, w = np.asarray(input, np.float64), np.asarray(weight, np.float64)
    grad_input = np.einsum("...o,oi->...i", g, w)
    rows = int(np.prod(x.shape[:-1]))
    rows_g = g.reshape(rows, w.shape[0])
    rows_x = x.reshape(rows, w.shape[1])
    grad_weight = np.einsum("mo,mi->oi", rows_g, rows_x)
    grad_bias = rows_g.sum(axis=0)
    return grad_input.astype(dtype), grad_weight.astype(dtype), grad_bias.astype(dtype)
