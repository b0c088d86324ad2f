"""kernels.gemm.nt: out[t] = Σ_r a[t, r] · b[t, r]ᵀ with both operands along the reduced
index (the weight gradients), against a float64 einsum; and the conv weight gradients
that use it (1×1 stride-1 layers with P·Q >= 256, Winograd with >= 1024 tiles)."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels.conv2d import cpu, cpu_winograd_wgrad
from convcore.kernels.gemm import nt
from helpers import assert_matches, random

import convcore
from convcore import reference
from convcore.conv import conv_geometry

pytestmark = pytest.mark.usefixtures("sixteen_lanes")  # run on every host, AVX-512 or not


def _reference(a, b):
    return np.einsum("trik,trjk->tij", a.astype(np.float64), b.astype(np.float64))


@pytest.mark.parametrize("T,R,M,N,K", [
    (1, 1, 1, 1, 1),
    (2, 3, 5, 9, 17),            # M, N off the 3×8 tile, a masked tail, r inside the tile (K <= PB)
    (1, 2, 50, 35, nt.PB + 45),  # K over two slices (r outside), rows over one MB block
    (3, 1, 97, 70, 16),          # several row and column blocks, K one vector
    (1, 4, 4, 3, nt.PB),         # K exactly one slice
])
def test_matches_float64(rng, T, R, M, N, K):
    a = rng.standard_normal((T, R, M, K)).astype(np.float32)
    b = rng.standard_normal((T, R, N, K)).astype(np.float32)
    out = np.full((T, M, N), np.nan, np.float32)
    nt.sgemm_nt(a, b, out)
    ref = _reference(a, b)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-7 * np.sqrt(R * K) * max(1.0, np.abs(ref).max()))


def test_accumulate_adds_to_out(rng):
    a = rng.standard_normal((2, 3, 7, 40)).astype(np.float32)
    b = rng.standard_normal((2, 3, 9, 40)).astype(np.float32)
    start = rng.standard_normal((2, 7, 9)).astype(np.float32)
    out = start.copy()
    nt.sgemm_nt(a, b, out, accumulate=True)
    np.testing.assert_allclose(out, start + _reference(a, b), rtol=0, atol=1e-5)
    nt.sgemm_nt(a[..., :0], b[..., :0], out, accumulate=True)  # an empty reduction adds nothing
    np.testing.assert_allclose(out, start + _reference(a, b), rtol=0, atol=1e-5)


def test_strided_batch_views_and_empty_reduction(rng):
    # The conv caller's views: (N, g, K, PQ) arrays transposed to (g, N, K, PQ).
    dy = rng.standard_normal((3, 2, 5, 40)).astype(np.float32)
    x = rng.standard_normal((3, 2, 7, 40)).astype(np.float32)
    a, b = dy.transpose(1, 0, 2, 3), x.transpose(1, 0, 2, 3)
    assert nt.applies(a, b, np.empty((2, 5, 7), np.float32))
    out = np.full((2, 5, 7), np.nan, np.float32)
    nt.sgemm_nt(a, b, out)
    np.testing.assert_allclose(out, _reference(a, b), rtol=0, atol=1e-5)
    empty = np.full((2, 5, 7), np.nan, np.float32)
    nt.sgemm_nt(a[..., :0], b[..., :0], empty)
    assert (empty == 0).all()
    assert not nt.applies(a.astype(np.float64), b, out)
    assert not nt.applies(np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), b, out)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_weight_gradient_by_nt_or_sum(rng, monkeypatch, groups):
    # 1×1 layers with 128..1024 pixels take the Goto GEMM summing per-image products
    # (sgemm_sum, X[n]ᵀ a transposed view), over 1024 the nt product, reading x and dy in
    # place at stride 1 without padding, else x through im2col; under 128 pixels, the Goto
    # GEMM over a reordered copy. A small dW (under _SUM_MIN_WEIGHTS weights, as these 24
    # are) takes the nt product from 256 pixels on: checked with the threshold at 0, then as
    # it is.
    calls = []
    for name in ("sgemm_nt", "sgemm_sum"):
        original = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *args, _f=original, _n=name: calls.append(_n) or _f(*args))
    x = random(rng, (2, 4, 33, 32), np.float32)
    # 33×32 = 1056 pixels; 17×16 = 272; 18×32 = 576; 11² = 121
    cases = [(1, 0, "sgemm_nt", 0), (2, 0, "sgemm_sum", 0), ((2, 1), (1, 0), "sgemm_sum", 0), (3, 0, None, 0),
             (2, 0, "sgemm_nt", cpu._SUM_MIN_WEIGHTS), ((2, 1), (1, 0), "sgemm_nt", cpu._SUM_MIN_WEIGHTS)]
    for stride, padding, route, min_weights in cases:
        monkeypatch.setattr(cpu, "_SUM_MIN_WEIGHTS", min_weights)
        geom = conv_geometry("test", x.shape, (6, 4 // groups, 1, 1), stride, padding, 1, groups)
        dy = random(rng, geom.output_shape, np.float32)
        dw = convcore.conv2d_weight(x, geom.weight_shape, dy, stride=stride, padding=padding, groups=groups,
                                    backend="cpu", algorithm="gemm")
        expected = reference.conv2d_weight(x.astype(np.float64), geom.weight_shape, dy.astype(np.float64),
                                           stride=geom.stride, padding=geom.padding, dilation=(1, 1), groups=groups)
        assert calls == ([route] if route else []) and cpu._wgrad_nt(x, geom) == bool(route), (stride, padding)
        calls.clear()
        assert_matches(dw, expected, np.float32, 2 * geom.P * geom.Q, f"weight gradient, stride {stride}")


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_winograd_weight_gradient_by_nt(rng, monkeypatch, algorithm):
    # 1 × 66² at F(2×2) is 33² = 1089 tiles (>= _NT_MIN_TILES): dU by the nt product.
    calls = []
    original = cpu_winograd_wgrad.sgemm_nt
    monkeypatch.setattr(cpu_winograd_wgrad, "sgemm_nt", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    size = 66 if algorithm == "winograd_f2" else 130
    x = random(rng, (1, 3, size, size), np.float32)
    dy = random(rng, (1, 5, size, size), np.float32)
    dw = convcore.conv2d_weight(x, (5, 3, 3, 3), dy, padding=1, backend="cpu", algorithm=algorithm)
    expected = reference.conv2d_weight(x.astype(np.float64), (5, 3, 3, 3), dy.astype(np.float64),
                                       stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    assert calls == [1]
    assert_matches(dw, expected, np.float32, 18 * size * size, f"weight gradient (nt) [{algorithm}]")
