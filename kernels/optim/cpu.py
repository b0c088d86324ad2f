"""Optimiser updates and the scaled sum: Numba CPU kernels.

One ``prange`` iteration per parameter element (all arrays flat and contiguous);
each element's update is independent, so the loop vectorises. Rules as numpy.py.
Most parameters are small (a bias, a 3x3 conv): below ``PARALLEL_MIN`` elements the
same loops run compiled without threads, as waking the thread pool costs more than
the update itself (and far more on a loaded machine).
"""
from __future__ import annotations

import math

from numba import njit, prange

PARALLEL_MIN = 1 << 16


@njit(parallel=True, cache=True)
def _sgd(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    for i in prange(param.size):
        d_p = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            if first:
                buf[i] = d_p
            else:
                buf[i] = momentum * buf[i] + (1.0 - dampening) * d_p
            if nesterov:
                d_p = d_p + momentum * buf[i]
            else:
                d_p = buf[i]
        param[i] -= lr * d_p


@njit(parallel=True, cache=True)
def _adam(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2):
    step_size = lr / bias_correction1
    root_bc2 = math.sqrt(bias_correction2)
    for i in prange(param.size):
        g = grad[i] + weight_decay * param[i]
        exp_avg[i] += (1.0 - beta1) * (g - exp_avg[i])
        exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1.0 - beta2) * g * g
        param[i] -= step_size * exp_avg[i] / (math.sqrt(exp_avg_sq[i]) / root_bc2 + eps)


@njit(parallel=True, cache=True)
def _axpby(x, y, a, b, out):
    for i in prange(out.size):
        out[i] = a * x[i] + b * y[i]


_sgd_serial = njit(cache=True)(_sgd.py_func)
_adam_serial = njit(cache=True)(_adam.py_func)
_axpby_serial = njit(cache=True)(_axpby.py_func)


def sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    update = _sgd if param.size >= PARALLEL_MIN else _sgd_serial
    update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first)


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                bias_correction2):
    update = _adam if param.size >= PARALLEL_MIN else _adam_serial
    update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2)


def axpby(x, y, a, b, out):
    (_axpby if out.size >= PARALLEL_MIN else _axpby_serial)(x, y, a, b, out)
