"""The cpu 5×5 weight gradient with 12-16 output channels in one vector (cpu_wgrad_kvec16:
dY pixel-major by register transposes, 25 tap accumulators, fixed image blocks), against
the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels.conv2d import cpu_wgrad_kvec16 as kv
from helpers import assert_matches, assert_same_at_any_thread_count, random, reference_weight_gradient

import convcore
from convcore import reference
from convcore.conv import conv_geometry

# (input shape, output channels, padding): LeNet conv2 ('valid': x read in place); 16
# channels (whole 16×16 transposes) and 12, 13, 15 (scalar copies, zero lanes); 'same' and
# asymmetric padding (the zero-padded copy); images 8 (one per block), 9, 17 and 40 (blocks
# of 1-3 images, some empty); output planes of 1×1, 16 pixels (no scalar tail) and 7×23
CASES = {
    "lenet_conv2": ((9, 6, 14, 14), 16, 0),
    "k12_same": ((8, 3, 9, 11), 12, 2),
    "k13_asymmetric": ((17, 2, 8, 10), 13, (1, 0, 2, 3)),
    "k15_one_pixel": ((8, 4, 5, 5), 15, 0),
    "k16_sixteen_pixels": ((40, 1, 8, 8), 16, 0),
    "k16_wide": ((10, 2, 11, 27), 16, 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wgrad_kvec16_matches_reference(case, rng, sixteen_lanes):
    shape, K, padding = CASES[case]
    geom = conv_geometry("test", shape, (K, shape[1], 5, 5), 1, padding, 1, 1)
    assert kv.applies(geom, np.float32)
    x, dy = random(rng, shape, np.float32), random(rng, geom.output_shape, np.float32)
    expected = reference_weight_gradient(x, dy, geom)
    out = np.full((K, shape[1], 5, 5), np.nan, np.float32)
    kv.wgrad_kvec16(x, dy, out, geom)
    assert_matches(out, expected, np.float32, shape[0] * geom.P * geom.Q)


def test_wgrad_kvec16_does_not_depend_on_the_thread_count(rng, sixteen_lanes):
    geom = conv_geometry("test", (20, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)
    x, dy = random(rng, geom.input_shape, np.float32), random(rng, geom.output_shape, np.float32)

    def compute():
        out = np.full((16, 6, 5, 5), np.nan, np.float32)
        kv.wgrad_kvec16(x, dy, out, geom)
        return out

    assert_same_at_any_thread_count(compute)


def test_wgrad_kvec16_applies_to_5x5_layers_with_12_to_16_output_channels(sixteen_lanes):
    def applies(shape=(8, 6, 14, 14), weight=(16, 6, 5, 5), stride=1, padding=0, dilation=1, groups=1,
                dtype=np.float32):
        return kv.applies(conv_geometry("test", shape, weight, stride, padding, dilation, groups), dtype)

    assert applies() and applies(weight=(12, 6, 5, 5)) and applies(padding=2)
    assert not applies(weight=(11, 6, 5, 5)) and not applies(weight=(17, 6, 5, 5))
    assert not applies(shape=(7, 6, 14, 14))  # fewer images than the blocks' minimum
    assert not applies(weight=(16, 6, 3, 3)) and not applies(weight=(16, 6, 5, 3))
    assert not applies(stride=2) and not applies(dilation=2)
    assert not applies(shape=(8, 12, 14, 14), weight=(16, 6, 5, 5), groups=2)
    assert not applies(dtype=np.float64)


def test_conv2d_weight_takes_the_kvec16_kernel_for_lenet_conv2(rng, sixteen_lanes, monkeypatch):
    calls = []
    original = kv.wgrad_kvec16
    monkeypatch.setattr(kv, "wgrad_kvec16", lambda *a: calls.append(a[3].N) or original(*a))
    for algorithm in ("auto", "direct"):
        x, dy = random(rng, (8, 6, 14, 14), np.float32), random(rng, (8, 16, 10, 10), np.float32)
        expected = reference.conv2d_weight(x.astype(np.float64), (16, 6, 5, 5), dy.astype(np.float64), stride=(1, 1),
                                           padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
        got = convcore.conv2d_weight(x, (16, 6, 5, 5), dy, backend="cpu", algorithm=algorithm)
        assert_matches(got, expected, np.float32, 800)
        got = convcore.conv2d_weight(x.astype(np.float64), (16, 6, 5, 5), dy.astype(np.float64), backend="cpu",
                                     algorithm=algorithm)  # float64: the other kernels
        assert_matches(got, expected, np.float64, 800)
    assert calls == [8, 8]
