"""The cpu ``phase`` forward and weight-gradient kernels (cpu_phase), called through the launcher, and the
public API's handling of the name (a cpu variant, as cuda's 'gemm_64x64': accepted on its backend only)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, random, reference_weight_gradient, to_numpy

from convcore import reference
from convcore.conv import conv_geometry

# Odd planes, strides 1-3, padding 0-3 (asymmetric too), dilation, N = 1 and 3, K and
# C·R·S not multiples of the 4 × 4 tile, planes narrower than the kernel's reach.
PHASE_CONFIGS = {
    "stem_odd": ((3, 3, 17, 15), (10, 3, 7, 7), {"stride": 2, "padding": 3}),
    "stem_b1_pad0": ((1, 3, 13, 11), (7, 3, 7, 7), {"stride": 2, "padding": 0}),
    "stride3_pad1": ((3, 2, 14, 13), (5, 2, 5, 4), {"stride": 3, "padding": 1}),
    "stride_2x3_pad_4tuple": ((1, 3, 12, 17), (9, 3, 3, 5), {"stride": (2, 3), "padding": (0, 2, 3, 1)}),
    "dilated_stride2": ((3, 1, 15, 16), (6, 1, 3, 3), {"stride": 2, "dilation": 2, "padding": 2}),
    "stride1": ((1, 4, 9, 7), (3, 4, 3, 3), {"padding": 1}),
    "one_output_pixel": ((3, 3, 5, 5), (5, 3, 7, 7), {"stride": 2, "padding": 1}),
    # 50 × 46 outputs on rows of 49: 2447 flat outputs, more than one chunk (_CHUNK) of
    # the narrow weight-gradient tile, the last one partial.
    "chunked_rows": ((2, 3, 100, 92), (6, 3, 7, 7), {"stride": 2, "padding": 3}),
}


def _geom(config):
    input_shape, weight_shape, kwargs = PHASE_CONFIGS[config]
    return conv_geometry("test", input_shape, weight_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                         kwargs.get("dilation", 1), kwargs.get("groups", 1))


def _phase(op, geom, *arrays, activation=None):
    from convcore._arrays import io_for
    from convcore._backend import lookup

    io = io_for("cpu", *arrays)
    out = io.empty(geom.output_shape if op == "conv2d" else geom.weight_shape, arrays[0].dtype)  # NaN-poisoned
    args = [None if a is None else io.to_backend(a) for a in arrays]
    if op == "conv2d":
        lookup(op, "cpu")(*args, out, geom, "phase", activation)
    else:
        lookup(op, "cpu")(*args, out, geom, "phase")
    return to_numpy(out)


@pytest.mark.parametrize("config", PHASE_CONFIGS)
def test_phase_forward(dtype, config, rng):
    from convcore.kernels.conv2d import cpu as cpu_kernels

    geom = _geom(config)
    assert "phase" in cpu_kernels.candidates("fwd", geom)
    assert "phase" not in cpu_kernels.candidates("bwd_data", geom)
    x, w, b = (random(rng, shape, dtype) for shape in (geom.input_shape, geom.weight_shape, (geom.K,)))
    kwargs = dict(stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=1)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, out_hw=(geom.P, geom.Q), **kwargs)
    first = _phase("conv2d", geom, x, w, None)
    assert_matches(first, expected, dtype, geom.C * geom.R * geom.S, f"phase[{config}]")
    assert _phase("conv2d", geom, x, w, None).tobytes() == first.tobytes()  # deterministic
    fused = _phase("conv2d", geom, x, w, b, activation="relu")  # the launcher's bias + ReLU epilogue
    assert_matches(fused, np.maximum(expected + b.astype(np.float64)[:, None, None], 0), dtype,
                   geom.C * geom.R * geom.S + 1, f"phase+bias+relu[{config}]")


@pytest.mark.parametrize("narrow", [False, True], ids=["tile4x4", "tile4x3_chunked"])
@pytest.mark.parametrize("config", PHASE_CONFIGS)
def test_phase_weight_gradient(dtype, config, narrow, rng, monkeypatch):
    """Both register tiles on every host: 4 × 4 (AVX-512) and the chunked 4 × 3 (AVX2)."""
    from convcore.kernels.conv2d import cpu as cpu_kernels
    from convcore.kernels.conv2d import cpu_phase

    monkeypatch.setattr(cpu_phase, "wgrad_narrow", lambda: narrow)
    geom = _geom(config)
    assert "phase" in cpu_kernels.candidates("bwd_weight", geom)
    x = random(rng, geom.input_shape, dtype)
    dy = random(rng, geom.output_shape, dtype)
    expected = reference_weight_gradient(x, dy, geom)
    first = _phase("conv2d_weight", geom, x, dy)
    assert_matches(first, expected, dtype, geom.N * geom.P * geom.Q, f"phase[{config}]")
    assert _phase("conv2d_weight", geom, x, dy).tobytes() == first.tobytes()  # deterministic


def test_phase_is_auto_only_for_stem_like_weight_gradients():
    from convcore.kernels.conv2d import cpu as cpu_kernels

    stem = conv_geometry("test", (8, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1)
    assert cpu_kernels._choose("auto", stem, "bwd_weight") == "phase"
    assert cpu_kernels._choose("auto", stem, "fwd", np.float64) == "gemm"  # float32: cpu_kvec (test_conv2d_kvec)
    assert cpu_kernels._choose("auto", stem, "bwd_data") != "phase"
    dense = conv_geometry("test", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)
    downsample = conv_geometry("test", (8, 256, 56, 56), (512, 256, 1, 1), 2, 0, 1, 1)
    grouped = conv_geometry("test", (2, 4, 16, 16), (8, 2, 7, 7), 2, 3, 1, 2)
    for geom in (dense, downsample):
        for direction in ("fwd", "bwd_weight"):
            assert cpu_kernels._choose("auto", geom, direction) != "phase"
    assert "phase" not in cpu_kernels.candidates("bwd_weight", grouped)
    assert "phase" not in cpu_kernels.candidates("fwd", grouped)


def test_phase_through_the_public_api(rng):
    """The public conv functions accept the backend's variant names (as tune records them) and
    refuse them, before any kernel runs, where they do not apply."""
    import convcore

    input_shape, weight_shape, kwargs = PHASE_CONFIGS["stem_odd"]
    geom = _geom("stem_odd")
    x, w = random(rng, input_shape, np.float32), random(rng, weight_shape, np.float32)
    dy = random(rng, geom.output_shape, np.float32)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    ref_kwargs = dict(stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=1)
    assert_matches(convcore.conv2d(x, w, backend="cpu", algorithm="phase", **kwargs),
                   reference.conv2d(x64, w64, None, out_hw=(geom.P, geom.Q), **ref_kwargs), np.float32, 147, "phase")
    assert_matches(convcore.conv2d_weight(x, w.shape, dy, backend="cpu", algorithm="phase", **kwargs),
                   reference.conv2d_weight(x64, w.shape, dy64, **ref_kwargs), np.float32,
                   geom.N * geom.P * geom.Q, "phase wgrad")
    with pytest.raises(ValueError, match=r"algorithm='phase' does not apply to the bwd_data"):
        convcore.conv2d_input(x.shape, w, dy, backend="cpu", algorithm="phase", **kwargs)
    with pytest.raises(ValueError, match=r"algorithm='phase' does not apply to the fwd .* groups=2"):
        convcore.conv2d(random(rng, (1, 4, 9, 9), np.float32), random(rng, (4, 2, 3, 3), np.float32), groups=2,
                        backend="cpu", algorithm="phase")
    with pytest.raises(ValueError, match=r"algorithm must be one of .* or a cpu variant \('phase',\), got 'gemm_64x64'"):
        convcore.conv2d(x, w, backend="cpu", algorithm="gemm_64x64", **kwargs)
    with pytest.raises(ValueError, match=r"algorithm must be one of \('auto'.*\), got 'phase'"):
        convcore.conv2d(x, w, backend="numpy", algorithm="phase", **kwargs)


@pytest.mark.parametrize("config", ["stem_odd", "chunked_rows", "stride_2x3_pad_4tuple", "one_output_pixel"])
def test_phase_weight_gradient_reads_dy_in_place(config, rng, monkeypatch, sixteen_lanes):
    """float32 where convcore's 16-lane kernels run (forced on here, so on every host): the
    row-by-row SIMD tile (_wgrad_rows, dy read where it lies: full 16-column vectors and a
    masked tail, padding channels past K) runs instead of the flat tile over a widened copy,
    matches it and the reference, does not depend on the thread count, and takes a
    non-contiguous dy."""
    from convcore.kernels.conv2d import cpu_phase
    from helpers import assert_same_at_any_thread_count

    monkeypatch.setattr(cpu_phase, "wgrad_narrow", lambda: False)  # the 4 × 4 tiles (AVX-512's), on any host
    assert cpu_phase.wgrad_rows()
    geom = _geom(config)
    x = random(rng, geom.input_shape, np.float32)
    dy = random(rng, geom.output_shape, np.float32)
    expected = reference_weight_gradient(x, dy, geom)
    calls = []
    compiled = cpu_phase._compiled_rows

    def counting():
        calls.append(1)
        return compiled()

    monkeypatch.setattr(cpu_phase, "_compiled_rows", counting)
    rows = _phase("conv2d_weight", geom, x, dy)
    assert len(calls) == 1
    assert_matches(rows, expected, np.float32, geom.N * geom.P * geom.Q, f"rows[{config}]")
    strided = np.zeros(dy.shape[:3] + (2 * dy.shape[3],), np.float32)
    strided[..., ::2] = dy
    assert _phase("conv2d_weight", geom, x, strided[..., ::2]).tobytes() == rows.tobytes()
    assert_same_at_any_thread_count(lambda: _phase("conv2d_weight", geom, x, dy))
    taken = len(calls)
    assert taken >= 3  # the strided and thread-count calls took the rows tile too
    monkeypatch.setattr(cpu_phase, "wgrad_rows", lambda: False)
    flat = _phase("conv2d_weight", geom, x, dy)
    assert len(calls) == taken  # this one did not
    assert_matches(rows, flat.astype(np.float64), np.float32, geom.N * geom.P * geom.Q, f"rows vs flat[{config}]")
