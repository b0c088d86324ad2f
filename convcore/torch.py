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

The layers ``Conv2d``, ``Linear`` and ``MaxPool2d`` subclass their ``torch.nn``
namesakes and only replace ``forward``: constructor, parameters, initialisation and
``state_dict`` keys are torch's, so ``convert(model)`` swaps a model's layers in place.
"""
from __future__ import annotations

import numpy as np
import torch

from convcore import _args
from convcore import conv as _conv

__all__ = ["Conv2d", "conv2d", "convert"]


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
    """A convcore result as a tensor, sharing memory."""
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


# ---------------------------------------------------------------------------- layers

class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by convcore: same constructor, parameters and state_dict."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":  # as torch does: pad explicitly, then convolve unpadded
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


_SWAPS = {torch.nn.Conv2d: Conv2d}


def convert(module: torch.nn.Module) -> torch.nn.Module:
    """Swap, in place, every ``torch.nn`` layer convcore implements for its convcore twin.

    Only exact ``torch.nn.Conv2d`` / ``Linear`` / ``MaxPool2d`` instances are swapped (a
    user subclass may override more than ``forward``). The twins add no state, so the
    swap changes the class only: parameters, hooks and the optimizer's references stay.
    Returns ``module`` (itself swapped when it is one of those layers).
    """
    for sub in module.modules():
        twin = _SWAPS.get(type(sub))
        if twin is not None:
            sub.__class__ = twin
    return module
