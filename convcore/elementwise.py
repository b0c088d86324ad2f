"""Elementwise ops with PyTorch semantics: the Hadamard product and activations.

Each public function: resolve the backend → move arrays → check → allocate → dispatch.
The Hadamard product broadcasts as NumPy does; its gradients are summed back to each
input's shape in a fixed order (deterministic on every backend).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from . import _args
from ._arrays import io_for
from ._backend import lookup, resolve


def require_contiguous(io, array, name: str, op: str) -> None:
    """The flat kernels index raw memory: a device array must be C-contiguous (host arrays
    are copied to be so by the ``cpu`` IO). Raised, not copied behind the caller's back."""
    if array is None or not io.on_device:
        return
    flags = getattr(array, "flags", None)
    contiguous = flags["C_CONTIGUOUS"] if flags is not None else array.is_c_contiguous()
    if not contiguous:
        raise ValueError(f"{op}: {name} on the cuda backend must be C-contiguous, got shape {tuple(array.shape)} "
                         f"with strides {tuple(array.strides)}; pass a contiguous copy")


@dataclass(frozen=True)
class BroadcastGeometry:
    """``out_shape`` is NumPy's broadcast shape. ``dims`` coalesces it for the kernels:
    size-1 axes dropped, neighbouring axes merged when every operand is either full or
    broadcast along both, so equal shapes become one flat axis. ``a_dims``/``b_dims``
    are each operand's sizes along those axes (1 where it is broadcast)."""

    out_shape: tuple
    dims: tuple
    a_dims: tuple
    b_dims: tuple

    @staticmethod
    def strides(sizes) -> tuple:
        """Element strides of a C-contiguous operand over the coalesced axes, 0 where broadcast."""
        result, step = [], 1
        for size in reversed(sizes):
            result.append(step if size != 1 else 0)
            step *= size
        return tuple(reversed(result))


def broadcast_geometry(op: str, a_shape, b_shape) -> BroadcastGeometry:
    a_shape, b_shape = tuple(int(v) for v in a_shape), tuple(int(v) for v in b_shape)
    try:
        out_shape = tuple(int(v) for v in np.broadcast_shapes(a_shape, b_shape))
    except ValueError:
        raise ValueError(f"{op}: shapes a {a_shape} and b {b_shape} cannot be broadcast together") from None
    nd = len(out_shape)
    padded_a = (1,) * (nd - len(a_shape)) + a_shape
    padded_b = (1,) * (nd - len(b_shape)) + b_shape
    merged = []  # [out, a, b] sizes per coalesced axis
    for o, x, y in zip(out_shape, padded_a, padded_b):
        if o == 1:
            continue
        if merged and (merged[-1][1] == merged[-1][0]) == (x == o) and (merged[-1][2] == merged[-1][0]) == (y == o):
            merged[-1] = [merged[-1][0] * o, merged[-1][1] * x, merged[-1][2] * y]
        else:
            merged.append([o, x, y])
    if not merged:
        merged = [[1, 1, 1]]
    dims, a_dims, b_dims = (tuple(column) for column in zip(*merged))
    return BroadcastGeometry(out_shape, dims, a_dims, b_dims)


def hadamard(a, b, *, backend=None):
    """Elementwise product ``a ⊙ b`` (``torch.mul``) with NumPy broadcasting.

    Args:
        a, b: float32 or float64 arrays of one dtype, shapes broadcastable together.
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
    Shape:
        out = np.broadcast_shapes(a.shape, b.shape).
    Returns:
        The product, the inputs' dtype, as the caller's kind of array.
    """
    op = "hadamard"
    name = resolve(backend, a, b)
    io = io_for(name, a, b)
    a_, b_ = io.to_backend(a), io.to_backend(b)
    dtype = _args.common_dtype(op, a=a_, b=b_)
    geom = broadcast_geometry(op, a_.shape, b_.shape)
    require_contiguous(io, a_, "a", op)
    require_contiguous(io, b_, "b", op)
    out = io.empty(geom.out_shape, dtype)
    if out.size:
        lookup(op, name)(a_, b_, out, geom)
    return io.finish(out)


def hadamard_backward(grad_output, a, b, *, backend=None):
    """Gradients of ``hadamard(a, b)``: ``(grad_a, grad_b)``.

    grad_a = Σ over a's broadcast axes of grad_output ⊙ b, shaped like a (grad_b likewise),
    summed in a fixed order, so the result is deterministic.
    Shape:
        grad_output must have the broadcast shape of a and b.
    Returns:
        (grad_a, grad_b), shaped like a and b.
    """
    op = "hadamard_backward"
    name = resolve(backend, grad_output, a, b)
    io = io_for(name, grad_output, a, b)
    dy, a_, b_ = io.to_backend(grad_output), io.to_backend(a), io.to_backend(b)
    dtype = _args.common_dtype(op, grad_output=dy, a=a_, b=b_)
    geom = broadcast_geometry(op, a_.shape, b_.shape)
    if tuple(dy.shape) != geom.out_shape:
        raise ValueError(f"{op}: grad_output has shape {tuple(dy.shape)} but a {tuple(a_.shape)} times "
                         f"b {tuple(b_.shape)} has shape {geom.out_shape}")
    for array, label in ((dy, "grad_output"), (a_, "a"), (b_, "b")):
        require_contiguous(io, array, label, op)
    if dy.size == 0:  # nothing flows back: every broadcast input gets zeros
        return io.finish(io.zeros(a_.shape, dtype)), io.finish(io.zeros(b_.shape, dtype))
    grad_a, grad_b = io.empty(a_.shape, dtype), io.empty(b_.shape, dtype)
    lookup(op, name)(dy, a_, b_, grad_a, grad_b, geom)
    return io.finish(grad_a), io.finish(grad_b)


def _unary(op, x, backend, *extra):
    name = resolve(backend, x)
    io = io_for(name, x)
    x_ = io.to_backend(x)
    dtype = _args.common_dtype(op, x=x_)
    require_contiguous(io, x_, "x", op)
    out = io.empty(x_.shape, dtype)
    if out.size:
        lookup(op, name)(x_, out, *extra)
    return io.finish(out)


def _backward(op, grad_output, saved, saved_name, backend, *extra):
    name = resolve(backend, grad_output, saved)
    io = io_for(name, grad_output, saved)
    dy, s = io.to_backend(grad_output), io.to_backend(saved)
    dtype = _args.common_dtype(op, grad_output=dy, **{saved_name: s})
    if tuple(dy.shape) != tuple(s.shape):
        raise ValueError(f"{op}: grad_output has shape {tuple(dy.shape)} but {saved_name} has shape {tuple(s.shape)}")
    require_contiguous(io, dy, "grad_output", op)
    require_contiguous(io, s, saved_name, op)
    out = io.empty(s.shape, dtype)
    if out.size:
        lookup(op, name)(dy, s, out, *extra)
    return io.finish(out)


def _slope(op, negative_slope) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"{op}: negative_slope must be a real number, got {negative_slope!r}")
    return float(negative_slope)


def relu(x, *, backend=None):
    """``max(x, 0)`` elementwise (``torch.relu``); NaN stays NaN. Returns x's shape and dtype."""
    return _unary("relu", x, backend)


def relu_backward(grad_output, input, *, backend=None):
    """Gradient of relu: 0 where input ≤ 0, else grad_output (PyTorch's ``threshold_backward``)."""
    return _backward("relu_backward", grad_output, input, "input", backend)


def leaky_relu(x, negative_slope: float = 0.01, *, backend=None):
    """``x if x > 0 else negative_slope · x`` (``torch.nn.functional.leaky_relu``)."""
    return _unary("leaky_relu", x, backend, _slope("leaky_relu", negative_slope))


def leaky_relu_backward(grad_output, input, negative_slope: float, *, backend=None):
    """Gradient of leaky_relu: grad_output where input > 0, else negative_slope · grad_output."""
    op = "leaky_relu_backward"
    return _backward(op, grad_output, input, "input", backend, _slope(op, negative_slope))


def sigmoid(x, *, backend=None):
    """``1 / (1 + e^−x)``, evaluated as ``e^x / (1 + e^x)`` for x < 0: stable for any |x|."""
    return _unary("sigmoid", x, backend)


def sigmoid_backward(grad_output, output, *, backend=None):
    """Gradient of sigmoid from its output y: ``grad_output · y · (1 − y)``."""
    return _backward("sigmoid_backward", grad_output, output, "output", backend)


def tanh(x, *, backend=None):
    """Hyperbolic tangent elementwise (``torch.tanh``)."""
    return _unary("tanh", x, backend)


def tanh_backward(grad_output, output, *, backend=None):
    """Gradient of tanh from its output y: ``grad_output · (1 − y²)``."""
    return _backward("tanh_backward", grad_output, output, "output", backend)
