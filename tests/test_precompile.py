"""kernels.precompile: a register-tiled kernel's first compile runs in a child process and
this process loads it from Numba's cache; where the child fails, it compiles here and says so."""
from __future__ import annotations

import logging
import os
import textwrap

PROBE = '''
import os
from numba import types
from convcore.kernels.precompile import njit_cached

def _double(x):
    return 2.0 * x

def entry():
    with open(os.environ["PROBE_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    return njit_cached(_double, types.float64(types.float64), "{entry}")
'''


def _probe(tmp_path, monkeypatch, name, entry):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PROBE.replace("{entry}", entry)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PROBE_LOG", str(tmp_path / "log"))
    monkeypatch.delenv("CONVCORE_PRECOMPILE_CHILD", raising=False)
    return __import__(name)


def _pids(tmp_path):
    return [int(line) for line in (tmp_path / "log").read_text().split()]


def test_first_compile_in_a_child_then_loaded_from_the_cache(tmp_path, monkeypatch):
    probe = _probe(tmp_path, monkeypatch, "convcore_precompile_probe", "entry")
    f = probe.entry()
    assert f(3.0) == 6.0
    parent, child = _pids(tmp_path)
    assert parent == os.getpid() and child != os.getpid()  # the child compiled it ...
    assert sum(f.stats.cache_hits.values()) == 1 and not f.stats.cache_misses  # ... this process loaded it
    assert probe.entry()(1.5) == 3.0
    assert _pids(tmp_path)[2:] == [os.getpid()]  # cached now: no second child


def test_a_failed_child_compiles_here_and_warns(tmp_path, monkeypatch, caplog):
    probe = _probe(tmp_path, monkeypatch, "convcore_precompile_probe_bad", "no_such_entry")
    with caplog.at_level(logging.INFO, logger="convcore.precompile"):
        f = probe.entry()
    assert f(2.0) == 4.0
    assert "failed" in caplog.text and "compiled in this process" in caplog.text


def test_gemm_kernels_are_loaded_from_the_cache():
    # Whatever compiled them (a child, or an earlier run), this process loaded convcore's
    # GEMM and gemm.nt from Numba's cache rather than JIT-compiling them itself.
    from convcore.kernels.gemm import cpu, nt

    for dispatcher in (*cpu._compiled(), nt._compiled()):
        assert sum(dispatcher.stats.cache_hits.values()) == 1 and not dispatcher.stats.cache_misses
