"""Offline GPU build check: every CUDA kernel compiles for sm_80 and sm_90 without spills.

Runs ``python -m convcore.kernels.report`` in a subprocess without the simulator
(compile_ptx needs the real CUDA target; no GPU is needed). The report is minutes of
NVVM and ptxas, so conftest starts it as soon as these tests are selected
(``start_report``): it runs on the cores the rest of the suite leaves idle (Numba's
compiler and the CUDA simulator run on one), and the fixture waits for it.
"""
from __future__ import annotations

import atexit
import importlib
import inspect
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile

import pytest
from convcore.kernels.report import cuda_families

_run = {}


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_report(alone: bool = True) -> None:
    """Start the report in the background (once): with every CPU when these are the only tests
    selected, else with one CPU fewer, which the rest of the suite uses."""
    if _run:
        return
    directory = tempfile.mkdtemp(prefix="convcore-ptx-report-")
    jobs = _cpus() if alone else max(1, _cpus() - 1)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    log = open(os.path.join(directory, "output.txt"), "w")  # a file: a pipe nobody reads could fill up
    command = [sys.executable, "-m", "convcore.kernels.report", "--json", os.path.join(directory, "report.json"),
               "--jobs", str(jobs)]
    _run.update(directory=directory, log=log,
                process=subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    atexit.register(_stop_report)


def _stop_report() -> None:
    if not _run:
        return
    if _run["process"].poll() is None:  # the session ended before the tests that read it
        _run["process"].kill()
        _run["process"].wait()
    _run["log"].close()
    shutil.rmtree(_run["directory"], ignore_errors=True)
    _run.clear()


@pytest.fixture(scope="module")
def report():
    start_report()
    try:
        returncode = _run["process"].wait(timeout=900)
        with open(os.path.join(_run["directory"], "output.txt")) as handle:
            output = handle.read()
        path = os.path.join(_run["directory"], "report.json")
        assert os.path.exists(path), f"report failed:\n{output}"
        with open(path) as handle:
            rows = json.load(handle)
        yield returncode, output, rows
    finally:
        _stop_report()


def test_every_kernel_builds_without_spills(report):
    returncode, output, rows = report
    problems = [f"{r['family']}.{r['kernel']} {r['dtype']} sm_{r['cc']}: {r['problems']}" for r in rows if r["problems"]]
    assert not problems, "\n".join(problems)
    assert returncode == 0, output
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
    _, _, rows = report
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
