"""convcore as a PyTorch backend: custom ops with autograd, and drop-in layers.

Every op is a ``torch.library.custom_op`` in the ``convcore`` namespace
(``torch.ops.convcore.conv2d`` ...) with a fake (meta) implementation, so it works
under autograd, ``torch.library.opcheck`` and ``torch.compile`` (as an opaque call).
Gradients are registered with ``register_autograd`` and are themselves convcore
custom ops, which have no autograd of their own: a double backward raises instead of
silently returning a wrong second derivative.

Arrays move without copies. A CPU tensor reaches the ``cpu`` backend as a NumPy view
of its memory (``Tensor.numpy()``; a non-contiguous one is copied once, as for any
array) and the NumPy result comes back through ``torch.from_numpy``, sharing memory.
A CUDA tensor reaches the ``cuda`` backend through ``__cuda_array_interface__``; the
result is a tensor wrapping convcore's device buffer, and kernels launch on the
tensor's current stream (``torch.cuda.current_stream()``), see ``convcore._arrays``.

The layers ``Conv2d``, ``Linear``, ``MaxPool2d`` and ``ReLU`` subclass their ``torch.nn``
namesakes and only replace ``forward``: constructor, parameters, initialisation and
``state_dict`` keys are torch's, so ``convert(model)`` swaps a model's layers in place.
"""
from __future__ import annotations

import numpy as np
import torch

import convcore
from convcore import _args
from convcore import conv as _conv
from convcore import conv_transpose as _conv_transpose
from convcore import elementwise as _elementwise
from convcore import pool as _pool

__all__ = [
    "Conv2d", "Linear", "MaxPool2d", "ReLU", "conv2d", "conv_transpose2d", "convert", "hadamard", "linear",
    "max_pool2d", "relu",
]


# ---------------------------------------------------------------------------- bridge

def _backend_for(op: str, *tensors) -> str:
    """'cpu' for CPU tensors, 'cuda' for CUDA tensors; all must share one device."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        described = ", ".join(str(d) for d in sorted(devices, key=str))
        raise ValueError(f"{op}: all tensors must be on one device, got {described}")
    device = devices.pop()
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return "cuda"
    raise ValueError(f"{op}: convcore runs CPU and CUDA tensors, got a tensor on {device}")


def _to_convcore(tensor):
    """A zero-copy view convcore accepts: NumPy for CPU, the tensor itself for CUDA."""
    if tensor is None:
        return None
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        # resolve_* are no-ops unless a lazy conj/neg view is pending (numpy() refuses those).
        return tensor.resolve_conj().resolve_neg().numpy()
    return tensor  # __cuda_array_interface__: CudaIO wraps it without copying


def _from_convcore(array):
    """A convcore result (or a tuple of them) as tensors, sharing memory."""
    if isinstance(array, tuple):
        return tuple(_from_convcore(a) for a in array)
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return array  # the cuda backend already returns torch tensors to torch callers


def _run(fn, op, *tensors, **kwargs):
    """Call convcore ``fn`` on the tensors' backend with zero-copy views; return a tensor."""
    backend = _backend_for(op, *tensors)
    arrays = [_to_convcore(t) for t in tensors]
    return _from_convcore(fn(*arrays, backend=backend, **kwargs))


# ---------------------------------------------------------------------------- conv2d

@torch.library.custom_op("convcore::conv2d", mutates_args=())
def _conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
            padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    return _run(lambda x, w, b, backend: _conv.conv2d(x, w, b, stride, padding, dilation, groups, backend=backend),
                "conv2d", input, weight, bias)


@_conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    geom = _conv.conv_geometry("conv2d", input.shape, weight.shape, stride, padding, dilation, groups)
    return input.new_empty(geom.output_shape)


@torch.library.custom_op("convcore::conv2d_input", mutates_args=())
def _conv2d_input(input_shape: list[int], weight: torch.Tensor, grad_output: torch.Tensor, stride: list[int],
                  padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    return _run(lambda w, dy, backend: _conv.conv2d_input(input_shape, w, dy, stride, padding, dilation, groups,
                                                          backend=backend),
                "conv2d_input", weight, grad_output)


@_conv2d_input.register_fake
def _(input_shape, weight, grad_output, stride, padding, dilation, groups):
    return grad_output.new_empty(input_shape)


@torch.library.custom_op("convcore::conv2d_weight", mutates_args=())
def _conv2d_weight(input: torch.Tensor, weight_shape: list[int], grad_output: torch.Tensor, stride: list[int],
                   padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    return _run(lambda x, dy, backend: _conv.conv2d_weight(x, weight_shape, dy, stride, padding, dilation, groups,
                                                           backend=backend),
                "conv2d_weight", input, grad_output)


@_conv2d_weight.register_fake
def _(input, weight_shape, grad_output, stride, padding, dilation, groups):
    return grad_output.new_empty(weight_shape)


@torch.library.custom_op("convcore::conv2d_bias", mutates_args=())
def _conv2d_bias(grad_output: torch.Tensor) -> torch.Tensor:
    return _run(_conv.conv2d_bias, "conv2d_bias", grad_output)


@_conv2d_bias.register_fake
def _(grad_output):
    return grad_output.new_empty(grad_output.shape[1:2])


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, *config = inputs
    ctx.save_for_backward(input, weight)
    ctx.config = config
    ctx.has_bias = bias is not None


def _conv2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = _conv2d_input(list(input.shape), weight, grad_output, *ctx.config)
    if need_weight:
        grad_weight = _conv2d_weight(input, list(weight.shape), grad_output, *ctx.config)
    if need_bias and ctx.has_bias:
        grad_bias = _conv2d_bias(grad_output)
    return grad_input, grad_weight, grad_bias, None, None, None, None


_conv2d.register_autograd(_conv2d_backward, setup_context=_conv2d_setup)


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` computed by convcore, differentiable.

    Args and Shape as :func:`convcore.conv2d` (padding may be an int, a pair,
    ``(top, bottom, left, right)``, ``'valid'`` or ``'same'``).
    Returns:
        A tensor on the input's device: CPU tensors run on the ``cpu`` backend,
        CUDA tensors on the ``cuda`` backend.
    """
    op = "conv2d"
    _args.check_ndim(weight, 4, "weight", op, "(K, C/groups, R, S)")
    stride = _args.positive_pair(stride, "stride", op)
    dilation = _args.positive_pair(dilation, "dilation", op)
    padding = _args.conv_padding(padding, tuple(weight.shape[2:]), stride, dilation, op)
    return _conv2d(input, weight, bias, list(stride), list(padding), list(dilation), int(groups))


# ---------------------------------------------------------------------------- conv_transpose2d

@torch.library.custom_op("convcore::conv_transpose2d", mutates_args=())
def _conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                      padding: list[int], output_padding: list[int], groups: int,
                      dilation: list[int]) -> torch.Tensor:
    return _run(lambda x, w, b, backend: _conv_transpose.conv_transpose2d(
        x, w, b, stride, padding, output_padding, groups, dilation, backend=backend),
        "conv_transpose2d", input, weight, bias)


@_conv_transpose2d.register_fake
def _(input, weight, bias, stride, padding, output_padding, groups, dilation):
    geom = _conv_transpose.transpose_geometry("conv_transpose2d", input.shape, weight.shape, stride, padding,
                                              output_padding, groups, dilation)
    return input.new_empty(_conv_transpose.output_shape(geom))


@torch.library.custom_op("convcore::conv_transpose2d_input", mutates_args=())
def _conv_transpose2d_input(input_shape: list[int], weight: torch.Tensor, grad_output: torch.Tensor,
                            stride: list[int], padding: list[int], output_padding: list[int], groups: int,
                            dilation: list[int]) -> torch.Tensor:
    return _run(lambda w, dy, backend: _conv_transpose.conv_transpose2d_input(
        input_shape, w, dy, stride, padding, output_padding, groups, dilation, backend=backend),
        "conv_transpose2d_input", weight, grad_output)


@_conv_transpose2d_input.register_fake
def _(input_shape, weight, grad_output, stride, padding, output_padding, groups, dilation):
    return grad_output.new_empty(input_shape)


@torch.library.custom_op("convcore::conv_transpose2d_weight", mutates_args=())
def _conv_transpose2d_weight(input: torch.Tensor, weight_shape: list[int], grad_output: torch.Tensor,
                             stride: list[int], padding: list[int], output_padding: list[int], groups: int,
                             dilation: list[int]) -> torch.Tensor:
    return _run(lambda x, dy, backend: _conv_transpose.conv_transpose2d_weight(
        x, weight_shape, dy, stride, padding, output_padding, groups, dilation, backend=backend),
        "conv_transpose2d_weight", input, grad_output)


@_conv_transpose2d_weight.register_fake
def _(input, weight_shape, grad_output, stride, padding, output_padding, groups, dilation):
    return grad_output.new_empty(weight_shape)


def _conv_transpose2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = _conv_transpose2d_input(list(input.shape), weight, grad_output, *ctx.config)
    if need_weight:
        grad_weight = _conv_transpose2d_weight(input, list(weight.shape), grad_output, *ctx.config)
    if need_bias and ctx.has_bias:
        grad_bias = _conv2d_bias(grad_output)  # Σ over N, H_out, W_out, as for conv2d
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


_conv_transpose2d.register_autograd(_conv_transpose2d_backward, setup_context=_conv2d_setup)


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """``torch.nn.functional.conv_transpose2d`` computed by convcore, differentiable.

    Args and Shape as :func:`convcore.conv_transpose2d` (weight (C_in, C_out/groups, R, S)).
    """
    op = "conv_transpose2d"
    pairs = [_args.pair(v, name, op) for v, name in
             ((stride, "stride"), (padding, "padding"), (output_padding, "output_padding"), (dilation, "dilation"))]
    stride, padding, output_padding, dilation = (list(p) for p in pairs)
    return _conv_transpose2d(input, weight, bias, stride, padding, output_padding, int(groups), dilation)


# ---------------------------------------------------------------------------- linear

@torch.library.custom_op("convcore::linear", mutates_args=())
def _linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _run(convcore.linear, "linear", input, weight, bias)


@_linear.register_fake
def _(input, weight, bias):
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.custom_op("convcore::linear_backward", mutates_args=())
def _linear_backward(grad_output: torch.Tensor, input: torch.Tensor,
                     weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run(convcore.linear_backward, "linear_backward", grad_output, input, weight)


@_linear_backward.register_fake
def _(grad_output, input, weight):
    return input.new_empty(input.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[:1])


def _linear_setup(ctx, inputs, output):
    input, weight, bias = inputs
    ctx.save_for_backward(input, weight)
    ctx.has_bias = bias is not None


def _linear_backward_formula(ctx, grad_output):
    input, weight = ctx.saved_tensors
    # One call computes all three (the kernels share the pass over grad_output); unneeded ones are dropped.
    grad_input, grad_weight, grad_bias = _linear_backward(grad_output, input, weight)
    needs = ctx.needs_input_grad
    return (grad_input if needs[0] else None, grad_weight if needs[1] else None,
            grad_bias if needs[2] and ctx.has_bias else None)


_linear.register_autograd(_linear_backward_formula, setup_context=_linear_setup)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear`` (``input @ weight.T + bias``) computed by convcore, differentiable."""
    return _linear(input, weight, bias)


# ---------------------------------------------------------------------------- max_pool2d

@torch.library.custom_op("convcore::max_pool2d", mutates_args=())
def _max_pool2d(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                dilation: list[int], ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # Always returns the argmax indices: the backward needs them, and returning them is free.
    return _run(lambda x, backend: _pool.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode,
                                                    return_indices=True, backend=backend),
                "max_pool2d", input)


@_max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    geom = _pool.pool_geometry("max_pool2d", input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return input.new_empty(geom.output_shape), input.new_empty(geom.output_shape, dtype=torch.int64)


@torch.library.custom_op("convcore::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward(grad_output: torch.Tensor, input: torch.Tensor, indices: torch.Tensor,
                         kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
                         ceil_mode: bool) -> torch.Tensor:
    backend = _backend_for("max_pool2d_backward", grad_output, input, indices)
    dy, x, idx = (_to_convcore(t) for t in (grad_output, input, indices))
    return _from_convcore(_pool.max_pool2d_backward(dy, x, kernel_size, stride, padding, dilation, ceil_mode,
                                                    indices=idx, backend=backend))


@_max_pool2d_backward.register_fake
def _(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    return input.new_empty(input.shape)


def _max_pool2d_setup(ctx, inputs, output):
    input, *config = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, output[1])
    ctx.config = config


def _max_pool2d_backward_formula(ctx, grad_output, grad_indices):
    input, indices = ctx.saved_tensors
    return (_max_pool2d_backward(grad_output, input, indices, *ctx.config),) + (None,) * 5


_max_pool2d.register_autograd(_max_pool2d_backward_formula, setup_context=_max_pool2d_setup)


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """``torch.nn.functional.max_pool2d`` computed by convcore, differentiable.

    Returns the output, or ``(output, indices)`` (int64, ``h·W + w`` in each input plane).
    """
    op = "max_pool2d"
    kernel_size = _args.positive_pair(kernel_size, "kernel_size", op)
    stride = kernel_size if stride is None or (not isinstance(stride, int) and len(stride) == 0) else stride
    stride = _args.pair(stride, "stride", op)
    padding, dilation = _args.pair(padding, "padding", op), _args.pair(dilation, "dilation", op)
    out, indices = _max_pool2d(input, list(kernel_size), list(stride), list(padding), list(dilation), bool(ceil_mode))
    return (out, indices) if return_indices else out


# ---------------------------------------------------------------------------- relu, hadamard

@torch.library.custom_op("convcore::relu", mutates_args=())
def _relu(input: torch.Tensor) -> torch.Tensor:
    return _run(_elementwise.relu, "relu", input)


@_relu.register_fake
def _(input):
    return torch.empty_like(input)


@torch.library.custom_op("convcore::relu_backward", mutates_args=())
def _relu_backward(grad_output: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    return _run(_elementwise.relu_backward, "relu_backward", grad_output, input)


@_relu_backward.register_fake
def _(grad_output, input):
    return torch.empty_like(input)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


_relu.register_autograd(lambda ctx, grad_output: _relu_backward(grad_output, *ctx.saved_tensors),
                        setup_context=_save_inputs)


def relu(input: torch.Tensor) -> torch.Tensor:
    """``torch.relu`` computed by convcore, differentiable (NaN stays NaN)."""
    return _relu(input)


@torch.library.custom_op("convcore::hadamard", mutates_args=())
def _hadamard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _run(_elementwise.hadamard, "hadamard", a, b)


@_hadamard.register_fake
def _(a, b):
    return a.new_empty(torch.broadcast_shapes(a.shape, b.shape))


@torch.library.custom_op("convcore::hadamard_backward", mutates_args=())
def _hadamard_backward(grad_output: torch.Tensor, a: torch.Tensor,
                       b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(_elementwise.hadamard_backward, "hadamard_backward", grad_output, a, b)


@_hadamard_backward.register_fake
def _(grad_output, a, b):
    return torch.empty_like(a), torch.empty_like(b)


def _hadamard_backward_formula(ctx, grad_output):
    grad_a, grad_b = _hadamard_backward(grad_output, *ctx.saved_tensors)
    return (grad_a if ctx.needs_input_grad[0] else None), (grad_b if ctx.needs_input_grad[1] else None)


_hadamard.register_autograd(_hadamard_backward_formula, setup_context=_save_inputs)


def hadamard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise product ``a * b`` with broadcasting, computed by convcore, differentiable."""
    return _hadamard(a, b)


# ---------------------------------------------------------------------------- layers

class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by convcore: same constructor, parameters and state_dict."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":  # as torch does: pad explicitly, then convolve unpadded
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` computed by convcore: same constructor, parameters and state_dict."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by convcore: same constructor and attributes."""

    def forward(self, input: torch.Tensor):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices)


class ReLU(torch.nn.ReLU):
    """``torch.nn.ReLU`` computed by convcore. ``inplace=True`` is accepted but the result
    is a new tensor (same values; convcore ops never write their inputs)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return relu(input)


_SWAPS = {torch.nn.Conv2d: Conv2d, torch.nn.Linear: Linear, torch.nn.MaxPool2d: MaxPool2d, torch.nn.ReLU: ReLU}


def convert(module: torch.nn.Module) -> torch.nn.Module:
    """Swap, in place, every ``torch.nn`` layer convcore implements for its convcore twin.

    Only exact ``torch.nn.Conv2d`` / ``Linear`` / ``MaxPool2d`` / ``ReLU`` instances are swapped (a
    user subclass may override more than ``forward``). The twins add no state, so the
    swap changes the class only: parameters, hooks and the optimizer's references stay.
    Returns ``module`` (itself swapped when it is one of those layers).
    """
    for sub in module.modules():
        twin = _SWAPS.get(type(sub))
        if twin is not None:
            sub.__class__ = twin
    return module
