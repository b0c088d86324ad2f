"""linear and its gradients on every backend against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference

# (input shape, out_features): the last input axis is in_features.
CONFIGS = {
    "tiny": ((5, 7), 3),
    "one_row_vector": ((7,), 4),
    "batched_3d": ((2, 3, 5), 6),
    "one_feature": ((4, 1), 1),
    "no_rows": ((0, 5), 3),
    "no_inputs": ((4, 0), 3),  # an empty sum: the output is the bias
    "no_outputs": ((3, 5), 0),
}


# Crosses the 16×16 CUDA tile edge in every direction (rows, outputs, and the k loop).
# Costly in the simulator (every thread runs in Python), so once, not per dtype.
MULTI_TILE = ((17, 20), 18)


def _problem(rng, dtype, config):
    input_shape, out_features = MULTI_TILE if config == "multi_tile" else CONFIGS[config]
    in_features = input_shape[-1]
    x = random(rng, input_shape, dtype)
    w = random(rng, (out_features, in_features), dtype)
    b = random(rng, (out_features,), dtype)
    dy = random(rng, input_shape[:-1] + (out_features,), dtype)
    return x, w, b, dy


@pytest.mark.parametrize("config", CONFIGS)
def test_linear_forward_and_gradients(backend, dtype, config, rng):
    _check_config(backend, dtype, config, rng)


def test_linear_multi_tile(backend, rng):
    _check_config(backend, np.dtype(np.float32), "multi_tile", rng)


def _check_config(backend, dtype, config, rng):
    x, w, b, dy = _problem(rng, dtype, config)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    rows = int(np.prod(x.shape[:-1]))
    assert_matches(convcore.linear(x, w, b, backend=backend), reference.linear(x64, w64, b64), dtype,
                   x.shape[-1], "linear")
    assert_matches(convcore.linear(x, w, backend=backend), reference.linear(x64, w64), dtype, x.shape[-1],
                   "linear without bias")
    grad_input, grad_weight, grad_bias = convcore.linear_backward(dy, x, w, backend=backend)
    expected = reference.linear_backward(dy64, x64, w64)
    assert_matches(grad_input, expected[0], dtype, w.shape[0], "grad_input")
    assert_matches(grad_weight, expected[1], dtype, rows, "grad_weight")
    assert_matches(grad_bias, expected[2], dtype, rows, "grad_bias")


def test_reference_against_loops(rng):
    x, w, b = random(rng, (3, 4), np.float64), random(rng, (2, 4), np.float64), random(rng, (2,), np.float64)
    dy = random(rng, (3, 2), np.float64)
    out = np.array([[sum(x[m, k] * w[n, k] for k in range(4)) + b[n] for n in range(2)] for m in range(3)])
    np.testing.assert_allclose(reference.linear(x, w, b), out, rtol=1e-13)
    gi, gw, gb = reference.linear_backward(dy, x, w)
    np.testing.assert_allclose(gi, [[sum(dy[m, n] * w[n, k] for n in range(2)) for k in range(4)] for m in range(3)])
    np.testing.assert_allclose(gw, [[sum(dy[m, n] * x[m, k] for m in range(3)) for k in range(4)] for n in range(2)])
    np.testing.assert_allclose(gb, dy.sum(axis=0))


@pytest.mark.parametrize("config", ["tiny", "batched_3d"])
def test_gradients_match_finite_differences(backend, config, rng):
    x, w, b, dy = _problem(rng, np.float64, config)
    dx_dir, dw_dir, db_dir = (random(rng, a.shape, np.float64) for a in (x, w, b))
    eps = 1e-6

    def loss(xv, wv, bv):
        return float(np.sum(to_numpy(convcore.linear(xv, wv, bv, backend=backend)) * dy))

    grad_input, grad_weight, grad_bias = (to_numpy(g) for g in convcore.linear_backward(dy, x, w, backend=backend))
    for grad, (plus, minus), direction in (
        (grad_input, ((x + eps * dx_dir, w, b), (x - eps * dx_dir, w, b)), dx_dir),
        (grad_weight, ((x, w + eps * dw_dir, b), (x, w - eps * dw_dir, b)), dw_dir),
        (grad_bias, ((x, w, b + eps * db_dir), (x, w, b - eps * db_dir)), db_dir),
    ):
        numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
        assert np.sum(grad * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_gradients_are_deterministic(kernel_backend, rng):
    x, w, _, dy = _problem(rng, np.float32, "multi_tile" if kernel_backend == "cpu" else "tiny")
    first = [to_numpy(g).tobytes() for g in convcore.linear_backward(dy, x, w, backend=kernel_backend)]
    second = [to_numpy(g).tobytes() for g in convcore.linear_backward(dy, x, w, backend=kernel_backend)]
    assert first == second


def test_non_contiguous_host_inputs(backend, rng):
    x = random(rng, (6, 5), np.float64).T  # (5, 6), transposed
    w = random(rng, (6, 4), np.float64).T  # (4, 6)
    expected = reference.linear(x, w)
    assert_matches(convcore.linear(x, w, backend=backend), expected, np.float64, 6, "transposed")


def test_against_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    x, w, b, dy = _problem(rng, dtype, "batched_3d")
    tx, tw, tb = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.from_numpy(dy.astype(np.float64)))
    for backend in ("cpu", "cuda"):
        assert_matches(convcore.linear(x, w, b, backend=backend), ty.detach().numpy(), dtype, 5, "torch linear")
        grads = convcore.linear_backward(dy, x, w, backend=backend)
        for ours, theirs, terms in zip(grads, (tx.grad, tw.grad, tb.grad), (6, 6, 6)):
            assert_matches(ours, theirs.numpy(), dtype, terms, "torch linear_backward")


X = np.ones((4, 5), np.float32)
W = np.ones((3, 5), np.float32)
CASES = [
    ("0-d input", {"input": np.float32(1.0)}, ValueError, r"input must be at least 1-D"),
    ("1-D weight", {"weight": np.ones(5, np.float32)}, ValueError, r"weight must be 2-D"),
    ("feature mismatch", {"weight": np.ones((3, 4), np.float32)}, ValueError,
     r"input has 5 features .* weight \(3, 4\) expects 4"),
    ("bias shape", {"bias": np.ones(4, np.float32)}, ValueError, r"bias must have shape \(3,\)"),
    ("bias ndim", {"bias": np.ones((3, 1), np.float32)}, ValueError, "bias must be 1-D"),
    ("mixed dtypes", {"weight": W.astype(np.float64)}, TypeError, "input=float32.*weight=float64"),
    ("bias dtype", {"bias": np.ones(3, np.float64)}, TypeError, "bias=float64"),
    ("integer", {"input": X.astype(np.int64), "weight": W.astype(np.int64)}, TypeError, "unsupported dtype int64"),
    ("unknown backend", {"backend": "tpu"}, ValueError, "unknown backend 'tpu'"),
]


@pytest.mark.parametrize("case, overrides, error, message", CASES, ids=[c[0] for c in CASES])
def test_linear_rejects(kernel_backend, case, overrides, error, message):
    kwargs = {"input": X, "weight": W, "backend": kernel_backend}
    kwargs.update(overrides)
    with pytest.raises(error, match=message):
        convcore.linear(**kwargs)


def test_linear_backward_rejects(kernel_backend):
    with pytest.raises(ValueError, match=r"grad_output has shape \(4, 4\) .* produces \(4, 3\)"):
        convcore.linear_backward(np.ones((4, 4), np.float32), X, W, backend=kernel_backend)
    with pytest.raises(TypeError, match="grad_output=float64"):
        convcore.linear_backward(np.ones((4, 3)), X, W, backend=kernel_backend)
    with pytest.raises(ValueError, match="input has 5 features"):
        convcore.linear_backward(np.ones((4, 3), np.float32), X, W[:, :4], backend=kernel_backend)


def test_errors_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.dense.lookup", refuse)
    for _, overrides, error, _ in CASES:
        kwargs = {"input": X, "weight": W, "backend": "cpu"}
        kwargs.update(overrides)
        with pytest.raises(error):
            convcore.linear(**kwargs)
    with pytest.raises(ValueError):
        convcore.linear_backward(np.ones((4, 4), np.float32), X, W, backend="cpu")
