"""Device memory for the ``cuda`` backend's outputs and workspaces: CuPy's caching pool when CuPy is there.

Measured on an H100 (benchmarks/gpu_profile.py): ``numba.cuda.device_array`` of 4 MB costs about 120 us
per call (a cuMemAlloc, and Numba's deferred cuMemFree, which synchronises), against about 12 us for
PyTorch's caching allocator, so on a small layer the allocation of the output took longer than the kernel.
Numba has no pool of its own; CuPy's ``MemoryPool`` (the ``cuda`` extra installs CuPy) is one, so every
output and workspace is carved from it and wrapped as a Numba device array that keeps the CuPy block alive:
when the array is freed the block goes back to the pool, not to the driver.

Stream safety: CuPy's pool hands a freed block out again only to allocations made on the same stream, so
each block is allocated under the stream our kernels will run on (the caller's stream, or the default
stream); work on one stream runs in order, so a block is never reused while a kernel still reads it.

Without CuPy, under the Numba simulator, or with ``CONVCORE_CUDA_POOL=0``, arrays come from
``numba.cuda.device_array`` and the reason is logged once (logger ``convcore``) — never a silent change of path.
"""
from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger("convcore")

_pool = None  # None: not decided yet; False: Numba allocations (see _reason); else the cupy module
_reason = ""
_streams: dict[int, object] = {}  # raw stream handle -> cupy stream object (not owning it)


def pool_status() -> tuple[bool, str]:
    """(whether CUDA outputs come from CuPy's caching pool, why / why not)."""
    _decide()
    return _pool is not False, _reason


def reset() -> None:
    """Decide again at the next allocation (tests, or after setting CONVCORE_CUDA_POOL)."""
    global _pool, _reason
    _pool, _reason = None, ""
    _streams.clear()


def _decide() -> None:
    global _pool, _reason
    if _pool is not None:
        return
    from ._backend import cuda_simulated

    if cuda_simulated():
        _pool, _reason = False, "the Numba CUDA simulator has no device memory to pool"
    elif os.environ.get("CONVCORE_CUDA_POOL", "1") == "0":
        _pool, _reason = False, "CONVCORE_CUDA_POOL=0"
    else:
        try:
            import cupy
        except ImportError as exc:
            _pool, _reason = False, f"CuPy is not installed ({exc}); pip install 'convcore[cuda]' for the pool"
        else:
            _pool, _reason = cupy, f"CuPy {cupy.__version__} memory pool"
    if _pool is False:
        log.info("convcore: CUDA outputs use numba.cuda.device_array (~100 us per allocation): %s", _reason)


def _cupy_stream(cupy, handle: int):
    stream = _streams.get(handle)
    if stream is None:
        stream = cupy.cuda.Stream.null if handle == 0 else cupy.cuda.ExternalStream(handle)
        _streams[handle] = stream
    return stream


def device_empty(shape, dtype, stream=0, stream_handle: int | None = None):
    """An uninitialised C-contiguous Numba device array bound to ``stream`` (a Numba stream or 0)."""
    from numba import cuda

    _decide()
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _pool is False or nbytes == 0:
        return cuda.device_array(shape, dtype=dtype, stream=stream)
    from numba.cuda.cudadrv import devicearray, driver

    cupy = _pool
    if stream_handle is None:
        stream_handle = int(stream) if stream else 0
    with _cupy_stream(cupy, stream_handle):
        block = cupy.cuda.alloc(nbytes)  # from the current device's pool, on this stream
    strides, step = [], dtype.itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    data = driver.MemoryPointer(cuda.current_context(), driver.binding.CUdeviceptr(block.ptr), size=nbytes,
                                owner=block)
    return devicearray.DeviceNDArray(shape=shape, strides=tuple(reversed(strides)), dtype=dtype, gpu_data=data,
                                     stream=stream)
