"""The cpu input gradient of dense stride-1 layers with 4-6 input channels and the forward of
those with 4-6 output channels (cpu_rows: a tile of 6 output planes × 4 rows × 16 columns,
rows of a tap outside the input skipped or zeroed, columns outside it masked off), against
the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels.conv2d import cpu_rows
from helpers import assert_matches, assert_same_at_any_thread_count, random, reference_weight_gradient

import convcore
from convcore import reference
from convcore.conv import conv_geometry

# (input shape, weight shape, padding): LeNet conv2 (14², 5×5, no padding); heights even and
# odd (the tile's second row past the plane), widths 1, 15, 16 (a whole vector), 17 and 40
# (more column blocks, the last of 1 or 8 columns); 4, 5 and 6 channels (tile planes past
# C); 'same' and asymmetric padding; a 1×1 and a 3×5 filter; more taps than rows (a 5×5
# filter on a 3-row output: every row pair meets both of dY's edges)
CASES = {
    "lenet_conv2": ((3, 6, 14, 14), (16, 6, 5, 5), 0),
    "odd_height": ((2, 5, 13, 15), (7, 5, 5, 5), 0),
    "width_16_same": ((2, 4, 6, 16), (3, 4, 3, 3), 1),
    "width_17": ((1, 6, 5, 17), (4, 6, 3, 3), 1),
    "width_40_pad2": ((2, 4, 9, 40), (5, 4, 5, 5), 2),
    "asymmetric": ((2, 5, 8, 11), (6, 5, 3, 3), (0, 2, 1, 0)),
    "one_by_one": ((2, 4, 3, 7), (9, 4, 1, 1), 0),
    "three_by_five": ((1, 6, 10, 12), (5, 6, 3, 5), (1, 1, 2, 2)),
    "short_output": ((2, 4, 7, 9), (3, 4, 5, 5), 0),
    "one_column": ((1, 5, 6, 1), (2, 5, 3, 1), (1, 1, 0, 0)),
}


def _expected(shape, w, dy, padding=0):
    geom = conv_geometry("test", shape, w.shape, 1, padding, 1, 1)
    return reference.conv2d_input(shape, w.astype(np.float64), dy.astype(np.float64), stride=(1, 1),
                                  padding=geom.padding, dilation=(1, 1), groups=1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_dgrad_matches_reference(case, rng, sixteen_lanes):
    shape, weight, padding = CASES[case]
    geom = conv_geometry("test", shape, weight, 1, padding, 1, 1)
    assert cpu_rows.applies(geom, np.float32)
    w, dy = random(rng, weight, np.float32), random(rng, geom.output_shape, np.float32)
    expected = _expected(shape, w, dy, padding)
    out = np.full(shape, np.nan, np.float32)
    cpu_rows.rows_dgrad(w, dy, out, geom)
    assert_matches(out, expected, np.float32, weight[0] * weight[2] * weight[3])


def test_correlate_keeps_dy_edges_out():
    # An Inf in dY's first and last column and row, positive weights: the masked loads must
    # leave the columns and rows outside dY unread (a shifted load past a row's end would be
    # the next row's Inf), so exactly the reference's Inf entries are Inf; lanes past the
    # output row are never stored (NaN-poisoned out, a width of 21: a block of 5 columns).
    rng = np.random.default_rng(5)
    shape, weight = (2, 6, 9, 21), (4, 6, 3, 3)
    geom = conv_geometry("test", shape, weight, 1, 0, 1, 1)
    w = rng.uniform(0.5, 1.0, weight).astype(np.float32)
    dy = rng.uniform(0.5, 1.0, geom.output_shape).astype(np.float32)
    dy[0, 1, :, 0] = dy[1, 3, :, -1] = dy[1, 2, 0, 3] = dy[0, 0, -1, 4] = np.inf
    out = np.full(shape, np.nan, np.float32)
    cpu_rows.rows_dgrad(w, dy, out, geom)
    expected = _expected(shape, w, dy)
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-5)


def test_rows_apply_to_dense_stride1_layers_with_4_to_6_input_channels(sixteen_lanes):
    def applies(shape=(2, 6, 14, 14), weight=(16, 6, 5, 5), stride=1, padding=0, dilation=1, groups=1,
                dtype=np.float32):
        return cpu_rows.applies(conv_geometry("test", shape, weight, stride, padding, dilation, groups), dtype)

    assert applies() and applies(shape=(2, 4, 30, 50), weight=(8, 4, 3, 3), padding=1)
    assert not applies(shape=(2, 3, 14, 14), weight=(16, 3, 5, 5))  # half the tile's planes idle
    assert not applies(shape=(2, 7, 14, 14), weight=(16, 7, 5, 5))
    assert not applies(stride=2) and not applies(dilation=2)
    assert not applies(shape=(2, 12, 14, 14), weight=(16, 6, 5, 5), groups=2)
    assert not applies(dtype=np.float64)


def test_conv2d_input_takes_the_rows_kernel_for_lenet_conv2(rng, sixteen_lanes, monkeypatch):
    # auto (batch 128's and batch 1's: both shallow, K·R·S = 400) and direct route LeNet's
    # conv2 input gradient here; a deep reduction (64 channels, 3×3) stays with auto's GEMM
    calls = []
    original = cpu_rows.rows_dgrad
    monkeypatch.setattr(cpu_rows, "rows_dgrad", lambda *a: calls.append(a[3].N) or original(*a))
    w = random(rng, (16, 6, 5, 5), np.float32)
    for N, algorithm in ((3, "auto"), (1, "auto"), (2, "direct")):
        dy = random(rng, (N, 16, 10, 10), np.float32)
        expected = _expected((N, 6, 14, 14), w, dy)
        got = convcore.conv2d_input((N, 6, 14, 14), w, dy, backend="cpu", algorithm=algorithm)
        assert_matches(got, expected, np.float32, 400)
    assert calls == [3, 1, 2]
    deep = random(rng, (64, 4, 3, 3), np.float32)
    dy = random(rng, (1, 64, 8, 8), np.float32)
    got = convcore.conv2d_input((1, 4, 8, 8), deep, dy, padding=1, backend="cpu")
    assert_matches(got, _expected((1, 4, 8, 8), deep, dy, 1), np.float32, 576)
    # float64: the same layer by the other kernels, to float64 tolerance
    w64, dy64 = w.astype(np.float64), random(rng, (2, 16, 10, 10), np.float64)
    for algorithm in ("auto", "direct"):
        got = convcore.conv2d_input((2, 6, 14, 14), w64, dy64, backend="cpu", algorithm=algorithm)
        assert_matches(got, _expected((2, 6, 14, 14), w64, dy64), np.float64, 400)
    assert calls == [3, 1, 2]


# (input shape, weight shape, padding) for the forward: LeNet conv1 (one input channel, 32²
# → 28²: a block of 16 columns and one of 12); 4 and 5 output channels (tile planes past K);
# 'same' and asymmetric padding; an odd output height; a width of 40 (three blocks)
FWD_CASES = {
    "lenet_conv1": ((3, 1, 32, 32), (6, 1, 5, 5), 0),
    "k4_same": ((2, 3, 9, 17), (4, 3, 3, 3), 1),
    "k5_asymmetric": ((2, 2, 11, 40), (5, 2, 5, 3), (2, 0, 1, 1)),
    "k6_odd_height": ((1, 7, 8, 12), (6, 7, 2, 4), 0),
}


def _expected_fwd(x, w, b, padding):
    geom = conv_geometry("test", x.shape, w.shape, 1, padding, 1, 1)
    return reference.conv2d(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                            out_hw=(geom.P, geom.Q), stride=(1, 1), padding=geom.padding, dilation=(1, 1), groups=1)


@pytest.mark.parametrize("case", sorted(FWD_CASES))
def test_rows_fwd_matches_reference(case, rng, sixteen_lanes):
    shape, weight, padding = FWD_CASES[case]
    geom = conv_geometry("test", shape, weight, 1, padding, 1, 1)
    assert cpu_rows.applies_fwd(geom, np.float32)
    x, w = random(rng, shape, np.float32), random(rng, weight, np.float32)
    out = np.full(geom.output_shape, np.nan, np.float32)
    cpu_rows.rows_fwd(x, w, out, geom)
    assert_matches(out, _expected_fwd(x, w, None, padding), np.float32, weight[1] * weight[2] * weight[3])


def test_conv2d_takes_the_rows_kernel_for_lenet_conv1(rng, sixteen_lanes, monkeypatch):
    # auto and direct route LeNet conv1's forward here (bias and fused ReLU after it);
    # 7 output channels do not
    calls = []
    original = cpu_rows.rows_fwd
    monkeypatch.setattr(cpu_rows, "rows_fwd", lambda *a: calls.append(a[1].shape[0]) or original(*a))
    x, w, b = random(rng, (2, 1, 32, 32), np.float32), random(rng, (6, 1, 5, 5), np.float32), random(rng, (6,), np.float32)
    expected = np.maximum(_expected_fwd(x, w, b, 0), 0.0)
    for algorithm in ("auto", "direct"):
        got = convcore.conv2d(x, w, b, backend="cpu", algorithm=algorithm, activation="relu")
        assert_matches(got, expected, np.float32, 25)
    assert calls == [6, 6]
    w7 = random(rng, (7, 1, 5, 5), np.float32)
    assert_matches(convcore.conv2d(x, w7, backend="cpu"), _expected_fwd(x, w7, None, 0), np.float32, 25)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)  # float64: the other kernels
    for algorithm in ("auto", "direct"):
        got = convcore.conv2d(x64, w64, b64, backend="cpu", algorithm=algorithm, activation="relu")
        assert_matches(got, np.maximum(_expected_fwd(x64, w64, b64, 0), 0.0), np.float64, 25)
    assert calls == [6, 6]


def test_rows_fwd_applies_to_dense_stride1_layers_with_4_to_6_output_channels(sixteen_lanes):
    def applies(shape=(2, 1, 32, 32), weight=(6, 1, 5, 5), stride=1, dilation=1, groups=1, dtype=np.float32):
        return cpu_rows.applies_fwd(conv_geometry("test", shape, weight, stride, 0, dilation, groups), dtype)

    assert applies() and applies(weight=(4, 1, 5, 5)) and applies(shape=(2, 40, 9, 9), weight=(5, 40, 3, 3))
    assert not applies(weight=(3, 1, 5, 5)) and not applies(weight=(7, 1, 5, 5))
    assert not applies(stride=2) and not applies(dilation=2) and not applies(dtype=np.float64)
    assert not applies(shape=(2, 2, 32, 32), weight=(6, 1, 5, 5), groups=2)


# (input shape, weight shape, padding) for the weight gradient: LeNet conv1; filter widths
# 3 and 4 (taps of the 5-tap block past S) and 7 (a second block of 2); 4 and 5 output
# channels (the 3-channel block past K); rows of the filter reading the padding (pt > 0);
# 17 and 40 output columns (a block of 1, of 8); 20 images (blocks of 2, the last short),
# 3 (blocks of one)
WGRAD_CASES = {
    "lenet_conv1": ((20, 1, 32, 32), (6, 1, 5, 5), 0),
    "k5_3x4_same": ((3, 2, 9, 21), (5, 2, 3, 4), 1),
    "k4_7_wide": ((4, 3, 7, 40), (4, 3, 5, 7), (2, 2, 3, 3)),
    "k6_asymmetric": ((17, 2, 13, 17), (6, 2, 5, 5), (0, 2, 1, 0)),
}


@pytest.mark.parametrize("case", sorted(WGRAD_CASES))
def test_rows_wgrad_matches_reference(case, rng, sixteen_lanes):
    shape, weight, padding = WGRAD_CASES[case]
    geom = conv_geometry("test", shape, weight, 1, padding, 1, 1)
    assert cpu_rows.applies_wgrad(geom, np.float32)
    x, dy = random(rng, shape, np.float32), random(rng, geom.output_shape, np.float32)
    out = np.full(weight, np.nan, np.float32)
    cpu_rows.rows_wgrad(x, dy, out, geom)
    expected = reference_weight_gradient(x, dy, geom)
    assert_matches(out, expected, np.float32, shape[0] * geom.P * geom.Q)


def test_rows_wgrad_keeps_columns_past_the_output_row_out(sixteen_lanes):
    # x's last column Inf: of the taps only s = 4 reads it (output column 11 of Q = 12), but
    # every tap's 16-lane load would, in the lanes past the output row where dY's lanes are 0
    # (0 · Inf = NaN); masked to 0 there, so exactly the s = 4 weights are Inf, the rest
    # finite and right
    rng = np.random.default_rng(4)
    shape, weight = (3, 2, 9, 16), (6, 2, 5, 5)
    geom = conv_geometry("test", shape, weight, 1, 0, 1, 1)
    x = rng.uniform(0.5, 1.0, shape).astype(np.float32)
    x[..., -1] = np.inf
    x[..., 0] = 2.0
    dy = rng.uniform(0.5, 1.0, geom.output_shape).astype(np.float32)
    out = np.full(weight, np.nan, np.float32)
    cpu_rows.rows_wgrad(x, dy, out, geom)
    with np.errstate(invalid="ignore"):  # the reference's BLAS meets the Inf in its own blocking
        expected = reference_weight_gradient(x, dy, geom)
    assert np.isinf(expected).sum() == 6 * 2 * 5
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    assert finite.sum() > 0 and not np.isnan(out).any()
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-5)


def test_rows_wgrad_does_not_depend_on_the_thread_count(rng, sixteen_lanes):
    geom = conv_geometry("test", (24, 1, 32, 32), (6, 1, 5, 5), 1, 0, 1, 1)
    x, dy = random(rng, geom.input_shape, np.float32), random(rng, geom.output_shape, np.float32)

    def compute():
        out = np.full((6, 1, 5, 5), np.nan, np.float32)
        cpu_rows.rows_wgrad(x, dy, out, geom)
        return out

    assert_same_at_any_thread_count(compute)


def test_conv2d_weight_takes_the_rows_kernel_for_lenet_conv1(rng, sixteen_lanes, monkeypatch):
    calls = []
    original = cpu_rows.rows_wgrad
    monkeypatch.setattr(cpu_rows, "rows_wgrad", lambda *a: calls.append(a[3].N) or original(*a))
    x, dy = random(rng, (8, 1, 32, 32), np.float32), random(rng, (8, 6, 28, 28), np.float32)
    expected = reference.conv2d_weight(x.astype(np.float64), (6, 1, 5, 5), dy.astype(np.float64), stride=(1, 1),
                                       padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    for algorithm in ("auto", "direct"):
        assert_matches(convcore.conv2d_weight(x, (6, 1, 5, 5), dy, backend="cpu", algorithm=algorithm), expected,
                       np.float32, 8 * 28 * 28)
        got = convcore.conv2d_weight(x.astype(np.float64), (6, 1, 5, 5), dy.astype(np.float64), backend="cpu",
                                     algorithm=algorithm)  # float64: the other kernels
        assert_matches(got, expected, np.float64, 8 * 28 * 28)
    assert calls == [8, 8]
