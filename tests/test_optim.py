"""Optimisers: the in-place update kernels on every backend against NumPy, and whole
steps of a small network against the same network in PyTorch."""
import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

from convcore import nn, optim
from convcore._update import adam_update_, axpby_, sgd_update_
from convcore.nn.module import to_backend

SIZE = 37  # odd, not a multiple of a warp


def _state(rng, dtype, count):
    return [random(rng, (SIZE,), dtype) for _ in range(count)]


def _on(backend, arrays):
    return [to_backend(a, backend) for a in arrays]


@pytest.mark.parametrize("momentum, dampening, weight_decay, nesterov, first", [
    (0.0, 0.0, 0.0, False, True), (0.9, 0.0, 0.0, False, True), (0.9, 0.1, 0.01, False, False),
    (0.8, 0.0, 0.05, True, False)])
def test_sgd_update(backend, dtype, rng, momentum, dampening, weight_decay, nesterov, first):
    param, grad, buf = _state(rng, dtype, 3)
    expected = [a.astype(np.float64) for a in (param, grad, buf)]
    from convcore.kernels.optim import numpy as reference

    reference.sgd_update(*expected, 0.1, momentum, dampening, weight_decay, nesterov, first)
    arrays = _on(backend, (param, grad, buf))
    sgd_update_(*arrays, lr=0.1, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                nesterov=nesterov, first=first, backend=backend)
    assert_matches(arrays[0], expected[0], dtype, what="param")
    if momentum:
        assert_matches(arrays[2], expected[2], dtype, what="momentum_buffer")


@pytest.mark.parametrize("step, weight_decay", [(1, 0.0), (7, 0.01)])
def test_adam_update(backend, dtype, rng, step, weight_decay):
    param, grad, exp_avg = _state(rng, dtype, 3)
    exp_avg_sq = random(rng, (SIZE,), dtype, 0.01, 1.0)
    expected = [a.astype(np.float64) for a in (param, grad, exp_avg, exp_avg_sq)]
    from convcore.kernels.optim import numpy as reference

    reference.adam_update(*expected, 0.01, 0.9, 0.999, 1e-8, weight_decay, 1 - 0.9 ** step, 1 - 0.999 ** step)
    arrays = _on(backend, (param, grad, exp_avg, exp_avg_sq))
    adam_update_(*arrays, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay, step=step,
                 backend=backend)
    for got, want, what in zip(arrays, expected, ("param", "grad", "exp_avg", "exp_avg_sq")):
        assert_matches(got, want, dtype, terms=10, what=what)


def test_axpby(backend, dtype, rng):
    x, y = _state(rng, dtype, 2)
    out = to_backend(np.empty_like(x), backend)
    axpby_(out, 0.5, to_backend(x, backend), -2.0, to_backend(y, backend), backend=backend)
    assert_matches(out, 0.5 * x.astype(np.float64) - 2.0 * y, dtype)


def test_update_errors(rng):
    param, grad = _state(rng, np.float32, 2)
    with pytest.raises(ValueError, match=r"grad has shape \(36,\), expected 37 elements"):
        sgd_update_(param, grad[:-1], grad, lr=0.1)
    with pytest.raises(TypeError, match="grad has dtype float64, expected float32"):
        sgd_update_(param, grad.astype(np.float64), grad, lr=0.1)
    with pytest.raises(ValueError, match="host array but the backend is 'cuda'"):
        sgd_update_(param, grad, grad, lr=0.1, backend="cuda")


def _torch_copy(model, torch):
    """The same network in PyTorch (Conv2d → ReLU → MaxPool2d → Flatten → Linear), float64."""
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return tmodel


def _small_net():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4))


@pytest.mark.parametrize("make_opt, make_torch_opt", [
    (lambda p: optim.SGD(p, lr=0.1), lambda p, t: t.optim.SGD(p, lr=0.1)),
    (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
     lambda p, t: t.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
    (lambda p: optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
     lambda p, t: t.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
     lambda p, t: t.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3)),
    (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.02), lambda p, t: t.optim.Adam(p, lr=0.01, weight_decay=0.02)),
], ids=["sgd", "sgd_momentum_wd", "sgd_nesterov", "sgd_dampening", "adam"])
def test_steps_match_torch(make_opt, make_torch_opt, rng):
    torch = pytest.importorskip("torch")
    model = _small_net().to("cpu", dtype=np.float64)
    tmodel = _torch_copy(model, torch)
    opt, topt = make_opt(model.parameters()), make_torch_opt(tmodel.parameters(), torch)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(3):  # three steps: the momentum buffer and Adam's bias corrections are exercised
        x = random(rng, (5, 2, 4, 4), np.float64)
        y = rng.integers(0, 4, size=5)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
    expected = tmodel.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_optimizer_errors():
    params = nn.Linear(2, 2).parameters()
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid lr"):
        optim.SGD(params, lr=-1.0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match=r"params\[0\] is ndarray"):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(params, betas=(0.9, 1.0))


def test_zero_grad(rng):
    layer = nn.Linear(3, 2).to("cpu")
    opt = optim.SGD(layer.parameters(), lr=0.1)
    layer(random(rng, (2, 3), np.float32))
    layer.backward(random(rng, (2, 2), np.float32))
    opt.zero_grad(set_to_none=False)
    assert not to_numpy(layer.weight.grad).any()
    opt.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None
