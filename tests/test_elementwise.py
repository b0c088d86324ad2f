"""Hadamard product and activations on every backend against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference
from convcore.elementwise import broadcast_geometry

# (a shape, b shape): equal, scalar, row, column, outer, 3-D mixes, size-1 and empty axes.
BROADCASTS = {
    "equal": ((3, 5), (3, 5)),
    "scalar_b": ((2, 3, 4), ()),
    "scalar_a": ((), (7,)),
    "row": ((4, 5), (5,)),
    "column": ((4, 1), (4, 6)),
    "outer": ((4, 1), (1, 5)),
    "channels": ((2, 3, 4, 5), (1, 3, 1, 1)),
    "both_stretched": ((2, 1, 3), (4, 1)),
    "leading_ones": ((1, 1, 5), (3, 1, 5)),
    "one_element_each": ((1,), (1, 1)),
    "empty": ((0, 3), (3,)),
    "empty_broadcast": ((2, 1), (2, 0)),
}


def _f64(*arrays):
    return tuple(a.astype(np.float64) for a in arrays)


@pytest.mark.parametrize("case", BROADCASTS)
def test_hadamard_forward_and_backward(backend, dtype, case, rng):
    a_shape, b_shape = BROADCASTS[case]
    a, b = random(rng, a_shape, dtype), random(rng, b_shape, dtype)
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    grad_output = random(rng, out_shape, dtype)
    assert_matches(convcore.hadamard(a, b, backend=backend), a.astype(np.float64) * b, dtype, 1, "hadamard")
    grad_a, grad_b = convcore.hadamard_backward(grad_output, a, b, backend=backend)
    g64, a64, b64 = _f64(grad_output, a, b)
    expected_a, expected_b = reference.hadamard_backward(g64, a64, b64)
    terms = max(1, int(np.prod(out_shape)))
    assert_matches(grad_a, expected_a, dtype, terms, "grad_a")
    assert_matches(grad_b, expected_b, dtype, terms, "grad_b")


def test_hadamard_reference_against_loops(rng):
    """The reference's broadcast sums, checked against an explicit loop over output elements."""
    a, b = random(rng, (2, 1, 3), np.float64), random(rng, (4, 1), np.float64)
    g = random(rng, (2, 4, 3), np.float64)
    grad_a, grad_b = np.zeros_like(a), np.zeros_like(b)
    for i in range(2):
        for j in range(4):
            for k in range(3):
                grad_a[i, 0, k] += g[i, j, k] * b[j, 0]
                grad_b[j, 0] += g[i, j, k] * a[i, 0, k]
    ref_a, ref_b = reference.hadamard_backward(g, a, b)
    np.testing.assert_allclose(ref_a, grad_a, rtol=1e-13)
    np.testing.assert_allclose(ref_b, grad_b, rtol=1e-13)


def test_broadcast_geometry_coalesces():
    assert broadcast_geometry("t", (3, 5), (3, 5)).dims == (15,)
    geom = broadcast_geometry("t", (2, 3, 4, 5), (1, 3, 1, 1))
    assert (geom.dims, geom.a_dims, geom.b_dims) == ((2, 3, 20), (2, 3, 20), (1, 3, 1))
    assert broadcast_geometry("t", (4, 1), (1, 5)).out_shape == (4, 5)
    assert geom.strides((2, 3, 20)) == (60, 20, 1) and geom.strides((1, 3, 1)) == (0, 1, 0)


@pytest.mark.parametrize("case", ["channels", "both_stretched", "scalar_b"])
def test_hadamard_backward_finite_differences(backend, case, rng):
    a_shape, b_shape = BROADCASTS[case]
    a, b = random(rng, a_shape, np.float64), random(rng, b_shape, np.float64)
    grad_output = random(rng, np.broadcast_shapes(a_shape, b_shape), np.float64)
    da, db = random(rng, a_shape, np.float64), random(rng, b_shape, np.float64)
    eps = 1e-6

    def loss(av, bv):
        return float(np.sum(to_numpy(convcore.hadamard(av, bv, backend=backend)) * grad_output))

    grad_a, grad_b = (to_numpy(g) for g in convcore.hadamard_backward(grad_output, a, b, backend=backend))
    numeric_a = (loss(a + eps * da, b) - loss(a - eps * da, b)) / (2 * eps)
    numeric_b = (loss(a, b + eps * db) - loss(a, b - eps * db)) / (2 * eps)
    assert np.sum(grad_a * da) == pytest.approx(numeric_a, rel=1e-6, abs=1e-8)
    assert np.sum(grad_b * db) == pytest.approx(numeric_b, rel=1e-6, abs=1e-8)


def test_hadamard_backward_is_deterministic(kernel_backend, rng):
    a, b = random(rng, (6, 1, 5), np.float32), random(rng, (7, 5), np.float32)
    g = random(rng, (6, 7, 5), np.float32)
    first = [to_numpy(v).tobytes() for v in convcore.hadamard_backward(g, a, b, backend=kernel_backend)]
    second = [to_numpy(v).tobytes() for v in convcore.hadamard_backward(g, a, b, backend=kernel_backend)]
    assert first == second


def test_hadamard_non_contiguous_host_inputs(backend, rng):
    base = random(rng, (4, 6), np.float64)
    a = base.T  # (6, 4), transposed
    b = np.broadcast_to(random(rng, (1, 4), np.float64), (6, 4))  # zero strides
    np.testing.assert_array_equal(to_numpy(convcore.hadamard(a, b, backend=backend)), a * b)


# ------------------------------------------------------------ activations
SLOPE = 0.2
FORWARD = {
    "relu": (lambda x, be: convcore.relu(x, backend=be), reference.relu),
    "leaky_relu": (lambda x, be: convcore.leaky_relu(x, SLOPE, backend=be), lambda x: reference.leaky_relu(x, SLOPE)),
    "leaky_relu_default": (lambda x, be: convcore.leaky_relu(x, backend=be), reference.leaky_relu),
    "sigmoid": (lambda x, be: convcore.sigmoid(x, backend=be), reference.sigmoid),
    "tanh": (lambda x, be: convcore.tanh(x, backend=be), reference.tanh),
}
# name: (forward, backward(grad_output, saved), reference backward, saves the output (else the input))
BACKWARD = {
    "relu": (convcore.relu, lambda g, s, be: convcore.relu_backward(g, s, backend=be), reference.relu_backward, False),
    "leaky_relu": (lambda x, backend: convcore.leaky_relu(x, SLOPE, backend=backend),
                   lambda g, s, be: convcore.leaky_relu_backward(g, s, SLOPE, backend=be),
                   lambda g, s: reference.leaky_relu_backward(g, s, SLOPE), False),
    "sigmoid": (convcore.sigmoid, lambda g, s, be: convcore.sigmoid_backward(g, s, backend=be),
                reference.sigmoid_backward, True),
    "tanh": (convcore.tanh, lambda g, s, be: convcore.tanh_backward(g, s, backend=be), reference.tanh_backward, True),
}
SHAPES = [(7,), (3, 5, 2), (), (0, 4), (300,)]


def _away_from_zero(rng, shape, dtype, scale=3.0):
    """Random values with |x| ≥ 0.05: relu's kink stays out of finite differences and sign ties."""
    x = rng.uniform(0.05, scale, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return x.astype(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", FORWARD)
def test_activation_forward(backend, dtype, name, shape, rng):
    op, ref = FORWARD[name]
    x = _away_from_zero(rng, shape, dtype)
    assert_matches(op(x, backend), ref(x.astype(np.float64)), dtype, 1, name)


@pytest.mark.parametrize("name", BACKWARD)
def test_activation_backward(backend, dtype, name, rng):
    forward, backward, ref_backward, saves_output = BACKWARD[name]
    x = _away_from_zero(rng, (4, 6), dtype)
    g = random(rng, x.shape, dtype)
    saved = to_numpy(forward(x, backend="numpy")) if saves_output else x
    assert_matches(backward(g, saved, backend), ref_backward(g.astype(np.float64), saved.astype(np.float64)),
                   dtype, 1, f"{name}_backward")


@pytest.mark.parametrize("name", BACKWARD)
def test_activation_backward_finite_differences(backend, name, rng):
    forward, backward, _, saves_output = BACKWARD[name]
    x = _away_from_zero(rng, (3, 7), np.float64)
    g, direction = random(rng, x.shape, np.float64), random(rng, x.shape, np.float64)
    eps = 1e-6

    def loss(xv):
        return float(np.sum(to_numpy(forward(xv, backend=backend)) * g))

    saved = to_numpy(forward(x, backend=backend)) if saves_output else x
    grad = to_numpy(backward(g, saved, backend))
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    assert np.sum(grad * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_nan_propagates(backend, dtype):
    x = np.array([np.nan, -1.0, 2.0, np.nan], dtype)
    for name, (op, _) in FORWARD.items():
        out = to_numpy(op(x, backend))
        assert np.isnan(out[0]) and np.isnan(out[3]) and not np.isnan(out[1:3]).any(), name
    g = np.array([0.5, 0.5, 0.5, 0.5], dtype)
    # PyTorch: threshold_backward passes the gradient where input is NaN (NaN <= 0 is False);
    # leaky_relu_backward scales it (NaN > 0 is False).
    np.testing.assert_array_equal(to_numpy(convcore.relu_backward(g, x, backend=backend)), [0.5, 0, 0.5, 0.5])
    np.testing.assert_allclose(to_numpy(convcore.leaky_relu_backward(g, x, SLOPE, backend=backend)),
                               np.array([0.5 * SLOPE, 0.5 * SLOPE, 0.5, 0.5 * SLOPE], dtype))


def test_sigmoid_is_stable_for_large_inputs(backend, dtype):
    x = np.array([-1e4, -800.0, -100.0, -30.0, 30.0, 100.0, 800.0, 1e4], dtype)
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is fine
        out = to_numpy(convcore.sigmoid(x, backend=backend))
    assert np.isfinite(out).all() and out[0] == 0 and out[-1] == 1
    assert_matches(out, reference.sigmoid(x.astype(np.float64)), dtype, 1, "sigmoid")
    assert out[2] > 0 and out[3] == pytest.approx(np.exp(-30.0), rel=1e-5)
    assert_matches(convcore.tanh(x, backend=backend), np.tanh(x.astype(np.float64)), dtype, 1, "tanh")


def test_relu_at_zero_matches_torch(backend, dtype):
    x = np.array([0.0, -0.0, 1.0, -1.0], dtype)
    g = np.full(4, 2.0, dtype)
    np.testing.assert_array_equal(to_numpy(convcore.relu(x, backend=backend)), [0, 0, 1, 0])
    np.testing.assert_array_equal(to_numpy(convcore.relu_backward(g, x, backend=backend)), [0, 0, 2, 0])
    np.testing.assert_array_equal(to_numpy(convcore.leaky_relu_backward(g, x, 0.1, backend=backend)),
                                  np.array([0.2, 0.2, 2, 0.2], dtype))


def test_against_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _away_from_zero(rng, (5, 6), dtype)
    x[0, :3] = [np.nan, 40.0, -40.0]
    g = random(rng, x.shape, dtype)
    ops = {
        "relu": (torch.relu, convcore.relu, convcore.relu_backward, False),
        "leaky_relu": (lambda t: F.leaky_relu(t, SLOPE), lambda v, backend: convcore.leaky_relu(v, SLOPE, backend=backend),
                       lambda dy, s, backend: convcore.leaky_relu_backward(dy, s, SLOPE, backend=backend), False),
        "sigmoid": (torch.sigmoid, convcore.sigmoid, convcore.sigmoid_backward, True),
        "tanh": (torch.tanh, convcore.tanh, convcore.tanh_backward, True),
    }
    for name, (torch_op, op, backward, saves_output) in ops.items():
        tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        ty = torch_op(tx)
        ty.backward(torch.from_numpy(g.astype(np.float64)))
        for backend in ("cpu", "cuda"):
            y = to_numpy(op(x, backend=backend))
            np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
            dx = to_numpy(backward(g, y if saves_output else x, backend=backend))
            np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    ta = torch.from_numpy(random(rng, (3, 1, 4), np.float64)).requires_grad_()
    tb = torch.from_numpy(random(rng, (5, 1), np.float64)).requires_grad_()
    tg = torch.from_numpy(random(rng, (3, 5, 4), np.float64))
    (ta * tb).backward(tg)
    a, b, g3 = ta.detach().numpy().astype(dtype), tb.detach().numpy().astype(dtype), tg.numpy().astype(dtype)
    grad_a, grad_b = convcore.hadamard_backward(g3, a, b, backend="cpu")
    assert_matches(grad_a, ta.grad.numpy(), dtype, 5, "torch grad_a")
    assert_matches(grad_b, tb.grad.numpy(), dtype, 12, "torch grad_b")


# ------------------------------------------------------------ bad input
A = np.ones((3, 4), np.float32)
CASES = [
    ("not broadcastable", lambda be: convcore.hadamard(A, np.ones((3,), np.float32), backend=be), ValueError,
     r"shapes a \(3, 4\) and b \(3,\) cannot be broadcast"),
    ("mixed dtypes", lambda be: convcore.hadamard(A, A.astype(np.float64), backend=be), TypeError,
     "must share one dtype.*a=float32.*b=float64"),
    ("integer", lambda be: convcore.relu(A.astype(np.int32), backend=be), TypeError, "unsupported dtype int32"),
    ("float16", lambda be: convcore.sigmoid(A.astype(np.float16), backend=be), TypeError, "unsupported dtype float16"),
    ("grad_output shape", lambda be: convcore.hadamard_backward(np.ones((3, 5), np.float32), A, A[:1], backend=be),
     ValueError, r"grad_output has shape \(3, 5\) but a \(3, 4\) times b \(1, 4\) has shape \(3, 4\)"),
    ("grad_output dtype", lambda be: convcore.relu_backward(A.astype(np.float64), A, backend=be), TypeError,
     "grad_output=float64"),
    ("backward shapes", lambda be: convcore.tanh_backward(A, A.T, backend=be), ValueError,
     r"grad_output has shape \(3, 4\) but output has shape \(4, 3\)"),
    ("slope type", lambda be: convcore.leaky_relu(A, "0.1", backend=be), TypeError, "negative_slope must be a real"),
    ("slope bool", lambda be: convcore.leaky_relu_backward(A, A, True, backend=be), TypeError, "negative_slope"),
    ("unknown backend", lambda be: convcore.tanh(A, backend="tpu"), ValueError, "unknown backend 'tpu'"),
]


@pytest.mark.parametrize("case, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_rejects(kernel_backend, case, call, error, message):
    with pytest.raises(error, match=message):
        call(kernel_backend)


def test_errors_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.elementwise.lookup", refuse)
    for _, call, error, _ in CASES:
        with pytest.raises(error):
            call("cpu")


def test_cuda_device_arrays(rng):
    """Device arrays stay on the device; a non-contiguous one is refused with its strides, not copied."""
    from numba import cuda

    x = random(rng, (3, 4), np.float64)
    out = convcore.tanh(cuda.to_device(x), backend="cuda")
    assert not isinstance(out, np.ndarray) and out.shape == (3, 4)
    assert_matches(out, np.tanh(x), np.float64, 1, "device tanh")
    with pytest.raises(ValueError, match=r"x on the cuda backend must be C-contiguous, got shape \(3, 4\)"):
        convcore.relu(cuda.to_device(np.asfortranarray(x)), backend="cuda")
