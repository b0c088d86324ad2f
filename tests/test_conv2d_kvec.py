"""The cpu forward with output channels in vectors (cpu_kvec): the ``direct`` forward of
dense strided float32 layers, and auto's choice of it for the ResNet stem."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels.conv2d import cpu, cpu_kvec
from convcore.kernels.gemm import cpu as gemm
from helpers import assert_matches, random

import convcore
from convcore import reference
from convcore.conv import conv_geometry

pytestmark = pytest.mark.usefixtures("sixteen_lanes")  # run on every host, AVX-512 or not

# K over and under the 64-channel tile (a short last block), Q not a multiple of the 6-pixel
# tile (the last tile runs past Q) nor of the 16-pixel transposed block, strides 2-3,
# dilation, asymmetric and zero padding, N = 1 and 3, planes narrower than the kernel's reach.
KVEC_CONFIGS = {
    "stem_odd": ((3, 3, 17, 15), (70, 3, 7, 7), {"stride": 2, "padding": 3}),
    "stem_b1_pad0": ((1, 3, 13, 11), (7, 3, 7, 7), {"stride": 2, "padding": 0}),
    "stride_2x3_pad_4tuple": ((1, 5, 12, 29), (64, 5, 3, 5), {"stride": (2, 3), "padding": (0, 2, 3, 1)}),
    "dilated_stride2": ((3, 2, 15, 16), (129, 2, 3, 3), {"stride": 2, "dilation": 2, "padding": 2}),
    "one_output_pixel": ((3, 3, 5, 5), (5, 3, 7, 7), {"stride": 2, "padding": 1}),
    # rows of 37 pixels: two 16×16 blocks transposed in registers, 5 copied; 40 channels:
    # two full vectors, a partial third
    "wide_rows": ((2, 3, 9, 75), (40, 3, 3, 7), {"stride": 2, "padding": (1, 2)}),
}


@pytest.mark.parametrize("config", KVEC_CONFIGS)
def test_kvec_forward_matches_reference(config, cpu_tile, rng, monkeypatch):
    # wide: 4 vectors of output channels; avx2: the narrow tile of AVX2 hosts (cpu_tile)
    assert cpu_kvec.tile_channels() == (cpu_kvec.KL if cpu_tile == "wide" else cpu_kvec.KL_AVX2)
    input_shape, weight_shape, kwargs = KVEC_CONFIGS[config]
    x, w, b = random(rng, input_shape, np.float32), random(rng, weight_shape, np.float32), random(rng, weight_shape[:1],
                                                                                                   np.float32)
    geom = conv_geometry("test", input_shape, weight_shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                         kwargs.get("dilation", 1), 1)
    calls = []
    original = cpu_kvec.kvec_fwd
    monkeypatch.setattr(cpu_kvec, "kvec_fwd", lambda *a: calls.append(1) or original(*a))
    out = convcore.conv2d(x, w, b, backend="cpu", algorithm="direct", **kwargs)  # into a NaN-poisoned out
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), out_hw=(geom.P, geom.Q),
                                stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=1)
    assert_matches(out, expected, np.float32, geom.Cg * geom.R * geom.S, f"kvec forward [{config}]")
    assert calls == [1]


def test_auto_takes_kvec_for_the_stem_in_float32_only():
    stem = conv_geometry("test", (1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1)
    assert cpu._choose("auto", stem, dtype=np.float32) == "direct"
    assert cpu._choose("auto", stem, dtype=np.float64) == "gemm"
    assert cpu._choose("auto", stem, "bwd_weight") == "phase"


def test_auto_takes_kvec_for_the_stem_where_it_runs(monkeypatch):
    # with the 16-lane kernels off: the narrow tile on AVX2 hosts, else im2col + BLAS
    monkeypatch.setenv("CONVCORE_CPU_GEMM", "blas")
    gemm.enabled.cache_clear()
    stem = conv_geometry("test", (8, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1)
    for avx2, choice in ((True, "direct"), (False, "gemm")):
        monkeypatch.setattr(cpu_kvec, "_avx2_host", lambda v=avx2: v)
        assert cpu_kvec.available() is avx2
        assert cpu._choose("auto", stem, dtype=np.float32) == choice
