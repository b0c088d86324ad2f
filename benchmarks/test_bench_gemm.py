"""convcore's float32 GEMM with each register tile against NumPy's BLAS, through pytest-benchmark,
grouped by product (the wide 12×32 tile is AVX-512's, the narrow 6×16 one that of hosts with 16
vector registers; each runs on any x86 host, so both can be compared on the same machine).

    pytest benchmarks/test_bench_gemm.py --benchmark-only

Shapes: a square product, and the batched products of Winograd F(4×4) on ResNet-50's 3×3
layers at 7² (512 channels, batch 8: 32 tiles) and 28² (128 channels: 392 tiles).
Each result is checked against a float64 product before timing.
"""
import numpy as np
import pytest
from convcore.kernels.gemm import cpu as gemm

SHAPES = {"2048^3": (1, 2048, 2048, 2048), "winograd_f4_7x7_512": (36, 512, 512, 32),
          "winograd_f4_28x28_128": (36, 128, 128, 392)}


@pytest.mark.parametrize("impl", ["narrow", "wide", "blas"])
@pytest.mark.parametrize("name", SHAPES)
def test_bench_sgemm(benchmark, monkeypatch, name, impl):
    batch, M, K, N = SHAPES[name]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch, M, K), dtype=np.float32)
    b = rng.standard_normal((batch, K, N), dtype=np.float32)
    out = np.full((batch, M, N), np.nan, np.float32)
    if impl == "blas":
        def run():
            np.matmul(a, b, out=out)
    else:
        monkeypatch.setattr(gemm, "narrow_tile", lambda: impl == "narrow")

        def run():
            gemm.sgemm(a, b, out)
    run()
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    error = np.abs(out - ref).max() / np.abs(ref).max()
    assert error < 1e-5, f"{impl} {name}: max rel error {error:.2e}"
    benchmark.group = name
    benchmark.extra_info.update(gflop=2 * batch * M * K * N / 1e9)
    benchmark(run)
