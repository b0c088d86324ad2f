"""Small 2-D filter kernels for ``convcore.filter2d`` (float64 NumPy arrays).

For correlation (``filter2d``'s default), ``sobel_x`` responds to a change along the
last axis (columns) as ``scipy.ndimage.sobel(image, axis=-1)`` and ``sobel_y`` along
rows; ``gaussian`` matches ``scipy.ndimage.gaussian_filter`` (truncate=4.0).
"""
from __future__ import annotations

import math

import numpy as np


def laplacian() -> np.ndarray:
    """The 5-point discrete Laplacian [[0, 1, 0], [1, −4, 1], [0, 1, 0]]: zero on flat regions."""
    return np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sobel_x() -> np.ndarray:
    """Horizontal Sobel derivative: [−1, 0, 1] along columns, smoothed [1, 2, 1] along rows."""
    return np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])


def sobel_y() -> np.ndarray:
    """Vertical Sobel derivative: [−1, 0, 1] along rows, smoothed [1, 2, 1] along columns."""
    return np.outer([-1.0, 0.0, 1.0], [1.0, 2.0, 1.0])


def gaussian(sigma: float, radius: int | None = None) -> np.ndarray:
    """Normalised (sums to 1) 2-D Gaussian of standard deviation ``sigma``, (2·radius+1)² taps.

    radius defaults to ⌊4·sigma + 0.5⌋, as scipy.ndimage.gaussian_filter's truncate=4.0.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"gaussian: sigma must be a number, got {sigma!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"gaussian: sigma must be positive and finite, got {sigma!r}")
    if radius is None:
        radius = int(4.0 * float(sigma) + 0.5)
    elif isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"gaussian: radius must be an int, got {radius!r}")
    elif radius < 0:
        raise ValueError(f"gaussian: radius must be non-negative, got {radius}")
    x = np.arange(-int(radius), int(radius) + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / float(sigma)) ** 2)
    g /= g.sum()
    return np.outer(g, g)
