"""The one list of benchmark shapes, used by ``convcore bench`` and pytest-benchmark."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def input_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, groups=self.groups)


QUICK = [
    ConvLayer("resnet50_3x3_56", 8, 64, 56, 56, 64, 3, 3, padding=1),
    ConvLayer("resnet50_1x1_14_reduce", 8, 1024, 14, 14, 256, 1, 1),
    ConvLayer("mobilenet_dw3x3_28", 8, 256, 28, 28, 256, 3, 3, padding=1, groups=256),
    ConvLayer("lenet_5x5_b128", 128, 6, 14, 14, 16, 5, 5),
]

SUITES = {"quick": QUICK, "full": QUICK}
