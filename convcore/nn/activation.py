"""Elementwise activations. ReLU and LeakyReLU keep their input for backward;
Sigmoid and Tanh keep their output (their derivatives are functions of it)."""
from __future__ import annotations

import convcore as F

from .module import Module


class ReLU(Module):
    def __init__(self):
        pass

    def forward(self, input):
        self._input = input
        return F.relu(input, backend=self.backend)

    def backward(self, grad_output):
        return F.relu_backward(grad_output, self._input, backend=self.backend)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = float(negative_slope)

    def forward(self, input):
        self._input = input
        return F.leaky_relu(input, self.negative_slope, backend=self.backend)

    def backward(self, grad_output):
        return F.leaky_relu_backward(grad_output, self._input, self.negative_slope, backend=self.backend)


class Sigmoid(Module):
    def __init__(self):
        pass

    def forward(self, input):
        self._output = F.sigmoid(input, backend=self.backend)
        return self._output

    def backward(self, grad_output):
        return F.sigmoid_backward(grad_output, self._output, backend=self.backend)


class Tanh(Module):
    def __init__(self):
        pass

    def forward(self, input):
        self._output = F.tanh(input, backend=self.backend)
        return self._output

    def backward(self, grad_output):
        return F.tanh_backward(grad_output, self._output, backend=self.backend)
