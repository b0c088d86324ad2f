"""Linear, Flatten and Dropout layers."""
from __future__ import annotations

import numpy as np

import convcore as F

from . import init
from .module import Module, Parameter, to_backend


class Linear(Module):
    """``torch.nn.Linear``: y = x·Wᵀ + b with weight (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features)))
        self.bias = Parameter(init.bias_uniform(out_features, in_features)) if bias else None

    def forward(self, input):
        self._input = input
        return F.linear(input, self.weight.data, None if self.bias is None else self.bias.data, backend=self.backend)

    def backward(self, grad_output):
        grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, self._input, self.weight.data,
                                                               backend=self.backend)
        self.weight.accumulate(grad_weight)
        if self.bias is not None:
            self.bias.accumulate(grad_bias)
        return grad_input


class Flatten(Module):
    """Merge dimensions start_dim..end_dim (a reshape: no copy for contiguous arrays, on any backend)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        shape = tuple(input.shape)
        self._shape = shape
        start, end = self.start_dim % len(shape), self.end_dim % len(shape)
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after end_dim={self.end_dim} "
                             f"for input shape {shape}")
        return input.reshape(shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:])

    def backward(self, grad_output):
        return grad_output.reshape(self._shape)


class Dropout(Module):
    """Zero each element with probability p while training, scaling the rest by 1/(1−p).
    The mask is drawn on the host (from ``nn.manual_seed``'s generator) and applied with ``hadamard``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, input):
        if not self.training or self.p == 0.0:
            self._mask = None
            return input
        keep = init.generator().random(tuple(input.shape)) >= self.p
        mask = (keep / (1.0 - self.p)).astype(input.dtype)
        self._mask = to_backend(mask, "cuda" if self.backend == "cuda" else "cpu")
        return F.hadamard(input, self._mask, backend=self.backend)

    def backward(self, grad_output):
        if self._mask is None:
            return grad_output
        return F.hadamard(grad_output, self._mask, backend=self.backend)
