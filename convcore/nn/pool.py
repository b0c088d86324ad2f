"""MaxPool2d and AvgPool2d layers (PyTorch arguments; stride defaults to kernel_size)."""
from __future__ import annotations

import convcore as F

from .module import Module


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def forward(self, input):
        # The argmax indices make backward a scatter of grad_output, with no second search.
        output, self._indices = F.max_pool2d(input, *self._args(), return_indices=True, backend=self.backend)
        self._input = input
        return output

    def backward(self, grad_output):
        return F.max_pool2d_backward(grad_output, self._input, *self._args(), indices=self._indices,
                                     backend=self.backend)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def forward(self, input):
        self._input = input
        return F.avg_pool2d(input, *self._args(), backend=self.backend)

    def backward(self, grad_output):
        return F.avg_pool2d_backward(grad_output, self._input, *self._args(), backend=self.backend)
