"""The dispatch table: (op, backend) → launcher, as import paths resolved on first use."""
from ._backend import register

_FAMILIES = {
    # op name: (family module stem, launcher name)
    "conv2d": ("conv2d", "conv2d_fwd"),
    "conv2d_input": ("conv2d", "conv2d_bwd_data"),
    "conv2d_weight": ("conv2d", "conv2d_bwd_weight"),
    "conv2d_bias": ("conv2d", "conv2d_bwd_bias"),
}

for _op, (_family, _launcher) in _FAMILIES.items():
    register(_op, "numpy", f"convcore._numpy_backend:{_launcher}")
    register(_op, "cpu", f"convcore.kernels.{_family}.cpu:{_launcher}")
    register(_op, "cuda", f"convcore.kernels.{_family}.cuda:{_launcher}")
