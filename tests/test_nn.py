"""convcore.nn: every layer's backward against finite differences (float64, numpy backend),
every layer's forward/backward on cpu and cuda against numpy, initialisation, repr,
state and saving, and bad arguments."""
import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

from convcore import nn
from convcore._backend import is_device_array


def _copy_params(src, dst):
    dst.load_state_dict(src.state_dict())


def _numeric_grad(f, array, rng, count=12, eps=1e-6):
    """Central differences of scalar f() w.r.t. up to ``count`` random entries of ``array`` (in place)."""
    flat = array.reshape(-1)
    picks = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    grads = []
    for i in picks:
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grads.append((plus - minus) / (2 * eps))
    return picks, np.array(grads)


# Small networks covering every layer and argument path; input shapes are awkward on purpose.
NETWORKS = {
    "conv_groups_stride": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), nn.Tanh()),
                           (2, 2, 5, 6)),
    "conv_dilation_nobias": (lambda: nn.Sequential(nn.Conv2d(3, 2, (2, 3), dilation=2, bias=False), nn.Sigmoid()),
                             (2, 3, 6, 7)),
    "conv_transpose": (lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                                             nn.LeakyReLU(0.1)), (2, 3, 3, 4)),
    "conv_transpose_groups": (lambda: nn.Sequential(nn.ConvTranspose2d(4, 2, 2, stride=2, groups=2, bias=False)),
                              (1, 4, 3, 3)),
    "pools": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.AvgPool2d(2, stride=1)), (2, 2, 6, 6)),
    "classifier": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                         nn.Linear(18, 5), nn.Tanh(), nn.Linear(5, 3)), (3, 1, 6, 8)),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_backward_matches_finite_differences(name, rng):
    make, shape = NETWORKS[name]
    model = make().to("numpy", dtype=np.float64)
    x = random(rng, shape, np.float64)
    out_shape = model(x).shape
    weights = random(rng, out_shape, np.float64)  # loss = Σ weights·output, so grad_output = weights

    def loss():
        return float(np.sum(model(x) * weights))

    model(x)
    grad_input = model.backward(weights)
    picks, numeric = _numeric_grad(loss, x, rng)
    np.testing.assert_allclose(grad_input.reshape(-1)[picks], numeric, rtol=1e-6, atol=1e-8)
    for pname, param in model.named_parameters():
        picks, numeric = _numeric_grad(loss, param.data, rng)
        np.testing.assert_allclose(param.grad.reshape(-1)[picks], numeric, rtol=1e-6, atol=1e-8, err_msg=pname)


@pytest.mark.parametrize("loss_fn, target_kind", [(nn.CrossEntropyLoss(), "class"),
                                                  (nn.CrossEntropyLoss(reduction="sum"), "class"),
                                                  (nn.MSELoss(), "dense"), (nn.MSELoss(reduction="sum"), "dense")])
def test_loss_backward_matches_finite_differences(loss_fn, target_kind, rng):
    loss_fn.to("numpy")
    logits = random(rng, (5, 4), np.float64, -2, 2)
    target = rng.integers(0, 4, size=5) if target_kind == "class" else random(rng, (5, 4), np.float64)
    loss_fn(logits, target)
    grad = to_numpy(loss_fn.backward())
    picks, numeric = _numeric_grad(lambda: loss_fn(logits, target), logits, rng, count=20)
    np.testing.assert_allclose(grad.reshape(-1)[picks], numeric, rtol=1e-6, atol=1e-9)


def test_losses_match_torch(rng):
    torch = pytest.importorskip("torch")
    logits = random(rng, (6, 5), np.float64, -3, 3)
    target = rng.integers(0, 5, size=6)
    dense = random(rng, (6, 5), np.float64)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target)).item()
    assert nn.CrossEntropyLoss().to("numpy")(logits, target) == pytest.approx(expected, rel=1e-12)
    expected = torch.nn.functional.mse_loss(torch.from_numpy(logits), torch.from_numpy(dense)).item()
    assert nn.MSELoss().to("numpy")(logits, dense) == pytest.approx(expected, rel=1e-12)


LAYERS = {
    "conv": (lambda: nn.Conv2d(2, 4, 3, stride=(1, 2), padding=1, groups=2), (2, 2, 5, 6)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), (2, 2, 3, 3)),
    "linear": (lambda: nn.Linear(7, 5), (3, 7)),
    "relu": (lambda: nn.ReLU(), (2, 3, 4, 5)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), (2, 3, 4, 5)),
    "sigmoid": (lambda: nn.Sigmoid(), (2, 3, 4, 5)),
    "tanh": (lambda: nn.Tanh(), (2, 3, 4, 5)),
    "max_pool": (lambda: nn.MaxPool2d(2), (2, 3, 4, 6)),
    "avg_pool": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 5, 5)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_numpy(name, kernel_backend, dtype, rng):
    make, shape = LAYERS[name]
    reference = make().to("numpy", dtype=np.float64)
    layer = make().to(kernel_backend, dtype=dtype)
    _copy_params(reference, layer)
    x = random(rng, shape, dtype)
    expected = reference(x.astype(np.float64))
    grad_output = random(rng, expected.shape, dtype)
    expected_grad = reference.backward(grad_output.astype(np.float64))
    out = layer(nn.module.to_backend(x, kernel_backend))
    assert is_device_array(out) == (kernel_backend == "cuda")
    assert_matches(out, expected, dtype, terms=50, what=f"{name} forward")
    grad = layer.backward(nn.module.to_backend(grad_output, kernel_backend))
    assert_matches(grad, expected_grad, dtype, terms=50, what=f"{name} grad_input")
    for (pname, param), (_, ref) in zip(layer.named_parameters(), reference.named_parameters()):
        assert is_device_array(param.grad) == (kernel_backend == "cuda")
        assert_matches(param.grad, ref.grad, dtype, terms=100, what=f"{name} {pname}.grad")


def test_gradients_accumulate_until_zeroed(rng):
    layer = nn.Linear(4, 3).to("cpu")
    x, g = random(rng, (2, 4), np.float32), random(rng, (2, 3), np.float32)
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-6)


def test_dropout(rng):
    nn.manual_seed(3)
    drop = nn.Dropout(0.25).to("cpu")
    x = random(rng, (40, 50), np.float32, 0.5, 1.5)
    y = drop(x)
    kept = y != 0
    assert 0.2 < 1 - kept.mean() < 0.3
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    grad = drop.backward(np.ones_like(x))
    np.testing.assert_allclose(grad, kept / np.float32(0.75), rtol=1e-6)
    drop.eval()
    assert drop(x) is x and drop.backward(x) is x


def test_initialisation_follows_pytorch():
    nn.manual_seed(0)
    for layer, fan in ((nn.Conv2d(4, 8, 3), 36), (nn.ConvTranspose2d(8, 6, 3, groups=2), 27), (nn.Linear(50, 20), 50)):
        bound = 1 / np.sqrt(fan)
        for param in (layer.weight, layer.bias):
            assert param.dtype == np.float32
            assert np.abs(param.data).max() <= bound
            assert np.abs(param.data).max() > 0.8 * bound


def test_repr_shows_non_default_arguments():
    assert repr(nn.Conv2d(1, 16, 3, padding=1)) == "Conv2d(1, 16, 3, padding=1)"
    assert repr(nn.Conv2d(2, 4, 3, groups=2, bias=False)) == "Conv2d(2, 4, 3, groups=2, bias=False)"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(2)"
    assert repr(nn.LeakyReLU()) == "LeakyReLU()"
    assert repr(nn.Sequential(nn.Linear(3, 2), nn.ReLU())) == "Sequential(\n  (0): Linear(3, 2)\n  (1): ReLU()\n)"


def test_state_dict_save_and_load(tmp_path, rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, bias=False))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight"]
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = nn.load(path)
    assert repr(loaded) == repr(model)
    x = random(rng, (2, 1, 4, 4), np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, bias=False))
    other.load_state_dict(np.load(path))
    np.testing.assert_array_equal(other(x), model(x))


def test_state_errors(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"0.weight has shape \(2, 4\)"):
        model.load_state_dict({"0.weight": np.zeros((2, 4)), "0.bias": np.zeros(2)})
    with pytest.raises(ValueError, match="missing keys"):
        model.load_state_dict({"0.weight": np.zeros((2, 3))})
    np.savez(tmp_path / "plain.npz", w=np.zeros(2))
    with pytest.raises(ValueError, match="no architecture"):
        nn.load(tmp_path / "plain.npz")

    class Custom(nn.Module):
        def __init__(self):
            self.inner = nn.Linear(2, 2)

    with pytest.raises(TypeError, match="not a convcore.nn layer"):
        Custom().save(tmp_path / "custom.npz")


def test_bad_arguments():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        nn.ConvTranspose2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        nn.Linear(2, 2).to("gpu")
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Linear(2, 2).to(dtype=np.int32)
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) != target shape \(3, 2\)"):
        nn.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="layer 1 is int"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="start_dim=2 comes after end_dim=1"):
        nn.Flatten(2, 1)(np.zeros((2, 3, 4)))


def test_parameters_stay_on_device(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).to("cuda")
    assert all(is_device_array(p.data) for p in model.parameters())
    out = model(random(rng, (1, 1, 2, 2), np.float32))
    assert is_device_array(out)
    model.backward(nn.module.to_backend(random(rng, (1, 2), np.float32), "cuda"))
    assert all(is_device_array(p.grad) for p in model.parameters())
    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) and isinstance(p.grad, np.ndarray) for p in model.parameters())


def test_dropout_same_mask_on_every_backend(kernel_backend, rng):
    x = random(rng, (2, 3, 4, 5), np.float32)
    nn.manual_seed(7)
    expected = nn.Dropout(0.5).to("numpy")(x)
    nn.manual_seed(7)
    drop = nn.Dropout(0.5).to(kernel_backend)
    out = drop(nn.module.to_backend(x, kernel_backend))
    assert is_device_array(out) == (kernel_backend == "cuda")
    np.testing.assert_array_equal(to_numpy(out), expected)
    np.testing.assert_array_equal(to_numpy(drop.backward(out)), expected * (expected != 0) / np.float32(0.5))


def test_sequential_fuses_conv_relu(kernel_backend, dtype, rng, monkeypatch):
    import convcore

    activations = []
    real_conv2d = convcore.conv2d

    def spy(*args, **kwargs):
        activations.append(kwargs.get("activation"))
        return real_conv2d(*args, **kwargs)

    monkeypatch.setattr(convcore, "conv2d", spy)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Sigmoid()).to(
        kernel_backend, dtype=dtype)
    x = random(rng, (2, 3, 5, 4), dtype)
    out = model(nn.module.to_backend(x, kernel_backend))
    assert activations == ["relu", None]  # the second conv is followed by Sigmoid: not fused
    grad_output = random(rng, (2, 2, 5, 4), dtype)
    grad = model.backward(nn.module.to_backend(grad_output, kernel_backend))
    fused_grads = [to_numpy(p.grad).copy() for _, p in model.named_parameters()]
    model.zero_grad()
    # The same layers one by one (no fusion) give the same outputs and gradients.
    y = nn.module.to_backend(x, kernel_backend)
    for layer in model.layers:
        y = layer(y)
    g = nn.module.to_backend(grad_output, kernel_backend)
    for layer in reversed(model.layers):
        g = layer.backward(g)
    assert activations[2:] == [None, None]
    assert_matches(out, to_numpy(y), dtype, terms=30, what="fused forward")
    assert_matches(grad, to_numpy(g), dtype, terms=30, what="fused grad_input")
    for fused, (_, p) in zip(fused_grads, model.named_parameters()):
        assert_matches(fused, to_numpy(p.grad), dtype, terms=60, what="fused parameter grad")
