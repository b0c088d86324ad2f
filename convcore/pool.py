"""Max and average pooling and their gradients, with PyTorch semantics.

Same path as conv2d: normalise arguments → check → move arrays to the backend →
allocate → dispatch. Output size (PyTorch's ``pooling_output_shape``)::

    P = ⌊(H + 2·ph − dh·(R−1) − 1 + (sh−1 if ceil_mode)) / sh⌋ + 1

and in ceil_mode the last window must start inside the input or its left padding
(``(P−1)·sh < H + ph``), else P is one less. Likewise Q.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _args
from ._arrays import io_for
from ._backend import lookup, resolve


@dataclass(frozen=True)
class PoolGeometry:
    """Sizes a pooling kernel needs, checked: N×C planes of H×W, R×S window, P×Q output."""

    N: int
    C: int
    H: int
    W: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple
    padding: tuple  # (ph, pw), the same on both sides
    dilation: tuple

    @property
    def input_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def output_shape(self):
        return (self.N, self.C, self.P, self.Q)


def _output_size(size, kernel, pad, stride, dilation, ceil_mode):
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_geometry(op, input_shape, kernel_size, stride, padding, dilation, ceil_mode) -> PoolGeometry:
    """Validate a pooling configuration (PyTorch's rules) and compute its output size."""
    if len(input_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(input_shape)}")
    N, C, H, W = (int(v) for v in input_shape)
    kernel = _args.positive_pair(kernel_size, "kernel_size", op)
    if stride is None or (not isinstance(stride, (int, np.integer)) and hasattr(stride, "__len__") and len(stride) == 0):
        stride = kernel
    stride = _args.positive_pair(stride, "stride", op)
    pad = _args.pair(padding, "padding", op)
    if min(pad) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding={pad} must be at most half of kernel_size={kernel}")
    dilation = _args.positive_pair(dilation, "dilation", op)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    P = _output_size(H, kernel[0], pad[0], stride[0], dilation[0], ceil_mode)
    Q = _output_size(W, kernel[1], pad[1], stride[1], dilation[1], ceil_mode)
    if P <= 0 or Q <= 0:
        raise ValueError(
            f"{op}: output size ({P}, {Q}) is not positive for input {H}x{W}, kernel_size {kernel}, "
            f"stride {stride}, padding {pad}, dilation {dilation}"
        )
    return PoolGeometry(N, C, H, W, kernel[0], kernel[1], P, Q, stride, pad, dilation)


def _input(op, name, io, input):
    x = io.to_backend(input)
    _args.check_ndim(x, 4, "input", op, "(N, C, H, W)")
    return x, _args.common_dtype(op, input=x)


def _check_grad_output(op, dy, geom, dtype):
    _args.check_ndim(dy, 4, "grad_output", op, "(N, C, P, Q)")
    _args.common_dtype(op, input=np.empty(0, dtype), grad_output=dy)
    if tuple(dy.shape) != geom.output_shape:
        raise ValueError(
            f"{op}: grad_output has shape {tuple(dy.shape)} but pooling input {geom.input_shape} "
            f"produces {geom.output_shape}"
        )


def _nonempty(geom):
    return geom.N * geom.C > 0


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """2-D max pooling (``torch.nn.functional.max_pool2d``).

    Args:
        input: (N, C, H, W) float32 or float64.
        kernel_size, stride (default: kernel_size), padding, dilation: int or pair.
            Padding (implicit −∞) is at most half the kernel size.
        ceil_mode: round the output size up (the last window still starts inside the input or left padding).
        return_indices: also return the argmax of each window.
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
    Shape:
        output (N, C, P, Q), P as in this module's docstring.
    Returns:
        The output, or ``(output, indices)`` with int64 indices ``h·W + w`` into each input plane.
        NaN propagates: a window holding NaN gives NaN, its index the last NaN in scan order.
    """
    op = "max_pool2d"
    name = resolve(backend, input)
    io = io_for(name, input)
    x, dtype = _input(op, name, io, input)
    geom = pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out = io.empty(geom.output_shape, dtype)
    indices = io.empty(geom.output_shape, np.int64) if return_indices else None
    if _nonempty(geom):
        lookup("max_pool2d", name)(x, out, indices, geom)
    if return_indices:
        return io.finish(out), io.finish(indices)
    return io.finish(out)


def max_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        indices=None, *, backend=None):
    """Gradient of max_pool2d w.r.t. its input.

    dX[n,c,h,w] = Σ over windows (p, q) containing (h, w) whose argmax is h·W + w of dY[n,c,p,q].
    ``indices`` from ``max_pool2d(..., return_indices=True)``; when None they are recomputed
    from ``input``. Computed in gather form (one writer per input element): no atomics.
    """
    op = "max_pool2d_backward"
    name = resolve(backend, grad_output, input, indices)
    io = io_for(name, grad_output, input, indices)
    x, dtype = _input(op, name, io, input)
    dy = io.to_backend(grad_output)
    geom = pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    _check_grad_output(op, dy, geom, dtype)
    if indices is not None:
        idx = io.to_backend(indices)
        if np.dtype(idx.dtype) != np.int64:
            raise TypeError(f"{op}: indices must be int64, got {np.dtype(idx.dtype)}")
        if tuple(idx.shape) != geom.output_shape:
            raise ValueError(f"{op}: indices have shape {tuple(idx.shape)} but the output shape is {geom.output_shape}")
    out = io.empty(geom.input_shape, dtype)
    if _nonempty(geom):
        if indices is None:
            idx = io.empty(geom.output_shape, np.int64)
            lookup("max_pool2d", name)(x, io.empty(geom.output_shape, dtype), idx, geom)
        lookup("max_pool2d_backward", name)(dy, idx, out, geom)
    return io.finish(out)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, backend=None):
    """2-D average pooling (``torch.nn.functional.avg_pool2d``).

    out[n,c,p,q] = Σ of the window's taps inside the input / divisor, where the window is
    rows [p·sh − ph, min(p·sh − ph + R, H + ph)) (likewise columns) and the divisor is its
    size with padding (count_include_pad=True) or without. Empty windows give 0.
    Shape: output (N, C, P, Q), P as in this module's docstring with dilation 1.
    """
    op = "avg_pool2d"
    name = resolve(backend, input)
    io = io_for(name, input)
    x, dtype = _input(op, name, io, input)
    geom = pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = _check_bool(op, "count_include_pad", count_include_pad)
    out = io.empty(geom.output_shape, dtype)
    if _nonempty(geom):
        lookup("avg_pool2d", name)(x, out, geom, count_include_pad)
    return io.finish(out)


def avg_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, backend=None):
    """Gradient of avg_pool2d w.r.t. its input.

    dX[n,c,h,w] = Σ over windows (p, q) containing (h, w) of dY[n,c,p,q] / divisor(p, q),
    gathered per input element (no atomics). ``input`` supplies the shape only.
    """
    op = "avg_pool2d_backward"
    name = resolve(backend, grad_output, input)
    io = io_for(name, grad_output, input)
    x, dtype = _input(op, name, io, input)
    dy = io.to_backend(grad_output)
    geom = pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = _check_bool(op, "count_include_pad", count_include_pad)
    _check_grad_output(op, dy, geom, dtype)
    out = io.empty(geom.input_shape, dtype)
    if _nonempty(geom):
        lookup("avg_pool2d_backward", name)(dy, out, geom, count_include_pad)
    return io.finish(out)


def _check_bool(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


__all__ = ["avg_pool2d", "avg_pool2d_backward", "max_pool2d", "max_pool2d_backward"]
