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
_CHUNK = 4096  # elements of the last axis per prange iteration


@njit(parallel=True, cache=True)
def _hadamard(a, b, out, dims, a_strides, b_strides):
    # One prange iteration per chunk of up to _CHUNK elements of one row of the last
    # coalesced axis (so a flat, same-shape product still spreads over every thread).
    # Along that axis each operand has stride 1 or 0 (broadcast); the four cases get
    # their own loops so LLVM sees unit strides and vectorises them.
    nd = dims.shape[0]
    inner = dims[nd - 1]
    step_a, step_b = a_strides[nd - 1], b_strides[nd - 1]
    chunks = (inner + _CHUNK - 1) // _CHUNK
    for task in prange((out.shape[0] // inner) * chunks):
        row = task // chunks
        lo = (task % chunks) * _CHUNK
        hi = min(lo + _CHUNK, inner)
        off_a, off_b, below = 0, 0, 1  # below: product of the row axes after d
        for d in range(nd - 2, -1, -1):
            c = (row // below) % dims[d]
            below *= dims[d]
            off_a += c * a_strides[d]
            off_b += c * b_strides[d]
        # Row views: indexing them from 0 lets LLVM drop Numba's negative-index select and
        # vectorise (indexing the flat arrays at base + j did neither: 7x slower, measured
        # 0.75 -> 0.11 ms on 2x256x56x56 float32, 2 threads).
        n = hi - lo
        dst = out[row * inner + lo:row * inner + hi]
        if step_a == 1 and step_b == 1:
            av, bv = a[off_a + lo:off_a + hi], b[off_b + lo:off_b + hi]
            for j in range(n):
                dst[j] = av[j] * bv[j]
        elif step_a == 1:
            av, bs = a[off_a + lo:off_a + hi], b[off_b]
            for j in range(n):
                dst[j] = av[j] * bs
        elif step_b == 1:
            as_, bv = a[off_a], b[off_b + lo:off_b + hi]
            for j in range(n):
                dst[j] = as_ * bv[j]
        else:
            product = a[off_a] * b[off_b]
            for j in range(n):
                dst[j] = product


# grad_self[i] = Σ_r dy[dy_i[i] + dy_r[r]] · other[other_i[i] + other_r[r]], r over self's broadcast axes.
# Offsets are linear in the coordinates and self's axes are disjoint from its broadcast
# axes, so they split into a per-element part (i) and a per-term part (r), precomputed
# once by _split_offsets: no division in the loop.
@njit(parallel=True, cache=True)
def _mul_reduce(dy, other, grad_self, dy_i, other_i, dy_r, other_r):
    # One prange iteration per element of grad_self; it adds its terms in output order
    # (r ascending), so the result does not depend on the thread count.
    for i in prange(grad_self.shape[0]):
        base_dy, base_other = dy_i[i], other_i[i]
        acc = dy[0] * 0
        for r in range(dy_r.shape[0]):
            acc += dy[base_dy + dy_r[r]] * other[base_other + other_r[r]]
        grad_self[i] = acc


def _split_offsets(dims, self_dims, other_strides):
    """(dy_i, other_i, dy_r, other_r): element offsets of dy (contiguous over ``dims``) and of
    the other operand along self's own axes (C order = grad_self's order) and along the
    axes self is broadcast over (C order = the order terms are added)."""
    dy_strides = np.cumprod((1,) + tuple(dims[:0:-1]))[::-1]
    own = [np.zeros(1, np.int64), np.zeros(1, np.int64)]
    bcast = [np.zeros(1, np.int64), np.zeros(1, np.int64)]
    for d, n in enumerate(dims):
        target = bcast if self_dims[d] == 1 and n != 1 else own
        steps = np.arange(n, dtype=np.int64)
        for k, stride in enumerate((dy_strides[d], other_strides[d])):
            target[k] = (target[k][:, None] + steps[None, :] * stride).reshape(-1)
    return own[0], own[1], bcast[0], bcast[1]


def _ints(values):
    return np.asarray(values, dtype=np.int64)


def hadamard_fwd(a, b, out, geom):
    _hadamard(a.reshape(-1), b.reshape(-1), out.reshape(-1), _ints(geom.dims),
              _ints(geom.strides(geom.a_dims)), _ints(geom.strides(geom.b_dims)))


def hadamard_bwd(dy, a, b, grad_a, grad_b, geom):
    dy, dims = dy.reshape(-1), _ints(geom.dims)
    for grad, own_dims, other, other_dims in ((grad_a, geom.a_dims, b, geom.b_dims), (grad_b, geom.b_dims, a, geom.a_dims)):
        if grad.size == dy.size:  # not broadcast: no sum, the gradient is dy ⊙ other, the forward kernel
            _hadamard(dy, other.reshape(-1), grad.reshape(-1), dims, _ints(geom.strides(geom.dims)),
                      _ints(geom.strides(other_dims)))
        elif grad.size:
            _mul_reduce(dy, other.reshape(-1), grad.reshape(-1), *_split_offsets(geom.dims, own_dims,
                                                                                 geom.strides(other_dims)))


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
