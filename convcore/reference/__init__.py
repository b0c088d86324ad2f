"""NumPy reference implementations: the definition of "correct" for every op.

One module per op family; everything is re-exported here (``convcore.reference.conv2d``).
Clarity over speed. Float32 inputs are computed in float64 and rounded once at the end.
"""
from .conv2d import conv2d, conv2d_bias, conv2d_input, conv2d_weight  # noqa: F401
from .conv_transpose import conv_transpose2d  # noqa: F401
from .elementwise import (  # noqa: F401
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
from .filter import filter2d  # noqa: F401
from .linear import linear, linear_backward  # noqa: F401
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward  # noqa: F401
from .softmax import (  # noqa: F401
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)
