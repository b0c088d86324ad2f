"""convcore sets OpenBLAS's idle-thread spin only where it can still take effect, keeps the
user's values, and says so otherwise; a forced OPENBLAS_CORETYPE is reported, never changed."""
import os
import subprocess
import sys

import pytest

from convcore import _openblas

VARIABLES = (_openblas.TIMEOUT, _openblas.CORETYPE)


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)


PROBE = ("import os, convcore._openblas as o; "
         "print(o.state(), os.environ.get(o.TIMEOUT, '-'), os.environ.get(o.CORETYPE, '-'))")


def test_set_when_convcore_comes_before_numpy():
    assert _run("import convcore; " + PROBE).stdout.split() == ["set", _openblas.TIMEOUT_VALUE, "-"]


def test_left_alone_when_numpy_loaded_openblas_first():
    assert _run("import numpy; import convcore; " + PROBE).stdout.split() == ["preloaded", "-", "-"]


@pytest.mark.parametrize("first", ["", "import numpy; "])
def test_user_values_kept(first):
    out = _run(first + "import convcore; " + PROBE, OPENBLAS_THREAD_TIMEOUT="20", OPENBLAS_CORETYPE="Haswell")
    assert out.stdout.split()[1:] == ["20", "Haswell"]


def test_describe_reports_a_forced_coretype():
    out = _run("import convcore._openblas as o; print(o.describe())", OPENBLAS_CORETYPE="Haswell").stdout
    assert "OPENBLAS_THREAD_TIMEOUT=14 (set by convcore)" in out and "OPENBLAS_CORETYPE=Haswell" in out


def test_preloaded_case_is_logged_with_the_fix():
    code = ("import logging, numpy, convcore; logging.basicConfig(level=logging.INFO); "
            "convcore.conv2d(numpy.ones((1, 1, 3, 3), 'f4'), numpy.ones((1, 1, 1, 1), 'f4'), backend='cpu')")
    assert "OPENBLAS_THREAD_TIMEOUT=14 before importing NumPy" in _run(code).stderr
