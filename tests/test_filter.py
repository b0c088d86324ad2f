"""filter2d and convcore.filters on every backend, against SciPy's ndimage and the reference."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import filters, reference

ndimage = pytest.importorskip("scipy.ndimage")

MODES = ["reflect", "constant", "nearest", "mirror", "wrap"]
# (image shape, kernel shape): odd, even and mixed kernels; leading shapes of every rank;
# a kernel wider than the image (the boundary patterns repeat); a one-row image (mirror's n = 1).
CASES = [
    ((5, 6), (3, 3)),
    ((2, 5, 6), (4, 2)),
    ((2, 1, 4, 5), (2, 5)),
    ((3, 4), (7, 9)),
    ((1, 6), (3, 2)),
]


def _scipy(image, kernel, mode, cval, convolve):
    weights = kernel.reshape((1,) * (image.ndim - 2) + kernel.shape)
    f = ndimage.convolve if convolve else ndimage.correlate
    return f(image.astype(np.float64), weights, mode=mode, cval=cval)


@pytest.mark.parametrize("convolve", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("mode", MODES)
def test_filter2d_matches_scipy(backend, dtype, mode, convolve, rng):
    for image_shape, kernel_shape in CASES:
        image = random(rng, image_shape, dtype)
        kernel = random(rng, kernel_shape, np.float64)
        cval = 0.75
        expected = _scipy(image, kernel.astype(dtype), mode, cval, convolve)
        out = convcore.filter2d(image, kernel, mode=mode, cval=cval, convolve=convolve, backend=backend)
        assert_matches(out, expected, dtype, kernel.size, f"{image_shape} * {kernel_shape}")
        np.testing.assert_allclose(reference.filter2d(image.astype(np.float64), kernel, mode, cval, convolve),
                                   _scipy(image, kernel, mode, cval, convolve), rtol=1e-12, atol=1e-12)


def test_named_filters_match_scipy(backend, rng):
    image = random(rng, (7, 9), np.float64)
    cases = [
        (filters.laplacian(), ndimage.laplace(image)),
        (filters.sobel_x(), ndimage.sobel(image, axis=-1)),
        (filters.sobel_y(), ndimage.sobel(image, axis=-2)),
        (filters.gaussian(1.2), ndimage.gaussian_filter(image, 1.2)),
        (filters.gaussian(0.7, radius=2), ndimage.gaussian_filter(image, 0.7, radius=2)),
    ]
    for kernel, expected in cases:
        assert_matches(convcore.filter2d(image, kernel, backend=backend), expected, np.float64, kernel.size)


def test_gaussian_kernel():
    g = filters.gaussian(1.5)
    assert g.shape == (13, 13)  # radius ⌊4·1.5 + 0.5⌋ = 6
    assert g.sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(g, g.T)
    assert g[6, 6] == g.max()
    assert filters.gaussian(2.0, radius=1).shape == (3, 3)
    with pytest.raises(ValueError, match="sigma must be positive"):
        filters.gaussian(0.0)
    with pytest.raises(TypeError, match="radius must be an int"):
        filters.gaussian(1.0, radius=1.5)
    with pytest.raises(ValueError, match="radius must be non-negative"):
        filters.gaussian(1.0, radius=-1)


def test_laplacian_of_a_disk(backend, dtype):
    """The README example: the Laplacian is zero on flat regions and non-zero on the edge."""
    rows, cols = np.mgrid[:24, :24]
    disk = ((rows - 11.5) ** 2 + (cols - 11.5) ** 2 < 7.0 ** 2).astype(dtype)
    edges = to_numpy(convcore.filter2d(disk, convcore.filters.laplacian(), backend=backend))
    assert edges.dtype == dtype and edges.shape == disk.shape
    inside = ((rows - 11.5) ** 2 + (cols - 11.5) ** 2 < 5.0 ** 2)
    outside = ((rows - 11.5) ** 2 + (cols - 11.5) ** 2 > 9.0 ** 2)
    assert np.all(edges[inside] == 0) and np.all(edges[outside] == 0)
    boundary = disk.astype(bool) & ~ndimage.binary_erosion(disk.astype(bool))
    assert np.all(edges[boundary] < 0)  # the disk's rim is a local maximum
    assert np.count_nonzero(edges) > 20


def test_float32_in_float32_out_and_integer_kernel(backend, rng):
    image = random(rng, (4, 5), np.float32)
    out = to_numpy(convcore.filter2d(image, np.array([[1, 2], [3, 4]]), mode="wrap", backend=backend))
    assert out.dtype == np.float32
    assert_matches(out, _scipy(image, np.array([[1.0, 2.0], [3.0, 4.0]]), "wrap", 0.0, False), np.float32, 4)


IMAGE = np.ones((4, 5), np.float32)
REJECTS = [
    ("1-D image", {"image": np.ones(5, np.float32)}, ValueError, r"image must have at least 2 dimensions .* got shape \(5,\)"),
    ("3-D kernel", {"kernel": np.ones((1, 3, 3))}, ValueError, r"kernel must be 2-D \(R, S\), got shape \(1, 3, 3\)"),
    ("empty kernel", {"kernel": np.ones((0, 3))}, ValueError, r"kernel must not be empty, got shape \(0, 3\)"),
    ("unknown mode", {"mode": "grid-wrap"}, ValueError, "mode must be one of .* got 'grid-wrap'"),
    ("integer image", {"image": IMAGE.astype(np.int32)}, TypeError, "image has unsupported dtype int32"),
    ("complex kernel", {"kernel": np.ones((3, 3), np.complex128)}, TypeError, "kernel must be a real numeric array"),
    ("string cval", {"cval": "0"}, TypeError, "cval must be a real number"),
    ("convolve not bool", {"convolve": 1}, TypeError, "convolve must be a bool"),
    ("unknown backend", {"backend": "tpu"}, ValueError, "unknown backend 'tpu'"),
]


@pytest.mark.parametrize("case, overrides, error, message", REJECTS, ids=[c[0] for c in REJECTS])
def test_filter2d_rejects(kernel_backend, case, overrides, error, message):
    kwargs = {"image": IMAGE, "kernel": np.ones((3, 3)), "backend": kernel_backend}
    kwargs.update(overrides)
    with pytest.raises(error, match=message):
        convcore.filter2d(**kwargs)


def test_errors_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.filter.lookup", refuse)
    for _, overrides, error, _ in REJECTS:
        kwargs = {"image": IMAGE, "kernel": np.ones((3, 3)), "backend": "cpu"}
        kwargs.update(overrides)
        with pytest.raises(error):
            convcore.filter2d(**kwargs)
