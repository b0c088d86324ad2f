"""Time convcore's CPU conv algorithms against each other and PyTorch, in one process.

On a noisy host, separate runs drift by more than the differences being judged; here every
repeat calls each contender once, in a fresh random order, so drift hits all of them alike.
Prints the median milliseconds per contender and PyTorch's time over each.

    python benchmarks/ab_algorithms.py lenet_5x5_14_b128 --ops conv2d \
        --algorithms auto,direct,gemm --repeats 40

Cases are the bench suite's layer names (convcore/bench/shapes.py), matched by substring.
"""
from __future__ import annotations

import argparse
import random
import time

import convcore  # before NumPy: it sets OpenBLAS's idle spin (convcore/_openblas.py)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="comma-separated substrings of bench layer names")
    parser.add_argument("--ops", default="conv2d,conv2d_input,conv2d_weight")
    parser.add_argument("--algorithms", default="auto", help="comma-separated algorithm names")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--suite", default="full")
    args = parser.parse_args(argv)

    import numba
    import numpy as np
    import torch

    from convcore.bench.ops import OP_SPECS
    from convcore.bench.runner import settle_allocator
    from convcore.bench.shapes import suite

    torch.set_num_threads(numba.get_num_threads())
    settle_allocator()  # as convcore bench does (see its docstring)
    wanted = args.cases.split(",")
    rng = np.random.default_rng(0)
    for case in suite(args.suite):
        if not any(w in case.layer for w in wanted):
            continue
        for op in args.ops.split(","):
            if op not in case.ops:
                continue
            spec = OP_SPECS[op]
            inputs = spec.make(case.shape, rng)
            tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
            contenders = {"torch": lambda spec=spec, tensors=tensors, layer=case.shape: spec.torch(torch, tensors, layer)}
            for name in args.algorithms.split(","):
                contenders[name] = _call(spec, inputs, case.shape, name)
            times = {name: [] for name in contenders}
            for fn in contenders.values():
                fn()
                fn()
            order = list(contenders)
            for _ in range(args.repeats):
                random.shuffle(order)
                for name in order:
                    start = time.perf_counter()
                    contenders[name]()
                    times[name].append(time.perf_counter() - start)
            medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
            cells = "  ".join(f"{name} {ms:.3f} ({medians['torch'] / ms:.2f}x)" for name, ms in medians.items())
            print(f"{case.layer:36s} {op:16s} {cells}", flush=True)


def _call(spec, inputs, layer, algorithm):
    kwargs = dict(layer.kwargs, backend="cpu", algorithm=algorithm)
    if spec.name == "conv2d":
        return lambda: convcore.conv2d(inputs["input"], inputs["weight"], **kwargs)
    if spec.name == "conv2d_bias_relu":
        return lambda: convcore.conv2d(inputs["input"], inputs["weight"], inputs["bias"], activation="relu", **kwargs)
    if spec.name == "conv2d_input":
        return lambda: convcore.conv2d_input(layer.input_shape, inputs["weight"], inputs["grad_output"], **kwargs)
    if spec.name == "conv2d_weight":
        return lambda: convcore.conv2d_weight(inputs["input"], layer.weight_shape, inputs["grad_output"], **kwargs)
    raise ValueError(f"ab_algorithms: op {spec.name!r} is not a conv op")


if __name__ == "__main__":
    main()
