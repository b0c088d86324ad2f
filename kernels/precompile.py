"""The register-tiled kernels (kernels.gemm's micro-kernels) are compiled in a child process
and loaded here from Numba's on-disk cache.

Why: measured on this project's 2-core AVX-512 machine, convcore's GEMM runs at about half
its speed in a process that JIT-compiled it, and at full speed in every process that loads
the same kernel from the cache (2048³, 2 threads: 226-254 vs 359-470 GFLOP/s; gemm.nt 275 vs
334). It is the code, not the process: a cached kernel in the compiling process runs at full
speed, and the loop-vectorised kernels are unaffected (the Winograd input transform 0.80 ms
either way). The likely cause is the JIT's code generation (its code model) against the
object code Numba writes to the cache; either way, a first ``convcore bench`` on a fresh
machine would have measured the slow copy. So the first use of such a kernel runs one child
interpreter (same executable, same environment) that compiles and caches it; this process
then loads the cached object code. Where that cannot work (no cache directory, the child
failed), the kernel is compiled here as before, and the ``convcore`` logger says so.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from numba import njit

log = logging.getLogger("convcore.precompile")

_CHILD = "CONVCORE_PRECOMPILE_CHILD"  # set in the child: compile in-process there


def njit_cached(func, signature, entry: str, **options):
    """``njit([signature], cache=True, **options)(func)``, compiled first in a child process
    that runs ``entry`` (a zero-argument function of func's module that compiles it) when
    the cache does not hold it yet."""
    if os.environ.get(_CHILD) != "1" and _in_cache(func, signature, options) is False:
        _compile_in_child(func.__module__, entry)
        if _in_cache(func, signature, options) is False:
            log.warning("%s.%s compiled in this process (the child's compile left nothing in Numba's cache): "
                        "its JIT code may run at half speed", func.__module__, func.__name__)
    return njit([signature], cache=True, **options)(func)


def _in_cache(func, signature, options):
    """True or False, or None when this Numba's cache cannot be asked (then no child)."""
    lazy = njit(cache=True, **options)(func)
    try:
        return lazy._cache.load_overload(signature, lazy.targetctx) is not None
    except Exception as error:  # an internal API: a Numba without it compiles here
        log.info("cannot query Numba's cache for %s (%s): compiling in this process", func.__name__, error)
        return None


def _compile_in_child(module, entry):
    log.info("compiling %s.%s in a child process (first use on this machine)", module, entry)
    command = [sys.executable, "-c", f"import {module} as m; m.{entry}()"]
    env = dict(os.environ, **{_CHILD: "1"})
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("compiling %s.%s in a child process failed (exit %d): %s", module, entry, result.returncode,
                    result.stderr.strip()[-2000:])
