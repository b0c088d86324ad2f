"""Module and Parameter: the explicit layer API.

A layer computes ``forward(x)`` and keeps what its ``backward(grad_output)`` needs;
``backward`` returns the gradient for the layer's input and adds its parameters'
gradients into ``Parameter.grad``. There is no autograd tape: ``Sequential`` runs the
layers forward, then backward in reverse. A module's parameters live on its backend:
NumPy arrays for ``numpy``/``cpu``, Numba device arrays for ``cuda`` (so activations,
parameters and gradients stay on the GPU between layers).
"""
from __future__ import annotations

import inspect
import json

import numpy as np

from .._backend import BACKENDS, is_device_array
from .._update import axpby_


def to_host(array):
    """A NumPy array with the contents of ``array`` (a copy for device arrays)."""
    if array is None:
        return None
    if hasattr(array, "copy_to_host"):
        return array.copy_to_host()
    return np.asarray(array)


def to_backend(array, backend, dtype=None):
    """``array`` where ``backend`` keeps its data: a Numba device array for 'cuda', else NumPy."""
    if array is None:
        return None
    if backend == "cuda":
        from numba import cuda

        if is_device_array(array) and (dtype is None or np.dtype(array.dtype) == dtype):
            return array if getattr(array, "__cuda_ndarray__", False) else cuda.as_cuda_array(array)
        host = np.ascontiguousarray(to_host(array), dtype=dtype)
        return cuda.to_device(host)
    return np.ascontiguousarray(to_host(array), dtype=dtype)


def zeros_like(array):
    if is_device_array(array):
        from numba import cuda

        return cuda.to_device(np.zeros(array.shape, array.dtype))
    return np.zeros(array.shape, array.dtype)


class Parameter:
    """A trainable array: ``.data`` (on the module's backend) and ``.grad`` (None until a backward)."""

    def __init__(self, data):
        self._version = 0
        self.data = data
        self.grad = None

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        self.bump_version()

    @property
    def version(self) -> int:
        """Counts the changes made through convcore (assigning ``.data``, an optimiser step,
        ``load_state_dict``, ``to``): layers key what they derive from ``.data`` on it."""
        return self._version

    def bump_version(self) -> None:
        """Mark ``.data`` as changed; call it after editing ``.data`` in place yourself."""
        self._version += 1

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return np.dtype(self.data.dtype)

    def accumulate(self, grad) -> None:
        """Add ``grad`` into ``.grad`` (as PyTorch accumulates until ``zero_grad``)."""
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"Parameter.accumulate: grad shape {tuple(grad.shape)} != parameter shape {self.shape}")
        if self.grad is None:
            self.grad = grad
        else:
            axpby_(self.grad, 1.0, self.grad, 1.0, grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class: subclasses set Parameters and sub-Modules as attributes, and define
    ``forward`` and ``backward``. Constructor arguments are recorded for ``__repr__``
    and for rebuilding a saved model (``nn.load``)."""

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        object.__setattr__(self, "_config", {k: v for k, v in list(bound.arguments.items())[1:]})
        return self

    backend = None  # None: the process default (see convcore.set_backend)
    training = True

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} defines no forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} defines no backward")

    def _fuses(self, following) -> bool:
        """Whether ``_forward_fused(input, following)`` can run this layer and the next as one op."""
        return False

    # -- structure ---------------------------------------------------------------
    def named_children(self):
        return [(name, value) for name, value in vars(self).items() if isinstance(value, Module)]

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix: str = ""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient (``torch.nn.Module.zero_grad``)."""
        for param in self.parameters():
            param.grad = None if set_to_none or param.grad is None else zeros_like(param.grad)

    # -- modes and placement -----------------------------------------------------
    def train(self, mode: bool = True):
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, backend: str | None = None, dtype=None):
        """Move every parameter (and gradient) to ``backend`` and/or cast to ``dtype``; later calls run there."""
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"Module.to: backend must be one of {BACKENDS}, got {backend!r}")
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise TypeError(f"Module.to: dtype must be float32 or float64, got {dtype}")
        for module in self.modules():
            target = backend if backend is not None else module.backend
            for _name, value in list(vars(module).items()):
                if isinstance(value, Parameter):
                    value.data = to_backend(value.data, target, dtype)
                    value.grad = to_backend(value.grad, target, dtype)
            module.backend = target
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Every parameter as a NumPy array (a copy), keyed as PyTorch does ('0.weight')."""
        return {name: to_host(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state, strict: bool = True) -> None:
        own = dict(self.named_parameters())
        keys = {k for k in state if not k.startswith("__")}
        if strict and keys != set(own):
            missing, unexpected = sorted(set(own) - keys), sorted(keys - set(own))
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name in keys & set(own):
            value = np.asarray(to_host(state[name]))
            param = own[name]
            if tuple(value.shape) != param.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, the model expects {param.shape}")
            owner = self._owner(name)
            param.data = to_backend(value, owner.backend, param.dtype)

    def _owner(self, name):
        module = self
        for part in name.split(".")[:-1]:
            module = getattr(module, part)
        return module

    def save(self, path) -> None:
        """Save the parameters and the architecture as a .npz file (``nn.load`` rebuilds the model)."""
        arrays = self.state_dict()
        arrays["__architecture__"] = np.array(json.dumps(self._architecture()))
        with open(path, "wb") as file:
            np.savez(file, **arrays)

    def _architecture(self):
        from . import _layer_classes

        name = type(self).__name__
        if _layer_classes().get(name) is not type(self):
            raise TypeError(f"save: {name} is not a convcore.nn layer; save its state_dict() instead")
        if name == "Sequential":
            return {"type": name, "layers": [child._architecture() for _, child in self.named_children()]}
        return {"type": name, "args": {k: list(v) if isinstance(v, tuple) else v for k, v in self._config.items()}}

    # -- printing ----------------------------------------------------------------
    def extra_repr(self) -> str:
        """Required arguments positionally, optional ones only where they differ from the default."""
        parts = []
        params = inspect.signature(type(self).__init__).parameters
        for name, value in self._config.items():
            default = params[name].default
            if default is inspect.Parameter.empty:
                parts.append(repr(value))
            elif value != default:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        children = self.named_children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers run in order; backward runs them in reverse."""

    def __init__(self, *layers: Module):
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {index} is {type(layer).__name__}, not a Module")
            setattr(self, str(index), layer)

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    @property
    def layers(self):
        return [child for _, child in self.named_children()]

    def forward(self, input):
        # A layer that can absorb the next one (Conv2d followed by ReLU: the conv kernel's
        # fused bias + ReLU epilogue) runs both as one op; backward is unchanged.
        layers, i = self.layers, 0
        while i < len(layers):
            layer = layers[i]
            if i + 1 < len(layers) and layer._fuses(layers[i + 1]):
                input = layer._forward_fused(input, layers[i + 1])
                i += 2
            else:
                input = layer(input)
                i += 1
        return input

    def backward(self, grad_output):
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output


def load(path) -> Module:
    """Rebuild a model written by ``Module.save`` (architecture and parameters), on the default backend."""
    from . import _layer_classes

    with np.load(path) as archive:
        if "__architecture__" not in archive:
            raise ValueError(f"load: {path} holds no architecture; use model.load_state_dict(np.load(path))")
        spec = json.loads(str(archive["__architecture__"]))
        model = _build(spec, _layer_classes())
        model.load_state_dict({k: archive[k] for k in archive.files if k != "__architecture__"})
    return model


def _build(spec, classes):
    cls = classes[spec["type"]]
    if spec["type"] == "Sequential":
        return cls(*(_build(child, classes) for child in spec["layers"]))
    return cls(**spec["args"])
