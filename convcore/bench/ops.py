"""The table of benchmarked ops: how to make inputs, call convcore, measure work, and call the PyTorch peer.

Every op is checked against the NumPy reference the same way: the ``numpy`` backend (the
references behind the dispatch table) run on float64 copies of the float32 inputs. An op
that convcore does not export (yet) is listed, and reported as "not available (op missing)".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .shapes import Classifier, ConvLayer, Dense, Pool, Tensor

F32 = 4  # bytes per float32 element


@dataclass(frozen=True)
class OpSpec:
    """One benchmarked op. ``inputs`` is a dict of arrays (moved to the backend as a whole)."""

    name: str
    shape_type: type
    unit: str  # "gflops" (work = FLOPs) or "gbps" (work = bytes read once + written once)
    make: Callable  # (shape, rng) -> dict of float32 (or integer) NumPy arrays
    call: Callable  # (convcore, inputs, shape, backend) -> result
    work: Callable  # shape -> FLOPs or bytes
    terms: Callable  # shape -> length of the longest sum behind one output (for the tolerance)
    torch: Callable  # (torch, inputs as tensors, shape) -> result
    function: str = ""  # the convcore function it calls, when not ``name``

    def available(self) -> tuple[bool, str]:
        import convcore

        if not hasattr(convcore, self.function or self.name):
            return False, "not available (op missing)"
        return True, ""


def _uniform(rng, shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _geometry(layer: ConvLayer):
    from ..conv import conv_geometry

    return conv_geometry("bench", layer.input_shape, layer.weight_shape, layer.stride, layer.padding, 1, layer.groups)


def _conv_flops(layer):
    return _geometry(layer).flops


def _out_shape(layer):
    return _geometry(layer).output_shape


def _torch_kwargs(layer):
    return {"stride": layer.stride, "padding": layer.padding, "groups": layer.groups}


def _pool_out(pool: Pool):
    N, C, H, W = pool.shape
    size = [(n + 2 * pool.padding - pool.kernel_size) // pool.stride + 1 for n in (H, W)]
    return (N, C, *size)


def _cross_entropy_inputs(shape: Classifier, rng):
    return {"logits": _uniform(rng, (shape.N, shape.classes)) * 4,
            "target": rng.integers(0, shape.classes, shape.N).astype(np.int64)}


OP_SPECS = {
    spec.name: spec
    for spec in [
        OpSpec(
            "conv2d", ConvLayer, "gflops",
            make=lambda L, rng: {"input": _uniform(rng, L.input_shape), "weight": _uniform(rng, L.weight_shape)},
            call=lambda cc, i, L, b: cc.conv2d(i["input"], i["weight"], backend=b, **L.kwargs),
            work=_conv_flops,
            terms=lambda L: (L.C // L.groups) * L.R * L.S,
            torch=lambda t, i, L: t.nn.functional.conv2d(i["input"], i["weight"], **_torch_kwargs(L)),
        ),
        OpSpec(
            "conv2d_input", ConvLayer, "gflops",
            make=lambda L, rng: {"weight": _uniform(rng, L.weight_shape), "grad_output": _uniform(rng, _out_shape(L))},
            call=lambda cc, i, L, b: cc.conv2d_input(L.input_shape, i["weight"], i["grad_output"], backend=b, **L.kwargs),
            work=_conv_flops,
            terms=lambda L: (L.K // L.groups) * L.R * L.S,
            torch=lambda t, i, L: t.nn.grad.conv2d_input(L.input_shape, i["weight"], i["grad_output"], **_torch_kwargs(L)),
        ),
        OpSpec(
            "conv2d_weight", ConvLayer, "gflops",
            make=lambda L, rng: {"input": _uniform(rng, L.input_shape), "grad_output": _uniform(rng, _out_shape(L))},
            call=lambda cc, i, L, b: cc.conv2d_weight(i["input"], L.weight_shape, i["grad_output"], backend=b, **L.kwargs),
            work=_conv_flops,
            terms=lambda L: L.N * _out_shape(L)[2] * _out_shape(L)[3],
            torch=lambda t, i, L: t.nn.grad.conv2d_weight(i["input"], L.weight_shape, i["grad_output"], **_torch_kwargs(L)),
        ),
        OpSpec(
            # The fused epilogue: conv + bias + ReLU in one call (one kernel on cuda), against
            # PyTorch's relu(conv2d(x, w, b)) (cuDNN/oneDNN conv with bias, then ReLU).
            "conv2d_bias_relu", ConvLayer, "gflops",
            make=lambda L, rng: {"input": _uniform(rng, L.input_shape), "weight": _uniform(rng, L.weight_shape),
                                 "bias": _uniform(rng, (L.K,))},
            call=lambda cc, i, L, b: cc.conv2d(i["input"], i["weight"], i["bias"], backend=b, activation="relu",
                                               **L.kwargs),
            work=_conv_flops,
            terms=lambda L: (L.C // L.groups) * L.R * L.S + 1,
            torch=lambda t, i, L: t.relu(t.nn.functional.conv2d(i["input"], i["weight"], i["bias"], **_torch_kwargs(L))),
            function="conv2d",
        ),
        OpSpec(
            "hadamard", Tensor, "gbps",
            make=lambda T, rng: {"a": _uniform(rng, T.shape), "b": _uniform(rng, T.shape)},
            call=lambda cc, i, T, b: cc.hadamard(i["a"], i["b"], backend=b),
            work=lambda T: 3 * F32 * int(np.prod(T.shape)),
            terms=lambda T: 1,
            torch=lambda t, i, T: t.mul(i["a"], i["b"]),
        ),
        OpSpec(
            "relu", Tensor, "gbps",
            make=lambda T, rng: {"input": _uniform(rng, T.shape)},
            call=lambda cc, i, T, b: cc.relu(i["input"], backend=b),
            work=lambda T: 2 * F32 * int(np.prod(T.shape)),
            terms=lambda T: 1,
            torch=lambda t, i, T: t.relu(i["input"]),
        ),
        OpSpec(
            "max_pool2d", Pool, "gbps",
            make=lambda P, rng: {"input": _uniform(rng, P.shape)},
            call=lambda cc, i, P, b: cc.max_pool2d(i["input"], P.kernel_size, P.stride, P.padding, backend=b),
            work=lambda P: F32 * (int(np.prod(P.shape)) + int(np.prod(_pool_out(P)))),
            terms=lambda P: 1,
            torch=lambda t, i, P: t.nn.functional.max_pool2d(i["input"], P.kernel_size, P.stride, P.padding),
        ),
        OpSpec(
            "avg_pool2d", Pool, "gbps",
            make=lambda P, rng: {"input": _uniform(rng, P.shape)},
            call=lambda cc, i, P, b: cc.avg_pool2d(i["input"], P.kernel_size, P.stride, P.padding, backend=b),
            work=lambda P: F32 * (int(np.prod(P.shape)) + int(np.prod(_pool_out(P)))),
            terms=lambda P: P.kernel_size**2,
            torch=lambda t, i, P: t.nn.functional.avg_pool2d(i["input"], P.kernel_size, P.stride, P.padding),
        ),
        OpSpec(
            "cross_entropy", Classifier, "gbps",
            make=_cross_entropy_inputs,
            call=lambda cc, i, C, b: cc.cross_entropy(i["logits"], i["target"], backend=b),
            work=lambda C: F32 * C.N * C.classes + 8 * C.N + F32,  # logits + int64 targets in, mean loss out
            terms=lambda C: C.N * C.classes,
            torch=lambda t, i, C: t.nn.functional.cross_entropy(i["logits"], i["target"]),
        ),
        OpSpec(
            "softmax", Classifier, "gbps",
            make=lambda C, rng: {"input": _uniform(rng, (C.N, C.classes)) * 4},
            call=lambda cc, i, C, b: cc.softmax(i["input"], -1, backend=b),
            work=lambda C: 2 * F32 * C.N * C.classes,
            terms=lambda C: C.classes,
            torch=lambda t, i, C: t.softmax(i["input"], -1),
        ),
        OpSpec(
            "linear", Dense, "gflops",
            make=lambda D, rng: {"input": _uniform(rng, (D.N, D.in_features)),
                                 "weight": _uniform(rng, (D.out_features, D.in_features)),
                                 "bias": _uniform(rng, (D.out_features,))},
            call=lambda cc, i, D, b: cc.linear(i["input"], i["weight"], i["bias"], backend=b),
            work=lambda D: 2 * D.N * D.in_features * D.out_features,
            terms=lambda D: D.in_features,
            torch=lambda t, i, D: t.nn.functional.linear(i["input"], i["weight"], i["bias"]),
        ),
    ]
}


def to_float64(inputs: dict) -> dict:
    """float64 copies of the floating inputs (integer targets stay as they are)."""
    return {k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v for k, v in inputs.items()}


def reference(spec: OpSpec, inputs: dict, shape) -> np.ndarray:
    """The float64 NumPy reference for ``spec`` on ``inputs``."""
    import convcore

    return np.asarray(spec.call(convcore, to_float64(inputs), shape, "numpy"), dtype=np.float64)


def verify(actual, expected64, terms: int) -> tuple[bool, float]:
    """(within float32 tolerance of the float64 reference, max abs error relative to max |reference|).

    The bound grows with √terms, as rounding errors of a sum of ``terms`` products do."""
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected64.shape:
        return False, float("inf")
    scale = max(1.0, float(np.max(np.abs(expected64)))) if expected64.size else 1.0
    error = float(np.max(np.abs(actual - expected64))) / scale if expected64.size else 0.0
    if not np.isfinite(error):
        return False, float("inf")
    return bool(error <= 2e-5 * max(1.0, np.sqrt(terms))), error
