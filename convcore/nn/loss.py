"""Losses. Calling a loss returns its value as a Python float and keeps what
``backward()`` needs; ``backward()`` returns the gradient for the model's output."""
from __future__ import annotations

import numpy as np

import convcore as F

from .._backend import is_device_array
from .._update import axpby_
from .module import Module, to_backend, to_host

_REDUCTIONS = ("mean", "sum")


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _scalar(value) -> float:
    return float(np.asarray(to_host(value)).reshape(-1)[0])


class CrossEntropyLoss(Module):
    """``torch.nn.CrossEntropyLoss`` on logits (N, C) and class indices (N,)."""

    def __init__(self, reduction: str = "mean"):
        _check_reduction("CrossEntropyLoss", reduction)
        self.reduction = reduction

    def forward(self, logits, target) -> float:
        # The targets move to the logits' device once, so backward does not copy them again.
        self._logits = logits
        self._target = to_backend(np.asarray(to_host(target)), "cuda") if is_device_array(logits) else target
        return _scalar(F.cross_entropy(logits, self._target, reduction=self.reduction, backend=self.backend))

    def backward(self, grad_output: float = 1.0):
        return F.cross_entropy_backward(self._logits, self._target, grad_output, reduction=self.reduction,
                                        backend=self.backend)


class MSELoss(Module):
    """``torch.nn.MSELoss``: mean (or sum) of squared differences. The value is computed on
    the host (one copy of the prediction); the gradient 2·(input − target)/n stays on the backend."""

    def __init__(self, reduction: str = "mean"):
        _check_reduction("MSELoss", reduction)
        self.reduction = reduction

    def forward(self, input, target) -> float:
        if tuple(input.shape) != tuple(target.shape):
            raise ValueError(f"MSELoss: input shape {tuple(input.shape)} != target shape {tuple(target.shape)}")
        self._input = input
        self._target = to_backend(target, "cuda" if is_device_array(input) else "cpu", np.dtype(input.dtype))
        diff = to_host(input).astype(np.float64) - to_host(self._target)
        total = float(np.sum(diff * diff))
        return total / diff.size if self.reduction == "mean" else total

    def backward(self, grad_output: float = 1.0):
        scale = 2.0 * grad_output / (self._input.size if self.reduction == "mean" else 1)
        out = _empty_like(self._input)
        return axpby_(out, scale, self._input, -scale, self._target, backend=self.backend)


def _empty_like(array):
    if is_device_array(array):
        from .._device_memory import device_empty

        return device_empty(array.shape, array.dtype, getattr(array, "stream", 0) or 0)
    return np.empty(array.shape, array.dtype)
