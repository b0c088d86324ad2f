"""Offline GPU build check: every CUDA kernel compiles for sm_80 and sm_90 without spills.

Runs ``python -m convcore.kernels.report`` in a subprocess without the simulator
(compile_ptx needs the real CUDA target; no GPU is needed).
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys

import pytest
from convcore.kernels.report import cuda_families


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("ptx") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-m", "convcore.kernels.report", "--json", str(path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert path.exists(), f"report failed:\n{done.stdout}\n{done.stderr}"
    return done, json.loads(path.read_text())


def test_every_kernel_builds_without_spills(report):
    done, rows = report
    problems = [f"{r['family']}.{r['kernel']} {r['dtype']} sm_{r['cc']}: {r['problems']}" for r in rows if r["problems"]]
    assert not problems, "\n".join(problems)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in rows:
        assert 0 < row["registers"] <= 128 and row["spill_stores"] == row["spill_loads"] == 0
        assert row["smem_bytes"] <= 48 * 1024 and 0 < row["occupancy"] <= 1


def _cuda_modules(family):
    """A family's cuda.py and its sibling kernel modules cuda_*.py, whose factories cuda.signatures() must list."""
    package = importlib.import_module(f"convcore.kernels.{family}")
    names = [info.name for info in pkgutil.iter_modules(package.__path__)
             if info.name == "cuda" or info.name.startswith("cuda_")]
    return [importlib.import_module(f"convcore.kernels.{family}.{name}") for name in names]


def test_report_covers_every_kernel_factory(report):
    """Each ``make_*`` kernel factory of every CUDA module (cuda.py and its cuda_*.py siblings) is in the
    report, for both dtypes and both CCs."""
    _, rows = report
    seen = {(r["family"], r["kernel"], r["dtype"], r["cc"]) for r in rows}
    for family, module in cuda_families():
        from numba import float32

        # Entries may bind static parameters (a tile) with functools.partial.
        covered = {getattr(entry[0], "func", entry[0]) for entry in module.signatures(float32).values()}
        factories = set()
        for source in _cuda_modules(family):
            factories |= {obj for name, obj in inspect.getmembers(source, inspect.isfunction)
                          if name.startswith("make_") and obj.__module__ == source.__name__}
        assert factories <= covered, f"{family}: kernels missing from signatures(): {factories - covered}"
        for name in module.signatures(float32):
            for dtype in ("float32", "float64"):
                for cc in (80, 90):
                    assert (family, name, dtype, cc) in seen
    assert len(_cuda_modules("conv2d")) == 5  # cuda, cuda_depthwise, cuda_depthwise_unrolled, cuda_direct, cuda_igemm
