"""convcore from JAX (CPU): ``conv2d`` usable inside ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

JAX cannot call Numba kernels from compiled XLA code directly, so each convcore call is
a ``jax.pure_callback``: XLA hands the host buffers to Python, convcore computes on its
``cpu`` backend (or ``numpy``), and the result goes back. The gradient is a
``jax.custom_vjp`` whose backward is two more callbacks (``conv2d_input`` and
``conv2d_weight``); the bias is added with ``jnp`` outside the callback, so JAX
differentiates that part itself. Shapes and dtypes are checked when the function is
traced, so bad arguments raise before anything runs. Under ``vmap`` the callback runs
once per batch element (``vmap_method='sequential'``), which is correct for any batching.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from convcore import _args
from convcore import conv as _conv

__all__ = ["conv2d"]


def _callback(fn, out_shape, dtype, *arrays):
    """Run host function ``fn`` on ``arrays`` from traced code; its result has ``out_shape``."""
    result_type = jax.ShapeDtypeStruct(tuple(out_shape), dtype)

    def host(*buffers):
        return np.asarray(fn(*(np.asarray(b) for b in buffers)), dtype=dtype)

    return jax.pure_callback(host, result_type, *arrays, vmap_method="sequential")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv2d(x, w, config):
    return _conv2d_fwd(x, w, config)[0]


def _conv2d_fwd(x, w, config):
    stride, padding, dilation, groups, backend = config
    geom = _conv.conv_geometry("conv2d", x.shape, w.shape, stride, padding, dilation, groups)
    out = _callback(lambda xa, wa: _conv.conv2d(xa, wa, None, stride, padding, dilation, groups, backend=backend),
                    geom.output_shape, x.dtype, x, w)
    return out, (x, w)


def _conv2d_bwd(config, residuals, grad_output):
    stride, padding, dilation, groups, backend = config
    x, w = residuals
    grad_input = _callback(
        lambda wa, ga: _conv.conv2d_input(x.shape, wa, ga, stride, padding, dilation, groups, backend=backend),
        x.shape, x.dtype, w, grad_output)
    grad_weight = _callback(
        lambda xa, ga: _conv.conv2d_weight(xa, w.shape, ga, stride, padding, dilation, groups, backend=backend),
        w.shape, w.dtype, x, grad_output)
    return grad_input, grad_weight


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1, *, backend: str = "cpu"):
    """``convcore.conv2d`` as a differentiable JAX function (CPU).

    Args and Shape as :func:`convcore.conv2d`; ``backend`` is ``'cpu'`` or ``'numpy'``.
    Returns:
        A JAX array of shape (N, K, P, Q), the input's dtype.
    """
    op = "conv2d"
    if backend not in ("cpu", "numpy"):
        raise ValueError(f"{op}: convcore.jax runs on the host: backend must be 'cpu' or 'numpy', got {backend!r}")
    input, weight = jnp.asarray(input), jnp.asarray(weight)
    bias = None if bias is None else jnp.asarray(bias)
    _args.check_ndim(input, 4, "input", op, "(N, C, H, W)")
    _args.check_ndim(weight, 4, "weight", op, "(K, C/groups, R, S)")
    _args.common_dtype(op, input=input, weight=weight, bias=bias)
    stride = _args.positive_pair(stride, "stride", op)
    dilation = _args.positive_pair(dilation, "dilation", op)
    padding = _args.conv_padding(padding, tuple(weight.shape[2:]), stride, dilation, op)
    geom = _conv.conv_geometry(op, input.shape, weight.shape, stride, padding, dilation, groups)  # checks now
    if bias is not None and tuple(bias.shape) != (geom.K,):
        raise ValueError(f"{op}: bias must have shape ({geom.K},) to match out_channels, got {tuple(bias.shape)}")
    out = _conv2d(input, weight, (stride, padding, dilation, int(groups), backend))
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out
