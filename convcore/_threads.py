"""CPU thread count: the Numba kernels' parallel regions (``prange``).

It follows Numba's: ``NUMBA_NUM_THREADS`` at start-up caps it, and ``set_num_threads``
lowers it (for the calling thread, as ``numba.set_num_threads``). BLAS-backed steps
(the GEMM of ``algorithm="gemm"``, linear) use the BLAS library's own threads, set by
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` before start-up.
"""
from __future__ import annotations


def set_num_threads(n: int) -> None:
    """Run the CPU kernels on ``n`` threads (1 ≤ n ≤ NUMBA_NUM_THREADS)."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    if not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be between 1 and NUMBA_NUM_THREADS={limit}, got {n}")
    numba.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the CPU kernels run on."""
    import numba

    return numba.get_num_threads()
