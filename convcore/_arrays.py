"""Moving arrays between the caller and a backend, and allocating outputs.

Host backends (``numpy``, ``cpu``) take anything ``np.asarray`` accepts and return
NumPy arrays. ``cuda`` takes NumPy arrays (copied to the device and back) and any
object exposing ``__cuda_array_interface__`` (CuPy, Numba device arrays, PyTorch
CUDA tensors) without copying, and returns the caller's kind of array.

Poison mode (``set_poison(True)`` or ``CONVCORE_POISON=1``, used by the tests) fills
every freshly allocated output with NaN (integer outputs, such as pooling indices,
with −1), so an element a kernel forgot to write
shows up as a mismatch instead of passing by luck.
"""
from __future__ import annotations

import os

import numpy as np

from ._backend import is_device_array

_poison = os.environ.get("CONVCORE_POISON", "0") not in ("", "0")


def set_poison(enabled: bool) -> None:
    global _poison
    _poison = bool(enabled)


def poison_enabled() -> bool:
    return _poison


def _poison_value(dtype):
    return np.nan if np.dtype(dtype).kind in "fc" else -1


def _contiguous(array):
    """A C-contiguous array of the same shape (np.ascontiguousarray would turn 0-d into 1-d)."""
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class HostIO:
    """Array traffic for the ``numpy`` and ``cpu`` backends."""

    on_device = False

    def __init__(self, contiguous: bool):
        self.contiguous = contiguous

    def to_backend(self, array):
        if array is None:
            return None
        if hasattr(array, "__dlpack__") and not isinstance(array, np.ndarray):
            array = np.from_dlpack(array)
        array = np.asarray(array)
        # Kernels are compiled for C-contiguous arrays; slices, transposes and zero
        # strides are copied once here (a contiguous input is passed through as is).
        return _contiguous(array) if self.contiguous else array

    def empty(self, shape, dtype):
        if _poison:
            return np.full(shape, _poison_value(dtype), dtype=dtype)
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def finish(self, array):
        return array


def _caller_kind(array) -> str:
    module = type(array).__module__.split(".")[0]
    if module in ("cupy", "torch"):
        return module
    return "numba" if is_device_array(array) else "numpy"


class CudaIO:
    """Array traffic for the ``cuda`` backend (also under the Numba simulator)."""

    on_device = True

    def __init__(self, *arrays):
        from numba import cuda

        self.cuda = cuda
        first = next((a for a in arrays if a is not None and is_device_array(a)), None)
        self.kind = "numpy" if first is None else _caller_kind(first)
        self.template = first

    def to_backend(self, array):
        if array is None:
            return None
        if getattr(array, "__cuda_ndarray__", False):
            return array  # already a Numba device array
        if hasattr(array, "__cuda_array_interface__"):
            return self.cuda.as_cuda_array(array)  # zero-copy view
        return self.cuda.to_device(_contiguous(np.asarray(array)))

    def empty(self, shape, dtype):
        if _poison:
            return self.cuda.to_device(np.full(shape, _poison_value(dtype), dtype=dtype))
        return self.cuda.device_array(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.cuda.to_device(np.zeros(shape, dtype=dtype))

    def finish(self, array):
        if self.kind == "numpy":
            return array.copy_to_host()
        if self.kind == "cupy":
            import cupy

            return cupy.asarray(array)
        if self.kind == "torch":
            import torch

            return torch.as_tensor(array, device=self.template.device)
        return array


def io_for(backend: str, *arrays):
    if backend == "cuda":
        return CudaIO(*arrays)
    return HostIO(contiguous=(backend == "cpu"))
