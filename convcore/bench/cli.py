"""``convcore bench``: verified GFLOP/s and GB/s per layer, op and backend, with peers as ratios.

Exit status: 0 when every timed row matched the NumPy reference, 1 when any did not
(or a backend raised), 2 for bad arguments.
"""
from __future__ import annotations

import os
import platform

import numpy as np

from .. import _openblas
from .._backend import OPENMP_WAITING, openmp_waiting_defaults
from .ops import OP_SPECS
from .shapes import SUITES, suite

DEFAULT_REPEATS = 5
DEFAULT_NUMPY_REPEATS = 2


def add_parser(commands):
    bench = commands.add_parser(
        "bench", help="benchmark convcore ops (verified) against NumPy and PyTorch",
        description="Benchmark convcore ops per layer shape, verified against the NumPy reference.")
    bench.add_argument("--suite", choices=SUITES, default="quick", help="quick (default, < 2 min on 2 cores) or full")
    bench.add_argument("--backend", default=None,
                       help="comma-separated backends, e.g. cpu,cuda (default: every available one but numpy; "
                            "the CUDA simulator is never benchmarked)")
    bench.add_argument("--ops", default=None, help=f"comma-separated ops (default: all): {','.join(OP_SPECS)}")
    bench.add_argument("--cases", default=None,
                       help="comma-separated substrings; keep only the layers whose name contains one (e.g. 3x3_56,lenet)")
    bench.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed calls per contender")
    bench.add_argument("--numpy-repeats", type=int, default=DEFAULT_NUMPY_REPEATS,
                       help="timed calls of the (slow) NumPy reference peer; 0 leaves it out of the timings "
                            "(results are still checked against it)")
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    bench.add_argument("--json", help="write {machine, results} as JSON to this path")
    bench.add_argument("--compare", help="a JSON file from an earlier --json run: print changes, flag >10%% regressions")
    bench.add_argument("--plot", help="draw a bar chart of GFLOP/s and GB/s per layer and backend (PNG)")
    bench.set_defaults(run=run)


def _split(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def select_backends(requested):
    """(backends to run, {skipped backend: reason}). Asked-for backends that cannot run are errors,
    except the CUDA simulator, which is reported as skipped: its timings would mean nothing."""
    from .._backend import BACKENDS, backends, cuda_simulated

    info = backends()
    skipped = {}
    if cuda_simulated():
        skipped["cuda"] = "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): timings would be meaningless"
    elif not info["cuda"].available:
        skipped["cuda"] = info["cuda"].reason
    if requested is None:
        return [n for n in BACKENDS if n != "numpy" and info[n].available and n not in skipped], skipped
    names = _split(requested)
    for name in names:
        if name not in BACKENDS:
            raise SystemExit(f"convcore bench: unknown backend {name!r}; expected some of {', '.join(BACKENDS)}")
        if not info[name].available and name not in skipped:
            raise SystemExit(f"convcore bench: backend {name!r} is not available: {info[name].reason}")
    return [n for n in names if n not in skipped], {n: r for n, r in skipped.items() if n in names}


def select_ops(requested):
    if requested is None:
        return list(OP_SPECS)
    names = _split(requested)
    unknown = [n for n in names if n not in OP_SPECS]
    if unknown:
        raise SystemExit(f"convcore bench: unknown op(s) {', '.join(unknown)}; expected some of {', '.join(OP_SPECS)}")
    return names


def machine_info(skipped, torch, backends_run, sgemm_size=2048) -> dict:
    import numba

    from .._backend import backends
    from ..kernels.gemm import cpu as gemm
    from .runner import copy_gbps, gpu_copy_gbps, sgemm_gflops, torch_gpu_sgemm_gflops

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "torch": getattr(torch, "__version__", None),
        "backends": {n: str(i) for n, i in backends().items()},
        "benchmarked_backends": backends_run,
        "skipped_backends": skipped,
        "sgemm_size": sgemm_size,
        "sgemm_gflops": sgemm_gflops(sgemm_size),
        "gemm": gemm.describe(),
        "convcore_sgemm_gflops": sgemm_gflops(sgemm_size, matmul=gemm.matmul) if gemm.enabled() else None,
        "gpu_sgemm_gflops": torch_gpu_sgemm_gflops(torch) if "cuda" in backends_run else None,
        "copy_gbps": copy_gbps(16 if sgemm_size < 1024 else 256),
        "gpu_copy_gbps": gpu_copy_gbps() if "cuda" in backends_run else None,
    }


def run(args) -> int:
    from tqdm import tqdm

    from . import report
    from .runner import Peers, Row, run_op, settle_allocator

    if args.repeats < 1 or args.numpy_repeats < 0:
        raise SystemExit("convcore bench: --repeats must be at least 1 and --numpy-repeats at least 0")
    # Before PyTorch (whose libgomp Numba then shares) and Numba's thread pool load: see
    # convcore._backend.openmp_waiting_defaults. The same settings apply to both contenders.
    set_here = openmp_waiting_defaults()
    if args.plot:
        report.require_matplotlib()  # fail before the benchmark, not after
    names, skipped = select_backends(args.backend)
    ops = select_ops(args.ops)
    old_rows = report.load_json(args.compare)[1] if args.compare else None
    work = [(case, op) for case in suite(args.suite) for op in case.ops if op in ops]
    if args.cases:
        wanted = _split(args.cases)
        work = [(case, op) for case, op in work if any(w in case.layer for w in wanted)]
        if not work:
            raise SystemExit(f"convcore bench: --cases {args.cases!r} matches no layer of suite {args.suite!r}")
    peers = Peers(use_torch=not args.no_torch)
    machine = machine_info(skipped, peers.torch, names, sgemm_size=256 if args.suite == "test" else 2048)
    machine["omp_wait_policy"] = ", ".join(f"{name}={os.environ[name]}" for name in OPENMP_WAITING) + (
        f" ({', '.join(set_here)} set by convcore bench)" if set_here else "")
    machine["openblas"] = _openblas.describe()
    print(report.format_machine(machine), flush=True)
    if not names:
        print("convcore bench: no backend left to benchmark")
    settle_allocator()  # see its docstring: each call's large blocks come from the heap, as in a training process
    rng = np.random.default_rng(0)
    rows = []
    for case, op in tqdm(work, desc=f"bench {args.suite}", unit="op", disable=not names):
        rows += run_op(case, op, names, args.suite, peers, args.repeats, args.numpy_repeats, rng)
        for backend, reason in (skipped if args.backend else {}).items():  # asked for: say so in every row
            rows.append(Row(args.suite, case.layer, str(case.shape), op, backend, OP_SPECS[op].unit,
                            status="skipped", note=reason))
        if args.json:  # after every op, so a run stopped by a time limit still leaves its rows
            report.save_json(args.json, machine, rows)
    print(report.format_table(rows))
    if args.json:
        report.save_json(args.json, machine, rows)
        print(f"wrote {args.json}")
    if old_rows is not None:
        text, _ = report.compare(old_rows, rows)
        print(text)
    if args.plot:
        report.plot(args.plot, rows)
        print(f"wrote {args.plot}")
    bad = [r for r in rows if r.verified is False]
    if bad:
        print(f"convcore bench: {len(bad)} row(s) NOT verified against the NumPy reference")
        return 1
    return 0 if names else 2
