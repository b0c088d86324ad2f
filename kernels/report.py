"""Offline GPU build report: every CUDA kernel through ``compile_ptx`` and ``ptxas -v``.

    python -m convcore.kernels.report [--cc 80,90] [--json PATH]

For each kernel, dtype and compute capability: registers per thread, spill bytes,
static shared memory, theoretical occupancy, and whether a float32 kernel's PTX
touches float64. Needs no GPU, only the CUDA toolkit wheels (``numba-cuda[cu13]``
for NVVM, ``nvidia-cuda-nvcc`` for ptxas). Must run without the Numba simulator.
Kernel families are discovered: any ``convcore.kernels.<family>.cuda`` module with a
``signatures(dt)`` function is included.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

# Per-SM limits for the occupancy estimate (CUDA occupancy calculator data).
_SM_LIMITS = {
    80: dict(regs=65536, smem=167936, warps=64, blocks=32),
    90: dict(regs=65536, smem=232448, warps=64, blocks=32),
}
MAX_REGISTERS = 128
MAX_STATIC_SMEM = 48 * 1024


@dataclass
class KernelReport:
    family: str
    kernel: str
    dtype: str
    cc: int
    registers: int
    spill_stores: int
    spill_loads: int
    smem_bytes: int
    stack_bytes: int
    threads: int
    occupancy: float
    f64_in_f32: bool

    @property
    def problems(self) -> list[str]:
        found = []
        if self.spill_stores or self.spill_loads:
            found.append(f"spills ({self.spill_stores} B stores, {self.spill_loads} B loads)")
        if self.registers > MAX_REGISTERS:
            found.append(f"{self.registers} registers > {MAX_REGISTERS}")
        if self.smem_bytes > MAX_STATIC_SMEM:
            found.append(f"{self.smem_bytes} B static shared memory > 48 KB")
        if self.f64_in_f32:
            found.append("float64 instructions in a float32 kernel")
        return found


def find_ptxas() -> str:
    # The wheel's ptxas first: it matches the NVVM (from the same wheels) that wrote the
    # PTX; a system toolkit may be older and reject a newer PTX version.
    candidates = []
    for root in sys.path:
        candidates += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "bin", "ptxas")), reverse=True)
        candidates += glob.glob(os.path.join(root, "nvidia", "cuda_nvcc", "bin", "ptxas"))
    candidates.append(shutil.which("ptxas"))
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "ptxas"))
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("ptxas not found: pip install nvidia-cuda-nvcc (the 'test' extra) or set CUDA_HOME")


def occupancy(cc: int, registers: int, smem: int, threads: int) -> float:
    limits = _SM_LIMITS[cc]
    warps_per_block = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = limits["regs"] // (regs_per_warp * warps_per_block)
    by_smem = limits["smem"] // smem if smem else limits["blocks"]
    by_warps = limits["warps"] // warps_per_block
    blocks = min(by_regs, by_smem, by_warps, limits["blocks"])
    return blocks * warps_per_block / limits["warps"]


def _parse_ptxas(text: str) -> dict:
    def grab(pattern):
        match = re.search(pattern, text)
        return int(match.group(1)) if match else 0

    return dict(
        registers=grab(r"Used (\d+) registers"),
        spill_stores=grab(r"(\d+) bytes spill stores"),
        spill_loads=grab(r"(\d+) bytes spill loads"),
        smem_bytes=grab(r"(\d+) bytes smem"),
        stack_bytes=grab(r"(\d+) bytes stack frame"),
    )


def _uses_f64(ptx: str) -> bool:
    body = "\n".join(line for line in ptx.splitlines() if not line.lstrip().startswith("//"))
    return re.search(r"\.f64\b", body) is not None


def cuda_families():
    import convcore.kernels as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"convcore.kernels.{info.name}.cuda")
        except ModuleNotFoundError as exc:
            if exc.name == f"convcore.kernels.{info.name}.cuda":
                continue
            raise
        if hasattr(module, "signatures"):
            yield info.name, module


def _jobs(ccs):
    """(family, module name, kernel name, dtype name, ccs) for every kernel and dtype, in report order:
    one job builds a kernel for all the compute capabilities (one report row per cc)."""
    from numba import float32, float64

    return [(family, module.__name__, name, str(dt), tuple(ccs))
            for family, module in cuda_families()
            for dt in (float32, float64)
            for name in module.signatures(dt)]


def _ptx_per_cc(pyfunc, signature, ccs):
    """The PTX of one kernel for each cc. Numba's front end (typing, lowering to NVVM IR: most of a
    build) runs once, at the lowest cc, and NVVM generates each cc's PTX from that IR, as the
    separate ``compile_ptx(cc=...)`` calls would (same PTX up to generated names; the front end
    consults the cc only for features every cc here has: f64 atomics from 6.0, tanh.approx from
    7.5). Through numba-cuda's internal ``_compile_pyfunc_with_fixup`` (what ``compile_ptx``
    calls); without it, one ``compile_ptx`` per cc."""
    from numba import cuda
    from numba.cuda import compiler

    pairs = [(cc // 10, cc % 10) for cc in ccs]
    compile_once = getattr(compiler, "_compile_pyfunc_with_fixup", None)
    if compile_once is None or len(pairs) == 1:
        return [cuda.compile_ptx(pyfunc, signature, cc=pair)[0] for pair in pairs]
    library, _ = compile_once(pyfunc, signature, device=False, abi="numba", cc=min(pairs))
    ptxes = []
    for pair in pairs:
        codes = library.get_asm_strs(cc=pair)
        if len(codes) != 1:
            raise RuntimeError(f"{pyfunc.__qualname__}: {len(codes)} PTX modules for sm_{pair[0]}{pair[1]}, expected 1")
        ptxes.append(codes[0])
    return ptxes


def _build_one(job, tmp) -> list[KernelReport]:
    import importlib

    from numba import float32, float64

    from ._cuda_util import THREADS

    family, module_name, name, dt_name, ccs = job
    dt = {"float32": float32, "float64": float64}[dt_name]
    entry = importlib.import_module(module_name).signatures(dt)[name]
    factory, signature = entry[0], entry[1]
    threads = entry[2] if len(entry) > 2 else THREADS
    reports = []
    for cc, ptx in zip(ccs, _ptx_per_cc(factory(dt), signature, ccs)):
        path = os.path.join(tmp, f"{family}_{name}_{dt}_{cc}.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        done = subprocess.run([find_ptxas(), "-v", f"--gpu-name=sm_{cc}", "-o", os.devnull, path],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"ptxas failed on {family}.{name} ({dt}, sm_{cc}):\n{done.stderr}")
        stats = _parse_ptxas(done.stderr)
        reports.append(KernelReport(family, name, str(dt), cc, threads=threads,
                                    occupancy=occupancy(cc, stats["registers"], stats["smem_bytes"], threads),
                                    f64_in_f32=(dt == float32 and _uses_f64(ptx)), **stats))
    return reports


def build_report(ccs=(80, 90), jobs: int | None = None) -> list[KernelReport]:
    """Compile every kernel for every cc; ``jobs`` worker processes (default: one per CPU) — each
    build is an independent NVVM + ptxas run, and the whole report took 3 minutes on 2 cores serially."""
    import concurrent.futures
    import multiprocessing

    find_ptxas()  # fail before any work if ptxas is missing
    work = _jobs(ccs)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(work)))
    with tempfile.TemporaryDirectory() as tmp:
        if jobs == 1:
            return [row for job in work for row in _build_one(job, tmp)]
        # spawn: the workers start clean (no NVVM or CUDA state inherited through fork)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            return [row for rows in pool.map(_build_one, work, [tmp] * len(work), chunksize=2) for row in rows]


def main(argv=None) -> int:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("the PTX report cannot run in the Numba CUDA simulator: unset NUMBA_ENABLE_CUDASIM", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m convcore.kernels.report", description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="80,90", help="compute capabilities, e.g. 80,90")
    parser.add_argument("--json", help="also write the rows as JSON to this path")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per CPU)")
    args = parser.parse_args(argv)
    reports = build_report(tuple(int(v) for v in args.cc.split(",")), args.jobs)
    header = f"{'kernel':38} {'dtype':8} {'sm':>3} {'regs':>5} {'spill':>6} {'smem':>7} {'occ':>5}  problems"
    print(header)
    print("-" * len(header))
    for row in reports:
        spill = row.spill_stores + row.spill_loads
        print(f"{row.family + '.' + row.kernel:38} {row.dtype:8} {row.cc:>3} {row.registers:>5} {spill:>6} "
              f"{row.smem_bytes:>7} {row.occupancy:>5.0%}  {'; '.join(row.problems) or 'ok'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([dict(asdict(r), problems=r.problems) for r in reports], handle, indent=1)
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
