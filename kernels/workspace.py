"""Scratch buffers reused across calls: the temporaries of the CPU conv algorithms (im2col
column matrices, Winograd's transformed tiles and products) by call site.

Why: a fresh ``np.empty`` of tens of MB is fresh pages from the kernel, and the first write
to each 4 KB page faults: measured on one core, 10-20% of a Winograd ResNet layer's forward
went to page faults on its two big temporaries. PyTorch's and cuDNN's workspaces exist for
the same reason.

A buffer belongs to one call site (its ``tag``) in one thread, and holds the largest size
asked so far; what ``scratch`` returns is valid until the same tag is asked again in that
thread, so it must never escape as a result. Buffers above ``LIMIT`` bytes in all are not
kept (allocated per call as before); ``release()`` frees this thread's buffers.
"""
from __future__ import annotations

import math
import threading

import numpy as np

LIMIT = 1 << 30  # bytes kept per thread at most

# The CPU conv algorithms run their steps (im2col + GEMM, col2im, Winograd's transforms and
# products) a chunk of images at a time, so one step's temporaries are still in cache (L3:
# 32 MB here) when the next reads them: at most this many bytes of them per chunk.
# Measured for Winograd's forward (2 threads, 8×64×56² F(4×4), ms, whole batch 4.97 / chunks
# of 2, 4, 8, 16 MB: 3.87, 3.91, 3.74, 4.16) and im2col's (the 224² stem at batch 8: 11.7
# whole, 7.7 image by image).
CHUNK_BYTES = 8 << 20

_local = threading.local()


def scratch(tag: str, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, reused per (thread, tag)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(int(n) for n in shape) * dtype.itemsize  # np.prod: 4 µs a call
    store = _buffers()
    held = store.get(tag)
    if held is None or held.nbytes < nbytes:
        kept = sum(b.nbytes for t, b in store.items() if t != tag)
        if kept + nbytes > LIMIT:
            store.pop(tag, None)
            return np.empty(shape, dtype=dtype)
        store[tag] = held = np.empty(max(nbytes, 64), dtype=np.uint8)
    return held[:nbytes].view(dtype).reshape(shape)


def images_per_chunk(images: int, bytes_per_image: int, at_least: int = 1) -> int:
    """How many of ``images`` go through a step together: as many as keep their temporaries
    (``bytes_per_image`` each) within CHUNK_BYTES, but no fewer than ``at_least`` (nor 1)."""
    return max(1, min(images, max(CHUNK_BYTES // max(bytes_per_image, 1), at_least)))


def release() -> None:
    """Free this thread's scratch buffers."""
    _buffers().clear()


def held_bytes() -> int:
    return sum(b.nbytes for b in _buffers().values())


def _buffers() -> dict:
    if not hasattr(_local, "buffers"):
        _local.buffers = {}
    return _local.buffers
