"""softmax, log_softmax and cross-entropy on every backend against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference

# (shape, axis): last axis (contiguous rows), middle and first axes (strided rows), 1-D, 0-d, empty.
AXES = {
    "last": ((4, 7), -1),
    "middle": ((2, 5, 3), 1),
    "first": ((6, 2, 2), 0),
    "first_negative": ((3, 4), -2),
    "vector": ((9,), 0),
    "scalar": ((), -1),
    "single_class": ((5, 1), 1),
    "empty_rows": ((0, 4), -1),
}

FORWARD = {"softmax": (convcore.softmax, reference.softmax), "log_softmax": (convcore.log_softmax, reference.log_softmax)}
BACKWARD = {
    "softmax": (convcore.softmax, convcore.softmax_backward, reference.softmax_backward),
    "log_softmax": (convcore.log_softmax, convcore.log_softmax_backward, reference.log_softmax_backward),
}


@pytest.mark.parametrize("case", AXES)
@pytest.mark.parametrize("name", FORWARD)
def test_softmax_forward_and_backward(backend, dtype, name, case, rng):
    shape, axis = AXES[case]
    op, ref = FORWARD[name]
    x = random(rng, shape, dtype, -4, 4)
    length = shape[axis] if shape else 1
    assert_matches(op(x, axis, backend=backend), ref(x.astype(np.float64), axis), dtype, length, name)
    forward, backward, ref_backward = BACKWARD[name]
    y = to_numpy(forward(x, axis, backend="numpy"))
    g = random(rng, shape, dtype)
    assert_matches(backward(g, y, axis, backend=backend),
                   ref_backward(g.astype(np.float64), y.astype(np.float64), axis), dtype, length, f"{name}_backward")


def test_softmax_rows_sum_to_one(backend, rng):
    x = random(rng, (3, 5, 4), np.float64, -5, 5)
    for axis in range(3):
        np.testing.assert_allclose(to_numpy(convcore.softmax(x, axis, backend=backend)).sum(axis=axis), 1.0, rtol=1e-14)


def test_reference_against_direct_formula(rng):
    x = random(rng, (4, 6), np.float64)
    direct = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(reference.softmax(x, 1), direct, rtol=1e-14)
    np.testing.assert_allclose(reference.log_softmax(x, 1), np.log(direct), rtol=1e-13)
    t = np.array([1, 0, 5, 2])
    losses = -np.log(direct[np.arange(4), t])
    np.testing.assert_allclose(reference.cross_entropy(x, t, "none"), losses, rtol=1e-13)
    np.testing.assert_allclose(reference.cross_entropy(x, t, "mean"), losses.mean(), rtol=1e-13)


@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("axis", [0, -1])
def test_softmax_backward_finite_differences(backend, name, axis, rng):
    forward, backward, _ = BACKWARD[name]
    x = random(rng, (3, 5), np.float64, -3, 3)
    g, direction = random(rng, x.shape, np.float64), random(rng, x.shape, np.float64)
    eps = 1e-6

    def loss(xv):
        return float(np.sum(to_numpy(forward(xv, axis, backend=backend)) * g))

    grad = to_numpy(backward(g, to_numpy(forward(x, axis, backend=backend)), axis, backend=backend))
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    assert np.sum(grad * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_large_and_infinite_logits(backend, dtype):
    x = np.array([[1000.0, 999.0, -1000.0], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, 88.0], [-1e4, -1e4 - 1, -np.inf]],
                 dtype)
    probs = to_numpy(convcore.softmax(x, backend=backend))
    logp = to_numpy(convcore.log_softmax(x, backend=backend))
    assert not np.isnan(probs).any() and not np.isnan(logp).any()
    expected = reference.softmax(x.astype(np.float64))
    assert_matches(probs, expected, dtype, 3, "softmax")
    assert probs[1, 0] == 0 and probs[2, 2] == 1 and np.isneginf(logp[1, 0])
    finite = np.isfinite(logp)
    np.testing.assert_allclose(logp[finite], reference.log_softmax(x.astype(np.float64))[finite], rtol=1e-6, atol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the simulator computes −inf − (−inf) in Python
def test_all_minus_inf_row_is_nan_as_in_torch(backend):
    x = np.array([[-np.inf, -np.inf], [0.0, 1.0]])
    probs = to_numpy(convcore.softmax(x, backend=backend))
    assert np.isnan(probs[0]).all() and not np.isnan(probs[1]).any()


def test_nan_logit_poisons_its_row_only(backend):
    x = np.array([[np.nan, 1.0, 2.0], [0.0, 1.0, 2.0]])
    probs = to_numpy(convcore.softmax(x, backend=backend))
    assert np.isnan(probs[0]).all() and not np.isnan(probs[1]).any()


# ------------------------------------------------------------ cross-entropy
REDUCTIONS = ("mean", "sum", "none")


def _ce_problem(rng, dtype, N=6, C=5, target_dtype=np.int64):
    return random(rng, (N, C), dtype, -3, 3), rng.integers(0, C, size=N).astype(target_dtype)


def _grad_output(rng, dtype, reduction, N):
    return random(rng, (N,), dtype) if reduction == "none" else 0.75


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_forward_and_backward(backend, dtype, reduction, rng):
    logits, target = _ce_problem(rng, dtype)
    x64 = logits.astype(np.float64)
    loss = convcore.cross_entropy(logits, target, reduction, backend=backend)
    expected = reference.cross_entropy(x64, target, reduction)
    assert_matches(loss, expected, dtype, logits.size, f"cross_entropy[{reduction}]")
    g = _grad_output(rng, dtype, reduction, logits.shape[0])
    grad = convcore.cross_entropy_backward(logits, target, g, reduction, backend=backend)
    g64 = g.astype(np.float64) if reduction == "none" else g
    assert_matches(grad, reference.cross_entropy_backward(x64, target, g64, reduction), dtype, logits.shape[1],
                   f"cross_entropy_backward[{reduction}]")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_backward_finite_differences(backend, reduction, rng):
    logits, target = _ce_problem(rng, np.float64, N=4, C=3)
    g = _grad_output(rng, np.float64, reduction, 4)
    direction = random(rng, logits.shape, np.float64)
    eps = 1e-6

    def loss(xv):
        return float(np.sum(to_numpy(convcore.cross_entropy(xv, target, reduction, backend=backend)) * g))

    grad = to_numpy(convcore.cross_entropy_backward(logits, target, g, reduction, backend=backend))
    numeric = (loss(logits + eps * direction) - loss(logits - eps * direction)) / (2 * eps)
    assert np.sum(grad * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_cross_entropy_default_grad_output_and_shapes(backend, rng):
    logits, target = _ce_problem(rng, np.float32, target_dtype=np.int32)
    loss = to_numpy(convcore.cross_entropy(logits, target, backend=backend))
    assert loss.shape == () and loss.dtype == np.float32
    assert to_numpy(convcore.cross_entropy(logits, target, "none", backend=backend)).shape == (6,)
    grad = to_numpy(convcore.cross_entropy_backward(logits, target, backend=backend))
    assert_matches(grad, reference.cross_entropy_backward(logits.astype(np.float64), target), np.float32, 5, "default")
    # a 0-d array works as the scalar gradient of 'mean' and 'sum'
    grad_sum = convcore.cross_entropy_backward(logits, target, np.array(2.0, np.float32), "sum", backend=backend)
    assert_matches(grad_sum, reference.cross_entropy_backward(logits.astype(np.float64), target, 2.0, "sum"),
                   np.float32, 5, "0-d grad_output")


def test_cross_entropy_large_and_infinite_logits(backend, dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [-np.inf, 2.0, 1.0], [50.0, 50.0, -np.inf]], dtype)
    target = np.array([0, 1, 1])
    losses = to_numpy(convcore.cross_entropy(logits, target, "none", backend=backend))
    grad = to_numpy(convcore.cross_entropy_backward(logits, target, 1.0, "sum", backend=backend))
    assert np.isfinite(losses).all() and np.isfinite(grad).all()
    x64 = logits.astype(np.float64)
    assert_matches(losses, reference.cross_entropy(x64, target, "none"), dtype, 3, "losses")
    assert_matches(grad, reference.cross_entropy_backward(x64, target, 1.0, "sum"), dtype, 3, "grad")
    assert grad[1, 0] == 0 and losses[2] == pytest.approx(np.log(2.0), rel=1e-6)


def test_cross_entropy_empty_batch(backend):
    logits, target = np.ones((0, 4)), np.zeros(0, np.int64)
    assert np.isnan(to_numpy(convcore.cross_entropy(logits, target, backend=backend)))  # 0/0, as torch
    assert to_numpy(convcore.cross_entropy(logits, target, "sum", backend=backend)) == 0
    assert to_numpy(convcore.cross_entropy(logits, target, "none", backend=backend)).shape == (0,)
    assert to_numpy(convcore.cross_entropy_backward(logits, target, backend=backend)).shape == (0, 4)


def test_cross_entropy_loss_sum_is_deterministic(kernel_backend, rng):
    logits, target = _ce_problem(rng, np.float32, N=300, C=3)
    first = to_numpy(convcore.cross_entropy(logits, target, "sum", backend=kernel_backend)).tobytes()
    assert to_numpy(convcore.cross_entropy(logits, target, "sum", backend=kernel_backend)).tobytes() == first
    assert_matches(np.frombuffer(first, np.float32).reshape(()),
                   reference.cross_entropy(logits.astype(np.float64), target, "sum"), np.float32, 900, "N=300")


def test_against_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = random(rng, (3, 4, 5), dtype, -4, 4)
    for axis in (0, 1, -1):
        tx = torch.from_numpy(x.astype(np.float64))
        for backend in ("cpu", "cuda"):
            assert_matches(convcore.softmax(x, axis, backend=backend), torch.softmax(tx, axis).numpy(), dtype, 5, "sm")
            assert_matches(convcore.log_softmax(x, axis, backend=backend), torch.log_softmax(tx, axis).numpy(),
                           dtype, 5, "log_softmax")
    logits, target = _ce_problem(rng, dtype)
    logits[0, (target[0] + 1) % 5] = -np.inf  # a −inf logit that is not the target (that loss is inf)
    for reduction in REDUCTIONS:
        tl = torch.from_numpy(logits.astype(np.float64)).requires_grad_()
        loss = F.cross_entropy(tl, torch.from_numpy(target), reduction=reduction)
        g = _grad_output(rng, dtype, reduction, 6)
        loss.backward(torch.tensor(g, dtype=torch.float64))
        for backend in ("cpu", "cuda"):
            assert_matches(convcore.cross_entropy(logits, target, reduction, backend=backend), loss.detach().numpy(),
                           dtype, 30, f"torch cross_entropy[{reduction}]")
            assert_matches(convcore.cross_entropy_backward(logits, target, g, reduction, backend=backend),
                           tl.grad.numpy(), dtype, 5, f"torch cross_entropy_backward[{reduction}]")


# ------------------------------------------------------------ bad input
L = np.ones((4, 3), np.float32)
T = np.array([0, 2, 1, 1])
CASES = [
    ("target float", lambda be: convcore.cross_entropy(L, T.astype(np.float32), backend=be), TypeError,
     "target must hold integer class indices, got dtype float32"),
    ("target bool", lambda be: convcore.cross_entropy(L, T > 0, backend=be), TypeError, "dtype bool"),
    ("target too big", lambda be: convcore.cross_entropy(L, np.array([0, 3, 1, 1]), backend=be), ValueError,
     r"target holds class 3, out of range \[0, 3\)"),
    ("target negative", lambda be: convcore.cross_entropy_backward(L, np.array([0, -1, 1, 1]), backend=be),
     ValueError, r"target holds class -1"),
    ("target shape", lambda be: convcore.cross_entropy(L, T[:3], backend=be), ValueError,
     r"target must have shape \(4,\) to match logits \(4, 3\), got \(3,\)"),
    ("logits 1-D", lambda be: convcore.cross_entropy(L[0], T, backend=be), ValueError, "logits must be 2-D"),
    ("logits int", lambda be: convcore.cross_entropy(L.astype(np.int32), T, backend=be), TypeError,
     "unsupported dtype int32"),
    ("reduction", lambda be: convcore.cross_entropy(L, T, "max", backend=be), ValueError,
     r"reduction must be one of \('mean', 'sum', 'none'\), got 'max'"),
    ("backward reduction", lambda be: convcore.cross_entropy_backward(L, T, 1.0, "avg", backend=be), ValueError,
     "reduction must be one of"),
    ("none needs a vector", lambda be: convcore.cross_entropy_backward(L, T, 1.0, "none", backend=be), ValueError,
     r"reduction='none' needs grad_output of shape \(4,\)"),
    ("mean needs a scalar", lambda be: convcore.cross_entropy_backward(L, T, np.ones(4, np.float32), backend=be),
     ValueError, "needs a scalar grad_output"),
    ("grad_output dtype", lambda be: convcore.cross_entropy_backward(L, T, np.ones(4), "none", backend=be),
     TypeError, "grad_output=float64"),
    ("axis range", lambda be: convcore.softmax(L, 2, backend=be), ValueError, "axis 2 is out of range for a 2-D"),
    ("axis type", lambda be: convcore.log_softmax(L, 1.0, backend=be), TypeError, "axis must be an int"),
    ("backward shapes", lambda be: convcore.softmax_backward(L, L.T, backend=be), ValueError,
     r"grad_output has shape \(4, 3\) but output has shape \(3, 4\)"),
    ("softmax dtype", lambda be: convcore.softmax(L.astype(np.float16), backend=be), TypeError, "float16"),
]


@pytest.mark.parametrize("case, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_rejects(kernel_backend, case, call, error, message):
    with pytest.raises(error, match=message):
        call(kernel_backend)


def test_errors_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.softmax_loss.lookup", refuse)
    for _, call, error, _ in CASES:
        with pytest.raises(error):
            call("cpu")


def test_long_rows_block_per_row_kernels(backend, dtype, rng):
    """Rows of LONG_ROW+ elements take the block-per-row CUDA kernels (tree reductions):
    a length that is no multiple of the block, −inf entries, a NaN row and an all −inf row."""
    from convcore.kernels.softmax.cuda import LONG_ROW

    C = 2 * LONG_ROW + 5
    x = random(rng, (4, C), dtype, -6, 6)
    x64 = x.astype(np.float64)
    for name in FORWARD:
        op, ref = FORWARD[name]
        assert_matches(op(x, backend=backend), ref(x64), dtype, C, name)
        forward, backward, ref_backward = BACKWARD[name]
        y = to_numpy(forward(x, backend="numpy"))
        g = random(rng, x.shape, dtype)
        assert_matches(backward(g, y, backend=backend), ref_backward(g.astype(np.float64), y.astype(np.float64)),
                       dtype, C, f"{name}_backward")
    target = rng.integers(1, C, x.shape[0])
    for reduction in REDUCTIONS:
        loss = convcore.cross_entropy(x, target, reduction, backend=backend)
        assert_matches(loss, reference.cross_entropy(x64, target, reduction), dtype, x.size, f"ce[{reduction}]")
        g = _grad_output(rng, dtype, reduction, x.shape[0])
        g64 = g.astype(np.float64) if reduction == "none" else g
        assert_matches(convcore.cross_entropy_backward(x, target, g, reduction, backend=backend),
                       reference.cross_entropy_backward(x64, target, g64, reduction), dtype, C, f"ce_backward[{reduction}]")
    bad = x.copy()
    bad[0, 7] = -np.inf
    bad[1, C - 1] = np.nan
    bad[2] = -np.inf
    with np.errstate(invalid="ignore"):
        probs = to_numpy(convcore.softmax(bad, backend=backend))
    assert np.isnan(probs[1]).all() and np.isnan(probs[2]).all()
    assert not np.isnan(probs[[0, 3]]).any() and probs[0, 7] == 0
    assert np.isneginf(to_numpy(convcore.log_softmax(bad[:1], backend=backend))[0, 7])
