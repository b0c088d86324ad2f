"""Bad input raises ValueError/TypeError naming the argument, before any kernel runs."""
from __future__ import annotations

import numpy as np
import pytest

import convcore

X = np.ones((2, 4, 8, 8), np.float32)
W = np.ones((6, 4, 3, 3), np.float32)

FORWARD_CASES = [
    ("3-D input", dict(input=np.ones((4, 8, 8), np.float32)), ValueError, r"input must be 4-D .* got shape \(4, 8, 8\)"),
    ("3-D weight", dict(weight=np.ones((6, 4, 3), np.float32)), ValueError, "weight must be 4-D"),
    ("channel mismatch", dict(weight=np.ones((6, 3, 3, 3), np.float32)), ValueError,
     r"input has 4 channels but weight \(6, 3, 3, 3\)"),
    ("groups divide C", dict(weight=np.ones((6, 1, 3, 3), np.float32), groups=3), ValueError,
     "groups=3 must divide in_channels=4"),
    ("groups divide K", dict(weight=np.ones((5, 2, 3, 3), np.float32), groups=2), ValueError,
     "groups=2 must divide out_channels=5"),
    ("bias shape", dict(bias=np.ones(5, np.float32)), ValueError, r"bias must have shape \(6,\)"),
    ("bias ndim", dict(bias=np.ones((6, 1), np.float32)), ValueError, "bias must be 1-D"),
    ("negative padding", dict(padding=-1), ValueError, "padding must be non-negative"),
    ("negative padding tuple", dict(padding=(0, 1, -1, 0)), ValueError, "padding must be non-negative"),
    ("zero stride", dict(stride=0), ValueError, "stride must be positive"),
    ("negative dilation", dict(dilation=(1, -2)), ValueError, "dilation must be positive"),
    ("zero groups", dict(groups=0), ValueError, "groups must be positive"),
    ("output size", dict(weight=np.ones((6, 4, 9, 3), np.float32)), ValueError, "output size .* is not positive"),
    ("same with stride", dict(padding="same", stride=2), ValueError, "padding='same' requires stride=1"),
    ("unknown padding string", dict(padding="full"), ValueError, "padding must be"),
    ("padding of 3 entries", dict(padding=(1, 1, 1)), ValueError, "padding must have 2 or 4 entries"),
    ("unknown backend", dict(backend="tpu"), ValueError, "unknown backend 'tpu'"),
    ("unknown algorithm", dict(algorithm="fft"), ValueError, "algorithm must be one of"),
    ("winograd 5x5", dict(weight=np.ones((6, 4, 5, 5), np.float32), algorithm="winograd"), ValueError,
     "algorithm='winograd' needs a 3x3 kernel, stride 1 and dilation 1, got kernel 5x5"),
    ("winograd stride 2", dict(algorithm="winograd_f4", stride=2), ValueError, r"needs a 3x3 kernel.*stride \(2, 2\)"),
    ("winograd dilation 2", dict(algorithm="winograd_f2", dilation=(1, 2)), ValueError, r"dilation \(1, 2\)"),
    ("mixed dtypes", dict(weight=W.astype(np.float64)), TypeError, "must share one dtype.*input=float32.*weight=float64"),
    ("integer input", dict(input=X.astype(np.int64), weight=W.astype(np.int64)), TypeError, "unsupported dtype int64"),
    ("float16", dict(input=X.astype(np.float16), weight=W.astype(np.float16)), TypeError, "unsupported dtype float16"),
    ("bias dtype", dict(bias=np.ones(6, np.float64)), TypeError, "bias=float64"),
]


@pytest.mark.parametrize("case, overrides, error, message", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_conv2d_rejects(kernel_backend, case, overrides, error, message):
    kwargs = dict(input=X, weight=W)
    kwargs.update(overrides)
    kwargs.setdefault("backend", kernel_backend)
    with pytest.raises(error, match=message):
        convcore.conv2d(**kwargs)


def test_gradients_reject_mismatched_grad_output(kernel_backend):
    bad = np.ones((2, 6, 5, 5), np.float32)  # the true output is (2, 6, 6, 6)
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 6, 5, 5\) .* produces \(2, 6, 6, 6\)"):
        convcore.conv2d_input(X.shape, W, bad, backend=kernel_backend)
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 6, 5, 5\)"):
        convcore.conv2d_weight(X, W.shape, bad, backend=kernel_backend)
    with pytest.raises(ValueError, match="input_shape must be 4 non-negative ints"):
        convcore.conv2d_input((2, 4, 8), W, bad, backend=kernel_backend)
    with pytest.raises(ValueError, match="weight_shape must be 4 non-negative ints"):
        convcore.conv2d_weight(X, (6, 4, -3, 3), bad, backend=kernel_backend)
    with pytest.raises(TypeError, match="grad_output=float64"):
        convcore.conv2d_input(X.shape, W, bad.astype(np.float64), backend=kernel_backend)
    with pytest.raises(ValueError, match="grad_output must be 4-D"):
        convcore.conv2d_bias(np.ones((6, 5), np.float32), backend=kernel_backend)


def test_errors_come_before_any_kernel(monkeypatch):
    """A rejected call never reaches a kernel (asking a backend for its variant names is allowed)."""
    from convcore import _backend

    real_lookup = _backend.lookup

    def refuse(op, backend):
        if op == "conv2d_variants":
            return real_lookup(op, backend)
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr(_backend, "lookup", refuse)
    monkeypatch.setattr("convcore.conv.lookup", refuse)
    for _case, overrides, error, _message in FORWARD_CASES:
        kwargs = dict(input=X, weight=W, backend="cpu")
        kwargs.update(overrides)
        with pytest.raises(error):
            convcore.conv2d(**kwargs)


@pytest.mark.parametrize("name, value, error", [
    ("groups", True, TypeError), ("stride", True, TypeError), ("stride", (1, True), ValueError),
    ("padding", 1.0, TypeError), ("padding", (1, 1.0), ValueError), ("dilation", 1.0, TypeError),
])
def test_memoised_geometry_keeps_type_checks(name, value, error):
    """conv_geometry memoises plain-int arguments; a value equal to a cached one (True == 1,
    1.0 == 1) but of a type the checks reject must still be rejected, not served the cached
    geometry."""
    from convcore.conv import conv_geometry

    plain = {"groups": 1, "stride": 1, "padding": 1, "dilation": 1}
    first = conv_geometry("conv2d", X.shape, W.shape, plain["stride"], plain["padding"], plain["dilation"],
                          plain["groups"])
    assert first.output_shape == (2, 6, 8, 8)
    assert conv_geometry("conv2d", X.shape, W.shape, 1, 1, 1, 1) is first  # memoised
    plain[name] = value
    with pytest.raises(error, match=name):
        conv_geometry("conv2d", X.shape, W.shape, plain["stride"], plain["padding"], plain["dilation"],
                      plain["groups"])


def test_memoised_geometry_unhashable_shape_element():
    from convcore.conv import conv_geometry

    with pytest.raises(TypeError):
        conv_geometry("conv2d", (2, 4, [8], 8), W.shape, 1, 0, 1, 1)
    shape = (2, np.int64(4), 8, 8)  # equal to X.shape, another element type: the same geometry
    assert conv_geometry("conv2d", shape, W.shape, 1, 0, 1, 1) == conv_geometry("conv2d", X.shape, W.shape, 1, 0, 1, 1)
