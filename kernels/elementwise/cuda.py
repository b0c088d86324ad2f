"""Elementwise family: Numba CUDA kernels.

Every kernel is a grid-stride loop, one thread per output element. Activations index
the flat, C-contiguous arrays. The Hadamard product works on the coalesced broadcast
axes of ``BroadcastGeometry`` (``dims``): a broadcast operand has element stride 0 along
an axis, so ``a[Σ coord_d · a_strides[d]]`` reads it without materialising it. Its
gradient is a gather, one thread per element of the input's gradient summing its terms
in output order: no atomics, deterministic.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .._cuda_util import THREADS, grid_for, kernel


def make_hadamard(dt):
    def hadamard_kernel(a, b, out, dims, a_strides, b_strides):
        nd = dims.shape[0]
        for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            rem = idx
            off_a = 0
            off_b = 0
            for d in range(nd - 1, -1, -1):
                c = rem % dims[d]
                rem //= dims[d]
                off_a += c * a_strides[d]
                off_b += c * b_strides[d]
            out[idx] = a[off_a] * b[off_b]

    return hadamard_kernel


def make_mul(dt):
    def mul_kernel(a, b, out):
        # Operands of the same shape (no broadcast): one thread per element, grid-stride,
        # no index decomposition and no stride tables to copy to the device.
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[i] = a[i] * b[i]

    return mul_kernel


def make_mul_reduce(dt):
    def mul_reduce_kernel(dy, other, grad_self, dims, self_dims, other_strides):
        # grad_self[i] = Σ_r dy[·] · other[·], r over the axes where self is broadcast, in order.
        nd = dims.shape[0]
        count = dy.shape[0] // grad_self.shape[0]
        for i in range(cuda.grid(1), grad_self.shape[0], cuda.gridsize(1)):
            acc = dt(0)
            for r in range(count):
                rem_i = i
                rem_r = r
                off_dy = 0
                off_other = 0
                step = 1
                for d in range(nd - 1, -1, -1):
                    n = dims[d]
                    if self_dims[d] == 1:
                        c = rem_r % n
                        rem_r //= n
                    else:
                        c = rem_i % n
                        rem_i //= n
                    off_dy += c * step
                    step *= n
                    off_other += c * other_strides[d]
                acc += dy[off_dy] * other[off_other]
            grad_self[i] = acc

    return mul_reduce_kernel


def make_relu(dt):
    def relu_kernel(x, out):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            out[i] = dt(0) if v <= dt(0) else v  # noqa: FURB136 (max() would drop NaN; NaN <= 0 is False)

    return relu_kernel


def make_relu_bwd(dt):
    def relu_bwd_kernel(dy, x, out):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[i] = dt(0) if x[i] <= dt(0) else dy[i]

    return relu_bwd_kernel


def make_leaky_relu(dt):
    def leaky_relu_kernel(x, out, slope):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            out[i] = v if v > dt(0) else v * slope

    return leaky_relu_kernel


def make_leaky_relu_bwd(dt):
    def leaky_relu_bwd_kernel(dy, x, out, slope):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[i] = dy[i] if x[i] > dt(0) else dy[i] * slope

    return leaky_relu_bwd_kernel


def make_sigmoid(dt):
    def sigmoid_kernel(x, out):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            e = math.exp(-v if v >= dt(0) else v)  # e^−|v| ≤ 1: never overflows
            out[i] = dt(1) / (dt(1) + e) if v >= dt(0) else e / (dt(1) + e)

    return sigmoid_kernel


def make_sigmoid_bwd(dt):
    def sigmoid_bwd_kernel(dy, y, out):
        for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
            out[i] = dy[i] * y[i] * (dt(1) - y[i])

    return sigmoid_bwd_kernel


def make_tanh(dt):
    def tanh_kernel(x, out):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            out[i] = math.tanh(x[i])

    return tanh_kernel


def make_tanh_bwd(dt):
    def tanh_bwd_kernel(dy, y, out):
        for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
            out[i] = dy[i] * (dt(1) - y[i] * y[i])

    return tanh_bwd_kernel


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature)}."""
    from numba import int64

    a1, i1 = dt[::1], int64[::1]
    return {
        "hadamard": (make_hadamard, (a1, a1, a1, i1, i1, i1)),
        "mul": (make_mul, (a1, a1, a1)),
        "mul_reduce": (make_mul_reduce, (a1, a1, a1, i1, i1, i1)),
        "relu": (make_relu, (a1, a1)),
        "relu_bwd": (make_relu_bwd, (a1, a1, a1)),
        "leaky_relu": (make_leaky_relu, (a1, a1, dt)),
        "leaky_relu_bwd": (make_leaky_relu_bwd, (a1, a1, a1, dt)),
        "sigmoid": (make_sigmoid, (a1, a1)),
        "sigmoid_bwd": (make_sigmoid_bwd, (a1, a1, a1)),
        "tanh": (make_tanh, (a1, a1)),
        "tanh_bwd": (make_tanh_bwd, (a1, a1, a1)),
    }


def _flat(array):
    return array.reshape(array.size)


def _ints(values):
    return cuda.to_device(np.asarray(values, dtype=np.int64))


def _launch(factory, out, *args):
    kernel(factory, out.dtype)[grid_for(out.size), THREADS, out.stream](*args)


def hadamard_fwd(a, b, out, geom):
    if geom.a_dims == geom.b_dims == geom.dims:
        _launch(make_mul, out, _flat(a), _flat(b), _flat(out))
        return
    _launch(make_hadamard, out, _flat(a), _flat(b), _flat(out), _ints(geom.dims),
            _ints(geom.strides(geom.a_dims)), _ints(geom.strides(geom.b_dims)))


def hadamard_bwd(dy, a, b, grad_a, grad_b, geom):
    dims = _ints(geom.dims)
    for grad, own_dims, other, other_dims in ((grad_a, geom.a_dims, b, geom.b_dims), (grad_b, geom.b_dims, a, geom.a_dims)):
        if grad.size == dy.size and tuple(other_dims) == tuple(geom.dims):  # same shapes: dy ⊙ other
            _launch(make_mul, grad, _flat(dy), _flat(other), _flat(grad))
        elif grad.size == dy.size:  # not broadcast: no sum, the gradient is dy ⊙ other, the forward kernel
            _launch(make_hadamard, grad, _flat(dy), _flat(other), _flat(grad), dims, _ints(geom.strides(geom.dims)),
                    _ints(geom.strides(other_dims)))
        elif grad.size:
            _launch(make_mul_reduce, grad, _flat(dy), _flat(other), _flat(grad), dims, _ints(own_dims),
                    _ints(geom.strides(other_dims)))


def relu_fwd(x, out):
    _launch(make_relu, out, _flat(x), _flat(out))


def relu_bwd(dy, x, out):
    _launch(make_relu_bwd, out, _flat(dy), _flat(x), _flat(out))


def leaky_relu_fwd(x, out, negative_slope):
    _launch(make_leaky_relu, out, _flat(x), _flat(out), out.dtype.type(negative_slope))


def leaky_relu_bwd(dy, x, out, negative_slope):
    _launch(make_leaky_relu_bwd, out, _flat(dy), _flat(x), _flat(out), out.dtype.type(negative_slope))


def sigmoid_fwd(x, out):
    _launch(make_sigmoid, out, _flat(x), _flat(out))


def sigmoid_bwd(dy, y, out):
    _launch(make_sigmoid_bwd, out, _flat(dy), _flat(y), _flat(out))


def tanh_fwd(x, out):
    _launch(make_tanh, out, _flat(x), _flat(out))


def tanh_bwd(dy, y, out):
    _launch(make_tanh_bwd, out, _flat(dy), _flat(y), _flat(out))
