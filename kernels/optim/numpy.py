"""Optimiser updates and the scaled sum, in NumPy: the reference behind the launchers.

Every launcher updates its first arrays in place (the parameter and the optimiser's
state, flattened to 1-D); the rules are PyTorch's ``torch.optim.SGD`` / ``Adam``.
"""
from __future__ import annotations

import numpy as np


def sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    d_p = grad + weight_decay * param if weight_decay else grad.copy()
    if momentum:
        if first:
            buf[...] = d_p
        else:
            buf *= momentum
            buf += (1 - dampening) * d_p
        d_p = d_p + momentum * buf if nesterov else buf.copy()
    param -= lr * d_p


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                bias_correction2):
    g = grad + weight_decay * param if weight_decay else grad
    exp_avg += (1 - beta1) * (g - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq) / np.sqrt(bias_correction2) + eps
    param -= (lr / bias_correction1) * exp_avg / denom


def axpby(x, y, a, b, out):
    out[...] = a * x + b * y
