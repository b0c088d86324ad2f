"""max_pool2d / avg_pool2d and their gradients on every backend, against the NumPy
reference, PyTorch (second opinion) and finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference
from convcore.pool import pool_geometry

# (input shape, kwargs): every entry awkward in some way.
MAX_CONFIGS = {
    "ceil_mode_padding": ((2, 3, 7, 8), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "ceil_mode_drops_last_window": ((1, 2, 5, 6), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}),
    "dilation_asymmetric": ((1, 2, 9, 8), {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1),
                                           "dilation": (2, 3)}),
    "dilation_ceil": ((2, 1, 7, 7), {"kernel_size": 3, "stride": 2, "dilation": 2, "padding": 1, "ceil_mode": True}),
    "stride_below_kernel": ((2, 2, 6, 7), {"kernel_size": 3, "stride": 1}),
    "stride_above_kernel": ((1, 3, 9, 10), {"kernel_size": 2, "stride": 3}),
    "rectangular_ceil": ((1, 2, 7, 5), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1), "ceil_mode": True}),
    "global": ((2, 3, 4, 5), {"kernel_size": (4, 5)}),
}
AVG_CONFIGS = {name: (shape, {k: v for k, v in kw.items() if k != "dilation"})
               for name, (shape, kw) in MAX_CONFIGS.items() if "dilation" not in kw}
AVG_CONFIGS["ceil_window_past_padding"] = ((1, 2, 6, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True})


def _geom(shape, kwargs, pool="max"):
    dilation = kwargs.get("dilation", 1) if pool == "max" else 1
    return pool_geometry("test", shape, kwargs["kernel_size"], kwargs.get("stride"), kwargs.get("padding", 0),
                         dilation, kwargs.get("ceil_mode", False))


def _max_reference(x, geom):
    return reference.max_pool2d(x.astype(np.float64), (geom.P, geom.Q), (geom.R, geom.S), geom.stride,
                                geom.padding, geom.dilation)


def _avg_kwargs(kwargs, count_include_pad):
    return dict(kwargs, count_include_pad=count_include_pad)


def _ties(rng, shape, dtype):
    """Small integers: many ties inside each window, so the argmax rule (first maximum) is tested."""
    return rng.integers(-3, 3, size=shape).astype(dtype)


@pytest.mark.parametrize("data", ["random", "ties"])
@pytest.mark.parametrize("config", MAX_CONFIGS)
def test_max_pool2d_forward_and_backward(backend, dtype, config, data, rng):
    shape, kwargs = MAX_CONFIGS[config]
    x = random(rng, shape, dtype) if data == "random" else _ties(rng, shape, dtype)
    geom = _geom(shape, kwargs)
    expected, expected_idx = _max_reference(x, geom)
    out, idx = convcore.max_pool2d(x, **kwargs, return_indices=True, backend=backend)
    assert_matches(out, expected, dtype, what="max_pool2d")
    idx = to_numpy(idx)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, expected_idx)
    assert_matches(convcore.max_pool2d(x, **kwargs, backend=backend), expected, dtype, what="no indices")

    dy = random(rng, geom.output_shape, dtype)
    expected_dx = reference.max_pool2d_backward(dy.astype(np.float64), shape, expected_idx)
    windows = -(-geom.R // geom.stride[0]) * -(-geom.S // geom.stride[1])
    for given in (idx, None):
        dx = convcore.max_pool2d_backward(dy, x, **kwargs, indices=given, backend=backend)
        assert_matches(dx, expected_dx, dtype, windows, f"max_pool2d_backward(indices={'given' if given is not None else None})")


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["count_pad", "no_count_pad"])
@pytest.mark.parametrize("config", AVG_CONFIGS)
def test_avg_pool2d_forward_and_backward(backend, dtype, config, count_include_pad, rng):
    shape, kwargs = AVG_CONFIGS[config]
    kwargs = _avg_kwargs(kwargs, count_include_pad)
    x = random(rng, shape, dtype)
    geom = _geom(shape, kwargs, "avg")
    expected = reference.avg_pool2d(x.astype(np.float64), (geom.P, geom.Q), (geom.R, geom.S), geom.stride,
                                    geom.padding, count_include_pad)
    out = convcore.avg_pool2d(x, **kwargs, backend=backend)
    assert_matches(out, expected, dtype, geom.R * geom.S, "avg_pool2d")
    dy = random(rng, geom.output_shape, dtype)
    expected_dx = reference.avg_pool2d_backward(dy.astype(np.float64), shape, (geom.R, geom.S), geom.stride,
                                                geom.padding, count_include_pad)
    dx = convcore.avg_pool2d_backward(dy, x, **kwargs, backend=backend)
    assert_matches(dx, expected_dx, dtype, geom.R * geom.S, "avg_pool2d_backward")


def test_reference_matches_torch(dtype, rng):
    """The references (and the cpu kernels) against torch.nn.functional, forward and autograd."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for config, (shape, kwargs) in MAX_CONFIGS.items():
        for x in (random(rng, shape, dtype), _ties(rng, shape, dtype)):
            tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
            t_out, t_idx = F.max_pool2d(tx, **kwargs, return_indices=True)
            dy = random(rng, tuple(t_out.shape), dtype)
            t_out.backward(torch.from_numpy(dy.astype(np.float64)))
            for backend in ("numpy", "cpu"):
                out, idx = convcore.max_pool2d(x, **kwargs, return_indices=True, backend=backend)
                assert_matches(out, t_out.detach().numpy(), dtype, what=f"{config} {backend}")
                np.testing.assert_array_equal(idx, t_idx.numpy(), err_msg=config)
                dx = convcore.max_pool2d_backward(dy, x, **kwargs, backend=backend)
                assert_matches(dx, tx.grad.numpy(), dtype, 9, f"{config} {backend} backward")
    for config, (shape, kwargs) in AVG_CONFIGS.items():
        for count_include_pad in (True, False):
            kw = _avg_kwargs(kwargs, count_include_pad)
            x = random(rng, shape, dtype)
            tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
            t_out = F.avg_pool2d(tx, **kw)
            dy = random(rng, tuple(t_out.shape), dtype)
            t_out.backward(torch.from_numpy(dy.astype(np.float64)))
            for backend in ("numpy", "cpu"):
                assert_matches(convcore.avg_pool2d(x, **kw, backend=backend), t_out.detach().numpy(), dtype, 9, config)
                assert_matches(convcore.avg_pool2d_backward(dy, x, **kw, backend=backend), tx.grad.numpy(), dtype, 9,
                               f"{config} backward")


def test_max_pool2d_propagates_nan(backend, dtype, rng):
    torch = pytest.importorskip("torch")
    kwargs = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    x = random(rng, (1, 2, 6, 7), dtype)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = x[0, 1, 5, 6] = np.nan  # two NaNs in one window: the last one wins
    out, idx = convcore.max_pool2d(x, **kwargs, return_indices=True, backend=backend)
    t_out, t_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), **kwargs, return_indices=True)
    out = to_numpy(out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(t_out.numpy()))
    assert np.isnan(out).sum() >= 3
    np.testing.assert_array_equal(to_numpy(idx), t_idx.numpy())
    np.testing.assert_array_equal(out[~np.isnan(out)], t_out.numpy()[~np.isnan(out)])


@pytest.mark.parametrize("config", ["ceil_mode_padding", "dilation_asymmetric", "stride_below_kernel"])
def test_max_pool2d_backward_matches_finite_differences(backend, config, rng):
    shape, kwargs = MAX_CONFIGS[config]
    x = random(rng, shape, np.float64)
    geom = _geom(shape, kwargs)
    grad_out = random(rng, geom.output_shape, np.float64)
    direction = random(rng, shape, np.float64)
    eps = 1e-7  # far below the gaps between random values, so no window's argmax changes

    def loss(xv):
        return float(np.sum(to_numpy(convcore.max_pool2d(xv, **kwargs, backend=backend)) * grad_out))

    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    dx = to_numpy(convcore.max_pool2d_backward(grad_out, x, **kwargs, backend=backend))
    assert np.sum(dx * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("config", ["ceil_mode_padding", "rectangular_ceil", "ceil_window_past_padding"])
def test_avg_pool2d_backward_matches_finite_differences(backend, config, count_include_pad, rng):
    shape, kwargs = AVG_CONFIGS[config]
    kwargs = _avg_kwargs(kwargs, count_include_pad)
    x = random(rng, shape, np.float64)
    geom = _geom(shape, kwargs, "avg")
    grad_out = random(rng, geom.output_shape, np.float64)
    direction = random(rng, shape, np.float64)
    eps = 1e-6

    def loss(xv):
        return float(np.sum(to_numpy(convcore.avg_pool2d(xv, **kwargs, backend=backend)) * grad_out))

    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    dx = to_numpy(convcore.avg_pool2d_backward(grad_out, x, **kwargs, backend=backend))
    assert np.sum(dx * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_empty_batch(backend, dtype):
    x = np.ones((0, 3, 5, 5), dtype)
    out, idx = convcore.max_pool2d(x, 2, return_indices=True, backend=backend)
    assert to_numpy(out).shape == to_numpy(idx).shape == (0, 3, 2, 2)
    assert to_numpy(convcore.max_pool2d_backward(to_numpy(out), x, 2, backend=backend)).shape == x.shape
    avg = to_numpy(convcore.avg_pool2d(x, 3, 1, 1, backend=backend))
    assert avg.shape == (0, 3, 5, 5) and avg.dtype == dtype
    assert to_numpy(convcore.avg_pool2d_backward(avg, x, 3, 1, 1, backend=backend)).shape == x.shape


X = np.ones((2, 3, 8, 8), np.float32)
REJECTS = [
    ("3-D input", {"input": np.ones((3, 8, 8), np.float32)}, ValueError, r"input must be 4-D .* got shape \(3, 8, 8\)"),
    ("padding over half kernel", {"kernel_size": 3, "padding": 2}, ValueError,
     r"padding=\(2, 2\) must be at most half of kernel_size=\(3, 3\)"),
    ("negative padding", {"padding": -1}, ValueError, "padding must be non-negative"),
    ("zero stride", {"stride": 0}, ValueError, "stride must be positive"),
    ("zero kernel", {"kernel_size": (0, 2)}, ValueError, "kernel_size must be positive"),
    ("kernel larger than input", {"kernel_size": 9}, ValueError, r"output size \(0, 0\) is not positive"),
    ("ceil_mode not bool", {"ceil_mode": "yes"}, TypeError, "ceil_mode must be a bool"),
    ("kernel of 3 entries", {"kernel_size": (2, 2, 2)}, ValueError, "kernel_size must be an int or a pair"),
    ("integer input", {"input": X.astype(np.int32)}, TypeError, "unsupported dtype int32"),
    ("unknown backend", {"backend": "tpu"}, ValueError, "unknown backend 'tpu'"),
]


@pytest.mark.parametrize("case, overrides, error, message", REJECTS, ids=[c[0] for c in REJECTS])
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pooling_rejects(kernel_backend, op, case, overrides, error, message):
    kwargs = {"input": X, "kernel_size": 2, "backend": kernel_backend}
    kwargs.update(overrides)
    with pytest.raises(error, match=message):
        getattr(convcore, op)(**kwargs)


def test_backward_rejects(kernel_backend):
    dy = np.ones((2, 3, 4, 4), np.float32)
    for op in (convcore.max_pool2d_backward, convcore.avg_pool2d_backward):
        with pytest.raises(ValueError, match=r"grad_output has shape \(2, 3, 3, 4\) but pooling input \(2, 3, 8, 8\) "
                                             r"produces \(2, 3, 4, 4\)"):
            op(np.ones((2, 3, 3, 4), np.float32), X, 2, backend=kernel_backend)
        with pytest.raises(TypeError, match="grad_output=float64"):
            op(dy.astype(np.float64), X, 2, backend=kernel_backend)
        with pytest.raises(ValueError, match="grad_output must be 4-D"):
            op(dy[0], X, 2, backend=kernel_backend)
    with pytest.raises(TypeError, match="count_include_pad must be a bool"):
        convcore.avg_pool2d_backward(dy, X, 2, count_include_pad=None, backend=kernel_backend)
    with pytest.raises(TypeError, match="indices must be int64, got int32"):
        convcore.max_pool2d_backward(dy, X, 2, indices=np.zeros(dy.shape, np.int32), backend=kernel_backend)
    with pytest.raises(ValueError, match=r"indices have shape \(2, 3, 4\) but the output shape is \(2, 3, 4, 4\)"):
        convcore.max_pool2d_backward(dy, X, 2, indices=np.zeros((2, 3, 4), np.int64), backend=kernel_backend)


def test_errors_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.pool.lookup", refuse)
    for _, overrides, error, _ in REJECTS:
        for op in (convcore.max_pool2d, convcore.avg_pool2d):
            kwargs = {"input": X, "kernel_size": 2, "backend": "cpu"}
            kwargs.update(overrides)
            with pytest.raises(error):
                op(**kwargs)
