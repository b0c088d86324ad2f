"""convcore: hand-written Numba CPU and CUDA kernels for convolutional networks.

Importing convcore is cheap: numba, numba.cuda and the kernels load on first use.
"""
from . import _registry  # noqa: F401  (fills the dispatch table)
from ._arrays import set_poison
from ._backend import BACKENDS, backends, get_backend, set_backend
from .conv import conv2d, conv2d_bias, conv2d_input, conv2d_weight

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "backends",
    "conv2d",
    "conv2d_bias",
    "conv2d_input",
    "conv2d_weight",
    "get_backend",
    "set_backend",
    "set_poison",
]
