"""Patches to Numba's CUDA simulator for the test suite (conftest installs them when the simulator is on).

The simulator runs a grid one block at a time, each CUDA thread of the block as a Python thread.
Its semantics are kept: a ``syncthreads()`` releases the block once every live thread waits in it
(a thread that has returned no longer counts), an exception in one thread aborts the others at
their next barrier and is raised, with the thread and block indices, by the launch. One launch
setting differs from a GPU's: grid-stride kernels get at most two blocks, so their loops run
several iterations per thread.
"""
from __future__ import annotations

import sys
import threading


def install() -> None:
    # Every barrier phase waits on GIL hand-offs between the block's threads: the default 5 ms
    # switch interval made barrier-heavy (tiled) kernels ~3x slower than with 0.5 ms.
    sys.setswitchinterval(5e-4)
    _lock_shared_array_lookup()
    _wait_for_blocks_without_polling()
    _cap_grid_stride_launches(blocks=2)


def _lock_shared_array_lookup() -> None:
    """The simulator's cuda.shared.array looks up, then creates, a block's array without a lock:
    two threads of a block switching in between each get their own uninitialised array, and the
    kernel reads garbage (seen once in CI: a depthwise conv off by 7e16). Serialise the lookup."""
    import numpy as np
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    lock = threading.Lock()
    unlocked_array = kernelapi.FakeCUDAShared.array

    def locked_array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # errors and dynamic shared memory: no lookup
            return unlocked_array(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)  # keyed by the caller's file and line, as the simulator does
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = locked_array


class _BlockBarrier:
    """syncthreads() for one block: the simulator's rule, with waiting threads asleep on a condition."""

    def __init__(self, threads: int):
        self._cond = threading.Condition(threading.Lock())
        self._live = threads
        self._waiting = 0
        self._phase = 0
        self.aborted = False

    def _release_if_all_wait(self):
        if self._waiting and self._waiting == self._live:
            self._waiting = 0
            self._phase += 1
            self._cond.notify_all()

    def wait(self):
        with self._cond:
            if self.aborted:
                raise RuntimeError("abort flag set on syncthreads call")
            self._waiting += 1
            phase = self._phase
            self._release_if_all_wait()
            while phase == self._phase and not self.aborted:
                self._cond.wait()
            if self.aborted:
                raise RuntimeError("abort flag set on syncthreads clear")

    def leave(self, failed: bool):
        with self._cond:
            self._live -= 1
            if failed:
                self.aborted = True
                self._cond.notify_all()
            else:
                self._release_if_all_wait()


def _wait_for_blocks_without_polling() -> None:
    """The simulator's BlockManager busy-polls its threads (rebuilding sets of them) to find out
    when all wait in syncthreads(): the polling main thread takes the GIL from the threads doing
    the work, and barrier-heavy kernels (the implicit-GEMM tiles) ran 2-3x slower than with the
    barrier below, where the threads release each other and the main thread just joins them.
    Left as it is if the simulator's internals are not the ones this was written against."""
    import numpy as np
    from numba.cuda.simulator import kernel

    thread_class, manager_class = getattr(kernel, "BlockThread", None), getattr(kernel, "BlockManager", None)
    if thread_class is None or manager_class is None or not hasattr(thread_class, "syncthreads"):
        return

    def syncthreads(self):
        self._block_barrier.wait()

    def run_thread(self):
        failed = False
        try:
            threading.Thread.run(self)
        except Exception as e:  # as BlockThread.run: kept for the launch to raise
            failed = True
            where = f"tid={list(self.threadIdx)} ctaid={list(self.blockIdx)}"
            self.exception = (type(e)(f"{where}: {e}" if str(e) else where), sys.exc_info()[2])
        finally:
            self._block_barrier.leave(failed)

    def run_block(self, grid_point, *args):
        points = list(np.ndindex(*self._block_dim))
        barrier = _BlockBarrier(len(points))
        threads = []
        for block_point in points:
            thread = thread_class(lambda: self._f(*args), self, grid_point, block_point, self._debug)
            thread._block_barrier = barrier
            threads.append(thread)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        failures = [t.exception for t in threads if t.exception]
        # A thread's own error, not the aborts it caused at the other threads' barriers.
        causes = [f for f in failures if "abort flag set on syncthreads" not in str(f[0])] or failures
        if causes:
            raise causes[0][0].with_traceback(causes[0][1])

    thread_class.syncthreads = syncthreads
    thread_class.run = run_thread
    manager_class.run = run_block


def _cap_grid_stride_launches(blocks: int) -> None:
    """Launch grid-stride kernels (every launch sized by _cuda_util.grid_for) with at most ``blocks``
    blocks: each thread then loops over several elements, the path large tensors take on a GPU
    (over MAX_BLOCKS·THREADS = 2M elements) that test-sized ones never reached, and the simulator
    starts a few hundred Python threads per launch (~80 us each) instead of one per element."""
    from convcore.kernels import _cuda_util

    _cuda_util.MAX_BLOCKS = min(_cuda_util.MAX_BLOCKS, blocks)
