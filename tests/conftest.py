"""Test setup: run the CUDA backend everywhere and poison every output.

Without a GPU the Numba CUDA simulator is enabled here, before numba is imported,
so the ``cuda`` backend is tested on every machine; on a GPU machine the same tests
run on the real device. Poison mode NaN-fills every output before a kernel writes it.
"""
import os


def _gpu_present() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    import cuda_simulator  # tests/cuda_simulator.py: patches for speed and a shared-memory race

    cuda_simulator.install()
os.environ.setdefault("CONVCORE_POISON", "1")
# Never read or write the user's tuning cache, and never autotune unless a test asks.
import tempfile  # noqa: E402

os.environ["CONVCORE_CACHE_DIR"] = tempfile.mkdtemp(prefix="convcore-test-cache-")
os.environ.pop("CONVCORE_AUTOTUNE", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import convcore  # noqa: E402

ALL_BACKENDS = [name for name, info in convcore.backends().items() if info.available]
KERNEL_BACKENDS = [name for name in ALL_BACKENDS if name != "numpy"]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request):
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng(request):
    # Fresh per test, seeded by the test's name so failures reproduce.
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def pytest_collection_finish(session):
    # The offline PTX report (test_ptx_report.py) is minutes of NVVM and ptxas in a subprocess:
    # started now, it runs on the cores the rest of the suite leaves idle.
    if session.config.option.collectonly:
        return
    report_tests = [item for item in session.items if item.path.name == "test_ptx_report.py"]
    if report_tests:
        report_tests[0].module.start_report(alone=len(report_tests) == len(session.items))


@pytest.fixture(autouse=True)
def _gemm_choice_per_test():
    """gemm.enabled caches its answer, and tests that set CONVCORE_CPU_GEMM through monkeypatch
    clear it before the variable is restored: the cache then kept their choice ('blas': the
    16-lane kernels off) for every later test of the session. Cleared again after each test,
    after monkeypatch restores the variable (an autouse fixture is set up first, so torn down
    last)."""
    yield
    from convcore.kernels.gemm import cpu as gemm

    gemm.enabled.cache_clear()


@pytest.fixture
def sixteen_lanes():
    """convcore's 16-lane CPU kernels (its GEMM, cpu_flat_simd, cpu_kvec, cpu_kvec16), which run
    by default only on AVX-512 hosts, forced on (CONVCORE_CPU_GEMM=convcore) for one test: on
    other hosts LLVM splits the vectors, slower but the same arithmetic, so their correctness
    and routing are tested on every machine, not skipped where CI lacks AVX-512."""
    from convcore.kernels.gemm import cpu as gemm

    before = os.environ.get("CONVCORE_CPU_GEMM")
    os.environ["CONVCORE_CPU_GEMM"] = "convcore"
    gemm.enabled.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CONVCORE_CPU_GEMM", None)
        else:
            os.environ["CONVCORE_CPU_GEMM"] = before
        gemm.enabled.cache_clear()


@pytest.fixture(params=["wide", "avx2"])
def cpu_tile(request, monkeypatch):
    """A register-tiled 16-lane CPU kernel (cpu_flat_simd, cpu_kvec, cpu_kvec16) each way it
    runs: 'wide', its AVX-512 tile (sixteen_lanes); 'avx2', the narrow tile of AVX2 hosts
    without AVX-512 (the 16-lane GEMM off, AVX2 claimed: the same arithmetic on any x86)."""
    from convcore.kernels.conv2d import cpu_kvec
    from convcore.kernels.gemm import cpu as gemm

    if request.param == "wide":
        request.getfixturevalue("sixteen_lanes")
    else:
        monkeypatch.setenv("CONVCORE_CPU_GEMM", "blas")
        gemm.enabled.cache_clear()
        monkeypatch.setattr(cpu_kvec, "_avx2_host", lambda: True)
        request.addfinalizer(gemm.enabled.cache_clear)  # before monkeypatch restores the variable
    return request.param
