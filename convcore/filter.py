"""filter2d: 2-D correlation or convolution of images with boundary modes (scipy.ndimage).

Same path as conv2d: check → move arrays to the backend → allocate → dispatch.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _args
from ._arrays import io_for
from ._backend import is_device_array, lookup, resolve
from .reference.filter import MODES


def filter2d(image, kernel, mode="reflect", cval=0.0, convolve=False, *, backend=None):
    """Correlate (or convolve) the last two axes of ``image`` with a 2-D ``kernel``.

    Matches ``scipy.ndimage.correlate(image, kernel.reshape(1, …, 1, R, S), mode=mode, cval=cval)``,
    or ``scipy.ndimage.convolve`` when ``convolve=True`` (the kernel is flipped, and even sizes
    are anchored at (size−1)//2 instead of size//2, scipy's origin convention).

    Args:
        image: (..., H, W) float32 or float64, any leading shape.
        kernel: (R, S) real array (cast to the image's dtype).
        mode: 'reflect', 'constant', 'nearest', 'mirror' or 'wrap' (see convcore.reference.filter).
        cval: the value outside the image for mode='constant'.
        convolve: flip the kernel (true convolution) instead of correlating.
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
    Shape:
        output: same as image.
    Returns:
        The filtered image, same dtype.
    """
    op = "filter2d"
    name = resolve(backend, image, kernel)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {MODES}, got {mode!r}")
    if isinstance(cval, bool) or not isinstance(cval, numbers.Real):
        raise TypeError(f"{op}: cval must be a real number, got {cval!r}")
    if not isinstance(convolve, (bool, np.bool_)):
        raise TypeError(f"{op}: convolve must be a bool, got {convolve!r}")
    io = io_for(name, image, kernel)
    x = io.to_backend(image)
    if x.ndim < 2:
        raise ValueError(f"{op}: image must have at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")
    dtype = _args.common_dtype(op, image=x)
    if not is_device_array(kernel):
        kernel = np.asarray(kernel)
        if kernel.dtype.kind not in "fiu":
            raise TypeError(f"{op}: kernel must be a real numeric array, got dtype {kernel.dtype}")
        kernel = kernel.astype(dtype)
    k = io.to_backend(kernel)
    _args.check_ndim(k, 2, "kernel", op, "(R, S)")
    _args.common_dtype(op, image=x, kernel=k)
    if k.shape[0] == 0 or k.shape[1] == 0:
        raise ValueError(f"{op}: kernel must not be empty, got shape {tuple(k.shape)}")
    shape = tuple(x.shape)
    planes = int(np.prod(shape[:-2], dtype=np.int64))
    out = io.empty(shape, dtype)
    if out.size:
        lookup("filter2d", name)(x.reshape(planes, *shape[-2:]), k, out.reshape(planes, *shape[-2:]),
                                 MODES.index(mode), float(cval), bool(convolve))
    return io.finish(out)
