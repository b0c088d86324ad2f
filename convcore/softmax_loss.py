"""softmax, log_softmax and cross-entropy with PyTorch semantics.

All go through a stable log-sum-exp, lse = m + log Σ e^(x − m) with m the maximum, so
large logits never overflow; a −inf logit gets probability 0 (no NaN as long as one
logit of its row is finite). The loss reductions sum in a fixed order: deterministic.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _args
from ._arrays import io_for
from ._backend import is_device_array, lookup, resolve
from .elementwise import require_contiguous

REDUCTIONS = ("mean", "sum", "none")


def _axis(op, axis, ndim) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    rank = max(ndim, 1)  # a 0-d array is treated as one element along axis 0 or -1, as torch does
    if not -rank <= axis < rank:
        raise ValueError(f"{op}: axis {axis} is out of range for a {ndim}-D input")
    return int(axis) % rank


def _rows_layout(shape, axis):
    """(outer, length, inner) of a C-contiguous array reduced along ``axis``."""
    shape = tuple(int(v) for v in shape) or (1,)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, shape[axis], inner


def _softmax_forward(op, x, axis, backend):
    name = resolve(backend, x)
    io = io_for(name, x)
    x_ = io.to_backend(x)
    dtype = _args.common_dtype(op, x=x_)
    layout = _rows_layout(x_.shape, _axis(op, axis, x_.ndim))
    require_contiguous(io, x_, "x", op)
    out = io.empty(x_.shape, dtype)
    if out.size:
        lookup(op, name)(x_, out, layout)
    return io.finish(out)


def _softmax_backward(op, grad_output, output, axis, backend):
    name = resolve(backend, grad_output, output)
    io = io_for(name, grad_output, output)
    dy, y = io.to_backend(grad_output), io.to_backend(output)
    dtype = _args.common_dtype(op, grad_output=dy, output=y)
    if tuple(dy.shape) != tuple(y.shape):
        raise ValueError(f"{op}: grad_output has shape {tuple(dy.shape)} but output has shape {tuple(y.shape)}")
    layout = _rows_layout(y.shape, _axis(op, axis, y.ndim))
    require_contiguous(io, dy, "grad_output", op)
    require_contiguous(io, y, "output", op)
    out = io.empty(y.shape, dtype)
    if out.size:
        lookup(op, name)(dy, y, out, layout)
    return io.finish(out)


def softmax(x, axis: int = -1, *, backend=None):
    """``exp(x) / Σ_axis exp(x)`` (``torch.softmax``), computed as exp(x − lse).

    Args:
        x: float32 or float64 array of any shape.
        axis: the axis to normalise over (negative counts from the end).
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
    Returns:
        Probabilities, x's shape and dtype. A row of only −inf gives NaN, as in PyTorch.
    """
    return _softmax_forward("softmax", x, axis, backend)


def log_softmax(x, axis: int = -1, *, backend=None):
    """``x − logsumexp(x, axis)`` (``torch.log_softmax``); x's shape and dtype."""
    return _softmax_forward("log_softmax", x, axis, backend)


def softmax_backward(grad_output, output, axis: int = -1, *, backend=None):
    """Gradient of softmax from its output y: ``y ⊙ (dY − Σ_axis dY ⊙ y)``."""
    return _softmax_backward("softmax_backward", grad_output, output, axis, backend)


def log_softmax_backward(grad_output, output, axis: int = -1, *, backend=None):
    """Gradient of log_softmax from its output y: ``dY − e^y ⊙ Σ_axis dY``."""
    return _softmax_backward("log_softmax_backward", grad_output, output, axis, backend)


def _check_reduction(op, reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _logits_and_target(op, io, logits, target):
    """Checked logits on the backend and target as int64 on the backend.

    The range check needs the class indices on the host, so a device target is copied
    there once (N integers) and back as int64.
    """
    x = io.to_backend(logits)
    _args.check_ndim(x, 2, "logits", op, "(N, C)")
    dtype = _args.common_dtype(op, logits=x)
    require_contiguous(io, x, "logits", op)
    if is_device_array(target):
        host = io.to_backend(target).copy_to_host() if io.on_device else np.asarray(io.to_backend(target))
    else:
        host = np.asarray(target)
    if host.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {host.dtype}")
    N, C = (int(v) for v in x.shape)
    if host.shape != (N,):
        raise ValueError(f"{op}: target must have shape ({N},) to match logits {tuple(x.shape)}, "
                         f"got {tuple(host.shape)}")
    if N and (host.min() < 0 or host.max() >= C):
        bad = host[(host < 0) | (host >= C)][0]
        raise ValueError(f"{op}: target holds class {bad}, out of range [0, {C}) for logits {tuple(x.shape)}")
    return x, io.to_backend(np.ascontiguousarray(host, dtype=np.int64)), dtype


def cross_entropy(logits, target, reduction: str = "mean", *, backend=None):
    """Cross-entropy of logits against integer classes (``torch.nn.functional.cross_entropy``).

    Args:
        logits: (N, C) float32 or float64 scores.
        target: (N,) integer class indices in [0, C).
        reduction: 'mean' (over N), 'sum' or 'none'.
    Shape:
        loss_n = logsumexp(logits[n]) − logits[n, target_n]; 'none' returns (N,),
        the others a 0-d array ('mean' of N = 0 is NaN, as in PyTorch).
    Returns:
        The loss, logits' dtype, as the caller's kind of array.
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    name = resolve(backend, logits, target)
    io = io_for(name, logits, target)
    x, t, dtype = _logits_and_target(op, io, logits, target)
    N = int(x.shape[0])
    if reduction == "none":
        out = io.empty((N,), dtype)
        if N:
            lookup(op, name)(x, t, out, None, reduction)
        return io.finish(out)
    if N == 0:
        return io.finish(io.to_backend(np.asarray(np.nan if reduction == "mean" else 0.0, dtype=dtype)))
    losses = io.empty((N,), dtype)
    out = io.empty((1,), dtype)
    lookup(op, name)(x, t, losses, out, reduction)
    return io.finish(out.reshape(()))


def _grad_output(op, io, grad_output, dtype, reduction, N):
    """grad_output as a 1-D backend array: (N,) for 'none', else (1,)."""
    if isinstance(grad_output, numbers.Real) and not isinstance(grad_output, bool):
        if reduction == "none":
            raise ValueError(f"{op}: reduction='none' needs grad_output of shape ({N},), got the scalar {grad_output!r}")
        return io.to_backend(np.asarray([grad_output], dtype=dtype))
    if isinstance(grad_output, bool) or grad_output is None:
        raise TypeError(f"{op}: grad_output must be a number or an array, got {grad_output!r}")
    g = io.to_backend(grad_output)
    _args.common_dtype(op, logits=np.empty(0, dtype), grad_output=g)
    if reduction == "none":
        if tuple(g.shape) != (N,):
            raise ValueError(f"{op}: reduction='none' needs grad_output of shape ({N},), got {tuple(g.shape)}")
        require_contiguous(io, g, "grad_output", op)
        return g
    if g.size != 1 or g.ndim > 1:
        raise ValueError(f"{op}: reduction={reduction!r} needs a scalar grad_output, got shape {tuple(g.shape)}")
    return g.reshape(1)


def cross_entropy_backward(logits, target, grad_output=1.0, reduction: str = "mean", *, backend=None):
    """Gradient of cross_entropy w.r.t. the logits.

    dlogits[n, c] = g_n · (softmax(logits[n])[c] − [c = target_n]) with g_n = grad_output / N
    ('mean'), grad_output ('sum') or grad_output[n] ('none').
    Args:
        grad_output: a number or 0-d array ('mean', 'sum'), or an (N,) array ('none').
    Returns:
        (N, C), logits' shape and dtype.
    """
    op = "cross_entropy_backward"
    _check_reduction(op, reduction)
    name = resolve(backend, logits, target, grad_output if not isinstance(grad_output, numbers.Real) else None)
    io = io_for(name, logits, target)
    x, t, dtype = _logits_and_target(op, io, logits, target)
    N = int(x.shape[0])
    g = _grad_output(op, io, grad_output, dtype, reduction, N)
    out = io.empty(x.shape, dtype)
    if out.size:
        lookup(op, name)(x, t, g, reduction, out)
    return io.finish(out)
