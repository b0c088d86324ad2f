"""convcore.nn: a small, explicit layer API (forward, backward, parameters) on the convcore ops.

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10))
    logits = model(x); loss = loss_fn(logits, y); model.backward(loss_fn.backward()); opt.step()
"""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .conv import Conv2d, ConvTranspose2d
from .init import manual_seed
from .linear import Dropout, Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential, load
from .pool import AvgPool2d, MaxPool2d

__all__ = [
    "AvgPool2d", "Conv2d", "ConvTranspose2d", "CrossEntropyLoss", "Dropout", "Flatten", "LeakyReLU", "Linear",
    "MSELoss", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "load", "manual_seed",
]


def _layer_classes():
    """The classes ``nn.load`` may rebuild, by name."""
    return {name: globals()[name] for name in __all__ if isinstance(globals()[name], type)
            and issubclass(globals()[name], Module) and name != "Module"}
