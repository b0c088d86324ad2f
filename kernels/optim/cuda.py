"""Optimiser updates and the scaled sum: Numba CUDA kernels.

One thread per parameter element (grid-stride loop over the flat, contiguous arrays);
no element depends on another, so there are no races and no atomics. Scalars are
passed as the array's dtype so float32 kernels stay free of float64. Rules as numpy.py.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from convcore._backend import cuda_simulated

from .._cuda_util import THREADS, grid_for, kernel

# The simulator runs each thread in Python: few threads, each striding over many elements.
_THREADS = 32 if cuda_simulated() else THREADS


def _blocks(size):
    return 1 if cuda_simulated() else grid_for(size, _THREADS)


def make_sgd(dt):
    def sgd_kernel(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            d_p = grad[i] + weight_decay * param[i]
            if momentum != dt(0):
                if first:
                    buf[i] = d_p
                else:
                    buf[i] = momentum * buf[i] + (dt(1) - dampening) * d_p
                if nesterov:
                    d_p = d_p + momentum * buf[i]
                else:
                    d_p = buf[i]
            param[i] -= lr * d_p

    return sgd_kernel


def make_adam(dt):
    def adam_kernel(param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, weight_decay, step_size, root_bc2):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            g = grad[i] + weight_decay * param[i]
            exp_avg[i] += (dt(1) - beta1) * (g - exp_avg[i])
            exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (dt(1) - beta2) * g * g
            param[i] -= step_size * exp_avg[i] / (math.sqrt(exp_avg_sq[i]) / root_bc2 + eps)

    return adam_kernel


def make_axpby(dt):
    def axpby_kernel(x, y, a, b, out):
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[i] = a * x[i] + b * y[i]

    return axpby_kernel


def sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    s = param.dtype.type
    launch = kernel(make_sgd, param.dtype)
    launch[_blocks(param.size), _THREADS](param, grad, buf, s(lr), s(momentum), s(dampening), s(weight_decay),
                                          bool(nesterov), bool(first))


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                bias_correction2):
    s = param.dtype.type
    # The step size and sqrt(bias correction) are computed once here, in float64, as PyTorch does on the host.
    step_size, root_bc2 = lr / bias_correction1, math.sqrt(bias_correction2)
    launch = kernel(make_adam, param.dtype)
    launch[_blocks(param.size), _THREADS](param, grad, exp_avg, exp_avg_sq, s(beta1), s(beta2), s(eps),
                                          s(weight_decay), s(step_size), s(root_bc2))


def axpby(x, y, a, b, out):
    s = np.dtype(out.dtype).type
    launch = kernel(make_axpby, out.dtype)
    launch[_blocks(out.size), _THREADS](x, y, s(a), s(b), out)


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature)}."""
    from numba import boolean

    a = dt[::1]
    return {
        "sgd_update": (make_sgd, (a, a, a, dt, dt, dt, dt, boolean, boolean)),
        "adam_update": (make_adam, (a, a, a, a) + (dt,) * 6),
        "axpby": (make_axpby, (a, a, dt, dt, a)),
    }
