"""conv2d forward and both gradients on every backend against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference
from convcore._backend import cuda_simulated
from convcore.conv import conv_geometry

# (input shape, weight shape, kwargs): every entry awkward in some way.
CONFIGS = {
    "nonsquare_kernel_odd_input": ((2, 3, 7, 9), (4, 3, 3, 2), {}),
    "stride_over_kernel": ((1, 2, 9, 8), (3, 2, 2, 2), {"stride": 3}),
    "padding_over_kernel": ((1, 2, 4, 5), (3, 2, 2, 2), {"padding": 3}),
    "dilation_with_padding": ((2, 2, 8, 7), (2, 2, 3, 3), {"dilation": 2, "padding": 2}),
    "asymmetric": ((1, 3, 9, 8), (2, 3, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}),
    "padding_4tuple": ((1, 2, 6, 5), (3, 2, 3, 3), {"padding": (0, 2, 1, 0), "stride": (1, 2)}),
    "same_even_kernel": ((2, 2, 5, 6), (3, 2, 4, 2), {"padding": "same", "dilation": (1, 3)}),
    "valid": ((1, 3, 6, 6), (2, 3, 3, 3), {"padding": "valid"}),
    "groups2": ((2, 4, 6, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((2, 5, 7, 6), (5, 1, 3, 3), {"groups": 5, "padding": 1, "stride": 2}),
    "depthwise_multiplier": ((1, 3, 6, 7), (6, 1, 3, 3), {"groups": 3, "padding": 1}),
    "depthwise_strided_dilated": ((2, 4, 9, 8), (8, 1, 3, 2), {"groups": 4, "stride": (2, 3), "dilation": (2, 1),
                                                              "padding": (1, 0, 2, 1)}),
    "depthwise_dilated_asymmetric_padding": ((1, 3, 7, 6), (3, 1, 2, 3), {"groups": 3, "dilation": (1, 2),
                                                                         "padding": (2, 0, 1, 3)}),
    "depthwise_stride2_odd": ((2, 3, 9, 11), (3, 1, 3, 3), {"groups": 3, "stride": 2, "padding": 1}),
    "depthwise_stride2_unread_rows": ((1, 2, 8, 8), (2, 1, 3, 3), {"groups": 2, "stride": 2}),
    "depthwise_stride3_multiplier": ((1, 2, 10, 7), (4, 1, 3, 2), {"groups": 2, "stride": (3, 2), "padding": (2, 1)}),
    "tiny_channels_batched": ((5, 3, 8, 8), (4, 3, 5, 5), {}),
    "stem_like_odd": ((3, 3, 17, 15), (10, 3, 7, 7), {"stride": 2, "padding": 3}),  # cpu auto: 'phase' wgrad
    "strided_7x7_small": ((1, 3, 9, 11), (4, 3, 7, 7), {"stride": 2, "padding": 3}),  # the stem's taps, simulator-sized
    "one_channel": ((3, 1, 6, 6), (13, 1, 3, 3), {"padding": 1}),
    "thirteen_to_one": ((1, 13, 5, 4), (1, 13, 3, 3), {}),
    "thirty_three_channels": ((1, 33, 4, 4), (3, 33, 3, 3), {"padding": 1}),
    "kernel_as_large_as_padded_input": ((2, 2, 5, 4), (3, 2, 7, 6), {"padding": 1}),
    "one_by_one_input": ((2, 3, 1, 1), (4, 3, 1, 1), {}),
    "one_by_one_input_padded": ((2, 3, 1, 1), (4, 3, 3, 3), {"padding": 1}),
    "pointwise": ((2, 8, 5, 4), (6, 8, 1, 1), {}),
    "pointwise_groups": ((2, 4, 3, 5), (6, 2, 1, 1), {"groups": 2}),
    "pointwise_stride2": ((2, 8, 5, 5), (16, 8, 1, 1), {"stride": 2}),
    "gemm_sized": ((2, 8, 6, 6), (16, 8, 3, 3), {"padding": 1}),
    # 3×3 stride 1 (Winograd on cpu): planes not a multiple of either tile, wider than
    # padded tiles, padding > R − 1 (the input gradient then crops), 'same' with groups.
    "odd_plane_asymmetric_padding": ((3, 4, 9, 7), (5, 4, 3, 3), {"padding": (0, 2, 1, 3)}),
    "padding_over_kernel_3x3": ((1, 2, 3, 2), (3, 2, 3, 3), {"padding": 3}),
    "same_groups_wide": ((1, 6, 5, 11), (4, 3, 3, 3), {"padding": "same", "groups": 2}),
    # Dense stride 1 (cpu: the register-blocked kernels of cpu_kblock, blocks of four
    # channels): K and C tails of 3 (a pair and a single), planes longer than one
    # accumulator strip, padding past the dilated kernel on the right (the input gradient
    # crops dY), LeNet conv2's shape.
    "kblock_tails_dilated": ((1, 7, 13, 11), (11, 7, 3, 3), {"dilation": 2, "padding": 2}),
    "kblock_long_plane": ((2, 5, 30, 33), (6, 5, 3, 3), {"padding": 1}),
    "kblock_asymmetric_padding_dilated": ((2, 9, 9, 8), (7, 9, 3, 2), {"padding": (2, 0, 1, 2), "dilation": (2, 1)}),
    "kblock_lenet_conv2": ((3, 6, 14, 14), (16, 6, 5, 5), {}),
    "kblock_padding_over_kernel": ((2, 5, 4, 5), (6, 5, 2, 2), {"padding": 3}),
    "kblock_image_pairs": ((9, 3, 11, 13), (13, 3, 3, 3), {"padding": 1}),  # odd N: a lone last image
}
ALGORITHMS = ["auto", "direct", "gemm"]
# cpu only, 3×3 stride-1 dilation-1 layers, forward and both gradients.
WINOGRAD = ["winograd", "winograd_f2", "winograd_f4"]


def _winograd_applies(geom):
    return (geom.R, geom.S) == (3, 3) and geom.stride == (1, 1) and geom.dilation == (1, 1)


def _problem(rng, dtype, config):
    input_shape, weight_shape, kwargs = CONFIGS[config]
    geom = conv_geometry("test", input_shape, weight_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                         kwargs.get("dilation", 1), kwargs.get("groups", 1))
    x = random(rng, input_shape, dtype)
    w = random(rng, weight_shape, dtype)
    b = random(rng, (weight_shape[0],), dtype)
    dy = random(rng, geom.output_shape, dtype)
    return x, w, b, dy, geom, kwargs


def _ref_kwargs(geom):
    return dict(stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=geom.groups)


def _algorithms(backend, direction, geom):
    """The public algorithms to run: all three, except that on cuda (slow in the simulator) an algorithm
    is skipped when it resolves to the same kernel as one already listed (e.g. 'gemm' when 'auto' chose it)."""
    if backend == "numpy":
        return ["auto"]
    if backend != "cuda":  # cpu: Winograd too, for 3×3 stride-1 layers
        return ALGORITHMS + (WINOGRAD if _winograd_applies(geom) else [])
    from convcore.kernels.conv2d.cuda import _choose

    chosen = {}
    for algorithm in ALGORITHMS:
        chosen.setdefault(_choose(direction, algorithm, geom), algorithm)
    return list(chosen.values())


# Configs sized for the cpu kernels (cpu_kblock's long accumulator strips and image pairs, the
# phase stem) take the simulator 10-15 s each and reach no cuda branch the others miss: on cuda
# they run direct and the simulator's one gemm tile in every direction (split-K and all), which
# the other configs run with tails in M, N and K, and a 7x7 stride-2 kernel as stem_like_odd's
# is in strided_7x7_small. So they run on cpu and numpy, and on cuda only on a GPU.
NOT_IN_SIMULATOR = {"stem_like_odd", "kblock_lenet_conv2", "kblock_long_plane", "kblock_image_pairs"}


def _sweep():
    backends = [name for name, info in convcore.backends().items() if info.available]
    params = []
    for backend in backends:
        for dtype, dtype_id in ((np.float32, "f32"), (np.float64, "f64")):
            for config in CONFIGS:
                if backend == "cuda" and cuda_simulated() and config in NOT_IN_SIMULATOR:
                    continue
                params.append(pytest.param(backend, np.dtype(dtype), config, id=f"{backend}-{dtype_id}-{config}"))
    return params


@pytest.mark.parametrize("backend, dtype, config", _sweep())
def test_conv2d_forward_and_gradients(backend, dtype, config, rng):
    # On cuda 'auto' picks the depthwise kernels for C/groups == 1, so each gradient is checked with
    # direct, implicit GEMM and (for the depthwise configs) depthwise; test_cuda_gemm_tiles adds the other tile.
    x, w, b, dy, geom, kwargs = _problem(rng, dtype, config)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    terms = geom.Cg * geom.R * geom.S
    expected = reference.conv2d(x64, w64, b.astype(np.float64), out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
    for algorithm in _algorithms(backend, "forward", geom):
        out = convcore.conv2d(x, w, b, backend=backend, algorithm=algorithm, **kwargs)
        assert_matches(out, expected, dtype, terms, f"conv2d[{algorithm}]")
    expected_gi = reference.conv2d_input(x.shape, w64, dy64, **_ref_kwargs(geom))
    for algorithm in _algorithms(backend, "input", geom):
        grad_input = convcore.conv2d_input(x.shape, w, dy, backend=backend, algorithm=algorithm, **kwargs)
        assert_matches(grad_input, expected_gi, dtype, geom.Kg * geom.R * geom.S, f"conv2d_input[{algorithm}]")
    expected_gw = reference.conv2d_weight(x64, w.shape, dy64, **_ref_kwargs(geom))
    for algorithm in _algorithms(backend, "weight", geom):
        grad_weight = convcore.conv2d_weight(x, w.shape, dy, backend=backend, algorithm=algorithm, **kwargs)
        assert_matches(grad_weight, expected_gw, dtype, geom.N * geom.P * geom.Q, f"conv2d_weight[{algorithm}]")
    assert_matches(convcore.conv2d_bias(dy, backend=backend), dy64.sum(axis=(0, 2, 3)), dtype,
                   geom.N * geom.P * geom.Q, "conv2d_bias")


def _naive_conv2d(x, w, stride, padding, dilation, groups):
    """An independent loop over every output element: the check on the reference."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    top, bottom, left, right = padding
    P = (H + top + bottom - dilation[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + left + right - dilation[1] * (S - 1) - 1) // stride[1] + 1
    out = np.zeros((N, K, P, Q))
    Kg = K // groups
    for n in range(N):
        for k in range(K):
            for p in range(P):
                for q in range(Q):
                    total = 0.0
                    for c in range(Cg):
                        for r in range(R):
                            for s in range(S):
                                h = p * stride[0] - top + r * dilation[0]
                                col = q * stride[1] - left + s * dilation[1]
                                if 0 <= h < H and 0 <= col < W:
                                    total += x[n, (k // Kg) * Cg + c, h, col] * w[k, c, r, s]
                    out[n, k, p, q] = total
    return out


@pytest.mark.parametrize("config", ["asymmetric", "depthwise_multiplier", "padding_4tuple", "kernel_as_large_as_padded_input"])
def test_reference_against_naive_loop(config, rng):
    x, w, _, _, geom, _ = _problem(rng, np.float64, config)
    expected = _naive_conv2d(x, w, geom.stride, geom.padding, geom.dilation, geom.groups)
    actual = reference.conv2d(x, w, None, out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", ["asymmetric", "groups2", "dilation_with_padding", "same_even_kernel"])
def test_gradients_match_finite_differences(backend, config, rng):
    """Directional derivatives of L = Σ conv2d(x, w) · G, in float64."""
    x, w, _, grad_out, geom, kwargs = _problem(rng, np.float64, config)
    dx_dir, dw_dir = random(rng, x.shape, np.float64), random(rng, w.shape, np.float64)
    eps = 1e-6

    def loss(xv, wv):
        return float(np.sum(to_numpy(convcore.conv2d(xv, wv, backend=backend, **kwargs)) * grad_out))

    numeric_x = (loss(x + eps * dx_dir, w) - loss(x - eps * dx_dir, w)) / (2 * eps)
    numeric_w = (loss(x, w + eps * dw_dir) - loss(x, w - eps * dw_dir)) / (2 * eps)
    grad_x = to_numpy(convcore.conv2d_input(x.shape, w, grad_out, backend=backend, **kwargs))
    grad_w = to_numpy(convcore.conv2d_weight(x, w.shape, grad_out, backend=backend, **kwargs))
    assert np.sum(grad_x * dx_dir) == pytest.approx(numeric_x, rel=1e-6, abs=1e-8)
    assert np.sum(grad_w * dw_dir) == pytest.approx(numeric_w, rel=1e-6, abs=1e-8)


def test_against_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    for config in ["asymmetric", "same_even_kernel", "depthwise_multiplier", "padding_over_kernel"]:
        x, w, b, dy, geom, kwargs = _problem(rng, dtype, config)
        tx, tw, tb, tdy = (torch.from_numpy(a.astype(np.float64)) for a in (x, w, b, dy))
        top, bottom, left, right = geom.padding
        padded = F.pad(tx, (left, right, top, bottom))
        tkw = dict(stride=geom.stride, dilation=geom.dilation, groups=geom.groups)
        expected = F.conv2d(padded, tw, tb, **tkw)
        assert_matches(convcore.conv2d(x, w, b, backend="cpu", **kwargs), expected.numpy(), dtype, 27, config)
        gw = torch.nn.grad.conv2d_weight(padded, tw.shape, tdy, **tkw)
        assert_matches(convcore.conv2d_weight(x, w.shape, dy, backend="cpu", **kwargs), gw.numpy(), dtype, 200, config)
        gx = torch.nn.grad.conv2d_input(padded.shape, tw, tdy, **tkw)[:, :, top:top + x.shape[2], left:left + x.shape[3]]
        assert_matches(convcore.conv2d_input(x.shape, w, dy, backend="cpu", **kwargs), gx.numpy(), dtype, 27, config)


@pytest.mark.parametrize("layout", ["slice", "transpose", "zero_stride"])
def test_non_contiguous_inputs(backend, layout, rng):
    base = random(rng, (2, 3, 8, 9), np.float64)
    w = random(rng, (4, 3, 3, 3), np.float64)
    if layout == "slice":
        x = base[:, :, 1:7:2, ::2]
    elif layout == "transpose":
        x = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    else:
        x = np.broadcast_to(base[:, :, :1, :], base.shape)
    assert not x.flags.c_contiguous
    expected = convcore.conv2d(np.ascontiguousarray(x), w, padding=1, backend=backend)
    np.testing.assert_array_equal(to_numpy(convcore.conv2d(x, w, padding=1, backend=backend)), to_numpy(expected))
    dy = random(rng, tuple(expected.shape), np.float64)
    dy_t = np.ascontiguousarray(dy.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(
        to_numpy(convcore.conv2d_weight(x, w.shape, dy_t, padding=1, backend=backend)),
        to_numpy(convcore.conv2d_weight(np.ascontiguousarray(x), w.shape, dy, padding=1, backend=backend)),
    )


def test_empty_batch(backend, dtype):
    x = np.ones((0, 3, 5, 5), dtype)
    w = np.ones((4, 3, 3, 3), dtype)
    out = to_numpy(convcore.conv2d(x, w, stride=2, backend=backend))
    assert out.shape == (0, 4, 2, 2) and out.dtype == dtype
    assert to_numpy(convcore.conv2d_input(x.shape, w, out, stride=2, backend=backend)).shape == (0, 3, 5, 5)
    grad_w = to_numpy(convcore.conv2d_weight(x, w.shape, out, stride=2, backend=backend))
    assert grad_w.shape == w.shape and not grad_w.any()
    assert not to_numpy(convcore.conv2d_bias(out, backend=backend)).any()


@pytest.mark.parametrize("kernel_backend, algorithm", [("cpu", "direct"), ("cpu", "gemm")])
def test_weight_gradient_is_deterministic(kernel_backend, algorithm, rng):
    x = random(rng, (4, 8, 9, 9), np.float32)
    dy = random(rng, (4, 16, 9, 9), np.float32)
    first = to_numpy(convcore.conv2d_weight(x, (16, 8, 3, 3), dy, padding=1, backend=kernel_backend, algorithm=algorithm))
    second = to_numpy(convcore.conv2d_weight(x, (16, 8, 3, 3), dy, padding=1, backend=kernel_backend, algorithm=algorithm))
    assert first.tobytes() == second.tobytes()


@pytest.mark.parametrize("algorithm, groups", [("direct", 1), ("gemm_32x32", 1), ("gemm_64x64", 1), ("gemm_128x64", 1),
                                               ("gemm_128x128", 1), ("depthwise", 4), ("depthwise_unrolled", 4)])
def test_cuda_weight_gradient_is_deterministic(algorithm, groups, rng):
    """Every cuda weight gradient reduces over several splits (checked), in a fixed order: bitwise equal runs."""
    from convcore.kernels.conv2d import cuda as cuda_kernels

    x = random(rng, (2, 4, 5, 6), np.float32)
    weight_shape = (4, 4 // groups, 2, 2)
    geom = conv_geometry("test", x.shape, weight_shape, 1, 1, 1, groups)
    dy = random(rng, geom.output_shape, np.float32)
    assert algorithm in cuda_kernels.candidates("weight", geom)
    runs = [_launch("conv2d_weight", algorithm, geom, x, dy) for _ in range(2)]
    assert runs[0].tobytes() == runs[1].tobytes()
    assert_matches(runs[0], reference.conv2d_weight(x.astype(np.float64), weight_shape, dy.astype(np.float64),
                                                    **_ref_kwargs(geom)), np.float32, geom.N * geom.P * geom.Q, algorithm)
    assert _launch_splits(cuda_kernels, algorithm, geom) > 1


def _launch_splits(cuda_kernels, algorithm, geom):
    if algorithm == "depthwise":
        return cuda_kernels._depthwise_splits(geom)[0]
    if algorithm == "depthwise_unrolled":
        return cuda_kernels._depthwise_splits(geom, 4 * cuda_kernels._TARGET_BLOCKS)[0]
    if algorithm == "direct":
        return cuda_kernels._direct_splits(geom)[0]
    return cuda_kernels._gemm_splits(cuda_kernels.GEMM_TILES[algorithm[5:]]["float32"], geom)[1]


def _launch(op, algorithm, geom, *arrays, activation=None):
    """Call the cuda launcher directly with a variant name (the public functions accept only public names)."""
    from convcore._arrays import io_for
    from convcore._backend import lookup

    io = io_for("cuda", *arrays)
    shape = {"conv2d": geom.output_shape, "conv2d_input": geom.input_shape, "conv2d_weight": geom.weight_shape}[op]
    out = io.empty(shape, arrays[0].dtype)  # NaN-poisoned
    args = [io.to_backend(a) for a in arrays]
    if op == "conv2d":
        lookup(op, "cuda")(args[0], args[1], args[2], out, geom, algorithm, activation)
    else:
        lookup(op, "cuda")(*args, out, geom, algorithm)
    return to_numpy(out)


# Depthwise layers (C/groups == 1): the CONFIGS ones, plus planes one row or one column thin and 31/33 wide.
DEPTHWISE_CONFIGS = {name: CONFIGS[name] for name in CONFIGS if CONFIGS[name][1][1] == 1}
DEPTHWISE_CONFIGS.update({
    "depthwise_thin_tall": ((1, 2, 33, 1), (2, 1, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise_thin_wide": ((1, 2, 1, 31), (4, 1, 3, 3), {"groups": 2, "padding": (1, 2)}),
    "depthwise_33_wide_5x5_stride2": ((1, 1, 5, 33), (1, 1, 5, 5), {"groups": 1, "padding": 2, "stride": 2}),
})


@pytest.mark.parametrize("config", DEPTHWISE_CONFIGS)
def test_cuda_depthwise_variants(dtype, config, rng):
    """Every depthwise kernel candidates() lists, in every direction (forward also with bias and fused ReLU),
    against the reference — 'auto' reaches only one of them."""
    from convcore.kernels.conv2d import cuda as cuda_kernels

    input_shape, weight_shape, kwargs = DEPTHWISE_CONFIGS[config]
    geom = conv_geometry("test", input_shape, weight_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                         kwargs.get("dilation", 1), kwargs.get("groups", 1))
    x, w, b = random(rng, input_shape, dtype), random(rng, weight_shape, dtype), random(rng, (weight_shape[0],), dtype)
    dy = random(rng, geom.output_shape, dtype)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    expected = reference.conv2d(x64, w64, b.astype(np.float64), out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
    checks = {
        "forward": ("conv2d", (x, w, b), expected, geom.R * geom.S),
        "input": ("conv2d_input", (w, dy), reference.conv2d_input(x.shape, w64, dy64, **_ref_kwargs(geom)),
                  geom.Kg * geom.R * geom.S),
        "weight": ("conv2d_weight", (x, dy), reference.conv2d_weight(x64, w.shape, dy64, **_ref_kwargs(geom)),
                   geom.N * geom.P * geom.Q),
    }
    for direction, (op, arrays, want, terms) in checks.items():
        names = [name for name in cuda_kernels.candidates(direction, geom) if name.startswith("depthwise")]
        assert "depthwise" in names
        assert "depthwise_unrolled" in names
        for name in names:
            assert_matches(_launch(op, name, geom, *arrays), want, dtype, terms, f"{op}[{name}]")
            if direction == "forward":
                relu = _launch(op, name, geom, *arrays, activation="relu")
                assert_matches(relu, np.maximum(want, 0.0), dtype, terms, f"{op}[{name}, relu]")


@pytest.mark.parametrize("config", ["asymmetric", "groups2", "thirteen_to_one"])
def test_cuda_gemm_tiles(dtype, config, rng):
    """Every tile 'gemm' does not pick for these small shapes, in every direction, with tails in M, N and K."""
    from convcore.kernels.conv2d import cuda as cuda_kernels

    x, w, b, dy, geom, _ = _problem(rng, dtype, config)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    for direction in ("forward", "input", "weight"):
        assert cuda_kernels._choose(direction, "gemm", geom) == ("gemm", "32x32")
    others = [f"gemm_{name}" for name in cuda_kernels.GEMM_TILES if name != "32x32"]
    assert {"gemm_64x64", "gemm_128x64", "gemm_128x128"} <= set(others)
    for name in others:
        for direction in ("forward", "input", "weight"):
            assert name in cuda_kernels.candidates(direction, geom)
        expected = reference.conv2d(x64, w64, b.astype(np.float64), out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
        assert_matches(_launch("conv2d", name, geom, x, w, b), expected, dtype, geom.Cg * geom.R * geom.S, name)
        expected = reference.conv2d_input(x.shape, w64, dy64, **_ref_kwargs(geom))
        assert_matches(_launch("conv2d_input", name, geom, w, dy), expected, dtype, geom.Kg * geom.R * geom.S, name)
        expected = reference.conv2d_weight(x64, w.shape, dy64, **_ref_kwargs(geom))
        assert_matches(_launch("conv2d_weight", name, geom, x, dy), expected, dtype, geom.N * geom.P * geom.Q, name)


def test_cuda_gemm_tile_rules():
    """A tile whose threads cannot each keep fixed gather slots is rejected when its kernel is built."""
    from convcore.kernels.conv2d import cuda_igemm
    from convcore.kernels.conv2d.cuda import GEMM_TILES

    for tiles in GEMM_TILES.values():
        for tile in tiles.values():
            cuda_igemm._check_tile(tile, a_rows_fixed=True)
    with pytest.raises(ValueError, match=r"threads % BM == 0"):
        cuda_igemm.make_fwd_igemm(None, (4, 4, 8, 2, 2))  # 4 threads, BM = 8
    with pytest.raises(ValueError, match=r"threads % BK == 0"):
        cuda_igemm.make_bwd_weight_igemm(None, (4, 4, 8, 2, 2))


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_weight_gradient_is_deterministic(stride, rng):
    # The cpu depthwise kernels (cpu_depthwise_strips for these 'same'-padded layers).
    x = random(rng, (3, 6, 11, 10), np.float32)
    dy = random(rng, (3, 6, 11 // stride + (stride == 2), 10 // stride), np.float32)
    runs = [to_numpy(convcore.conv2d_weight(x, (6, 1, 3, 3), dy, stride=stride, padding=1, groups=6, backend="cpu"))
            for _ in range(2)]
    assert runs[0].tobytes() == runs[1].tobytes()


# Depthwise layers for the cpu strip kernels (cpu_depthwise_strips): channel counts of
# no particular multiple, 1×1 and odd planes, odd planes at stride 2, padding 0 (not
# 'same' on the right: the older kernels), 2 (more than 'same'), dilation 2, channel
# multipliers, 1×1 / 5×5 / 7×7 kernels, strided 1×1 kernels (dX phases no tap reaches),
# planes cut into several row strips, asymmetric and odd strides.
STRIP_CONFIGS = {
    "c7_14x14": ((3, 7, 14, 14), (7, 1, 3, 3), {"padding": 1}),
    "plane_1x1": ((2, 3, 1, 1), (3, 1, 3, 3), {"padding": 1}),
    "odd_plane": ((2, 5, 13, 11), (5, 1, 3, 3), {"padding": 1}),
    "stride2_odd": ((2, 4, 9, 13), (4, 1, 3, 3), {"padding": 1, "stride": 2}),
    "stride2_plane_1x1": ((2, 3, 1, 1), (3, 1, 3, 3), {"padding": 1, "stride": 2}),
    "padding0": ((2, 3, 9, 8), (3, 1, 3, 3), {}),
    "padding0_stride2": ((2, 3, 9, 8), (3, 1, 3, 3), {"stride": 2}),
    "padding2": ((1, 3, 8, 7), (3, 1, 3, 3), {"padding": 2}),
    "dilation2": ((2, 3, 10, 9), (3, 1, 3, 3), {"padding": 2, "dilation": 2}),
    "dilation2_stride2": ((2, 3, 11, 10), (3, 1, 3, 3), {"padding": 2, "dilation": 2, "stride": 2}),
    "multiplier2": ((2, 3, 8, 8), (6, 1, 3, 3), {"padding": 1, "groups": 3}),
    "multiplier3_stride2": ((1, 2, 9, 10), (6, 1, 3, 3), {"padding": 1, "groups": 2, "stride": 2}),
    "kernel1x1": ((2, 4, 5, 6), (4, 1, 1, 1), {}),
    "kernel1x1_stride2": ((2, 3, 7, 8), (3, 1, 1, 1), {"stride": 2}),
    "kernel5x5_stride2": ((2, 3, 17, 15), (3, 1, 5, 5), {"padding": 2, "stride": 2}),
    "kernel7x7": ((1, 2, 12, 12), (2, 1, 7, 7), {"padding": 3}),
    "kernel2x2_same": ((1, 2, 6, 7), (2, 1, 2, 2), {"padding": "same"}),
    "strips": ((1, 2, 64, 100), (2, 1, 3, 3), {"padding": 1}),
    "strips_stride2": ((1, 2, 67, 101), (2, 1, 3, 3), {"padding": 1, "stride": 2}),
    "stride2_rows_of_64": ((1, 2, 6, 64), (2, 1, 3, 3), {"padding": 1, "stride": 2}),  # whole 32-column steps
    "stride3x2": ((1, 2, 10, 9), (2, 1, 3, 3), {"padding": 1, "stride": (3, 2)}),
    "stride1x2_asymmetric": ((2, 3, 7, 9), (3, 1, 3, 2), {"padding": (1, 0, 2, 1), "stride": (1, 2)}),
}


@pytest.mark.parametrize("config", STRIP_CONFIGS)
def test_cpu_depthwise_strips(dtype, config, rng):
    """Forward (plain, bias, bias + ReLU), input and weight gradient of the cpu depthwise
    layers against the reference, through the strip kernels where they apply."""
    from convcore.kernels.conv2d import cpu_depthwise_strips as strips

    input_shape, weight_shape, kwargs = STRIP_CONFIGS[config]
    geom = conv_geometry("test", input_shape, weight_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                         kwargs.get("dilation", 1), kwargs.get("groups", input_shape[1]))
    kwargs = {"groups": input_shape[1], **kwargs}
    assert strips.applies(geom) == (not config.startswith("padding0"))
    x, w, b = random(rng, input_shape, dtype), random(rng, weight_shape, dtype), random(rng, (weight_shape[0],), dtype)
    dy = random(rng, geom.output_shape, dtype)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    terms = geom.R * geom.S
    for bias in (None, b):
        expected = reference.conv2d(x64, w64, None if bias is None else bias.astype(np.float64),
                                    out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
        assert_matches(convcore.conv2d(x, w, bias, backend="cpu", **kwargs), expected, dtype, terms, "conv2d")
        relu = convcore.conv2d(x, w, bias, backend="cpu", activation="relu", **kwargs)
        assert_matches(relu, np.maximum(expected, 0.0), dtype, terms, "conv2d relu")
    assert_matches(convcore.conv2d_input(x.shape, w, dy, backend="cpu", **kwargs),
                   reference.conv2d_input(x.shape, w64, dy64, **_ref_kwargs(geom)), dtype, geom.Kg * terms,
                   "conv2d_input")
    assert_matches(convcore.conv2d_weight(x, w.shape, dy, backend="cpu", **kwargs),
                   reference.conv2d_weight(x64, w.shape, dy64, **_ref_kwargs(geom)), dtype,
                   geom.N * geom.P * geom.Q, "conv2d_weight")


@pytest.mark.parametrize("stride", [1, 2])
def test_cpu_depthwise_strips_keep_the_neighbouring_row_out(dtype, stride):
    """The strips read rows Q wide, so a tap past a row's end reads the next row: the masks
    must drop it exactly (a select, not a multiply by 0, which would turn Inf into NaN).
    An Inf in every row's last column of x (forward, weight gradient) or of dY (input
    gradient), positive weights: the reference's Inf entries, and nothing else, are Inf."""
    from convcore.kernels.conv2d import cpu_depthwise_strips as strips

    rng = np.random.default_rng(7)
    shape, weight = (2, 3, 9, 12), (3, 1, 3, 3)
    geom = conv_geometry("test", shape, weight, stride, 1, 1, 3)
    assert strips.applies(geom)
    x = rng.uniform(0.5, 1.0, shape).astype(dtype)
    w = rng.uniform(0.5, 1.0, weight).astype(dtype)
    dy = rng.uniform(0.5, 1.0, geom.output_shape).astype(dtype)
    finite_dy = dy.copy()  # the weight gradient's: an Inf in both would meet the reference's 0 · Inf padding
    x[..., -1], dy[..., -1] = np.inf, np.inf
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    kwargs = dict(stride=stride, padding=1, groups=3, backend="cpu")
    results = {
        "conv2d": (convcore.conv2d(x, w, **kwargs), reference.conv2d(x64, w64, None, out_hw=(geom.P, geom.Q),
                                                                  **_ref_kwargs(geom))),
        "conv2d_input": (convcore.conv2d_input(shape, w, dy, **kwargs),
                         reference.conv2d_input(shape, w64, dy64, **_ref_kwargs(geom))),
        "conv2d_weight": (convcore.conv2d_weight(x, weight, finite_dy, **kwargs),
                          reference.conv2d_weight(x64, weight, finite_dy.astype(np.float64), **_ref_kwargs(geom))),
    }
    for op, (got, want) in results.items():
        assert not np.isnan(want).any() and np.isinf(want).any() and np.isfinite(want).any(), op
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=op)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, err_msg=op)


@pytest.mark.parametrize("stride", [1, 2])
def test_cpu_depthwise_strips_bitwise_across_threads(stride, rng):
    """The strip kernels hand chunks to threads dynamically; every result is still the same
    bits on 1 thread and on all, and from run to run (the weight gradient's sums included)."""
    x = random(rng, (3, 40, 30, 29), np.float32)
    w = random(rng, (40, 1, 3, 3), np.float32)
    kwargs = dict(stride=stride, padding=1, groups=40, backend="cpu")
    dy = random(rng, convcore.conv2d(x, w, **kwargs).shape, np.float32)

    def run():
        return [to_numpy(convcore.conv2d(x, w, **kwargs)), to_numpy(convcore.conv2d_input(x.shape, w, dy, **kwargs)),
                to_numpy(convcore.conv2d_weight(x, w.shape, dy, **kwargs))]

    threads = convcore.get_num_threads()
    try:
        results = [run(), run()]
        convcore.set_num_threads(1)
        results.append(run())
    finally:
        convcore.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("algorithm", ["direct", "gemm"])
@pytest.mark.parametrize("config", ["asymmetric", "groups2", "one_by_one_input_padded", "depthwise",
                                    "depthwise_multiplier"])
def test_fused_bias_relu(backend, algorithm, config, dtype, rng):
    x, w, b, _, geom, kwargs = _problem(rng, dtype, config)
    x[0, 0, 0, 0] = np.nan  # NaN must survive the fused ReLU (as torch.relu)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
    out = to_numpy(convcore.conv2d(x, w, b, backend=backend, algorithm=algorithm, activation="relu", **kwargs))
    nan = np.isnan(expected)
    assert nan.any() and np.array_equal(np.isnan(out), nan)
    out[nan] = 0.0
    assert_matches(out, np.where(nan, 0.0, np.maximum(expected, 0.0)), dtype, geom.Cg * geom.R * geom.S, "relu")
    assert (out >= 0).all()
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        convcore.conv2d(x, w, backend=backend, activation="gelu", **kwargs)


def test_float32_in_float32_out(backend, rng):
    x = random(rng, (1, 2, 5, 5), np.float32)
    w = random(rng, (3, 2, 3, 3), np.float32)
    assert to_numpy(convcore.conv2d(x, w, backend=backend)).dtype == np.float32


def test_cuda_candidates_and_variant_names():
    """candidates() lists the variants each launcher accepts; bad names and too-large tensors raise before any kernel."""
    from convcore.kernels.conv2d import cuda as cuda_kernels

    dense = conv_geometry("test", (2, 8, 6, 6), (16, 8, 3, 3), 1, 1, 1, 1)
    depthwise = conv_geometry("test", (2, 8, 6, 6), (8, 1, 3, 3), 2, 1, 1, 8)
    for direction in ("forward", "input", "weight", "conv2d", "conv2d_input", "conv2d_weight"):
        gemm = ["gemm_64x64", "gemm_32x32", "gemm_128x64", "gemm_128x128"]
        assert cuda_kernels.candidates(direction, dense) == ["direct"] + gemm
        assert cuda_kernels.candidates(direction, depthwise) == ["direct"] + gemm + ["depthwise", "depthwise_unrolled"]
        assert cuda_kernels._choose(direction, "auto", depthwise) == ("depthwise", "unrolled")
        for name in cuda_kernels.candidates(direction, depthwise):
            assert cuda_kernels._choose(direction, name, depthwise)[0] == name.split("_")[0]
    with pytest.raises(ValueError, match="direction must be one of"):
        cuda_kernels.candidates("backward", dense)
    with pytest.raises(ValueError, match="unknown algorithm 'gemm_8x8'"):
        cuda_kernels.conv2d_fwd(None, None, None, np.empty(dense.output_shape), dense, "gemm_8x8")
    with pytest.raises(ValueError, match="'depthwise' does not apply"):
        cuda_kernels.conv2d_bwd_data(None, None, np.empty(dense.input_shape), dense, "depthwise")
    # A dilation too wide for the depthwise kernels' shared-memory window: not a candidate, not auto's pick.
    wide = conv_geometry("test", (1, 2, 200, 200), (2, 1, 3, 3), 1, 0, 60, 2)
    assert not {"depthwise", "depthwise_unrolled"} & set(cuda_kernels.candidates("forward", wide))
    assert cuda_kernels._choose("forward", "auto", wide)[0] != "depthwise"
    with pytest.raises(ValueError, match="'depthwise_unrolled' does not apply"):
        cuda_kernels._choose("forward", "depthwise_unrolled", wide)
    # 7×7 taps: the unrolled gradients' registers would not suffice; the forward lists it, but auto
    # takes it for 3×3 layers only.
    large = conv_geometry("test", (1, 2, 20, 20), (2, 1, 7, 7), 1, 3, 1, 2)
    assert "depthwise_unrolled" not in cuda_kernels.candidates("weight", large)
    assert "depthwise_unrolled" not in cuda_kernels.candidates("input", large)
    assert "depthwise_unrolled" in cuda_kernels.candidates("forward", large)
    for direction in ("forward", "input", "weight"):
        assert cuda_kernels._choose(direction, "auto", large) == ("depthwise",)
    # 2**31 output elements: the 32-bit kernels are not candidates, auto takes the 64-bit direct ones,
    # and asking for one raises (the geometry alone decides; nothing is allocated).
    huge = conv_geometry("test", (1 << 16, 64, 32, 32), (64, 64, 1, 1), 1, 0, 1, 1)
    assert cuda_kernels.candidates("forward", huge) == ["direct"]
    assert cuda_kernels._choose("weight", "auto", huge) == ("direct",)
    with pytest.raises(ValueError, match=r"fewer than 2\*\*31 elements"):
        cuda_kernels._choose("input", "gemm", huge)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        convcore.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1)), algorithm="gemm_64x64")


def test_cuda_variant_names_through_the_public_api(rng):
    """What candidates() lists (and tune records) is also a valid ``algorithm=`` of the public conv
    functions on cuda, checked against the reference; a variant that does not apply raises."""
    x, w, b, dy, geom, kwargs = _problem(rng, np.float32, "groups2")
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    expected = reference.conv2d(x64, w64, None, out_hw=(geom.P, geom.Q), **_ref_kwargs(geom))
    out = convcore.conv2d(x, w, backend="cuda", algorithm="gemm_32x32", **kwargs)
    assert_matches(out, expected, np.float32, geom.Cg * geom.R * geom.S, "conv2d[gemm_32x32]")
    grad_weight = convcore.conv2d_weight(x, w.shape, dy, backend="cuda", algorithm="gemm_32x32", **kwargs)
    assert_matches(grad_weight, reference.conv2d_weight(x64, w.shape, dy64, **_ref_kwargs(geom)), np.float32,
                   geom.N * geom.P * geom.Q, "conv2d_weight[gemm_32x32]")
    with pytest.raises(ValueError, match="'depthwise' does not apply"):
        convcore.conv2d_input(x.shape, w, dy, backend="cuda", algorithm="depthwise", **kwargs)
    with pytest.raises(ValueError, match=r"or a cuda variant \('gemm_64x64'.*got 'phase'"):
        convcore.conv2d(x, w, backend="cuda", algorithm="phase", **kwargs)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
def test_cpu_gemm_forward_image_by_image(rng, monkeypatch, dtype_):
    # im2col + GEMM in chunks of images (here one at a time): strided, grouped, padded,
    # an odd batch; and the batch-folded GEMM of small planes.
    from convcore.kernels import workspace
    from convcore.kernels.conv2d import cpu as cpu_kernels

    monkeypatch.setattr(workspace, "CHUNK_BYTES", 1)
    x = random(rng, (3, 4, 23, 21), dtype_)
    w = random(rng, (6, 2, 5, 3), dtype_)
    b = random(rng, (6,), dtype_)
    for stride, padding in [(2, (2, 1)), (1, 0)]:
        geom = conv_geometry("test", x.shape, w.shape, stride, padding, 1, 2)
        expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                    stride=geom.stride, padding=geom.padding, dilation=(1, 1), groups=2,
                                    out_hw=(geom.P, geom.Q))
        out = convcore.conv2d(x, w, b, stride=stride, padding=padding, groups=2, backend="cpu", algorithm="gemm")
        assert_matches(out, expected, dtype_, 30, f"gemm image by image, stride {stride}")
    small = random(rng, (3, 4, 6, 7), dtype_)
    geom = conv_geometry("test", small.shape, w.shape, 1, 1, 1, 2)
    assert cpu_kernels._fold_batch(geom)
    expected = reference.conv2d(small.astype(np.float64), w.astype(np.float64), None, stride=(1, 1),
                                padding=(1, 1, 1, 1), dilation=(1, 1), groups=2, out_hw=(geom.P, geom.Q))
    assert_matches(convcore.conv2d(small, w, padding=1, groups=2, backend="cpu", algorithm="gemm"), expected,
                   dtype_, 30, "gemm folded over the batch")


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
def test_cpu_gemm_input_gradient_chunked_and_folded(rng, monkeypatch, dtype_):
    # The input gradient's product + col2im image by image, and folded over the batch for
    # small planes (64+ output channels).
    from convcore.kernels import workspace
    from convcore.kernels.conv2d import cpu as cpu_kernels

    monkeypatch.setattr(workspace, "CHUNK_BYTES", 1)
    for shape, weight, stride, padding in [((3, 4, 23, 21), (6, 4, 5, 3), 2, (2, 1)), ((3, 5, 6, 7), (64, 5, 3, 3), 1, 1)]:
        geom = conv_geometry("test", shape, weight, stride, padding, 1, 1)
        w, dy = random(rng, weight, dtype_), random(rng, geom.output_shape, dtype_)
        expected = reference.conv2d_input(shape, w.astype(np.float64), dy.astype(np.float64), stride=geom.stride,
                                          padding=geom.padding, dilation=(1, 1), groups=1)
        dx = convcore.conv2d_input(shape, w, dy, stride=stride, padding=padding, backend="cpu", algorithm="gemm")
        assert_matches(dx, expected, dtype_, geom.K * 15, f"gemm input gradient {shape} -> {weight}")
    assert cpu_kernels._fold_batch(geom) and geom.Kg >= 64


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("pair", [0, 1])
def test_cpu_kblock_forward_single_images_and_pairs(rng, dtype_, pair):
    # cpu_kblock's forward one image or two per prange iteration (the pair runs on AVX-512
    # hosts, single images on AVX2 ones; both on every host here), with an odd batch (a lone
    # last image), K tails of 3 and 1, into a poisoned output.
    from convcore.kernels import host
    from convcore.kernels.conv2d import cpu_kblock

    for shape, weight in [((9, 3, 11, 13), (13, 3, 3, 3)), ((5, 6, 14, 14), (16, 6, 5, 5))]:
        x, w = random(rng, shape, dtype_), random(rng, weight, dtype_)
        geom = conv_geometry("test", shape, weight, 1, 0, 1, 1)
        out = np.full(geom.output_shape, np.nan, dtype_)
        cpu_kblock._fwd_kblock(np.ascontiguousarray(x), w, out, 1, 1, pair, dtype_(0))
        expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, stride=(1, 1),
                                    padding=(0, 0, 0, 0), dilation=(1, 1), groups=1, out_hw=(geom.P, geom.Q))
        assert_matches(out, expected, dtype_, weight[1] * weight[2] * weight[3], f"kblock pair={pair} {shape}")
    assert cpu_kblock._pair(64, 16) == (0 if not host.avx512() else 1)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("chunk_bytes", [1, 8 << 20])
def test_cpu_1x1_weight_gradient_by_blas(rng, monkeypatch, dtype_, chunk_bytes):
    # The 1×1 weight gradient where its products go to BLAS (float64; float32 with
    # CONVCORE_CPU_GEMM=blas): one product per (image, group) from dy and x as they lie (x
    # through im2col where strided or padded), summed over the images in one chunk, or in
    # chunks of one image (CHUNK_BYTES = 1).
    from convcore.kernels import workspace
    from convcore.kernels.conv2d import cpu as cpu_kernels
    from convcore.kernels.gemm import cpu as gemm

    monkeypatch.setattr(workspace, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setenv("CONVCORE_CPU_GEMM", "blas")
    gemm.enabled.cache_clear()
    calls = []
    real = cpu_kernels._wgrad_1x1_blas
    monkeypatch.setattr(cpu_kernels, "_wgrad_1x1_blas", lambda *a: calls.append(1) or real(*a))
    try:
        for shape, weight, groups, stride, padding in [((5, 12, 7, 9), (10, 12, 1, 1), 1, 1, 0),
                                                       ((3, 6, 5, 4), (9, 2, 1, 1), 3, 1, 0),
                                                       ((3, 8, 9, 7), (6, 4, 1, 1), 2, 2, 0),
                                                       ((4, 5, 6, 6), (7, 5, 1, 1), 1, (1, 2), (1, 0))]:
            geom = conv_geometry("test", shape, weight, stride, padding, 1, groups)
            x = random(rng, shape, dtype_)
            dy = random(rng, geom.output_shape, dtype_)
            expected = reference.conv2d_weight(x.astype(np.float64), weight, dy.astype(np.float64), stride=geom.stride,
                                               padding=geom.padding, dilation=(1, 1), groups=groups)
            # the per-image products' scratch (the size the call asks for) poisoned first
            workspace.scratch("conv2d.wgrad_1x1", (shape[0],) + weight[:2], dtype_).fill(np.nan)
            dw = convcore.conv2d_weight(x, weight, dy, stride=stride, padding=padding, groups=groups, backend="cpu",
                                        algorithm="gemm")
            assert_matches(dw, expected, dtype_, geom.N * geom.P * geom.Q, f"1x1 wgrad {shape} g={groups} s={stride}")
        assert len(calls) == 4
    finally:
        gemm.enabled.cache_clear()


@pytest.mark.parametrize("shape,weight,padding,dilation,wide_strip", [
    ((16, 6, 14, 14), (16, 6, 5, 5), 0, 1, 144),            # LeNet conv2: one strip per plane
    ((8, 3, 23, 30), (7, 3, 3, 3), 1, 1, 128),              # six 8-vector strips (L = 734), K = 7 (a
                                                            # short last block)
    ((8, 5, 12, 11), (4, 5, 3, 2), (2, 0, 1, 2), (2, 1), 144),  # dilated, asymmetric padding
    ((8, 2, 9, 16), (7, 2, 3, 3), (1, 1, 0, 3), 1, 128),    # rows of exactly one vector, right padding only
                                                            # (7 channels: 4-6 go to cpu_rows)
])
def test_cpu_flat_simd_forward(cpu_tile, rng, shape, weight, padding, dilation, wide_strip):
    # The register-tiled flat forward (float32; AVX-512 hosts' 144- or 128-output strip,
    # whichever covers the plane's L flat outputs in fewer lanes; AVX2 hosts' 32) against the
    # float64 reference.
    from convcore.kernels import workspace
    from convcore.kernels.conv2d import cpu_flat_simd

    assert cpu_flat_simd.strip_length() == (cpu_flat_simd.STRIP if cpu_tile == "wide" else cpu_flat_simd.STRIP_AVX2)
    x, w = random(rng, shape, np.float32), random(rng, weight, np.float32)
    geom = conv_geometry("test", shape, weight, 1, padding, dilation, 1)
    flat_outputs = (geom.P - 1) * (geom.W + geom.padding[2] + geom.padding[3]) + geom.Q
    assert cpu_flat_simd.strip_length(flat_outputs) == (wide_strip if cpu_tile == "wide" else cpu_flat_simd.STRIP_AVX2)
    # the threads' padded-image buffers poisoned: every zero of the padding is written
    workspace.scratch("conv2d.flat_simd", (convcore.get_num_threads() + 1, 1 << 15), np.float32).fill(np.nan)
    assert cpu_flat_simd.applies(x, np.empty(geom.output_shape, np.float32), geom)
    out = np.full(geom.output_shape, np.nan, np.float32)
    cpu_flat_simd.flat_simd_fwd(x, w, out, geom.padding, geom.dilation)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, stride=(1, 1), padding=geom.padding,
                                dilation=geom.dilation, groups=1, out_hw=(geom.P, geom.Q))
    assert_matches(out, expected, np.float32, geom.Cg * geom.R * geom.S, f"flat simd {shape} -> {weight}")
    direct = convcore.conv2d(x, w, padding=padding, dilation=dilation, backend="cpu", algorithm="direct")
    np.testing.assert_array_equal(direct, out)  # the direct algorithm runs it
    assert not cpu_flat_simd.applies(x.astype(np.float64), out.astype(np.float64), geom)


@pytest.mark.parametrize("padding,dilation", [(0, 1), ((2, 1, 0, 2), (1, 2))])
def test_cpu_flat_simd_input_gradient(cpu_tile, rng, padding, dilation):
    # The input gradient as the flat register-tiled forward of dY padded by dil·(R−1) − pad
    # with W rotated 180° and K ↔ C (float32, 16+ tasks), with the wide tile only: the AVX2
    # hosts' narrow one lost to cpu_kblock's scatter, which then computes it.
    from convcore.kernels.conv2d import cpu as cpu_kernels

    shape, weight = (8, 6, 14, 13), (16, 6, 5, 3)
    geom = conv_geometry("test", shape, weight, 1, padding, dilation, 1)
    w, dy = random(rng, weight, np.float32), random(rng, geom.output_shape, np.float32)
    assert cpu_kernels._dgrad_by_flat_simd(dy, np.empty(shape, np.float32), geom) is (cpu_tile == "wide")
    dx = convcore.conv2d_input(shape, w, dy, padding=padding, dilation=dilation, backend="cpu", algorithm="direct")
    expected = reference.conv2d_input(shape, w.astype(np.float64), dy.astype(np.float64), stride=(1, 1),
                                      padding=geom.padding, dilation=geom.dilation, groups=1)
    assert_matches(dx, expected, np.float32, 16 * 15, "flat simd input gradient")


@pytest.mark.parametrize("shape,weight", [((8, 128, 16, 16), (48, 128, 1, 1)), ((8, 64, 14, 14), (16, 64, 1, 1)),
                                          ((2, 16, 7, 9), (24, 16, 1, 1))])
def test_cpu_auto_small_1x1_layers_take_the_gemm(rng, shape, weight):
    # Small 1×1 layers, which cpu_kblock's size limits admit, run their GEMM in every
    # direction under auto (one tap: the flat kernels' overhead with none of their reuse),
    # and the results match the reference.
    from convcore.kernels.conv2d import cpu as cpu_kernels

    geom = conv_geometry("test", shape, weight, 1, 0, 1, 1)
    x, w = random(rng, shape, np.float32), random(rng, weight, np.float32)
    dy = random(rng, geom.output_shape, np.float32)
    for direction in ("fwd", "bwd_data", "bwd_weight"):
        assert cpu_kernels._choose("auto", geom, direction, np.float32) == "gemm"
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    assert_matches(convcore.conv2d(x, w, backend="cpu"), reference.conv2d(x64, w64, None, out_hw=(geom.P, geom.Q),
                   **_ref_kwargs(geom)), np.float32, shape[1], "small 1x1 forward")
    assert_matches(convcore.conv2d_input(shape, w, dy, backend="cpu"),
                   reference.conv2d_input(shape, w64, dy64, **_ref_kwargs(geom)), np.float32, weight[0],
                   "small 1x1 input gradient")
    assert_matches(convcore.conv2d_weight(x, weight, dy, backend="cpu"),
                   reference.conv2d_weight(x64, weight, dy64, **_ref_kwargs(geom)), np.float32, geom.N * geom.P * geom.Q,
                   "small 1x1 weight gradient")


def test_cpu_auto_pointwise_input_gradient_takes_the_gemm(sixteen_lanes, rng):
    # A 1×1 layer reducing over few channels (odd_1x1_c100_k27_23's input gradient): auto
    # runs its GEMM on the planes as they lie, not the shallow flat kernel, which a 3×3
    # layer of the same channels keeps; the GEMM's result matches the reference.
    from convcore.kernels.conv2d import cpu as cpu_kernels

    pointwise = conv_geometry("test", (8, 100, 23, 23), (27, 100, 1, 1), 1, 0, 1, 1)
    assert cpu_kernels._choose("auto", pointwise, "bwd_data", np.float32) == "gemm"
    shallow = conv_geometry("test", (8, 100, 23, 23), (27, 100, 3, 3), 1, 1, 1, 1)
    assert cpu_kernels._choose("auto", shallow, "bwd_data", np.float32) == "direct"
    w, dy = random(rng, (27, 100, 1, 1), np.float32), random(rng, pointwise.output_shape, np.float32)
    dx = convcore.conv2d_input(pointwise.input_shape, w, dy, backend="cpu")
    expected = reference.conv2d_input(pointwise.input_shape, w.astype(np.float64), dy.astype(np.float64),
                                      **_ref_kwargs(pointwise))
    assert_matches(dx, expected, np.float32, 27, "1x1 input gradient by auto")


@pytest.mark.parametrize("two_taps", [True, False])
@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("config", [name for name in CONFIGS if name.startswith("kblock_")])
def test_cpu_kblock_weight_gradient_both_tap_passes(config, dtype_, two_taps, rng, monkeypatch):
    # cpu_kblock's weight gradient, four taps a pass (hosts with AVX-512) and two (AVX2
    # hosts: 16 vector registers), each on every host; R·S odd (a repeated last tap) and even.
    from convcore.kernels.conv2d import cpu_kblock

    monkeypatch.setattr(cpu_kblock, "wgrad_two_taps", lambda: two_taps)
    x, _, _, dy, geom, _ = _problem(rng, dtype_, config)
    out = np.full(geom.weight_shape, np.nan, dtype_)
    cpu_kblock.kblock_wgrad(x, dy, out, geom)
    expected = reference.conv2d_weight(x.astype(np.float64), geom.weight_shape, dy.astype(np.float64), **_ref_kwargs(geom))
    assert_matches(out, expected, dtype_, geom.N * geom.P * geom.Q, f"kblock weight gradient [{config}, two_taps={two_taps}]")


@pytest.mark.parametrize("shape,weight,padding,dilation", [
    ((9, 6, 14, 14), (16, 6, 5, 5), 0, 1),                # LeNet conv2 at 9 images: a short block of images
    ((8, 1, 32, 30), (6, 1, 5, 5), 0, 1),                 # conv1: one input channel, a short block of channels,
                                                          # dy rows of two vectors
    ((3, 5, 11, 21), (7, 5, 3, 2), (2, 0, 1, 3), (2, 3)),  # 6 taps (a short pass), uneven padding, dilation
    ((2, 3, 9, 9), (5, 3, 7, 7), 3, 1),                   # 49 taps, padded planes wider than a vector
])
def test_cpu_wgrad_simd(sixteen_lanes, rng, shape, weight, padding, dilation):
    # cpu_wgrad_simd's register tile against the float64 reference, into a poisoned dW, bit
    # for bit the same on one thread as on all; float64 is not its to compute.
    from convcore.kernels.conv2d import cpu_wgrad_simd

    geom = conv_geometry("test", shape, weight, 1, padding, dilation, 1)
    x, dy = random(rng, shape, np.float32), random(rng, geom.output_shape, np.float32)
    out = np.full(weight, np.nan, np.float32)
    assert cpu_wgrad_simd.applies(geom, np.float32)
    cpu_wgrad_simd.wgrad_simd(x, dy, out, geom.padding, geom.dilation)
    expected = reference.conv2d_weight(x.astype(np.float64), weight, dy.astype(np.float64), **_ref_kwargs(geom))
    assert_matches(out, expected, np.float32, geom.N * geom.P * geom.Q, f"wgrad simd {shape} -> {weight}")
    threads = convcore.get_num_threads()
    one = np.full(weight, np.nan, np.float32)
    try:
        convcore.set_num_threads(1)
        cpu_wgrad_simd.wgrad_simd(x, dy, one, geom.padding, geom.dilation)
    finally:
        convcore.set_num_threads(threads)
    assert one.tobytes() == out.tobytes()
    assert not cpu_wgrad_simd.applies(geom, np.float64)


@pytest.mark.parametrize("shape,weight,padding", [
    ((8, 6, 14, 14), (20, 6, 5, 5), 0),    # LeNet conv2 widened past cpu_wgrad_kvec16's 16 channels
    ((8, 1, 32, 32), (8, 1, 5, 5), 0),     # LeNet conv1's one input channel, widened past cpu_rows's 6
    ((8, 4, 24, 22), (8, 4, 5, 5), 2),     # 'same', 528 outputs a plane (auto had taken im2col + GEMM)
])
def test_cpu_wgrad_simd_routing(sixteen_lanes, rng, shape, weight, padding):
    # 5×5 weight gradients from 8 images (but those of 4-6 output channels: cpu_rows; of 12-16:
    # cpu_wgrad_kvec16) go to cpu_wgrad_simd under auto and direct; at 2
    # images, to the other kernels; in float64, not to it.
    from convcore.kernels.conv2d import cpu as cpu_kernels
    from convcore.kernels.conv2d import cpu_wgrad_simd

    x, w = random(rng, shape, np.float32), random(rng, weight, np.float32)
    dy = random(rng, convcore.conv2d(x, w, padding=padding, backend="cpu").shape, np.float32)
    geom = conv_geometry("test", shape, weight, 1, padding, 1, 1)
    assert cpu_kernels._choose("auto", geom, "bwd_weight", np.float32) == "direct"
    expected = np.empty(weight, np.float32)
    cpu_wgrad_simd.wgrad_simd(x, dy, expected, geom.padding, geom.dilation)
    for algorithm in ("auto", "direct"):
        got = convcore.conv2d_weight(x, weight, dy, padding=padding, backend="cpu", algorithm=algorithm)
        np.testing.assert_array_equal(got, expected)
    reference_all = reference.conv2d_weight(x.astype(np.float64), weight, dy.astype(np.float64), **_ref_kwargs(geom))
    assert_matches(expected, reference_all, np.float32, geom.N * geom.P * geom.Q, "wgrad simd")
    small = convcore.conv2d_weight(x[:2], weight, dy[:2], padding=padding, backend="cpu")
    small_simd = np.empty(weight, np.float32)
    cpu_wgrad_simd.wgrad_simd(x[:2], dy[:2], small_simd, geom.padding, geom.dilation)
    reference_small = reference.conv2d_weight(x[:2].astype(np.float64), weight, dy[:2].astype(np.float64),
                                              **_ref_kwargs(geom))
    assert_matches(small, reference_small, np.float32, 2 * geom.P * geom.Q, "wgrad at 2 images")
    assert small.tobytes() != small_simd.tobytes()  # another kernel's summation order
    wide = convcore.conv2d_weight(x.astype(np.float64), weight, dy.astype(np.float64), padding=padding, backend="cpu")
    assert_matches(wide, reference_all, np.float64, geom.N * geom.P * geom.Q, "wgrad float64")


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("shape,weight,padding,dilation", [
    ((3, 6, 14, 14), (16, 6, 5, 5), 0, 1),                # LeNet conv2: a block of four, a pair
    ((2, 7, 22, 19), (5, 7, 3, 3), 1, 1),                 # Hp·Wp = 504 of 512: the last passes clamped
    ((2, 9, 9, 8), (3, 9, 3, 2), (2, 0, 1, 2), (2, 3)),   # dilated taps at shifts off the alignment
    ((1, 4, 1, 1), (1, 4, 1, 1), 0, 1),                   # one pixel, one channel of dy
])
def test_cpu_kblock_scatter_input_gradient(rng, dtype_, shape, weight, padding, dilation):
    # cpu_kblock's scatter: each pass from the aligned start below its shift over whole
    # vectors into the copied dy's zero margins, channel tails of 2 and 1, into a poisoned dx.
    from convcore.kernels.conv2d import cpu_kblock

    geom = conv_geometry("test", shape, weight, 1, padding, dilation, 1)
    assert cpu_kblock._scatter_fits(geom)
    w, dy = random(rng, weight, dtype_), random(rng, geom.output_shape, dtype_)
    dx = np.full(shape, np.nan, dtype_)
    cpu_kblock.kblock_dgrad(w, dy, dx, geom)
    expected = reference.conv2d_input(shape, w.astype(np.float64), dy.astype(np.float64), stride=(1, 1),
                                      padding=geom.padding, dilation=geom.dilation, groups=1)
    assert_matches(dx, expected, dtype_, weight[0] * weight[2] * weight[3], f"kblock scatter {shape} <- {weight}")
