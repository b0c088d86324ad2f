"""The test suite's patches to Numba's CUDA simulator (tests/cuda_simulator.py) keep its semantics:
barriers release once every live thread of the block waits, threads that return early stop
counting, and an error in one thread is raised by the launch with its thread and block."""
import os

import numpy as np
import pytest
from numba import cuda, float64  # a global: the simulator swaps a kernel's global 'cuda' module

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"),
                                reason="patches to the simulator: a GPU runs the real thing")


def test_barriers_order_shared_memory_and_early_returns_stop_counting():
    @cuda.jit
    def block_sums(x, out):
        # A tree reduction over shared memory: wrong without every barrier. Threads past the
        # input return first, so each barrier must count only the live ones.
        tile = cuda.shared.array(8, float64)
        i = cuda.threadIdx.x
        if i >= 6:
            return
        tile[i] = x[cuda.blockIdx.x * 6 + i]
        cuda.syncthreads()
        for step in (4, 2, 1):
            if i < step and i + step < 6:
                tile[i] += tile[i + step]
            cuda.syncthreads()
        if i == 0:
            out[cuda.blockIdx.x] = tile[0]

    x = np.arange(18, dtype=np.float64)
    out = np.full(3, np.nan)
    block_sums[3, 8](x, out)
    np.testing.assert_array_equal(out, x.reshape(3, 6).sum(axis=1))


def test_an_error_in_one_thread_aborts_the_block_and_names_the_thread():
    @cuda.jit
    def fails_in_one_thread(out):
        if cuda.threadIdx.x == 2 and cuda.blockIdx.x == 1:
            raise ValueError("thread two")
        cuda.syncthreads()  # the other threads must not wait here forever
        out[cuda.blockIdx.x * 4 + cuda.threadIdx.x] = 1.0

    with pytest.raises(ValueError, match=r"tid=\[2, 0, 0\] ctaid=\[1, 0, 0\]: thread two"):
        fails_in_one_thread[2, 4](np.zeros(8))
