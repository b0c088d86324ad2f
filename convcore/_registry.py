"""The dispatch table: (op, backend) → launcher, as import paths resolved on first use.

Each op family lives in ``kernels/<family>/`` with ``numpy.py`` (the reference behind
the launcher signature), ``cpu.py`` and ``cuda.py``, each defining the same launchers.
"""
from ._backend import register

# op name: (family folder, launcher name)
OPS = {
    "conv2d": ("conv2d", "conv2d_fwd"),
    "conv2d_input": ("conv2d", "conv2d_bwd_data"),
    "conv2d_weight": ("conv2d", "conv2d_bwd_weight"),
    "conv2d_bias": ("conv2d", "conv2d_bwd_bias"),
    "conv2d_candidates": ("conv2d", "candidates"),  # algorithms convcore.tune may time
    "conv2d_variants": ("conv2d", "variants"),  # the backend's own algorithm names, beyond ALGORITHMS
    "max_pool2d": ("pool", "max_pool2d_fwd"),
    "max_pool2d_backward": ("pool", "max_pool2d_bwd"),
    "avg_pool2d": ("pool", "avg_pool2d_fwd"),
    "avg_pool2d_backward": ("pool", "avg_pool2d_bwd"),
    "conv_transpose2d": ("conv_transpose", "conv_transpose2d_fwd"),
    "conv_transpose2d_input": ("conv_transpose", "conv_transpose2d_bwd_data"),
    "conv_transpose2d_weight": ("conv_transpose", "conv_transpose2d_bwd_weight"),
    "filter2d": ("filter", "filter2d"),
    # elementwise: Hadamard product and activations
    "hadamard": ("elementwise", "hadamard_fwd"),
    "hadamard_backward": ("elementwise", "hadamard_bwd"),
    "relu": ("elementwise", "relu_fwd"),
    "relu_backward": ("elementwise", "relu_bwd"),
    "leaky_relu": ("elementwise", "leaky_relu_fwd"),
    "leaky_relu_backward": ("elementwise", "leaky_relu_bwd"),
    "sigmoid": ("elementwise", "sigmoid_fwd"),
    "sigmoid_backward": ("elementwise", "sigmoid_bwd"),
    "tanh": ("elementwise", "tanh_fwd"),
    "tanh_backward": ("elementwise", "tanh_bwd"),
    # linear (dense)
    "linear": ("linear", "linear_fwd"),
    "linear_backward": ("linear", "linear_bwd"),
    # softmax family
    "softmax": ("softmax", "softmax_fwd"),
    "log_softmax": ("softmax", "log_softmax_fwd"),
    "softmax_backward": ("softmax", "softmax_bwd"),
    "log_softmax_backward": ("softmax", "log_softmax_bwd"),
    "cross_entropy": ("softmax", "cross_entropy_fwd"),
    "cross_entropy_backward": ("softmax", "cross_entropy_bwd"),
    # in-place optimiser updates and the scaled sum behind gradient accumulation
    "sgd_update": ("optim", "sgd_update"),
    "adam_update": ("optim", "adam_update"),
    "axpby": ("optim", "axpby"),
}

for _op, (_family, _launcher) in OPS.items():
    for _backend in ("numpy", "cpu", "cuda"):
        register(_op, _backend, f"convcore.kernels.{_family}.{_backend}:{_launcher}")
