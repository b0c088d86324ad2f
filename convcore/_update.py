"""In-place elementwise updates behind the optimisers and gradient accumulation.

These run on whichever backend the arrays live on (the ``cuda`` backend updates Numba
device arrays in place, so parameters and optimiser state never leave the GPU). Each
array is flattened to 1-D: parameters and their state are allocated contiguous.
"""
from __future__ import annotations

import numpy as np

from ._backend import is_device_array, lookup, resolve


def _flat(op, name, array, size, dtype):
    if tuple(array.shape) and int(np.prod(array.shape)) != size:
        raise ValueError(f"{op}: {name} has shape {tuple(array.shape)}, expected {size} elements")
    if np.dtype(array.dtype) != dtype:
        raise TypeError(f"{op}: {name} has dtype {array.dtype}, expected {dtype}")
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{op}: arrays must be float32 or float64, got {dtype}")
    return array.reshape(-1)


def _prepare(op, backend, param, **state):
    name = resolve(backend, param)
    device = is_device_array(param)
    if (name == "cuda") != device:
        raise ValueError(f"{op}: param is a {'device' if device else 'host'} array but the backend is {name!r}")
    size, dtype = int(np.prod(param.shape)), np.dtype(param.dtype)
    arrays = [_flat(op, "param", param, size, dtype)]
    for key, array in state.items():
        if is_device_array(array) != device:
            raise ValueError(f"{op}: {key} must live where param does ({'device' if device else 'host'})")
        arrays.append(_flat(op, key, array, size, dtype))
    return name, arrays


def sgd_update_(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                nesterov=False, first=True, backend=None):
    """One ``torch.optim.SGD`` step for one parameter, in place (``momentum_buffer`` too)."""
    name, arrays = _prepare("sgd_update_", backend, param, grad=grad, momentum_buffer=momentum_buffer)
    lookup("sgd_update", name)(*arrays, float(lr), float(momentum), float(dampening), float(weight_decay),
                               bool(nesterov), bool(first))


def adam_update_(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay, step, backend=None):
    """One ``torch.optim.Adam`` step (step counted from 1) for one parameter, in place."""
    name, arrays = _prepare("adam_update_", backend, param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    lookup("adam_update", name)(*arrays, float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
                                1.0 - beta1 ** step, 1.0 - beta2 ** step)


def axpby_(out, a, x, b, y, *, backend=None):
    """``out = a·x + b·y`` elementwise, written into ``out`` (which may be ``x`` or ``y``)."""
    name, arrays = _prepare("axpby_", backend, out, x=x, y=y)
    flat_out, flat_x, flat_y = arrays
    lookup("axpby", name)(flat_x, flat_y, float(a), float(b), flat_out)
    return out
