"""Winograd F(2×2, 3×3) / F(4×4, 3×3) on the cpu backend: what test_conv2d's sweep over
CONFIGS does not cover (fused epilogue, strided inputs, accuracy at depth, the choice of
tile and algorithm, the refusals)."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels import host, workspace
from convcore.kernels.conv2d import cpu
from helpers import assert_matches, random, to_numpy

import convcore
from convcore import reference
from convcore.conv import conv_geometry

WINOGRAD = ["winograd", "winograd_f2", "winograd_f4"]


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_fused_bias_relu(algorithm, dtype, rng):
    # An odd plane (edge tiles) with groups and asymmetric padding; N=3.
    x = random(rng, (3, 4, 7, 10), dtype)
    w = random(rng, (6, 2, 3, 3), dtype)
    b = random(rng, (6,), dtype)
    kwargs = dict(padding=(2, 0, 0, 1), groups=2)
    geom = conv_geometry("test", x.shape, w.shape, 1, kwargs["padding"], 1, 2)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                out_hw=(geom.P, geom.Q), stride=(1, 1), padding=geom.padding, dilation=(1, 1), groups=2)
    out = convcore.conv2d(x, w, b, backend="cpu", algorithm=algorithm, activation="relu", **kwargs)
    assert_matches(out, np.maximum(expected, 0.0), dtype, 18, f"relu[{algorithm}]")
    assert (to_numpy(out) >= 0).all() and (expected < 0).any()


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_images_in_chunks(algorithm, dtype, rng, monkeypatch):
    # The three steps run on G images at a time (cache-sized chunks): at one image per
    # chunk, an odd batch, edge tiles and a fused bias + ReLU, forward and input gradient.
    from convcore.kernels.conv2d import cpu_winograd
    monkeypatch.setattr(workspace, "CHUNK_BYTES", 1)
    monkeypatch.setattr(cpu_winograd, "_MIN_TILES", 1)
    assert cpu_winograd._chunk_images(3, 5, 6, 12, 36, 4) == 1
    x, w, b = random(rng, (3, 5, 9, 7), dtype), random(rng, (6, 5, 3, 3), dtype), random(rng, (6,), dtype)
    geom = conv_geometry("test", x.shape, w.shape, 1, 1, 1, 1)
    args = dict(out_hw=(geom.P, geom.Q), stride=(1, 1), padding=geom.padding, dilation=(1, 1), groups=1)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    expected = np.maximum(reference.conv2d(x64, w64, b.astype(np.float64), **args), 0.0)
    out = convcore.conv2d(x, w, b, padding=1, backend="cpu", algorithm=algorithm, activation="relu")
    assert_matches(out, expected, dtype, 18, f"chunked forward [{algorithm}]")
    dy = random(rng, expected.shape, dtype)
    dx = convcore.conv2d_input(x.shape, w, dy, padding=1, backend="cpu", algorithm=algorithm)
    del args["out_hw"]
    assert_matches(dx, reference.conv2d_input(x.shape, w64, dy.astype(np.float64), **args), dtype, 18,
                   f"chunked input gradient [{algorithm}]")


@pytest.mark.parametrize("kernel", ["gather", "rows"])
@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_both_kinds_of_transform(algorithm, kernel, dtype, rng, monkeypatch):
    # Small planes gather their patches (and scatter the output tiles) in blocks of images
    # (here 2 per block, the last block short), wide planes go row by row: each kind on
    # planes of both sizes, odd sizes and asymmetric padding (the input gradient's is 2 − p:
    # cropping at p = 3), forward, input gradient and weight gradient.
    from convcore.kernels.conv2d import cpu_winograd, cpu_winograd_wgrad
    monkeypatch.setattr(cpu_winograd, "_GATHER_TW", 1 << 30 if kernel == "gather" else 0)
    monkeypatch.setattr(cpu_winograd, "_GATHER_TW_INPUT", 1 << 30 if kernel == "gather" else 0)
    monkeypatch.setattr(cpu_winograd, "_TILE_RUN", 30)
    calls = []
    for module, names in ((cpu_winograd, ("_input_transform_gather", "_input_transform", "_output_transform_scatter",
                                          "_output_transform")),
                          (cpu_winograd_wgrad, ("_grad_output_transform_gather", "_grad_output_transform"))):
        for name in names:
            original = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    for hw, padding in (((11, 13), (1, 0, 2, 1)), ((7, 6), (3, 3, 0, 2)), ((35, 37), (1, 1, 1, 1))):
        x, w = random(rng, (5, 3) + hw, dtype), random(rng, (4, 3, 3, 3), dtype)
        args = dict(stride=(1, 1), padding=padding, dilation=(1, 1), groups=1)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        out_hw = conv_geometry("t", x.shape, w.shape, 1, padding, 1, 1).output_shape[2:]
        expected = reference.conv2d(x64, w64, None, out_hw=out_hw, **args)
        out = convcore.conv2d(x, w, padding=padding, backend="cpu", algorithm=algorithm)
        assert_matches(out, expected, dtype, 27, f"forward [{algorithm}, {kernel}, {hw}, {padding}]")
        dy = random(rng, expected.shape, dtype)
        dx = convcore.conv2d_input(x.shape, w, dy, padding=padding, backend="cpu", algorithm=algorithm)
        assert_matches(dx, reference.conv2d_input(x.shape, w64, dy.astype(np.float64), **args), dtype, 36,
                       f"input gradient [{algorithm}, {kernel}, {hw}, {padding}]")
        dw = convcore.conv2d_weight(x, w.shape, dy, padding=padding, backend="cpu", algorithm=algorithm)
        assert_matches(dw, reference.conv2d_weight(x64, w.shape, dy.astype(np.float64), **args), dtype,
                       5 * hw[0] * hw[1], f"weight gradient [{algorithm}, {kernel}, {hw}, {padding}]")
    small = {"_input_transform_gather", "_output_transform_scatter", "_grad_output_transform_gather"}
    assert set(calls) == (small if kernel == "gather" else {"_input_transform", "_output_transform", "_grad_output_transform"})


def test_input_transform_goes_row_by_row_from_12_tile_columns(rng, monkeypatch):
    # The input transform switches to the row-by-row kernel at 12 tile columns
    # (_GATHER_TW_INPUT), the output transform at 16 (_GATHER_TW): F(2×2) on a 25² plane
    # (13 tile columns) gathers nothing on the way in and still scatters on the way out;
    # on a 21² plane (11 columns) both gather.
    from convcore.kernels.conv2d import cpu_winograd
    calls = []
    for name in ("_input_transform_gather", "_input_transform", "_output_transform_scatter", "_output_transform"):
        original = getattr(cpu_winograd, name)
        monkeypatch.setattr(cpu_winograd, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    for size, expected_calls in ((25, ["_input_transform", "_output_transform_scatter"]),
                                 (21, ["_input_transform_gather", "_output_transform_scatter"])):
        calls.clear()
        x, w = random(rng, (2, 3, size, size), np.float32), random(rng, (4, 3, 3, 3), np.float32)
        out = convcore.conv2d(x, w, padding=1, backend="cpu", algorithm="winograd_f2")
        assert calls == expected_calls
        expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, stride=(1, 1),
                                    padding=(1, 1, 1, 1), dilation=(1, 1), groups=1, out_hw=(size, size))
        assert_matches(out, expected, np.float32, 27, f"winograd_f2 {size}²")


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_weight_transform_in_blocks(algorithm, dtype, rng, monkeypatch):
    # A large per-call weight transform runs a block of output channels at a time between
    # the products (here 12 rows per block, the last one short), for the forward and for
    # the input gradient (whose transform reads W rotated with K <-> C in place).
    from convcore.kernels.conv2d import cpu_winograd
    monkeypatch.setattr(cpu_winograd, "_PIPELINE_BYTES", 0)
    monkeypatch.setattr(cpu_winograd, "_PIPELINE_BLOCK", 1)
    blocks = []
    original = cpu_winograd._run_weight_transform
    monkeypatch.setattr(cpu_winograd, "_run_weight_transform",
                        lambda w, G, U, k0, flip: blocks.append((U.shape[1], k0, flip)) or original(w, G, U, k0, flip))
    x, w = random(rng, (2, 29, 8, 9), dtype), random(rng, (31, 29, 3, 3), dtype)
    args = dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    expected = reference.conv2d(x64, w64, None, out_hw=(8, 9), **args)
    out = convcore.conv2d(x, w, padding=1, backend="cpu", algorithm=algorithm)
    assert_matches(out, expected, dtype, 29 * 9, f"forward, weight transform in blocks [{algorithm}]")
    assert blocks == [(12, 0, False), (12, 12, False), (7, 24, False)]
    blocks.clear()
    dy = random(rng, expected.shape, dtype)
    dx = convcore.conv2d_input(x.shape, w, dy, padding=1, backend="cpu", algorithm=algorithm)
    assert_matches(dx, reference.conv2d_input(x.shape, w64, dy.astype(np.float64), **args), dtype, 31 * 9,
                   f"input gradient, weight transform in blocks [{algorithm}]")
    assert blocks == [(12, 0, True), (12, 12, True), (5, 24, True)]


@pytest.mark.parametrize("product,dtype_", [("nt", np.float32), ("goto", np.float32), ("goto", np.float64)])
@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_weight_gradient_in_chunks(algorithm, product, dtype_, rng, monkeypatch):
    # The weight gradient one image at a time, dU summed over the chunks: by the nt kernel
    # (float32; accumulating into dU) or the Goto GEMM / BLAS (a partial product added).
    from convcore.kernels.conv2d import cpu_winograd, cpu_winograd_wgrad
    monkeypatch.setattr(workspace, "CHUNK_BYTES", 1)
    monkeypatch.setattr(cpu_winograd, "_MIN_TILES", 1)
    monkeypatch.setattr(cpu_winograd_wgrad, "_NT_MIN_TILES", 1 if product == "nt" else 1 << 30)
    monkeypatch.setattr(cpu_winograd_wgrad, "_NT_MAX_ROWS", 1 << 30 if product == "nt" else 0)
    if product == "goto":
        def refuse(*args, **kwargs):
            raise AssertionError("the Goto path must not call gemm.nt")
        monkeypatch.setattr(cpu_winograd_wgrad, "sgemm_nt", refuse)
    x, dy = random(rng, (3, 5, 9, 7), dtype_), random(rng, (3, 6, 9, 7), dtype_)
    expected = reference.conv2d_weight(x.astype(np.float64), (6, 5, 3, 3), dy.astype(np.float64), stride=(1, 1),
                                       padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    dw = convcore.conv2d_weight(x, (6, 5, 3, 3), dy, padding=1, backend="cpu", algorithm=algorithm)
    assert_matches(dw, expected, dtype_, 3 * 9 * 7, f"chunked weight gradient [{algorithm}, {product}]")


def test_relu_keeps_nan(rng):
    x = random(rng, (1, 2, 6, 6), np.float64)
    x[0, 0, 2, 3] = np.nan
    out = convcore.conv2d(x, random(rng, (3, 2, 3, 3), np.float64), backend="cpu", algorithm="winograd_f4",
                          padding=1, activation="relu")
    assert np.isnan(out[:, :, 2, 3]).all()  # every output that reads the NaN stays NaN


@pytest.mark.parametrize("layout", ["slice", "transpose"])
def test_non_contiguous_inputs(layout, rng):
    base = random(rng, (2, 3, 11, 9), np.float64)
    x = base[:, :, 1:10:2, ::2] if layout == "slice" else base.transpose(0, 1, 3, 2)
    w = random(rng, (4, 3, 3, 3), np.float64)
    assert not x.flags.c_contiguous
    for algorithm in WINOGRAD:
        out = convcore.conv2d(x, w, padding=1, backend="cpu", algorithm=algorithm)
        np.testing.assert_allclose(out, convcore.conv2d(np.ascontiguousarray(x), w, padding=1, backend="cpu",
                                                        algorithm="direct"), rtol=0, atol=1e-13)
        dy = out.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)  # non-contiguous grad_output
        np.testing.assert_allclose(
            convcore.conv2d_input(x.shape, w, dy, padding=1, backend="cpu", algorithm=algorithm),
            convcore.conv2d_input(x.shape, w, np.ascontiguousarray(dy), padding=1, backend="cpu", algorithm="direct"),
            rtol=0, atol=1e-13)


def test_is_deterministic(rng):
    x = random(rng, (2, 16, 10, 10), np.float32)
    w = random(rng, (16, 16, 3, 3), np.float32)
    for algorithm in ("winograd_f2", "winograd_f4"):
        runs = [to_numpy(convcore.conv2d(x, w, padding=1, backend="cpu", algorithm=algorithm)) for _ in range(2)]
        assert runs[0].tobytes() == runs[1].tobytes()


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_float32_error_at_depth(algorithm, rng):
    """A deep reduction (C = 128, 1152 terms) in float32. F(4×4) rounds in transforms with
    entries up to 8 (Aᵀ) and 5 (Bᵀ), so its error is about 15× gemm's (relative to the output
    scale, 5 seeds: gemm 2.7e-7, F(2×2) 4.6e-7, F(4×4) 3.9e-6; ResNet 3×3 layers C = K =
    64…512: F(4×4) 6e-6…1.3e-5), still 50-100× inside the shared tolerance (here 6.8e-4),
    so no looser tolerance is needed."""
    x = random(rng, (1, 128, 12, 12), np.float32)
    w = random(rng, (8, 128, 3, 3), np.float32)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, out_hw=(12, 12),
                                stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    out = convcore.conv2d(x, w, padding=1, backend="cpu", algorithm=algorithm)
    assert_matches(out, expected, np.float32, 128 * 9, algorithm)


def test_candidates():
    # Winograd's names only (test_conv2d_phase checks where 'phase' is listed).
    def names(direction, geom):
        return [n for n in cpu.candidates(direction, geom) if n != "phase"]

    geom = conv_geometry("test", (2, 8, 9, 9), (16, 8, 3, 3), 1, 1, 1, 1)
    for direction in ("fwd", "bwd_data", "bwd_weight"):
        assert names(direction, geom) == ["direct", "gemm", "winograd_f2", "winograd_f4"]
    for stride, dilation, kernel, groups in [(2, 1, 3, 1), (1, 2, 3, 1), (1, 1, 5, 1), (1, 1, 3, 8)]:
        other = conv_geometry("test", (2, 8, 9, 9), (16, 8 // groups, kernel, kernel), stride, 1, dilation, groups)
        assert names("fwd", other) == ["direct", "gemm"]
    with pytest.raises(ValueError, match="direction must be"):
        cpu.candidates("forward", geom)


def test_tile_choice(sixteen_lanes, monkeypatch):
    # (N, channels, plane, 'winograd' picks, 'auto' picks) by the cost model
    # α²·(tiles + 16)·(C + 64)/C vs 9·N·P·Q·(9C + 64)/9C (auto: Winograd only when 20%
    # cheaper; the channel factors charge a GEMM's shallow reductions): F(4×4) from 7×7 up
    # (14×14 at N = 2 too), F(2×2) for 6×6 planes (4 tiles of F(4×4) per plane against 9);
    # tiny problems the direct kernel (float32; float64 gemm). On a host without a tile
    # overhead of its own (_TILE_OVERHEAD_BY_HOST).
    monkeypatch.setattr(host, "cpu_name", lambda: "skylake-avx512")
    for n, channels, size, tile, auto in [(8, 64, 56, "winograd_f4", "winograd_f4"),
                                          (8, 64, 28, "winograd_f4", "winograd_f4"),
                                          (8, 256, 14, "winograd_f4", "winograd_f4"),
                                          (8, 64, 14, "winograd_f4", "winograd_f4"),
                                          (8, 512, 7, "winograd_f4", "winograd_f4"),
                                          (2, 256, 14, "winograd_f4", "winograd_f4"),
                                          (8, 256, 6, "winograd_f2", "winograd_f2"), (1, 64, 2, "winograd_f2", "direct")]:
        geom = conv_geometry("test", (n, channels, size, size), (channels, channels, 3, 3), 1, 1, 1, 1)
        assert cpu._choose("winograd", geom) == tile
        assert cpu._choose("auto", geom) == auto, (n, channels, size)
        assert cpu._choose("auto", geom, "bwd_data") == auto
    # Reductions over at most 40 channels, or Winograd GEMMs under 450 k multiply-adds,
    # take the register-tiled direct kernel in float32 (forward over C, input gradient over
    # K), not in float64.
    odd = conv_geometry("test", (8, 35, 19, 19), (50, 35, 3, 3), 1, 1, 1, 1)
    assert cpu._choose("auto", odd, dtype=np.float32) == "direct"
    assert cpu._choose("auto", odd, dtype=np.float64) != "direct"
    assert cpu._choose("auto", odd, "bwd_data", np.float32) == "direct"  # 35·50·200 multiply-adds per GEMM
    wider = conv_geometry("test", (8, 64, 14, 14), (64, 64, 3, 3), 1, 1, 1, 1)  # 64·64·128
    assert cpu._choose("auto", wider, "bwd_data", np.float32) == "winograd_f4"
    few = conv_geometry("test", (8, 32, 28, 28), (32, 32, 3, 3), 1, 1, 1, 1)
    assert cpu._choose("auto", few, dtype=np.float32) == cpu._choose("auto", few, "bwd_data", np.float32) == "direct"
    assert cpu._choose("auto", few, dtype=np.float64) == "winograd_f4"
    tiny = conv_geometry("test", (1, 64, 2, 2), (64, 64, 3, 3), 1, 1, 1, 1)
    assert cpu._choose("auto", tiny, dtype=np.float64) == "gemm"
    few_channels = conv_geometry("test", (8, 8, 28, 28), (8, 8, 3, 3), 1, 1, 1, 1)
    assert cpu._choose("auto", few_channels, dtype=np.float64) == "gemm"


def test_tile_choice_on_hosts_with_their_own_tile_overhead(sixteen_lanes, monkeypatch):
    # AMD Zen 4 charges Winograd 32 extra tiles, not 16: 2×256×14² (98 F(2×2) tiles, 32 of
    # F(4×4)) turns to F(2×2), forward and input gradient, while 8×512×7² and 8×256×14² keep
    # F(4×4).
    monkeypatch.setattr(host, "cpu_name", lambda: "znver4")
    for n, channels, size, tile in [(2, 256, 14, "winograd_f2"), (8, 512, 7, "winograd_f4"), (8, 256, 14, "winograd_f4")]:
        geom = conv_geometry("test", (n, channels, size, size), (channels, channels, 3, 3), 1, 1, 1, 1)
        assert cpu._choose("winograd", geom) == tile
        assert cpu._choose("auto", geom) == cpu._choose("auto", geom, "bwd_data") == tile, (n, channels, size)


def test_tile_choice_without_the_16_lane_kernels(monkeypatch):
    # Where they are off (no AVX-512, or CONVCORE_CPU_GEMM=blas) the register-tiled direct
    # forward does not run: tiny and shallow float32 layers go to im2col + BLAS instead,
    # Winograd's choices stay.
    from convcore.kernels.gemm import cpu as gemm

    monkeypatch.setenv("CONVCORE_CPU_GEMM", "blas")
    gemm.enabled.cache_clear()
    try:
        tiny = conv_geometry("test", (1, 64, 2, 2), (64, 64, 3, 3), 1, 1, 1, 1)
        assert cpu._choose("auto", tiny, dtype=np.float32) == cpu._choose("auto", tiny) == "gemm"
        few = conv_geometry("test", (8, 32, 28, 28), (32, 32, 3, 3), 1, 1, 1, 1)
        assert cpu._choose("auto", few, dtype=np.float32) == "winograd_f4"
        big = conv_geometry("test", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)
        assert cpu._choose("auto", big, dtype=np.float32) == "winograd_f4"
    finally:
        gemm.enabled.cache_clear()


def test_no_winograd_margin_where_its_products_run_the_narrow_tile(monkeypatch):
    # Without AVX-512, auto: Winograd's products run convcore's narrow tile, im2col's
    # OpenBLAS, so auto takes Winograd wherever the model puts it below im2col + GEMM; with
    # both on BLAS (CONVCORE_CPU_GEMM=blas) the 20% margin holds. 2×35×19² → 50: F(4×4) at
    # 0.86 of im2col's modelled cost.
    from convcore.kernels import host
    from convcore.kernels.gemm import cpu as gemm

    monkeypatch.setattr(host, "cpu_name", lambda: "znver1")  # an AVX2 host: no tile overhead of its own
    layer = conv_geometry("test", (2, 35, 19, 19), (50, 35, 3, 3), 1, 1, 1, 1)
    costs = cpu._winograd_costs(layer)
    assert 0.8 < costs["winograd_f4"] / cpu._gemm_cost(layer) < 1.0
    monkeypatch.setattr(host, "avx512", lambda: False)
    try:
        for value, margin, expected in (("auto", 1.0, "winograd_f4"), ("blas", 0.8, "gemm")):
            monkeypatch.setenv("CONVCORE_CPU_GEMM", value)
            gemm.enabled.cache_clear()
            assert cpu._winograd_margin() == margin
            assert cpu._choose("auto", layer, dtype=np.float32) == expected
    finally:
        gemm.enabled.cache_clear()


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_refusals_name_the_geometry(kernel_backend, algorithm):
    x = np.ones((1, 4, 8, 8), np.float32)
    w = np.ones((6, 4, 3, 3), np.float32)
    dy = np.ones((1, 6, 8, 8), np.float32)
    with pytest.raises(ValueError, match=rf"algorithm='{algorithm}' needs a 3x3 kernel.*got kernel 3x3, stride \(2, 2\)"):
        convcore.conv2d(x, w, stride=2, padding=1, backend=kernel_backend, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"needs a 3x3 kernel.*dilation \(2, 2\)"):
        convcore.conv2d_input(x.shape, w, np.ones((1, 6, 4, 4), np.float32), dilation=2, backend=kernel_backend,
                              algorithm=algorithm)
    with pytest.raises(ValueError, match=r"needs a 3x3 kernel.*got kernel 1x3"):
        convcore.conv2d(x, np.ones((6, 4, 1, 3), np.float32), backend=kernel_backend, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"conv2d_weight: .*needs a 3x3 kernel.*stride \(2, 2\)"):
        convcore.conv2d_weight(x, w.shape, np.ones((1, 6, 4, 4), np.float32), stride=2, padding=1,
                               backend=kernel_backend, algorithm=algorithm)
    if kernel_backend == "cuda":
        with pytest.raises(ValueError, match=rf"algorithm='{algorithm}' is cpu-only"):
            convcore.conv2d(x, w, padding=1, backend="cuda", algorithm=algorithm)
        with pytest.raises(ValueError, match="is cpu-only"):
            convcore.conv2d_input(x.shape, w, dy, padding=1, backend="cuda", algorithm=algorithm)


def test_numpy_backend_checks_then_ignores(rng):
    x, w = random(rng, (1, 2, 5, 5), np.float64), random(rng, (3, 2, 3, 3), np.float64)
    np.testing.assert_allclose(convcore.conv2d(x, w, backend="numpy", algorithm="winograd_f4"),
                               convcore.conv2d(x, w, backend="numpy"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        convcore.conv2d(x, w, stride=2, backend="numpy", algorithm="winograd")


def test_refusals_come_before_any_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was dispatched for bad input")

    monkeypatch.setattr("convcore.conv.lookup", refuse)
    x = np.ones((1, 4, 8, 8), np.float32)
    w = np.ones((6, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        convcore.conv2d(x, w, stride=2, backend="cpu", algorithm="winograd")
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        convcore.conv2d_input(x.shape, w, np.ones((1, 6, 4, 4), np.float32), dilation=2, backend="cpu",
                              algorithm="winograd_f2")
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        convcore.conv2d_weight(x, (6, 4, 1, 3), np.ones((1, 6, 8, 6), np.float32), backend="cpu", algorithm="winograd_f4")


def test_weight_gradient_tile_choice(monkeypatch):
    """auto takes the Winograd weight gradient for 16+ channels where the cost model
    α²·(tiles + 80) puts it under 9·N·P·Q (measured on 2 cores: see cpu._WGRAD_TILE_OVERHEAD),
    on hosts where cpu_kblock runs four taps a pass (AVX2 ones: the next test)."""
    monkeypatch.setattr(cpu, "wgrad_two_taps", lambda: False)
    for n, channels, size, auto in [(8, 64, 56, "winograd_f4"), (8, 128, 28, "winograd_f4"),
                                    (8, 256, 14, "winograd_f4"), (2, 256, 14, "winograd_f2"), (8, 512, 7, "winograd_f2"),
                                    (8, 32, 28, "winograd_f4"), (2, 35, 19, "winograd_f2"), (8, 8, 28, None)]:
        geom = conv_geometry("test", (n, channels, size, size), (channels, channels, 3, 3), 1, 1, 1, 1)
        chosen = cpu._choose("auto", geom, "bwd_weight")
        if auto is None:  # under 16 channels: never Winograd (the cpu_kblock kernels or gemm)
            assert chosen not in cpu.WINOGRAD, (n, channels, size, chosen)
        else:
            assert chosen == auto, (n, channels, size)


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_weight_gradient_float32_at_depth(algorithm, rng):
    """The weight gradient reduces over every tile of the batch (here 3·12·12 = 432 outputs
    per weight), with the transforms' roundings on both operands."""
    x = random(rng, (3, 64, 12, 12), np.float32)
    dy = random(rng, (3, 8, 12, 12), np.float32)
    expected = reference.conv2d_weight(x.astype(np.float64), (8, 64, 3, 3), dy.astype(np.float64),
                                       stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    out = convcore.conv2d_weight(x, (8, 64, 3, 3), dy, padding=1, backend="cpu", algorithm=algorithm)
    assert_matches(out, expected, np.float32, 3 * 12 * 12, algorithm)


def test_weight_gradient_is_deterministic(rng):
    x = random(rng, (2, 16, 10, 9), np.float32)
    dy = random(rng, (2, 8, 10, 9), np.float32)
    for algorithm in ("winograd_f2", "winograd_f4"):
        runs = [to_numpy(convcore.conv2d_weight(x, (8, 16, 3, 3), dy, padding=1, backend="cpu", algorithm=algorithm))
                for _ in range(2)]
        assert runs[0].tobytes() == runs[1].tobytes()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shape", [(16, 32), (31, 29), (5, 48), (33, 16)])
def test_float32_weight_transform_matches_the_generic_one(sixteen_lanes, shape, flip, rng):
    # The float32 kernel transposes the taps in 16×16 register blocks (the last Cg % 16
    # channels, and a block that would read past the end of w, element by element): the
    # same arithmetic as the generic kernel, so the same bits, forward and flipped.
    from convcore.kernels.conv2d import cpu_winograd

    w = random(rng, shape + (3, 3), np.float32)
    rows, cg = (shape[1], shape[0]) if flip else shape
    for m in (2, 4):
        G = cpu_winograd._G[m].astype(np.float32)
        fast = np.full(((m + 2) ** 2, rows - 1, cg), np.nan, np.float32)
        slow = np.full_like(fast, np.nan)
        cpu_winograd._weight_transform_f32(w, G, fast, 1, flip)
        cpu_winograd._weight_transform(w, G, slow, 1, flip)
        np.testing.assert_array_equal(fast, slow)
        assert not np.isnan(fast).any()


def test_weight_gradient_choice_at_batch_1_and_2(monkeypatch):
    # The small layers' weight gradient: cpu_kblock's direct kernel at batch 1-2 on hosts
    # where it runs two taps a pass (AVX2), Winograd elsewhere and from batch 3 on.
    for two_taps in (True, False):
        monkeypatch.setattr(cpu, "wgrad_two_taps", lambda v=two_taps: v)
        for n in (1, 2, 3, 8):
            odd = conv_geometry("test", (n, 35, 19, 19), (50, 35, 3, 3), 1, 0, 1, 1)
            chosen = cpu._choose("auto", odd, "bwd_weight")
            assert (chosen == "direct") is (two_taps and n <= 2), (two_taps, n, chosen)
            assert chosen in ("direct",) + cpu.WINOGRAD
    big = conv_geometry("test", (2, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1)  # not a small layer
    monkeypatch.setattr(cpu, "wgrad_two_taps", lambda: True)
    assert cpu._choose("auto", big, "bwd_weight") != "direct"
