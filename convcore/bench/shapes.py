"""The one list of benchmark shapes, used by ``convcore bench`` and ``pytest benchmarks/``.

Each :class:`Case` is one layer (a shape) plus the ops benchmarked on it and the
suites it belongs to. ``quick`` is a subset chosen to finish in under two minutes on
two cores with every peer; ``full`` is every case; ``test`` holds tiny shapes for the
unit tests. Layer names say where the shape comes from (network, kernel, feature-map size).
"""
from __future__ import annotations

from dataclasses import dataclass

CONV_OPS = ("conv2d", "conv2d_input", "conv2d_weight")


@dataclass(frozen=True)
class ConvLayer:
    """A conv layer in the field's notation: N batch, C→K channels, H×W input, R×S kernel."""

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
        return {"stride": self.stride, "padding": self.padding, "groups": self.groups}

    def __str__(self):
        extra = "".join(f" {k}={v}" for k, v in self.kwargs.items() if v != (1 if k != "padding" else 0))
        return f"x{self.input_shape} w{self.weight_shape}{extra}"


@dataclass(frozen=True)
class Tensor:
    """Shape of an elementwise op's operand(s)."""

    shape: tuple

    def __str__(self):
        return f"x{self.shape}"


@dataclass(frozen=True)
class Pool:
    """max_pool2d / avg_pool2d on an NCHW input."""

    shape: tuple
    kernel_size: int
    stride: int
    padding: int = 0

    def __str__(self):
        return f"x{self.shape} k={self.kernel_size} stride={self.stride} padding={self.padding}"


@dataclass(frozen=True)
class Classifier:
    """Softmax cross-entropy over (N, classes) logits with integer targets."""

    N: int
    classes: int

    def __str__(self):
        return f"logits({self.N}, {self.classes})"


@dataclass(frozen=True)
class Dense:
    """linear: (N, in_features) @ weight(out_features, in_features)ᵀ + bias."""

    N: int
    in_features: int
    out_features: int

    def __str__(self):
        return f"x({self.N}, {self.in_features}) w({self.out_features}, {self.in_features})"


@dataclass(frozen=True)
class Case:
    layer: str
    shape: object
    ops: tuple
    suites: tuple


def _conv(name, layer, suites=("full",)):
    return Case(name, layer, CONV_OPS, suites)


Q, F = ("quick",), ("full",)  # full holds every quick case too

CASES = [
    # ResNet-50 at batch 8 (quick runs batch 1-2 copies of some of them, below).
    _conv("resnet50_stem_7x7s2_224", ConvLayer(8, 3, 224, 224, 64, 7, 7, stride=2, padding=3)),
    _conv("resnet50_3x3_56", ConvLayer(8, 64, 56, 56, 64, 3, 3, padding=1)),
    _conv("resnet50_3x3_28", ConvLayer(8, 128, 28, 28, 128, 3, 3, padding=1)),
    _conv("resnet50_3x3_14", ConvLayer(8, 256, 14, 14, 256, 3, 3, padding=1)),
    _conv("resnet50_3x3_7", ConvLayer(8, 512, 7, 7, 512, 3, 3, padding=1)),
    _conv("resnet50_1x1_56_expand", ConvLayer(8, 64, 56, 56, 256, 1, 1)),
    _conv("resnet50_1x1_56_reduce", ConvLayer(8, 256, 56, 56, 64, 1, 1)),
    _conv("resnet50_1x1_14_reduce", ConvLayer(8, 1024, 14, 14, 256, 1, 1)),
    _conv("resnet50_1x1s2_56_downsample", ConvLayer(8, 256, 56, 56, 512, 1, 1, stride=2)),
    # MobileNet v1: depthwise 3x3 (stride 1 and 2) and pointwise 1x1.
    _conv("mobilenet_dw3x3_112", ConvLayer(8, 32, 112, 112, 32, 3, 3, padding=1, groups=32)),
    _conv("mobilenet_dw3x3s2_112", ConvLayer(8, 64, 112, 112, 64, 3, 3, stride=2, padding=1, groups=64)),
    _conv("mobilenet_dw3x3_14", ConvLayer(8, 512, 14, 14, 512, 3, 3, padding=1, groups=512)),
    _conv("mobilenet_pw1x1_28", ConvLayer(8, 256, 28, 28, 256, 1, 1)),
    # VGG-16 3x3 layers.
    _conv("vgg16_3x3_224", ConvLayer(2, 64, 224, 224, 64, 3, 3, padding=1)),
    _conv("vgg16_3x3_56", ConvLayer(8, 256, 56, 56, 256, 3, 3, padding=1)),
    # LeNet-5 conv1 at batch 128 (conv2 at batch 128 and 1 are in quick, below).
    _conv("lenet_5x5_32_b128", ConvLayer(128, 1, 32, 32, 6, 5, 5)),
    # Channel counts that are not multiples of 16 (vector and tile remainders).
    _conv("odd_3x3_c35_k50_19", ConvLayer(8, 35, 19, 19, 50, 3, 3, padding=1)),
    _conv("odd_1x1_c100_k27_23", ConvLayer(8, 100, 23, 23, 27, 1, 1)),
    # Quick suite: small batches of the same layers.
    _conv("resnet50_stem_7x7s2_224_b1", ConvLayer(1, 3, 224, 224, 64, 7, 7, stride=2, padding=3), Q),
    _conv("resnet50_3x3_56_b2", ConvLayer(2, 64, 56, 56, 64, 3, 3, padding=1), Q),
    _conv("resnet50_3x3_14_b2", ConvLayer(2, 256, 14, 14, 256, 3, 3, padding=1), Q),
    _conv("resnet50_1x1_14_reduce_b2", ConvLayer(2, 1024, 14, 14, 256, 1, 1), Q),
    _conv("resnet50_1x1s2_56_downsample_b2", ConvLayer(2, 256, 56, 56, 512, 1, 1, stride=2), Q),
    _conv("mobilenet_dw3x3_56_b2", ConvLayer(2, 128, 56, 56, 128, 3, 3, padding=1, groups=128), Q),
    _conv("mobilenet_dw3x3s2_56_b2", ConvLayer(2, 128, 56, 56, 128, 3, 3, stride=2, padding=1, groups=128), Q),
    _conv("vgg16_3x3_56_b1", ConvLayer(1, 256, 56, 56, 256, 3, 3, padding=1), Q),
    _conv("lenet_5x5_14_b128", ConvLayer(128, 6, 14, 14, 16, 5, 5), Q),
    _conv("lenet_5x5_14_b1", ConvLayer(1, 6, 14, 14, 16, 5, 5), Q),
    _conv("odd_3x3_c35_k50_19_b2", ConvLayer(2, 35, 19, 19, 50, 3, 3, padding=1), Q),
    # The fused conv + bias + ReLU epilogue on a few layers.
    Case("resnet50_3x3_56_b2_bias_relu", ConvLayer(2, 64, 56, 56, 64, 3, 3, padding=1), ("conv2d_bias_relu",), Q),
    Case("resnet50_1x1_14_reduce_b2_bias_relu", ConvLayer(2, 1024, 14, 14, 256, 1, 1), ("conv2d_bias_relu",), Q),
    Case("resnet50_3x3_28_bias_relu", ConvLayer(8, 128, 28, 28, 128, 3, 3, padding=1), ("conv2d_bias_relu",), F),
    Case("mobilenet_dw3x3_14_bias_relu", ConvLayer(8, 512, 14, 14, 512, 3, 3, padding=1, groups=512), ("conv2d_bias_relu",), F),
    # Memory-bound ops (GB/s) on ResNet-50 activation sizes, and linear (GFLOP/s).
    Case("resnet50_act_56", Tensor((8, 256, 56, 56)), ("hadamard", "relu"), F),
    Case("resnet50_act_56_b2", Tensor((2, 256, 56, 56)), ("hadamard", "relu"), Q),
    Case("resnet50_stem_pool_112", Pool((8, 64, 112, 112), 3, 2, 1), ("max_pool2d", "avg_pool2d"), F),
    Case("resnet50_stem_pool_112_b2", Pool((2, 64, 112, 112), 3, 2, 1), ("max_pool2d", "avg_pool2d"), Q),
    Case("lenet_pool_28_b128", Pool((128, 6, 28, 28), 2, 2), ("max_pool2d", "avg_pool2d"), Q),
    Case("imagenet_logits_b256", Classifier(256, 1000), ("cross_entropy", "softmax"), Q),
    Case("mnist_logits_b128", Classifier(128, 10), ("cross_entropy", "softmax"), Q),
    Case("resnet50_fc_b128", Dense(128, 2048, 1000), ("linear",), Q),
    Case("lenet_fc1_b128", Dense(128, 400, 120), ("linear",), Q),
    # Tiny shapes for tests/test_bench.py.
    _conv("tiny_3x3", ConvLayer(2, 5, 7, 7, 6, 3, 3, padding=1), ("test",)),
    Case("tiny_3x3_bias_relu", ConvLayer(2, 5, 7, 7, 6, 3, 3, padding=1), ("conv2d_bias_relu",), ("test",)),
    _conv("tiny_dw3x3s2", ConvLayer(2, 4, 8, 8, 4, 3, 3, stride=2, padding=1, groups=4), ("test",)),
    Case("tiny_act", Tensor((2, 3, 5, 5)), ("hadamard", "relu"), ("test",)),
    Case("tiny_pool", Pool((2, 3, 8, 8), 2, 2), ("max_pool2d", "avg_pool2d"), ("test",)),
    Case("tiny_logits", Classifier(4, 7), ("cross_entropy", "softmax"), ("test",)),
    Case("tiny_fc", Dense(4, 9, 5), ("linear",), ("test",)),
]


def suite(name: str) -> list[Case]:
    """The cases of one suite, in order (``full`` is every non-test case)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; expected one of {', '.join(SUITES)}")
    if name == "full":
        return [c for c in CASES if "test" not in c.suites]
    return [c for c in CASES if name in c.suites]


SUITES = ("quick", "full", "test")
