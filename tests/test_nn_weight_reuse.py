"""nn.Conv2d in eval mode keeps its Winograd weight transform while the weight is unchanged,
and computes a fresh one after every change made through convcore."""
import numpy as np
import pytest
from convcore.kernels.conv2d import cpu as cpu_conv
from convcore.kernels.conv2d import cpu_winograd
from helpers import assert_matches

import convcore
from convcore import nn, optim
from convcore.conv import conv_geometry


@pytest.fixture
def transforms(monkeypatch):
    """Counts the weight transforms the cpu backend computes."""
    calls = []
    original = cpu_winograd._run_weight_transform

    def counting(w, G, U, k0, flip):
        calls.append(w.shape)
        original(w, G, U, k0, flip)

    monkeypatch.setattr(cpu_winograd, "_run_weight_transform", counting)
    return calls


def _layer_and_input(rng):
    nn.manual_seed(0)
    layer = nn.Conv2d(64, 64, 3, padding=1).to("cpu")
    x = rng.standard_normal((2, 64, 40, 39)).astype(np.float32)
    geom = conv_geometry("conv2d", x.shape, layer.weight.shape, 1, 1, 1, 1)
    assert cpu_conv._choose("auto", geom) in cpu_conv.WINOGRAD, "this layer must run Winograd for the test to mean anything"
    return layer, x


def _expected(layer, x):
    return convcore.conv2d(x.astype(np.float64), layer.weight.data.astype(np.float64),
                           layer.bias.data.astype(np.float64), padding=1, backend="numpy")


def test_eval_reuses_the_transform_until_the_weight_changes(transforms, rng):
    layer, x = _layer_and_input(rng)
    layer.eval()
    first = layer(x)
    second = layer(x)
    assert len(transforms) == 1
    np.testing.assert_array_equal(first, second)
    assert_matches(first, _expected(layer, x), np.float32, 64 * 9, "eval forward")

    # An optimiser step changes the weight in place: the next forward transforms it again.
    layer.weight.grad = rng.standard_normal(layer.weight.shape).astype(np.float32)
    optim.SGD(layer.parameters(), lr=0.5).step()
    stepped = layer(x)
    assert len(transforms) == 2
    assert_matches(stepped, _expected(layer, x), np.float32, 64 * 9, "after SGD step")
    assert not np.allclose(stepped, first)

    # So does loading a state dict, and assigning .data.
    state = {k: v + 1 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    assert_matches(layer(x), _expected(layer, x), np.float32, 64 * 9, "after load_state_dict")
    layer.weight.data = -layer.weight.data
    assert_matches(layer(x), _expected(layer, x), np.float32, 64 * 9, "after assigning .data")
    assert len(transforms) == 4

    # In-place edits by hand are announced with bump_version().
    layer.weight.data *= 2
    layer.weight.bump_version()
    assert_matches(layer(x), _expected(layer, x), np.float32, 64 * 9, "after bump_version")
    assert len(transforms) == 5


def test_fused_conv_relu_in_eval_reuses_too(transforms, rng):
    layer, x = _layer_and_input(rng)
    model = nn.Sequential(layer, nn.ReLU()).eval()
    out = [model(x) for _ in range(3)]
    assert len(transforms) == 1
    assert_matches(out[2], np.maximum(_expected(layer, x), 0), np.float32, 64 * 9, "fused eval forward")


def test_training_mode_transforms_every_call(transforms, rng):
    layer, x = _layer_and_input(rng)
    layer(x)
    layer(x)
    assert len(transforms) == 2


def test_functional_calls_never_reuse(transforms, rng):
    _, x = _layer_and_input(rng)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    first = convcore.conv2d(x, w, padding=1, backend="cpu")
    w *= -1  # the same array object, changed in place: a functional call must see it
    second = convcore.conv2d(x, w, padding=1, backend="cpu")
    assert len(transforms) == 2
    np.testing.assert_allclose(second, -first, rtol=1e-5, atol=1e-5)
