"""Offline GPU build check: every CUDA kernel compiles for sm_80 and sm_90 without spills.

Runs ``python -m convcore.kernels.report`` in a subprocess without the simulator
(compile_ptx needs the real CUDA target; no GPU is needed).
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
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


def test_report_covers_every_kernel_factory(report):
    """Each ``make_*`` kernel factory of every CUDA module is in the report, for both dtypes and both CCs."""
    _, rows = report
    seen = {(r["family"], r["kernel"], r["dtype"], r["cc"]) for r in rows}
    for family, module in cuda_families():
        from numba import float32

        covered = {entry[0] for entry in module.signatures(float32).values()}
        factories = {obj for name, obj in inspect.getmembers(module, inspect.isfunction)
                     if name.startswith("make_") and obj.__module__ == module.__name__}
        assert factories <= covered, f"{family}: kernels missing from signatures(): {factories - covered}"
        for name in module.signatures(float32):
            for dtype in ("float32", "float64"):
                for cc in (80, 90):
                    assert (family, name, dtype, cc) in seen
    assert importlib.import_module("convcore.kernels.conv2d.cuda")
