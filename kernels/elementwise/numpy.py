"""The ``numpy`` backend for the elementwise family: the references behind the launcher signature."""
from __future__ import annotations

from convcore import reference


def hadamard_fwd(a, b, out, geom):
    out[...] = reference.hadamard(a, b)


def hadamard_bwd(dy, a, b, grad_a, grad_b, geom):
    grad_a[...], grad_b[...] = reference.hadamard_backward(dy, a, b)


def relu_fwd(x, out):
    out[...] = reference.relu(x)


def relu_bwd(dy, x, out):
    out[...] = reference.relu_backward(dy, x)


def leaky_relu_fwd(x, out, negative_slope):
    out[...] = reference.leaky_relu(x, negative_slope)


def leaky_relu_bwd(dy, x, out, negative_slope):
    out[...] = reference.leaky_relu_backward(dy, x, negative_slope)


def sigmoid_fwd(x, out):
    out[...] = reference.sigmoid(x)


def sigmoid_bwd(dy, y, out):
    out[...] = reference.sigmoid_backward(dy, y)


def tanh_fwd(x, out):
    out[...] = reference.tanh(x)


def tanh_bwd(dy, y, out):
    out[...] = reference.tanh_backward(dy, y)
