"""The dense (fully connected) layer and its gradients, with PyTorch semantics."""
from __future__ import annotations

from . import _args
from ._arrays import io_for
from ._backend import lookup, resolve
from .elementwise import require_contiguous


def _check_weight(op, w, in_features=None):
    _args.check_ndim(w, 2, "weight", op, "(out_features, in_features)")
    if in_features is not None and w.shape[1] != in_features:
        raise ValueError(f"{op}: input has {in_features} features (last axis) but weight {tuple(w.shape)} "
                         f"expects {w.shape[1]}")


def _check_input(op, x):
    if x.ndim < 1:
        raise ValueError(f"{op}: input must be at least 1-D (..., in_features), got shape {tuple(x.shape)}")


def _rows(array):
    """The array as a 2-D (rows, features) view, rows = all leading axes (a 1-D array is one row)."""
    shape = tuple(array.shape)  # (the simulator's shapes take no negative index)
    return array.reshape(_prod(shape[:-1]), int(shape[-1]))


def _prod(values):
    result = 1
    for v in values:
        result *= int(v)
    return result


def linear(input, weight, bias=None, *, backend=None):
    """``input @ weight.T + bias`` (``torch.nn.functional.linear``).

    Args:
        input: (..., in_features) float32 or float64 array, at least 1-D.
        weight: (out_features, in_features), same dtype.
        bias: optional (out_features,).
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
    Shape:
        output (..., out_features): out[..., o] = Σ_i input[..., i] · weight[o, i] + bias[o].
    Returns:
        The output, same dtype as the input, as the caller's kind of array.
    """
    op = "linear"
    name = resolve(backend, input, weight, bias)
    io = io_for(name, input, weight, bias)
    x, w, b = io.to_backend(input), io.to_backend(weight), io.to_backend(bias)
    _check_input(op, x)
    _check_weight(op, w, tuple(x.shape)[-1])
    if b is not None:
        _args.check_ndim(b, 1, "bias", op, "(out_features,)")
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"{op}: bias must have shape ({w.shape[0]},) to match weight {tuple(w.shape)}, "
                             f"got {tuple(b.shape)}")
    dtype = _args.common_dtype(op, input=x, weight=w, bias=b)
    for array, label in ((x, "input"), (w, "weight"), (b, "bias")):
        require_contiguous(io, array, label, op)
    out_shape = tuple(x.shape)[:-1] + (int(w.shape[0]),)
    out = io.empty(out_shape, dtype)
    if out.size:  # in_features == 0 is fine: an empty sum, the output is the bias (or 0)
        lookup(op, name)(_rows(x), w, b, _rows(out))
    return io.finish(out)


def linear_backward(grad_output, input, weight, *, backend=None):
    """Gradients of ``linear``: ``(grad_input, grad_weight, grad_bias)``.

    dX = dY · W,   dW[o, i] = Σ_rows dY[row, o] · X[row, i],   db[o] = Σ_rows dY[row, o]
    (rows are all leading axes together). Sums run in a fixed order: deterministic.
    Shape:
        grad_output (..., out_features) with the input's leading axes.
    Returns:
        grad_input shaped like input, grad_weight like weight, grad_bias (out_features,).
    """
    op = "linear_backward"
    name = resolve(backend, grad_output, input, weight)
    io = io_for(name, grad_output, input, weight)
    dy, x, w = io.to_backend(grad_output), io.to_backend(input), io.to_backend(weight)
    _check_input(op, x)
    _check_weight(op, w, tuple(x.shape)[-1])
    expected = tuple(x.shape)[:-1] + (int(w.shape[0]),)
    if tuple(dy.shape) != expected:
        raise ValueError(f"{op}: grad_output has shape {tuple(dy.shape)} but linear of input {tuple(x.shape)} "
                         f"with weight {tuple(w.shape)} produces {expected}")
    dtype = _args.common_dtype(op, grad_output=dy, input=x, weight=w)
    for array, label in ((dy, "grad_output"), (x, "input"), (w, "weight")):
        require_contiguous(io, array, label, op)
    grad_input = io.empty(x.shape, dtype)
    grad_weight = io.empty(w.shape, dtype)
    grad_bias = io.empty((int(w.shape[0]),), dtype)
    # Every size may be 0: the launchers skip empty outputs and write empty sums as 0.
    lookup(op, name)(_rows(dy), _rows(x), w, _rows(grad_input), grad_weight, grad_bias)
    return io.finish(grad_input), io.finish(grad_weight), io.finish(grad_bias)
