"""Which algorithm runs a convolution: heuristic, measured tuning, and a persistent cache.

With ``algorithm="auto"`` each conv call asks, in order:

1. the tuning cache: a choice measured earlier for this backend, machine, direction,
   dtype and geometry (kept on disk, so it survives the process, unlike
   ``torch.backends.cudnn.benchmark``);
2. when ``CONVCORE_AUTOTUNE=1``: it measures every candidate now, on the call's own
   arrays, stores the winner and uses it (the first call of each shape is slower);
3. otherwise the backend's heuristic (``_choose`` in ``kernels/conv2d/<backend>.py``).

``tune(...)`` fills the cache ahead of time for one layer. The cache is a JSON file in
``$CONVCORE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/convcore`` or ``~/.cache/convcore``);
entries name the CPU model and thread count, or the GPU, so a cache copied to another
machine is not misapplied.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._backend import cuda_simulated, lookup

DIRECTIONS = ("fwd", "bwd_data", "bwd_weight")
_CACHE_FILE = "tune-v1.json"
_memory: dict | None = None  # the loaded cache: key -> algorithm
# select()'s answers in this process, keyed by objects rather than the cache's string key: building that
# key (and asking the driver which GPU is current) cost tens of microseconds on every GPU call. Cleared
# whenever a choice is stored or the cache cleared. On a machine with several different GPUs, a process
# that switches devices keeps the first device's choice for a shape (still a correct algorithm).
_selected: dict = {}


@dataclass
class TuneResult:
    """One measured choice: the winner and the best (minimum) milliseconds of every candidate."""

    algorithm: str
    times_ms: dict = field(default_factory=dict)


def autotune_enabled() -> bool:
    value = os.environ.get("CONVCORE_AUTOTUNE", "0").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"CONVCORE_AUTOTUNE must be 0 or 1, got {value!r}")


def cache_path() -> Path:
    root = os.environ.get("CONVCORE_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "convcore")
    return Path(root) / _CACHE_FILE


def _load() -> dict:
    global _memory
    if _memory is None:
        path = cache_path()
        _memory = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                _memory = {str(k): str(v) for k, v in data.items()}
            except (OSError, ValueError) as exc:
                warnings.warn(f"convcore: ignoring unreadable tuning cache {path}: {exc}", RuntimeWarning, stacklevel=3)
    return _memory


def _store(key: str, algorithm: str) -> None:
    _selected.clear()
    memory = _load()
    memory[key] = algorithm
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        on_disk = {}
        if path.exists():  # merge with what another process may have written meanwhile
            try:
                on_disk = json.loads(path.read_text())
            except (OSError, ValueError):
                on_disk = {}
        on_disk.update(memory)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tune-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(on_disk, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: readers never see half a file
    except OSError as exc:
        warnings.warn(f"convcore: could not write the tuning cache {path} ({exc}); "
                      "the choice is kept for this process only", RuntimeWarning, stacklevel=3)


def clear_cache(*, memory_only: bool = False) -> None:
    """Forget tuned choices: in this process, and (unless ``memory_only``) on disk."""
    global _memory
    _memory = None
    _selected.clear()
    if not memory_only:
        cache_path().unlink(missing_ok=True)


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(backend: str) -> str:
    if backend == "cuda":
        if cuda_simulated():
            return "numba-cuda-simulator"
        from numba import cuda

        return _gpu_name(cuda.get_current_device().id)
    return f"{_cpu_model()} x{_cpu_threads()}"


@functools.lru_cache(maxsize=None)
def _gpu_name(device_id: int) -> str:
    from numba import cuda

    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    return f"{name} cc{device.compute_capability[0]}{device.compute_capability[1]}"


def _cpu_threads() -> int:
    import numba

    return numba.get_num_threads()


def _key(backend, direction, geom, dtype) -> str:
    sizes = ",".join(str(v) for v in (geom.N, geom.C, geom.H, geom.W, geom.K, geom.R, geom.S))
    config = f"s{geom.stride} p{geom.padding} d{geom.dilation} g{geom.groups}".replace(" ", "")
    return f"{backend}|{_machine(backend)}|{direction}|{np.dtype(dtype).name}|{sizes}|{config}"


def candidates(backend: str, direction: str, geom) -> list[str]:
    """The algorithms (and variants) the backend can run for this geometry."""
    if backend == "numpy":
        return ["auto"]
    return list(lookup("conv2d_candidates", backend)(direction, geom))


def _synchronize(backend):
    if backend == "cuda":
        if cuda_simulated():
            return "numba-cuda-simulator"
        from numba import cuda

        cuda.synchronize()


def measure(backend: str, direction: str, geom, run, repeats: int = 3) -> TuneResult:
    """Time ``run(algorithm)`` for every candidate (one warm-up call, which also
    compiles, then the minimum of ``repeats``: on a shared machine interference only
    ever adds time) and return the fastest."""
    times = {}
    for algorithm in candidates(backend, direction, geom):
        run(algorithm)
        _synchronize(backend)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(algorithm)
            _synchronize(backend)
            samples.append(time.perf_counter() - start)
        times[algorithm] = 1e3 * min(samples)
    best = min(times, key=times.get)
    return TuneResult(best, times)


def select(backend: str, direction: str, geom, dtype, run) -> str:
    """The algorithm for an ``algorithm="auto"`` call: cached, else measured now when
    CONVCORE_AUTOTUNE=1, else "auto" (the backend's heuristic)."""
    if backend == "numpy":
        return "auto"
    autotune = autotune_enabled()
    threads = _cpu_threads() if backend == "cpu" else 0  # part of the CPU key: set_num_threads changes it
    memo = (backend, direction, geom, np.dtype(dtype), autotune, threads)  # (dtype.name is slow)
    chosen = _selected.get(memo)
    if chosen is None:
        chosen = _selected[memo] = _select(backend, direction, geom, dtype, run, autotune)
    return chosen


def _select(backend, direction, geom, dtype, run, autotune) -> str:
    key = _key(backend, direction, geom, dtype)
    cached = _load().get(key)
    if cached is not None:
        if cached in candidates(backend, direction, geom):
            return cached
        warnings.warn(f"convcore: tuning cache entry {cached!r} for {key} is not a current candidate; "
                      "re-tuning or using the heuristic", RuntimeWarning, stacklevel=3)
    if not autotune:
        return "auto"
    result = measure(backend, direction, geom, run)
    _store(key, result.algorithm)
    return result.algorithm


def record(backend: str, direction: str, geom, dtype, result: TuneResult) -> None:
    _store(_key(backend, direction, geom, dtype), result.algorithm)
