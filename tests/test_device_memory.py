"""CUDA output allocation: CuPy's caching pool when usable, else numba.cuda.device_array with a logged reason."""
import logging

import numpy as np
import pytest

import convcore
from convcore import _device_memory
from convcore._backend import cuda_simulated


@pytest.fixture(autouse=True)
def _fresh_decision():
    _device_memory.reset()
    yield
    _device_memory.reset()


def _cupy_available():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def test_without_pool_the_reason_is_logged_once(monkeypatch, caplog):
    monkeypatch.setenv("CONVCORE_CUDA_POOL", "0")
    with caplog.at_level(logging.INFO, logger="convcore"):
        pooled, reason = _device_memory.pool_status()
        _device_memory.pool_status()
    assert pooled is False and reason
    expected = "simulator" if cuda_simulated() else "CONVCORE_CUDA_POOL=0"
    assert expected in reason
    logged = [r for r in caplog.records if "device_array" in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0].getMessage()


@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (0, 4), (2, 1, 33, 31)])
def test_cuda_device_empty_shape_dtype_and_round_trip(shape):
    """Whichever allocator is in use: C-contiguous, right shape and dtype, and it holds what is written to it."""
    host = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    array = _device_memory.device_empty(shape, np.float32)
    assert array.shape == shape and np.dtype(array.dtype) == np.float32
    assert array.is_c_contiguous()
    if host.size:
        array.copy_to_device(host)
        np.testing.assert_array_equal(array.copy_to_host(), host)


@pytest.mark.skipif(cuda_simulated() or not _cupy_available(), reason="the pool needs a real GPU and CuPy")
def test_cuda_pool_outputs_are_correct_and_blocks_are_reused():
    """On a GPU with CuPy (the device run): outputs come from CuPy's pool, and a freed output's block is reused."""
    import cupy
    from numba import cuda

    assert _device_memory.pool_status()[0] is True
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((2, 3, 33, 31)).astype(np.float32) for _ in range(2))
    da, db = cuda.to_device(a), cuda.to_device(b)
    pool = cupy.get_default_memory_pool()
    out = convcore.hadamard(da, db)
    np.testing.assert_allclose(out.copy_to_host(), a * b, rtol=1e-6)
    used = pool.used_bytes()
    assert used >= a.nbytes  # the output lives in CuPy's pool
    del out
    assert pool.used_bytes() <= used - a.nbytes  # back to the pool, not the driver
    total = pool.total_bytes()
    for _ in range(5):
        np.testing.assert_allclose(convcore.hadamard(da, db).copy_to_host(), a * b, rtol=1e-6)
    assert pool.total_bytes() == total  # reused: no new device memory
