"""Conv2d and ConvTranspose2d layers on top of the convcore conv ops."""
from __future__ import annotations

import contextlib

import numpy as np

import convcore as F

from .._args import pair
from . import init
from .activation import ReLU
from .module import Module, Parameter


class Conv2d(Module):
    """``torch.nn.Conv2d``: weight (out_channels, in_channels/groups, kH, kW), optional bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(init.kaiming_uniform(shape))
        self.bias = Parameter(init.bias_uniform(out_channels, init.fan_in(shape))) if bias else None

    def _geometry(self):
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
                    "backend": self.backend}

    def _reuse_weight_transform(self):
        """In eval mode the weight only changes through convcore (Parameter.version), so the
        cpu backend's Winograd weight transform is computed once per version, not per call."""
        if self.training or not isinstance(self.weight.data, np.ndarray):
            return contextlib.nullcontext()
        from ..kernels.conv2d.cpu_winograd import reusing_weight_transform

        return reusing_weight_transform(self.__dict__.setdefault("_transforms", {}), self.weight.data,
                                        self.weight.version)

    def forward(self, input):
        self._input = input
        with self._reuse_weight_transform():
            return F.conv2d(input, self.weight.data, None if self.bias is None else self.bias.data, **self._geometry())

    def _fuses(self, following):
        return type(following) is ReLU and following.backend == self.backend

    def _forward_fused(self, input, relu):
        # conv + bias + ReLU in one kernel. ReLU's backward masks by its input's sign, and
        # relu(z) > 0 exactly where z > 0, so the fused output serves as that input.
        self._input = input
        bias = None if self.bias is None else self.bias.data
        with self._reuse_weight_transform():
            relu._input = F.conv2d(input, self.weight.data, bias, **self._geometry(), activation="relu")
        return relu._input

    def backward(self, grad_output):
        x, geometry = self._input, self._geometry()
        self.weight.accumulate(F.conv2d_weight(x, self.weight.shape, grad_output, **geometry))
        if self.bias is not None:
            self.bias.accumulate(F.conv2d_bias(grad_output, backend=self.backend))
        return F.conv2d_input(tuple(x.shape), self.weight.data, grad_output, **geometry)


class ConvTranspose2d(Module):
    """``torch.nn.ConvTranspose2d``: weight (in_channels, out_channels/groups, kH, kW), optional bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.kernel_size = pair(kernel_size, "kernel_size", "ConvTranspose2d")
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation
        shape = (in_channels, out_channels // groups) + self.kernel_size
        self.weight = Parameter(init.kaiming_uniform(shape))
        self.bias = Parameter(init.bias_uniform(out_channels, init.fan_in(shape))) if bias else None

    def forward(self, input):
        self._input = input
        bias = None if self.bias is None else self.bias.data
        return F.conv_transpose2d(input, self.weight.data, bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation, backend=self.backend)

    def backward(self, grad_output):
        # conv_transpose2d is the input gradient of conv2d, so its gradients are conv2d itself
        # (for the input) and conv2d's weight gradient with the roles of x and dy swapped.
        x = self._input
        geometry = {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
                        "backend": self.backend}
        self.weight.accumulate(F.conv2d_weight(grad_output, self.weight.shape, x, **geometry))
        if self.bias is not None:
            self.bias.accumulate(F.conv2d_bias(grad_output, backend=self.backend))
        return F.conv2d(grad_output, self.weight.data, None, **geometry)
