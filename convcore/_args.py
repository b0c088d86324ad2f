"""Argument normalisation and validation shared by every public op.

Everything here runs before any kernel: a Numba kernel given bad indices can crash
the process, so all user input is checked at this boundary (never with ``assert``).
"""
from __future__ import annotations

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def pair(value, name: str, op: str) -> tuple[int, int]:
    """Normalise an int or a 2-sequence of ints to a pair (PyTorch's ``_pair``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def positive_pair(value, name: str, op: str) -> tuple[int, int]:
    result = pair(value, name, op)
    if min(result) <= 0:
        raise ValueError(f"{op}: {name} must be positive, got {value!r}")
    return result


def conv_padding(padding, kernel_hw, stride, dilation, op: str) -> tuple[int, int, int, int]:
    """Normalise conv padding to ``(top, bottom, left, right)``.

    Accepts an int, a pair ``(ph, pw)``, a 4-tuple ``(top, bottom, left, right)``,
    ``'valid'`` (no padding) or ``'same'`` (stride 1 only; when the total padding is
    odd the extra row/column goes to the bottom/right, as PyTorch does).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' requires stride=1, got stride={stride}")
            total_h = dilation[0] * (kernel_hw[0] - 1)
            total_w = dilation[1] * (kernel_hw[1] - 1)
            return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
        raise ValueError(f"{op}: padding must be an int, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        result = (int(padding),) * 4
    else:
        try:
            items = tuple(padding)
        except TypeError:
            raise TypeError(f"{op}: padding must be an int, a tuple or a string, got {padding!r}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            raise ValueError(f"{op}: padding must contain ints, got {padding!r}")
        if len(items) == 2:
            result = (int(items[0]), int(items[0]), int(items[1]), int(items[1]))
        elif len(items) == 4:
            result = tuple(int(v) for v in items)
        else:
            raise ValueError(f"{op}: padding must have 2 or 4 entries, got {padding!r}")
    if min(result) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return result


def common_dtype(op: str, **arrays) -> np.dtype:
    """The one dtype all given arrays share; TypeError on mixed or unsupported dtypes."""
    first = None
    for a in arrays.values():  # the common case, checked without building dicts and sets
        if a is not None:
            if first is None:
                first = a.dtype
            elif a.dtype != first:
                break
    else:
        if first is not None and first in SUPPORTED_DTYPES:
            return np.dtype(first)
    dtypes = {name: np.dtype(a.dtype) for name, a in arrays.items() if a is not None}
    for name, dt in dtypes.items():
        if dt not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: {name} has unsupported dtype {dt}; expected float32 or float64")
    if len(set(dtypes.values())) > 1:
        described = ", ".join(f"{name}={dt}" for name, dt in dtypes.items())
        raise TypeError(f"{op}: all inputs must share one dtype, got {described}")
    return next(iter(dtypes.values()))


def check_ndim(array, ndim: int, name: str, op: str, layout: str = "") -> None:
    if array.ndim != ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{op}: {name} must be {ndim}-D{hint}, got shape {tuple(array.shape)}")


def check_shape_tuple(shape, ndim: int, name: str, op: str) -> tuple[int, ...]:
    try:
        result = tuple(int(v) for v in shape)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a sequence of {ndim} ints, got {shape!r}") from None
    if len(result) != ndim or min(result) < 0:
        raise ValueError(f"{op}: {name} must be {ndim} non-negative ints, got {shape!r}")
    return result
