"""The cpu depthwise 3×3 padding-1 kernels (cpu_depthwise_rows; stride 2 on output planes at
most 64 wide, stride-1 planes wider than that row by row): 16 output columns of a row per
vector, forward (bias, ReLU), input
gradient (stride 1: the forward with the filters turned 180°; stride 2: even and odd rows
and columns, interleaved) and weight gradient at stride 1 and 2, against the float64
reference."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels.conv2d import cpu_depthwise_rows as rows
from helpers import assert_matches, random

import convcore
from convcore import reference
from convcore.conv import conv_geometry

# plane widths 1, 2, 7 (MobileNet's 7²), 14, 16 (a whole vector: no lane past the row), 17
# (a second block of one column), 32, 33, 56 (3 whole blocks and 8 columns), 64; one row, two
# rows (every row touches both paddings), tall and short planes; channels of no particular
# multiple
ROWS_CONFIGS = {
    "mobilenet_14": (2, 7, 14, 14),
    "mobilenet_7": (3, 5, 7, 7),
    "rows_of_16": (1, 3, 5, 16),
    "one_row": (2, 3, 1, 9),
    "two_rows": (1, 4, 2, 15),
    "one_column": (2, 2, 6, 1),
    "two_columns_tall": (1, 3, 11, 2),
    "one_pixel": (1, 2, 1, 1),
    "width_17": (1, 2, 5, 17),
    "width_32": (2, 3, 4, 32),
    "width_33_one_row": (1, 2, 1, 33),
    "mobilenet_56": (1, 3, 9, 56),
    "width_64": (1, 2, 3, 64),
}
# wider planes: at stride 2 64 output columns (whole 32-column input blocks, an odd width),
# at stride 1 the row-by-row kernels (MobileNet's 112², a width just past MAX_WIDTH, one row)
WIDE = {"width_128": (1, 2, 4, 128), "width_127": (1, 2, 5, 127), "mobilenet_112": (1, 2, 6, 112),
        "width_65": (2, 3, 5, 65), "width_70_one_row": (1, 2, 1, 70)}
CASES = ([(name, stride) for name in ROWS_CONFIGS for stride in (1, 2)]
         + [(name, 2) for name in ("width_128", "width_127")]
         + [(name, 1) for name in ("mobilenet_112", "width_65", "width_70_one_row", "width_128")])


def _reference(x, w, b, dy, geom):
    kwargs = dict(stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=geom.groups)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    forward = reference.conv2d(x64, w64, b.astype(np.float64), out_hw=(geom.P, geom.Q), **kwargs)
    return (forward, reference.conv2d_input(x.shape, w64, dy64, **kwargs),
            reference.conv2d_weight(x64, w.shape, dy64, **kwargs))


@pytest.mark.parametrize("config,stride", CASES)
def test_rows_kernels_match_reference(config, stride, rng, sixteen_lanes):
    # stride 2 on these planes: odd and even widths and heights, a last output column whose
    # right tap is the padding (odd W), 32-column input blocks split into even and odd lanes
    shape = {**ROWS_CONFIGS, **WIDE}[config]
    C = shape[1]
    geom = conv_geometry("test", shape, (C, 1, 3, 3), stride, 1, 1, C)
    assert rows.applies(geom, np.float32)
    x, w, b, dy = (random(rng, s, np.float32) for s in (shape, (C, 1, 3, 3), (C,), geom.output_shape))
    forward, dx, dw = _reference(x, w, b, dy, geom)
    for bias, relu in ((None, False), (b, False), (b, True)):
        out = np.full(geom.output_shape, np.nan, np.float32)
        rows.rows_fwd(x, w, bias, out, relu, stride)
        expected = forward - (0 if bias is not None else b.astype(np.float64)[None, :, None, None])
        assert_matches(out, np.maximum(expected, 0.0) if relu else expected, np.float32, 9, f"forward {bias is not None} {relu}")
    out = np.full(shape, np.nan, np.float32)
    rows.rows_dgrad(w, dy, out, stride)
    assert_matches(out, dx, np.float32, 9, "input gradient")
    out = np.full(w.shape, np.nan, np.float32)
    rows.rows_wgrad(x, dy, out, stride)
    assert_matches(out, dw, np.float32, shape[0] * geom.P * geom.Q, "weight gradient")


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_takes_the_rows_kernels_for_mobilenet_14(stride, rng, sixteen_lanes, monkeypatch):
    # auto and direct route a 14² 3×3 padding-1 depthwise layer here in every direction, at
    # stride 1 and 2 (through the public functions, with bias and fused ReLU)
    calls = []
    for name in ("rows_fwd", "rows_dgrad", "rows_wgrad"):
        original = getattr(rows, name)
        monkeypatch.setattr(rows, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    shape = (2, 6, 14, 14)
    geom = conv_geometry("test", shape, (6, 1, 3, 3), stride, 1, 1, 6)
    x, w, b, dy = (random(rng, s, np.float32) for s in (shape, (6, 1, 3, 3), (6,), geom.output_shape))
    forward, dx, dw = _reference(x, w, b, dy, geom)
    for algorithm in ("auto", "direct"):
        kwargs = dict(stride=stride, padding=1, groups=6, backend="cpu", algorithm=algorithm)
        assert_matches(convcore.conv2d(x, w, b, activation="relu", **kwargs), np.maximum(forward, 0.0), np.float32, 9)
        assert_matches(convcore.conv2d_input(shape, w, dy, **kwargs), dx, np.float32, 9)
        assert_matches(convcore.conv2d_weight(x, w.shape, dy, **kwargs), dw, np.float32, 2 * geom.P * geom.Q)
    assert calls == ["rows_fwd", "rows_dgrad", "rows_wgrad"] * 2


def test_rows_apply_to_3x3_padding1_stride1_and_narrow_stride2(sixteen_lanes):
    def applies(shape=(2, 4, 14, 14), weight=(4, 1, 3, 3), stride=1, padding=1, dilation=1, groups=4,
                dtype=np.float32):
        return rows.applies(conv_geometry("test", shape, weight, stride, padding, dilation, groups), dtype)

    assert applies() and applies(shape=(2, 4, 30, rows.MAX_WIDTH)) and applies(shape=(2, 4, 9, 300))
    assert applies(stride=2, shape=(2, 4, 9, 2 * rows.MAX_WIDTH))
    assert not applies(stride=2, shape=(2, 4, 9, 2 * rows.MAX_WIDTH + 1))  # wider stride-2: the strips
    assert not applies(stride=3) and not applies(stride=(1, 2)) and not applies(dilation=2, padding=2)
    assert not applies(padding=0) and not applies(padding=(1, 1, 1, 2))
    assert not applies(weight=(4, 1, 5, 5), padding=2)
    assert not applies(weight=(8, 1, 3, 3))            # a channel multiplier
    assert not applies(shape=(2, 4, 14, 14), weight=(4, 2, 3, 3), groups=2)
    assert not applies(dtype=np.float64)


@pytest.mark.parametrize("stride,width", [(1, 21), (1, 70), (2, 41), (2, 40)])
@pytest.mark.parametrize("column", [0, -1])
def test_rows_keep_the_neighbouring_row_out(stride, width, column, sixteen_lanes):
    # An Inf in every row's first or last column (x for the forward and weight gradient, dY
    # for the input gradient), positive weights: the shifted loads must leave the column
    # past either edge out (masked to 0), which otherwise is the neighbouring row's last or
    # first column, so exactly the reference's Inf entries are Inf. Lanes past the output
    # row read 0 as well: at stride 2 and an even width the left tap of the first column
    # past it would read the row's last column, and the weight gradient's zero dY lane
    # times that Inf is NaN. The finite entries match too.
    rng = np.random.default_rng(3)
    shape = (2, 3, 6, width)  # a block of 16 output columns, then one of 4-5
    geom = conv_geometry("test", shape, (3, 1, 3, 3), stride, 1, 1, 3)
    x = rng.uniform(0.5, 1.0, shape).astype(np.float32)
    w = rng.uniform(0.5, 1.0, (3, 1, 3, 3)).astype(np.float32)
    dy = rng.uniform(0.5, 1.0, geom.output_shape).astype(np.float32)
    x[..., column] = np.inf
    kwargs = dict(stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=3)
    out = np.full(geom.output_shape, np.nan, np.float32)
    rows.rows_fwd(x, w, None, out, False, stride)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, out_hw=(geom.P, geom.Q), **kwargs)
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    out = np.full(w.shape, np.nan, np.float32)
    rows.rows_wgrad(x, dy, out, stride)
    expected = reference.conv2d_weight(x.astype(np.float64), w.shape, dy.astype(np.float64), **kwargs)
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-5)
    dy[..., column] = np.inf
    out = np.full(shape, np.nan, np.float32)
    rows.rows_dgrad(w, dy, out, stride)
    expected = reference.conv2d_input(shape, w.astype(np.float64), dy.astype(np.float64), **kwargs)
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))


@pytest.mark.parametrize("stride", [1, 2])
def test_prefetching_sweeps_compute_the_same(stride, rng, sixteen_lanes, monkeypatch):
    # Past AHEAD_BYTES the column sweeps prefetch each thread's next plane (x, and dY in the
    # weight gradient): the same arithmetic, bit for bit, as the sweeps without, on planes of
    # one and several column blocks, the last plane's "next" past the arrays' end
    for shape in ((2, 3, 9, 21), (3, 5, 14, 14), (1, 2, 1, 33)):
        C = shape[1]
        geom = conv_geometry("test", shape, (C, 1, 3, 3), stride, 1, 1, C)
        x, w, b, dy = (random(rng, s, np.float32) for s in (shape, (C, 1, 3, 3), (C,), geom.output_shape))
        results = []
        for ahead_bytes in (rows.AHEAD_BYTES, 0):
            monkeypatch.setattr(rows, "AHEAD_BYTES", ahead_bytes)
            assert rows._from_memory(x) is (ahead_bytes == 0)
            out, dx, dw = (np.full(s, np.nan, np.float32) for s in (geom.output_shape, shape, w.shape))
            rows.rows_fwd(x, w, b, out, True, stride)
            rows.rows_dgrad(w, dy, dx, stride)
            rows.rows_wgrad(x, dy, dw, stride)
            results.append((out, dx, dw))
        for before, after in zip(*results):
            np.testing.assert_array_equal(after, before)
        forward, dx, dw = _reference(x, w, b, dy, geom)
        assert_matches(results[1][0], np.maximum(forward, 0.0), np.float32, 9)
        assert_matches(results[1][2], dw, np.float32, shape[0] * geom.P * geom.Q)
