"""Elementwise family: Numba CPU kernels.

Activations run over the flat, C-contiguous arrays: one ``prange`` over elements (Numba
splits it into one contiguous chunk per thread). No fastmath: it would let LLVM assume
no NaNs, and NaN must propagate. The Hadamard product works on the coalesced broadcast
axes of ``BroadcastGeometry``: an operand broadcast along an axis has element stride 0
there, so the kernels index ``a[Σ coord_d · a_strides[d]]`` and never materialise it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


# ------------------------------------------------------------ Hadamard product
# out[i] = a[offset_a(i)] · b[offset_b(i)]
@njit(parallel=True, cache=True)
def _hadamard(a, b, out, dims, a_strides, b_strides):
    # One prange iteration per row of the last coalesced axis; the inner loop walks it
    # with stride 0 or 1 per operand, so LLVM vectorises it.
    nd = dims.shape[0]
    inner = dims[nd - 1]
    step_a, step_b = a_strides[nd - 1], b_strides[nd - 1]
    for row in prange(out.shape[0] // inner):
        off_a, off_b, below = 0, 0, 1  # below: product of the row axes after d
        for d in range(nd - 2, -1, -1):
            c = (row // below) % dims[d]
            below *= dims[d]
            off_a += c * a_strides[d]
            off_b += c * b_strides[d]
        base = row * inner
        for j in range(inner):
            out[base + j] = a[off_a + j * step_a] * b[off_b + j * step_b]


# grad_self[i] = Σ_r dy[offset(i, r)] · other[offset_other(i, r)], r over self's broadcast axes
@njit(parallel=True, cache=True)
def _mul_reduce(dy, other, grad_self, dims, self_dims, other_strides):
    # One prange iteration per element of grad_self; it sums its terms in the order of the
    # output elements (r ascending), so the result does not depend on the thread count.
    nd = dims.shape[0]
    count = dy.shape[0] // grad_self.shape[0]
    for i in prange(grad_self.shape[0]):
        acc = dy[0] * 0
        for r in range(count):
            below_i, below_r, off_dy, off_other, step = 1, 1, 0, 0, 1
            for d in range(nd - 1, -1, -1):
                n = dims[d]
                if self_dims[d] == 1:  # a broadcast axis of self: the coordinate comes from r
                    c = (r // below_r) % n
                    below_r *= n
                else:
                    c = (i // below_i) % n
                    below_i *= n
                off_dy += c * step
                step *= n
                off_other += c * other_strides[d]
            acc += dy[off_dy] * other[off_other]
        grad_self[i] = acc


def _ints(values):
    return np.asarray(values, dtype=np.int64)


def hadamard_fwd(a, b, out, geom):
    _hadamard(a.reshape(-1), b.reshape(-1), out.reshape(-1), _ints(geom.dims),
              _ints(geom.strides(geom.a_dims)), _ints(geom.strides(geom.b_dims)))


def hadamard_bwd(dy, a, b, grad_a, grad_b, geom):
    dims = _ints(geom.dims)
    dy = dy.reshape(-1)
    if grad_a.size:
        _mul_reduce(dy, b.reshape(-1), grad_a.reshape(-1), dims, _ints(geom.a_dims), _ints(geom.strides(geom.b_dims)))
    if grad_b.size:
        _mul_reduce(dy, a.reshape(-1), grad_b.reshape(-1), dims, _ints(geom.b_dims), _ints(geom.strides(geom.a_dims)))


# ------------------------------------------------------------ activations
@njit(parallel=True, cache=True)
def _relu(x, out):
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = 0 if v <= 0 else v  # noqa: FURB136 (max() would drop NaN; NaN <= 0 is False: NaN propagates)


@njit(parallel=True, cache=True)
def _relu_bwd(dy, x, out):
    for i in prange(x.shape[0]):
        out[i] = 0 if x[i] <= 0 else dy[i]


@njit(parallel=True, cache=True)
def _leaky_relu(x, out, slope):
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = v if v > 0 else v * slope


@njit(parallel=True, cache=True)
def _leaky_relu_bwd(dy, x, out, slope):
    for i in prange(x.shape[0]):
        out[i] = dy[i] if x[i] > 0 else dy[i] * slope


@njit(parallel=True, cache=True)
def _sigmoid(x, out):
    one = x.dtype.type(1)
    for i in prange(x.shape[0]):
        v = x[i]
        if v >= 0:
            out[i] = one / (one + math.exp(-v))
        else:  # e^v / (1 + e^v): e^−v would overflow for very negative v
            e = math.exp(v)
            out[i] = e / (one + e)


@njit(parallel=True, cache=True)
def _sigmoid_bwd(dy, y, out):
    one = y.dtype.type(1)
    for i in prange(y.shape[0]):
        out[i] = dy[i] * y[i] * (one - y[i])


@njit(parallel=True, cache=True)
def _tanh(x, out):
    for i in prange(x.shape[0]):
        out[i] = math.tanh(x[i])


@njit(parallel=True, cache=True)
def _tanh_bwd(dy, y, out):
    one = y.dtype.type(1)
    for i in prange(y.shape[0]):
        out[i] = dy[i] * (one - y[i] * y[i])


def relu_fwd(x, out):
    _relu(x.reshape(-1), out.reshape(-1))


def relu_bwd(dy, x, out):
    _relu_bwd(dy.reshape(-1), x.reshape(-1), out.reshape(-1))


def leaky_relu_fwd(x, out, negative_slope):
    _leaky_relu(x.reshape(-1), out.reshape(-1), x.dtype.type(negative_slope))


def leaky_relu_bwd(dy, x, out, negative_slope):
    _leaky_relu_bwd(dy.reshape(-1), x.reshape(-1), out.reshape(-1), x.dtype.type(negative_slope))


def sigmoid_fwd(x, out):
    _sigmoid(x.reshape(-1), out.reshape(-1))


def sigmoid_bwd(dy, y, out):
    _sigmoid_bwd(dy.reshape(-1), y.reshape(-1), out.reshape(-1))


def tanh_fwd(x, out):
    _tanh(x.reshape(-1), out.reshape(-1))


def tanh_bwd(dy, y, out):
    _tanh_bwd(dy.reshape(-1), y.reshape(-1), out.reshape(-1))
