"""convcore: hand-written Numba CPU and CUDA kernels for convolutional networks.

Importing convcore is cheap: numba, numba.cuda and the kernels load on first use.
"""
# isort: off
from . import _openblas  # noqa: F401  (first of all: OpenBLAS's idle-thread spin, before NumPy loads OpenBLAS)
# isort: on
from . import (
    _compat,  # noqa: F401  (first: restores NumPy aliases numba-cuda needs, before any CUDA compile)
    _registry,  # noqa: F401  (fills the dispatch table)
    filters,
)
from ._arrays import set_poison
from ._backend import BACKENDS, backends, get_backend, set_backend
from ._threads import get_num_threads, set_num_threads
from ._tuning import TuneResult
from ._tuning import clear_cache as clear_tune_cache
from .conv import conv2d, conv2d_bias, conv2d_input, conv2d_weight, tune
from .conv_transpose import conv_transpose2d, conv_transpose2d_input, conv_transpose2d_weight
from .dense import linear, linear_backward
from .elementwise import (
    hadamard,
    hadamard_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from .filter import filter2d
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .softmax_loss import (
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "TuneResult",
    "avg_pool2d",
    "avg_pool2d_backward",
    "backends",
    "clear_tune_cache",
    "conv2d",
    "conv2d_bias",
    "conv2d_input",
    "conv2d_weight",
    "conv_transpose2d",
    "conv_transpose2d_input",
    "conv_transpose2d_weight",
    "filter2d",
    "filters",
    "get_backend",
    "get_num_threads",
    "max_pool2d",
    "max_pool2d_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "hadamard",
    "hadamard_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "log_softmax",
    "log_softmax_backward",
    "relu",
    "relu_backward",
    "set_backend",
    "set_num_threads",
    "set_poison",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
    "tune",
]
