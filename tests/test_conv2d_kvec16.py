"""The cpu forward with 12-16 output channels in one vector (cpu_kvec16): the ``direct``
(and auto) forward of dense stride-1 float32 layers such as LeNet's conv2 at batch 8+."""
from __future__ import annotations

import numpy as np
import pytest
from convcore.kernels.conv2d import cpu_kvec, cpu_kvec16
from convcore.kernels.gemm import cpu as gemm
from helpers import assert_matches, random

import convcore
from convcore import reference
from convcore.conv import conv_geometry

# K = 16 (whole 16×16 blocks transposed, P·Q not a multiple of 16 nor of the 25-pixel run)
# and K < 16 (scalar copies); rows of at most 16 (the masked-load copy) and wider (scalar);
# asymmetric, 4-tuple and zero padding, padding past the kernel's reach, dilation.
KVEC16_CONFIGS = {
    "lenet_conv2": ((8, 6, 14, 14), (16, 6, 5, 5), {}),
    "k13_pad_dilated": ((9, 5, 11, 13), (13, 5, 3, 4), {"padding": (2, 1), "dilation": (1, 2)}),
    "k12_wide_rows": ((8, 3, 6, 37), (12, 3, 3, 3), {"padding": 1}),
    "k16_pad_4tuple": ((10, 4, 7, 9), (16, 4, 3, 5), {"padding": (0, 3, 4, 1)}),
    "k16_one_pixel": ((8, 2, 3, 3), (16, 2, 3, 3), {}),
    # unpadded rows of 16 and a dilated unpadded layer: the copies' no-padding branch
    "k15_rows_of_16": ((8, 2, 20, 20), (15, 2, 5, 5), {}),
    "k14_dilated_unpadded": ((8, 3, 12, 13), (14, 3, 3, 3), {"dilation": (2, 3)}),
    # 5×5 blocks: one block per row of 5 columns, the second block row overlapping the first
    "k16_five_columns": ((8, 2, 8, 7), (16, 2, 3, 3), {}),
}


def _check_direct_forward(config, rng, monkeypatch):
    input_shape, weight_shape, kwargs = KVEC16_CONFIGS[config]
    x, w, b = (random(rng, s, np.float32) for s in (input_shape, weight_shape, weight_shape[:1]))
    geom = conv_geometry("test", input_shape, weight_shape, 1, kwargs.get("padding", 0), kwargs.get("dilation", 1), 1)
    calls = []
    original = cpu_kvec16.kvec16_fwd
    monkeypatch.setattr(cpu_kvec16, "kvec16_fwd", lambda *a: calls.append(1) or original(*a))
    out = convcore.conv2d(x, w, b, backend="cpu", algorithm="direct", **kwargs)  # into a NaN-poisoned out
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), out_hw=(geom.P, geom.Q),
                                stride=geom.stride, padding=geom.padding, dilation=geom.dilation, groups=1)
    assert_matches(out, expected, np.float32, geom.Cg * geom.R * geom.S, f"kvec16 forward [{config}]")
    assert calls == [1]


@pytest.mark.parametrize("config", KVEC16_CONFIGS)
def test_kvec16_forward_matches_reference(config, cpu_tile, rng, monkeypatch):
    # wide: the 5×5 pixel blocks read from the (padded) image where the output plane holds
    # one, else the 25-pixel run over shifted copies; avx2: the 6-pixel run of AVX2 hosts
    # (run on every host)
    assert cpu_kvec16.run_pixels() == (cpu_kvec16.TJ if cpu_tile == "wide" else cpu_kvec16.TJ_AVX2)
    _check_direct_forward(config, rng, monkeypatch)


@pytest.mark.parametrize("config", KVEC16_CONFIGS)
def test_kvec16_forward_by_shifted_copies_matches_reference(config, sixteen_lanes, rng, monkeypatch):
    # the 25-pixel run over shifted copies on every layer (the blocks turned off): its
    # masked-row, wide-row and unpadded copy branches
    monkeypatch.setattr(cpu_kvec16, "_blocks_fit", lambda P, Q: False)
    _check_direct_forward(config, rng, monkeypatch)


def test_kvec16_applies_to_lenet_conv2_at_batch_8_not_1_nor_float64(sixteen_lanes):
    def applies(n, k, dtype=np.float32):
        geom = conv_geometry("test", (n, 6, 14, 14), (k, 6, 5, 5), 1, 0, 1, 1)
        x, out = np.empty((n, 6, 14, 14), dtype), np.empty((n, k, 10, 10), dtype)
        return cpu_kvec16.applies(x, out, geom)

    assert applies(128, 16) and applies(8, 12)
    assert not applies(1, 16) and not applies(128, 17) and not applies(128, 6) and not applies(128, 16, np.float64)


def test_kvec16_runs_where_kvec_does(monkeypatch):
    # with the 16-lane kernels off: the 6-pixel run on AVX2 hosts, else not at all (and
    # LeNet conv2's direct forward goes to cpu_kblock)
    monkeypatch.setenv("CONVCORE_CPU_GEMM", "blas")
    gemm.enabled.cache_clear()
    geom = conv_geometry("test", (128, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)
    x, out = np.empty((128, 6, 14, 14), np.float32), np.empty((128, 16, 10, 10), np.float32)
    for avx2 in (True, False):
        monkeypatch.setattr(cpu_kvec, "_avx2_host", lambda v=avx2: v)
        assert cpu_kvec16.applies(x, out, geom) is avx2
