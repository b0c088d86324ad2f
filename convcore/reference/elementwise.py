"""NumPy references for the elementwise family: the Hadamard product and activations.

Computed in float64 and rounded once to the input dtype, with PyTorch's semantics
(NaN propagates through every forward; the backward formulas are PyTorch's).
"""
from __future__ import annotations

import numpy as np


def _f64(*arrays):
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _reduce_to(grad, shape):
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched to reach its shape."""
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead else grad
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def hadamard(a, b):
    """out = a ⊙ b with NumPy broadcasting."""
    a64, b64 = _f64(a, b)
    return (a64 * b64).astype(np.result_type(a, b))


def hadamard_backward(grad_output, a, b):
    """(grad_a, grad_b) = (Σ_broadcast grad_output ⊙ b, Σ_broadcast grad_output ⊙ a)."""
    g, a64, b64 = _f64(grad_output, a, b)
    dtype = np.result_type(a, b)
    grad_a = _reduce_to(g * b64, np.shape(a)).reshape(np.shape(a))
    grad_b = _reduce_to(g * a64, np.shape(b)).reshape(np.shape(b))
    return grad_a.astype(dtype), grad_b.astype(dtype)


def relu(x):
    (x64,) = _f64(x)
    return np.where(x64 <= 0, 0.0, x64).astype(np.asarray(x).dtype)  # NaN <= 0 is False: NaN stays


def relu_backward(grad_output, input):
    """PyTorch's threshold_backward: 0 where input ≤ 0, else grad_output (NaN input passes it)."""
    g, x64 = _f64(grad_output, input)
    return np.where(x64 <= 0, 0.0, g).astype(np.asarray(input).dtype)


def leaky_relu(x, negative_slope=0.01):
    (x64,) = _f64(x)
    return np.where(x64 > 0, x64, x64 * negative_slope).astype(np.asarray(x).dtype)


def leaky_relu_backward(grad_output, input, negative_slope):
    g, x64 = _f64(grad_output, input)
    return np.where(x64 > 0, g, g * negative_slope).astype(np.asarray(input).dtype)


def sigmoid(x):
    """1 / (1 + e^−x), evaluated as e^x / (1 + e^x) for x < 0 so neither branch overflows."""
    (x64,) = _f64(x)
    with np.errstate(under="ignore"):  # e^−|x| ≤ 1 cannot overflow; underflow to 0 is right
        e = np.exp(-np.abs(x64))
    return np.where(x64 >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.asarray(x).dtype)


def sigmoid_backward(grad_output, output):
    g, y = _f64(grad_output, output)
    return (g * y * (1.0 - y)).astype(np.asarray(output).dtype)


def tanh(x):
    (x64,) = _f64(x)
    return np.tanh(x64).astype(np.asarray(x).dtype)


def tanh_backward(grad_output, output):
    g, y = _f64(grad_output, output)
    return (g * (1.0 - y * y)).astype(np.asarray(output).dtype)
