"""Every (layer, op) of a benchmark suite through pytest-benchmark, grouped by layer.

    pytest benchmarks/ --benchmark-only                      # quick suite
    CONVCORE_BENCH_SUITE=full pytest benchmarks/ --benchmark-only

Implementations per row: convcore's backends (cpu, cuda), PyTorch and the NumPy reference
as peers. Each convcore result is verified against the float64 reference before timing.
"""
import os

import numpy as np
import pytest

import convcore
from convcore.bench.ops import OP_SPECS, reference, verify
from convcore.bench.runner import Peers
from convcore.bench.shapes import suite

SUITE = os.environ.get("CONVCORE_BENCH_SUITE", "quick")
ROWS = [(case, op) for case in suite(SUITE) for op in case.ops]
IMPLS = ["cpu", "cuda", "torch", "numpy"]
_peers = Peers()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case,op", ROWS, ids=[f"{c.layer}-{op}" for c, op in ROWS])
def test_bench(benchmark, case, op, impl):
    spec = OP_SPECS[op]
    available, reason = spec.available()
    if not available:
        pytest.skip(f"{op}: {reason}")
    if impl in convcore.backends() and not convcore.backends()[impl].available:
        pytest.skip(f"backend {impl}: {convcore.backends()[impl].reason}")
    benchmark.group = case.layer
    benchmark.extra_info.update(op=op, shape=str(case.shape), unit=spec.unit, work=spec.work(case.shape))
    inputs = spec.make(case.shape, np.random.default_rng(0))
    if impl == "torch":
        if _peers.torch is None:
            pytest.skip("PyTorch is not installed")
        gpu = convcore.backends()["cuda"].available and _peers.torch.cuda.is_available()
        contender = _peers.torch_peer(spec, inputs, case.shape, "cuda" if gpu else "cpu")
    else:
        contender = _peers.convcore(spec, inputs, case.shape, impl)
        good, error = verify(contender.warm_up(), reference(spec, inputs, case.shape), spec.terms(case.shape))
        assert good, f"{op} on {impl} differs from the NumPy reference: max rel error {error:.2e}"

    def timed():
        contender.fn()
        contender.sync()

    if impl == "numpy":  # the reference is slow: a couple of rounds are enough
        benchmark.pedantic(timed, rounds=2, iterations=1, warmup_rounds=0)
    else:
        benchmark(timed)
