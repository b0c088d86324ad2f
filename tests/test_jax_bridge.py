"""convcore.jax: conv2d inside jax.jit / jax.grad / jax.vmap, against lax.conv_general_dilated."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp

import convcore.jax as cj

CONFIGS = [
    # (N, C, H, W), (K, C/g, R, S), stride, padding (top, bottom, left, right), dilation, groups
    ((2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 1, 0, 0), (1, 2), 2),
    ((1, 3, 6, 7), (2, 3, 2, 3), (1, 3), (0, 2, 1, 0), (1, 1), 1),
]


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _lax_conv(x, w, b, stride, padding, dilation, groups):
    top, bottom, left, right = padding
    out = jax.lax.conv_general_dilated(x, w, stride, ((top, bottom), (left, right)), rhs_dilation=dilation,
                                       feature_group_count=groups)
    return out + b[None, :, None, None]


@pytest.mark.parametrize("config", CONFIGS, ids=["groups-dilation", "asym-stride-pad4"])
def test_conv2d_value_and_grad_match_lax_under_jit(config, rng, x64):
    input_shape, weight_shape, stride, padding, dilation, groups = config
    x = jnp.asarray(rng.uniform(-1, 1, input_shape))
    w = jnp.asarray(rng.uniform(-1, 1, weight_shape))
    b = jnp.asarray(rng.uniform(-1, 1, weight_shape[0]))

    def loss(conv):
        return lambda x, w, b: jnp.sum(jnp.sin(conv(x, w, b, stride, padding, dilation, groups)))

    ours = jax.jit(jax.value_and_grad(loss(cj.conv2d), argnums=(0, 1, 2)))
    value, grads = ours(x, w, b)
    expected_value, expected_grads = jax.value_and_grad(loss(_lax_conv), argnums=(0, 1, 2))(x, w, b)
    assert value.dtype == jnp.float64
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_conv2d_float32_vmap(rng):
    x = jnp.asarray(rng.uniform(-1, 1, (3, 1, 2, 5, 5)).astype(np.float32))
    w = jnp.asarray(rng.uniform(-1, 1, (4, 2, 3, 3)).astype(np.float32))
    b = jnp.zeros(4, jnp.float32)
    out = jax.jit(jax.vmap(lambda x: cj.conv2d(x, w, padding="same")))(x)
    expected = jax.vmap(lambda x: _lax_conv(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1))(x)
    assert out.dtype == jnp.float32 and out.shape == (3, 1, 4, 5, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise_at_trace_time(rng):
    x = jnp.ones((1, 2, 4, 4), jnp.float32)
    with pytest.raises(ValueError, match="conv2d: groups=3 must divide in_channels=2"):
        jax.jit(lambda x: cj.conv2d(x, jnp.ones((3, 1, 1, 1), jnp.float32), groups=3))(x)
    with pytest.raises(ValueError, match="backend must be 'cpu' or 'numpy'"):
        cj.conv2d(x, jnp.ones((1, 2, 1, 1), jnp.float32), backend="cuda")
