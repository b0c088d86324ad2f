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
    # The simulator runs a block's threads as Python threads while its BlockManager busy-polls them
    # for syncthreads() in the main thread, so every barrier phase waits on GIL hand-offs; the default
    # 5 ms switch interval made barrier-heavy (tiled) kernels ~3x slower than with 0.5 ms.
    import sys

    sys.setswitchinterval(5e-4)

    # The simulator's cuda.shared.array looks up, then creates, a block's array without a lock:
    # two threads of a block switching in between each get their own uninitialised array, and the
    # kernel reads garbage (seen once in CI: a depthwise conv off by 7e16). Serialise the lookup.
    import threading

    import numpy as _np
    from numba.core import types as _types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support as _numpy_support

    _shared_lock = threading.Lock()
    _unlocked_array = kernelapi.FakeCUDAShared.array

    def _locked_array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # errors and dynamic shared memory: no lookup
            return _unlocked_array(self, shape, dtype, alignment)
        if isinstance(dtype, _types.Type):
            dtype = _numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)  # keyed by the caller's file and line, as the simulator does
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with _shared_lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = _np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = _locked_array
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
