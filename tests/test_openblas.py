"""convcore sets OpenBLAS's idle-thread spin only where it can still take effect."""
import os
import subprocess
import sys

import pytest


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environ.update(env)
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    return result.stdout.split()


PROBE = "import os, convcore._openblas as o; print(o.state(), os.environ.get('OPENBLAS_THREAD_TIMEOUT', '-'))"


def test_set_when_convcore_comes_before_numpy():
    from convcore import _openblas

    assert _run("import convcore; " + PROBE) == ["set", _openblas.VALUE]


def test_left_alone_when_numpy_loaded_openblas_first():
    assert _run("import numpy; import convcore; " + PROBE) == ["preloaded", "-"]


@pytest.mark.parametrize("first", ["", "import numpy; "])
def test_user_value_kept(first):
    assert _run(first + "import convcore; " + PROBE, OPENBLAS_THREAD_TIMEOUT="20") == ["user", "20"]


def test_preloaded_case_is_logged_with_the_fix():
    code = ("import logging, numpy, convcore; logging.basicConfig(level=logging.INFO); "
            "convcore.conv2d(numpy.ones((1, 1, 3, 3), 'f4'), numpy.ones((1, 1, 1, 1), 'f4'), backend='cpu')")
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert "OPENBLAS_THREAD_TIMEOUT" in result.stderr and "before importing NumPy" in result.stderr
