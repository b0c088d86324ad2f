"""conv_transpose2d and its gradients on every backend, against the NumPy reference,
PyTorch's conv_transpose2d with autograd, and finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference
from convcore.conv_transpose import output_shape, transpose_geometry

# (input shape, weight shape (C_in, C_out/groups, R, S), kwargs): every entry awkward in some way.
CONFIGS = {
    "plain": ((2, 3, 4, 5), (3, 2, 3, 3), {}),
    "stride2_output_padding": ((1, 2, 4, 3), (2, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    "output_padding_over_padding": ((1, 2, 3, 4), (2, 2, 3, 2), {"stride": (2, 3), "output_padding": (1, 2)}),
    "groups_dilation_asymmetric": ((2, 4, 3, 4), (4, 3, 2, 3), {"groups": 2, "dilation": (2, 1), "padding": (1, 0),
                                                                "stride": (1, 2)}),
    "output_padding_from_dilation": ((1, 2, 4, 4), (2, 2, 3, 3), {"dilation": 3, "output_padding": 2, "padding": 1}),
    "depthwise": ((1, 3, 5, 4), (3, 1, 3, 3), {"groups": 3, "stride": 2, "padding": 1, "output_padding": 1}),
    "depthwise_output_padding_from_dilation": ((2, 3, 4, 5), (3, 1, 3, 3), {"groups": 3, "dilation": 2, "padding": 1,
                                                                         "output_padding": 1}),
    "padding_crops_to_one": ((1, 2, 2, 2), (2, 1, 3, 3), {"padding": 1, "stride": 1}),
    "gemm_sized": ((1, 8, 3, 3), (8, 4, 3, 3), {"stride": 2}),
}


def _problem(rng, dtype, config):
    input_shape, weight_shape, kwargs = CONFIGS[config]
    geom = transpose_geometry("test", input_shape, weight_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                              kwargs.get("output_padding", 0), kwargs.get("groups", 1), kwargs.get("dilation", 1))
    x = random(rng, input_shape, dtype)
    w = random(rng, weight_shape, dtype)
    b = random(rng, (geom.C,), dtype)
    dy = random(rng, output_shape(geom), dtype)
    return x, w, b, dy, geom, kwargs


def _adjoint_references(x, w, dy, geom):
    """Gradients from the conv2d references (symmetric padding: the sizes are fixed by the arrays)."""
    ph, pw = geom.padding[0], geom.padding[2]
    kw = {"stride": geom.stride, "padding": (ph, ph, pw, pw), "dilation": geom.dilation, "groups": geom.groups}
    grad_x = reference.conv2d(dy, w, None, out_hw=(geom.P, geom.Q), **kw)
    grad_w = reference.conv2d_weight(dy, w.shape, x, **kw)
    return grad_x, grad_w


@pytest.mark.parametrize("config", CONFIGS)
def test_conv_transpose2d_forward_and_gradients(backend, dtype, config, rng):
    x, w, b, dy, geom, kwargs = _problem(rng, dtype, config)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    ph, pw = geom.padding[0], geom.padding[2]
    output_padding = (ph - geom.padding[1], pw - geom.padding[3])
    expected = reference.conv_transpose2d(x64, w64, b.astype(np.float64), geom.stride, (ph, pw), output_padding,
                                          geom.groups, geom.dilation)
    out = convcore.conv_transpose2d(x, w, b, backend=backend, **kwargs)
    assert_matches(out, expected, dtype, geom.Kg * geom.R * geom.S, "conv_transpose2d")
    assert_matches(convcore.conv_transpose2d(x, w, backend=backend, **kwargs),
                   expected - b.astype(np.float64)[None, :, None, None], dtype, geom.Kg * geom.R * geom.S, "no bias")
    expected_gx, expected_gw = _adjoint_references(x64, w64, dy64, geom)
    grad_x = convcore.conv_transpose2d_input(x.shape, w, dy, backend=backend, **kwargs)
    assert_matches(grad_x, expected_gx, dtype, geom.Cg * geom.R * geom.S, "conv_transpose2d_input")
    grad_w = convcore.conv_transpose2d_weight(x, w.shape, dy, backend=backend, **kwargs)
    assert_matches(grad_w, expected_gw, dtype, geom.N * geom.P * geom.Q, "conv_transpose2d_weight")


@pytest.mark.parametrize("config", CONFIGS)
def test_against_torch_autograd(backend, config, rng):
    torch = pytest.importorskip("torch")
    x, w, b, dy, _geom, kwargs = _problem(rng, np.float64, config)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    t_out = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kwargs)
    t_out.backward(torch.from_numpy(dy))
    out = convcore.conv_transpose2d(x, w, b, backend=backend, **kwargs)
    assert_matches(out, t_out.detach().numpy(), np.float64, 50, config)
    assert_matches(convcore.conv_transpose2d_input(x.shape, w, dy, backend=backend, **kwargs), tx.grad.numpy(),
                   np.float64, 50, "input gradient")
    assert_matches(convcore.conv_transpose2d_weight(x, w.shape, dy, backend=backend, **kwargs), tw.grad.numpy(),
                   np.float64, 200, "weight gradient")
    assert_matches(convcore.conv2d_bias(dy, backend=backend), tb.grad.numpy(), np.float64, 200, "bias gradient")


def test_reference_against_naive_loop(rng):
    """The scatter-form reference against a loop over every output element (gather form)."""
    for config in ("groups_dilation_asymmetric", "output_padding_over_padding", "output_padding_from_dilation"):
        x, w, _, _, geom, kwargs = _problem(rng, np.float64, config)
        (sh, sw), (dh, dw) = geom.stride, geom.dilation
        ph, pw = geom.padding[0], geom.padding[2]
        N, C_out, H_out, W_out = output_shape(geom)
        C_in, Cog, R, S = w.shape
        Cig = C_in // geom.groups
        expected = np.zeros((N, C_out, H_out, W_out))
        for n, o, i, j in np.ndindex(expected.shape):
            g = o // Cog
            for ci in range(g * Cig, (g + 1) * Cig):
                for r in range(R):
                    for s in range(S):
                        h, rem_h = divmod(i + ph - r * dh, sh)
                        col, rem_w = divmod(j + pw - s * dw, sw)
                        if rem_h == rem_w == 0 and 0 <= h < x.shape[2] and 0 <= col < x.shape[3]:
                            expected[n, o, i, j] += x[n, ci, h, col] * w[ci, o % Cog, r, s]
        actual = convcore.conv_transpose2d(x, w, backend="numpy", **kwargs)
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12, err_msg=config)


@pytest.mark.parametrize("config", ["stride2_output_padding", "groups_dilation_asymmetric",
                                    "output_padding_over_padding"])
def test_gradients_match_finite_differences(backend, config, rng):
    """Directional derivatives of L = Σ conv_transpose2d(x, w) · G, in float64."""
    x, w, _, grad_out, _geom, kwargs = _problem(rng, np.float64, config)
    dx_dir, dw_dir = random(rng, x.shape, np.float64), random(rng, w.shape, np.float64)
    eps = 1e-6

    def loss(xv, wv):
        return float(np.sum(to_numpy(convcore.conv_transpose2d(xv, wv, backend=backend, **kwargs)) * grad_out))

    numeric_x = (loss(x + eps * dx_dir, w) - loss(x - eps * dx_dir, w)) / (2 * eps)
    numeric_w = (loss(x, w + eps * dw_dir) - loss(x, w - eps * dw_dir)) / (2 * eps)
    grad_x = to_numpy(convcore.conv_transpose2d_input(x.shape, w, grad_out, backend=backend, **kwargs))
    grad_w = to_numpy(convcore.conv_transpose2d_weight(x, w.shape, grad_out, backend=backend, **kwargs))
    assert np.sum(grad_x * dx_dir) == pytest.approx(numeric_x, rel=1e-6, abs=1e-8)
    assert np.sum(grad_w * dw_dir) == pytest.approx(numeric_w, rel=1e-6, abs=1e-8)


def test_empty_batch(backend, dtype):
    x = np.ones((0, 2, 3, 3), dtype)
    w = np.ones((2, 3, 3, 3), dtype)
    out = to_numpy(convcore.conv_transpose2d(x, w, stride=2, backend=backend))
    assert out.shape == (0, 3, 7, 7) and out.dtype == dtype
    assert to_numpy(convcore.conv_transpose2d_input(x.shape, w, out, stride=2, backend=backend)).shape == x.shape
    grad_w = to_numpy(convcore.conv_transpose2d_weight(x, w.shape, out, stride=2, backend=backend))
    assert grad_w.shape == w.shape and not grad_w.any()


X = np.ones((2, 4, 5, 5), np.float32)
W = np.ones((4, 3, 3, 3), np.float32)
REJECTS = [
    ("3-D input", {"input": np.ones((4, 5, 5), np.float32)}, ValueError, r"input must be 4-D .* got shape \(4, 5, 5\)"),
    ("3-D weight", {"weight": np.ones((4, 3, 3), np.float32)}, ValueError, "weight must be 4-D"),
    ("channel mismatch", {"weight": np.ones((3, 3, 3, 3), np.float32)}, ValueError,
     r"input has 4 channels but weight \(3, 3, 3, 3\) expects 3"),
    ("groups divide C_in", {"groups": 3}, ValueError, "groups=3 must divide in_channels=4"),
    ("output_padding too big", {"output_padding": 1}, ValueError,
     r"output_padding=\(1, 1\) must be smaller than either stride=\(1, 1\) or dilation=\(1, 1\)"),
    ("output_padding too big for stride and dilation", {"output_padding": (0, 2), "stride": 2, "dilation": 2}, ValueError,
     "output_padding=.* must be smaller than either stride"),
    ("negative output_padding", {"output_padding": -1}, ValueError, "output_padding must be non-negative"),
    ("negative padding", {"padding": -1}, ValueError, "padding must be non-negative"),
    ("zero stride", {"stride": 0}, ValueError, "stride must be positive"),
    ("zero groups", {"groups": 0}, ValueError, "groups must be positive"),
    ("bool groups", {"groups": True}, TypeError, "groups must be an int"),
    ("output size", {"padding": 4}, ValueError, r"output size \(-1, -1\) is not positive"),
    ("bias shape", {"bias": np.ones(4, np.float32)}, ValueError, r"bias must have shape \(3,\)"),
    ("mixed dtypes", {"weight": W.astype(np.float64)}, TypeError, "must share one dtype.*input=float32.*weight=float64"),
    ("integer input", {"input": X.astype(np.int64), "weight": W.astype(np.int64)}, TypeError, "unsupported dtype int64"),
]


@pytest.mark.parametrize("case, overrides, error, message", REJECTS, ids=[c[0] for c in REJECTS])
def test_conv_transpose2d_rejects(kernel_backend, case, overrides, error, message):
    kwargs = {"input": X, "weight": W, "backend": kernel_backend}
    kwargs.update(overrides)
    with pytest.raises(error, match=message):
        convcore.conv_transpose2d(**kwargs)


def test_gradients_reject_bad_input(kernel_backend):
    bad = np.ones((2, 3, 6, 7), np.float32)  # the true output is (2, 3, 7, 7)
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 3, 6, 7\) .* produces \(2, 3, 7, 7\)"):
        convcore.conv_transpose2d_input(X.shape, W, bad, backend=kernel_backend)
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 3, 6, 7\)"):
        convcore.conv_transpose2d_weight(X, W.shape, bad, backend=kernel_backend)
    with pytest.raises(ValueError, match="input_shape must be 4 non-negative ints"):
        convcore.conv_transpose2d_input((2, 4, 5), W, bad, backend=kernel_backend)
    with pytest.raises(ValueError, match="weight_shape must be 4 non-negative ints"):
        convcore.conv_transpose2d_weight(X, (4, 3, -3, 3), bad, backend=kernel_backend)
    with pytest.raises(TypeError, match="grad_output=float64"):
        convcore.conv_transpose2d_input(X.shape, W, np.ones((2, 3, 7, 7)), backend=kernel_backend)
    with pytest.raises(ValueError, match="output_padding"):
        convcore.conv_transpose2d_weight(X, W.shape, bad, output_padding=1, backend=kernel_backend)


def test_errors_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.conv_transpose.lookup", refuse)
    for _, overrides, error, _ in REJECTS:
        kwargs = {"input": X, "weight": W, "backend": "cpu"}
        kwargs.update(overrides)
        with pytest.raises(error):
            convcore.conv_transpose2d(**kwargs)
