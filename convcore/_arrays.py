"""Moving arrays between the caller and a backend, and allocating outputs.

Host backends (``numpy``, ``cpu``) take anything ``np.asarray`` accepts and return
NumPy arrays. ``cuda`` takes NumPy arrays (copied to the device and back) and any
object exposing ``__cuda_array_interface__`` (CuPy, Numba device arrays, PyTorch
CUDA tensors) without copying, and returns the caller's kind of array.

Streams: the ``cuda`` backend works on the caller's current stream, so it orders with
the caller's own work without a device-wide synchronisation. ``CudaIO.stream`` is
PyTorch's ``torch.cuda.current_stream(device)`` for torch tensors, CuPy's
``cupy.cuda.get_current_stream()`` for CuPy arrays, a Numba device array's own stream,
and the default stream (0) otherwise (and always in the simulator, which has no
streams). Outputs and workspaces are allocated bound to that stream, and launchers
launch on their output's stream (``launch[blocks, threads, out.stream]``), so the
stream reaches every kernel without widening the launcher signatures.

Poison mode (``set_poison(True)`` or ``CONVCORE_POISON=1``, used by the tests) fills
every freshly allocated output with NaN (integer outputs, such as pooling indices,
with −1), so an element a kernel forgot to write
shows up as a mismatch instead of passing by luck.
"""
from __future__ import annotations

import os

import numpy as np

from ._backend import is_device_array
from ._device_memory import device_empty

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
        self.stream_ptr, self.stream = _caller_stream(self.kind, first, cuda)

    def to_backend(self, array):
        if array is None:
            return None
        if getattr(array, "__cuda_ndarray__", False):
            return array  # already a Numba device array
        if hasattr(array, "__cuda_array_interface__"):
            # Zero-copy view. Numba synchronises the producer's stream (CAI v3 'stream';
            # 1 means the legacy default stream, our 0) unless it is ours: work queued on
            # our own stream is already ordered before our kernels.
            producer = array.__cuda_array_interface__.get("stream")
            ours = producer is None or producer == self.stream_ptr or (producer == 1 and self.stream_ptr == 0)
            return self.cuda.as_cuda_array(array, sync=not ours)
        return self.cuda.to_device(_contiguous(np.asarray(array)), stream=self.stream)

    def empty(self, shape, dtype):
        if _poison:
            return self._filled(np.full(shape, _poison_value(dtype), dtype=dtype))
        return device_empty(shape, dtype, self.stream, self.stream_ptr)

    def zeros(self, shape, dtype):
        return self._filled(np.zeros(shape, dtype=dtype))

    def _filled(self, host):
        # device_array + copy rather than to_device: the simulator's to_device drops the stream.
        array = device_empty(host.shape, host.dtype, self.stream, self.stream_ptr)
        array.copy_to_device(host, stream=self.stream)
        return array

    def finish(self, array):
        if self.kind == "numpy":
            return array.copy_to_host()  # on the default stream: waits for the kernels
        if self.kind == "cupy":
            import cupy

            return cupy.asarray(array)
        if self.kind == "torch":
            import torch

            return torch.as_tensor(array, device=self.template.device)
        return array


def _caller_stream(kind: str, template, cuda):
    """(raw handle, Numba stream) of the caller's current CUDA stream; (0, 0) is the default stream."""
    if kind == "numba":
        stream = getattr(template, "stream", 0) or 0  # the stream the device array is bound to
        return (int(stream) if hasattr(stream, "__int__") else 0), stream  # simulator streams have no handle
    if kind == "torch":
        import torch

        ptr = int(torch.cuda.current_stream(template.device).cuda_stream)
    elif kind == "cupy":
        import cupy

        ptr = int(cupy.cuda.get_current_stream().ptr)
    else:
        return 0, 0
    # external_stream wraps the caller's stream without taking ownership of it.
    return (ptr, cuda.external_stream(ptr)) if ptr else (0, 0)


def io_for(backend: str, *arrays):
    if backend == "cuda":
        return CudaIO(*arrays)
    return HostIO(contiguous=(backend == "cpu"))
