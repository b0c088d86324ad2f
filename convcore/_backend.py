"""Backend selection, availability and the one dispatch table.

``numpy`` is the reference, ``cpu`` the hand-written Numba CPU kernels, ``cuda`` the
hand-written Numba CUDA kernels. Entries are import paths, resolved on first use, so
``import convcore`` never imports numba.cuda (or numba at all).
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass

from . import _openblas

BACKENDS = ("numpy", "cpu", "cuda")
_default_backend = None  # resolved lazily from CONVCORE_BACKEND


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str

    def __str__(self) -> str:
        state = "available" if self.available else "unavailable"
        return f"{self.name}: {state} ({self.reason})"


def _validate(name, what="backend") -> str:
    if not isinstance(name, str) or name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(BACKENDS + ('auto',))}")
    return name


def set_backend(name: str) -> None:
    """Set the process default backend: 'numpy', 'cpu', 'cuda' or 'auto'.

    'auto' (the default) runs on 'cuda' when an input lives on a GPU
    (``__cuda_array_interface__``) and on 'cpu' otherwise.
    """
    global _default_backend
    _default_backend = _validate(name)


def get_backend() -> str:
    global _default_backend
    if _default_backend is None:
        _default_backend = _validate(os.environ.get("CONVCORE_BACKEND", "auto"), "CONVCORE_BACKEND")
    return _default_backend


def cuda_simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _cuda_info() -> BackendInfo:
    if cuda_simulated():
        return BackendInfo("cuda", True, "running in the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken: say why
        return BackendInfo("cuda", False, f"numba.cuda cannot be imported: {exc}")
    try:
        if not cuda.is_available():
            return BackendInfo("cuda", False, "no CUDA driver or GPU found")
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else device.name
        return BackendInfo("cuda", True, f"{name}, compute capability {device.compute_capability}")
    except Exception as exc:
        return BackendInfo("cuda", False, f"CUDA initialisation failed: {exc}")


def backends() -> dict[str, BackendInfo]:
    """Report each backend as available or not, with the reason."""
    try:
        import numba
        cpu = BackendInfo("cpu", True, f"Numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads")
    except Exception as exc:
        cpu = BackendInfo("cpu", False, f"numba cannot be imported: {exc}")
    return {"numpy": BackendInfo("numpy", True, "NumPy reference"), "cpu": cpu, "cuda": _cuda_info()}


def is_device_array(array) -> bool:
    """True for anything living on a GPU: ``__cuda_array_interface__`` exporters and Numba
    device arrays (whose simulator stand-ins carry only ``__cuda_ndarray__``)."""
    return hasattr(array, "__cuda_array_interface__") or bool(getattr(array, "__cuda_ndarray__", False))


def resolve(backend, *arrays) -> str:
    """The backend an op runs on: the explicit argument, else the process default."""
    name = get_backend() if backend is None else _validate(backend)
    if name == "auto":
        name = "cuda" if any(is_device_array(a) for a in arrays if a is not None) else "cpu"
    if name == "cuda" and not cuda_simulated():
        info = _cuda_info()
        if not info.available:
            raise RuntimeError(f"backend 'cuda' is not available: {info.reason}")
    return name


# (op, backend) -> "module:function". The numpy entries are the references.
_TABLE = {}
_resolved = {}


def register(op: str, backend: str, target: str) -> None:
    _TABLE[(op, backend)] = target


# The OpenMP waiting convcore asks for, unless the user set the variable (see below).
OPENMP_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}


def openmp_waiting_defaults() -> list[str]:
    """Set OPENMP_WAITING's variables the user left unset (before an OpenMP runtime loads);
    returns the names set here.

    Numba's OpenMP workers spin after each parallel region (OMP_WAIT_POLICY unset: about 3 ms,
    libgomp's 300000 spins), and the CPU kernels hand over to OpenBLAS's threads (the GEMM
    steps) and back: on a few cores each pool then waits for the other's spinning threads.
    Measured on 2 cores (ResNet-50 3x3 at 56x56, batch 2): forward 24 -> 10.5 ms, input
    gradient 32 -> 11 ms, weight gradient 17 -> 7 ms with PASSIVE. But PASSIVE alone (no spin
    at all) makes every parallel region wake sleeping workers, 0.05-0.2 ms on a VM, as long
    as a whole small layer; GOMP_SPINCOUNT=10000 (about 0.1 ms) keeps them awake between
    back-to-back regions and still asleep through a GEMM. Measured (21 conv calls of 7 layers,
    2 cores, geometric mean of medians): PASSIVE 2.08 / 2.20 ms, with the spin 1.38 / 1.61 ms;
    odd 3x3 35->50 at 19x19 batch 2: 0.39 -> 0.20 ms; ResNet 1x1 1024->256 at 14x14 batch 2:
    2.0 -> 1.05 ms. A runtime loaded earlier (e.g. PyTorch's own libgomp) has read its
    settings already."""
    chosen = [name for name in OPENMP_WAITING if name not in os.environ]
    for name in chosen:
        os.environ[name] = OPENMP_WAITING[name]
    return chosen


def _prepare_cpu_threads() -> None:
    """Numba's OpenMP runtime loads at the first parallel kernel, after this: it starts with
    convcore's waiting settings unless the user chose them."""
    chosen = openmp_waiting_defaults()
    if chosen:
        logging.getLogger("convcore").info(
            "for Numba's OpenMP threads: " + ", ".join(f"{name}={os.environ[name]}" for name in chosen)
            + " (set them to override)")
    # OpenBLAS's workers spin after each product in the same way, and its kernels may be
    # the wrong ones for the CPU (convcore._openblas): say so when it is too late to fix.
    if _openblas.state() == "preloaded":
        logging.getLogger("convcore").info(_openblas.describe())


def lookup(op: str, backend: str):
    key = (op, backend)
    fn = _resolved.get(key)
    if fn is None:
        if backend == "cpu":
            _prepare_cpu_threads()
        try:
            target = _TABLE[key]
        except KeyError:
            raise NotImplementedError(f"{op} has no {backend!r} implementation") from None
        module, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        _resolved[key] = fn
    return fn
