"""Backend selection, availability reports and array kinds."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import convcore
from convcore._backend import is_device_array


def test_backends_report_every_backend_with_a_reason():
    report = convcore.backends()
    assert set(report) == {"numpy", "cpu", "cuda"}
    assert report["numpy"].available and report["cpu"].available
    for info in report.values():
        assert info.reason
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        assert report["cuda"].available and "simulator" in report["cuda"].reason


def test_set_backend_is_the_default(monkeypatch, rng):
    from convcore import _backend

    monkeypatch.setattr(_backend, "_default_backend", None)
    calls = []
    real = _backend.lookup

    def spy(op, name):
        calls.append(name)
        return real(op, name)

    monkeypatch.setattr("convcore.conv.lookup", spy)
    x = rng.uniform(-1, 1, (1, 2, 4, 4))
    w = rng.uniform(-1, 1, (3, 2, 3, 3))
    convcore.set_backend("numpy")
    convcore.conv2d(x, w)
    convcore.set_backend("cpu")
    convcore.conv2d(x, w)
    convcore.conv2d(x, w, backend="numpy")
    assert calls == ["numpy", "cpu", "numpy"]
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        convcore.set_backend("gpu")
    convcore.set_backend("auto")


def test_environment_variable_picks_the_backend():
    code = "import convcore; print(convcore.get_backend())"
    env = dict(os.environ, CONVCORE_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["CONVCORE_BACKEND"] = "bogus"
    code = "import convcore, numpy as np; convcore.conv2d(np.ones((1,1,3,3)), np.ones((1,1,1,1)))"
    bad = subprocess.run([sys.executable, "-c", code],
                         env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown CONVCORE_BACKEND 'bogus'" in bad.stderr


def test_import_is_lazy():
    """import convcore loads neither numba nor any optional framework."""
    code = "import sys, convcore; print(sorted(m for m in ('numba', 'numba.cuda', 'torch', 'cupy', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lists_are_accepted_on_host_backends():
    out = convcore.conv2d([[[[1.0, 2.0], [3.0, 4.0]]]], [[[[1.0]]]], backend="cpu")
    assert isinstance(out, np.ndarray) and out.tolist() == [[[[1.0, 2.0], [3.0, 4.0]]]]


def test_cuda_device_arrays_in_device_arrays_out(rng):
    """A Numba device array given to the cuda backend comes back as one, uncopied to the host."""
    if not convcore.backends()["cuda"].available:
        pytest.skip("needs the cuda backend (a GPU or the simulator)")
    from numba import cuda

    x = rng.uniform(-1, 1, (1, 2, 5, 5))
    w = rng.uniform(-1, 1, (3, 2, 3, 3))
    out = convcore.conv2d(cuda.to_device(x), cuda.to_device(w), backend="cuda")
    assert is_device_array(out) and hasattr(out, "copy_to_host")
    np.testing.assert_allclose(out.copy_to_host(), convcore.conv2d(x, w, backend="numpy"), rtol=1e-12)
    auto = convcore.conv2d(cuda.to_device(x), cuda.to_device(w))  # 'auto' follows the data to the device
    assert is_device_array(auto)


def test_cpu_kernels_ask_for_short_passive_openmp_waiting_unless_told(monkeypatch):
    from convcore import _backend

    for name in _backend.OPENMP_WAITING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_backend, "_resolved", {})
    _backend.lookup("relu", "numpy")
    assert not set(_backend.OPENMP_WAITING) & set(os.environ)  # only the Numba CPU kernels start OpenMP
    _backend.lookup("relu", "cpu")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["GOMP_SPINCOUNT"] == "10000"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setattr(_backend, "_resolved", {})
    _backend.lookup("relu", "cpu")
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice stays
    assert os.environ["GOMP_SPINCOUNT"] == "10000"  # each variable on its own


def test_numpy_row_stack_alias_is_restored_for_numba_cuda(monkeypatch):
    """numba-cuda 0.30 refers to np.row_stack, which NumPy 2.5 removed: convcore restores it, and only if missing."""
    from convcore import _compat

    monkeypatch.delattr(np, "row_stack", raising=False)
    assert _compat.restore_numpy_aliases() == ["row_stack"]
    assert np.row_stack is np.vstack
    assert _compat.restore_numpy_aliases() == []  # present: left alone
