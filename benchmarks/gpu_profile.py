"""Where the time of a convcore CUDA call goes, on a real GPU (run by benchmarks/gpu_run.sh when GPU_PROFILE=1).

    python benchmarks/gpu_profile.py [--cases a,b] [--calls 20] [--out DIR]

1. GPU kernel time: torch.profiler (CUPTI sees every kernel in the process, Numba's included)
   records convcore's and PyTorch's kernels for the same ops; the table gives each kernel's
   mean device time, so kernel quality is separated from launch overhead.
2. Host overhead: the wall time of one synchronised call next to the floor (synchronize alone,
   an empty Numba kernel launch, a device allocation), and a cProfile of the hottest host path.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np

DEFAULT_CASES = ("resnet50_3x3_56:conv2d,conv2d_input,conv2d_weight", "resnet50_1x1_56_reduce:conv2d,conv2d_input",
                 "mobilenet_dw3x3_112:conv2d,conv2d_weight", "vgg16_3x3_56:conv2d", "resnet50_act_56:hadamard,relu",
                 "lenet_5x5_14_b1:conv2d")


def _wall_us(fn, sync, calls):
    fn()
    sync()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e6)
    return float(np.median(samples))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=";".join(DEFAULT_CASES), help="layer:op,op;layer:op ...")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch
    from numba import cuda
    from torch.profiler import ProfilerActivity, profile

    import convcore
    from convcore._device_memory import device_empty, pool_status
    from convcore.bench.ops import OP_SPECS
    from convcore.bench.shapes import suite

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cases = {c.layer: c for c in suite("full") + suite("quick")}
    rng = np.random.default_rng(0)
    lines = []

    # Host floor.
    a = cuda.to_device(rng.standard_normal(1 << 20).astype(np.float32))

    @cuda.jit
    def empty(x):
        pass

    @cuda.jit
    def three(x, y, z, n, m):
        pass

    floor = {
        "cuda.synchronize": _wall_us(lambda: None, cuda.synchronize, 200),
        "empty kernel, 1 array arg": _wall_us(lambda: empty[1, 32](a), cuda.synchronize, 200),
        "empty kernel, 3 arrays + 2 ints": _wall_us(lambda: three[1, 32](a, a, a, 3, 4), cuda.synchronize, 200),
        "cuda.device_array(4 MB)": _wall_us(lambda: cuda.device_array(1 << 20, np.float32), cuda.synchronize, 200),
        "torch.empty(4 MB) + sync": _wall_us(lambda: torch.empty(1 << 20, device="cuda"), torch.cuda.synchronize, 200),
        "convcore device_empty(4 MB)": _wall_us(lambda: device_empty((1 << 20,), np.float32), cuda.synchronize, 200),
    }
    lines.append(f"convcore allocator: {pool_status()}")
    lines.append("host floor (median us per synchronised call):")
    lines += [f"  {k:34s} {v:8.1f}" for k, v in floor.items()]

    work = []
    for item in args.cases.split(";"):
        layer, ops = item.split(":")
        for op in ops.split(","):
            work.append((cases[layer], op))

    for case, op in work:
        spec = OP_SPECS[op]
        inputs = spec.make(case.shape, rng)
        dev = {k: cuda.to_device(v) for k, v in inputs.items()}
        tens = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}

        def mine(spec=spec, dev=dev, case=case):
            return spec.call(convcore, dev, case.shape, "cuda")

        def theirs(spec=spec, tens=tens, case=case):
            with torch.no_grad():
                return spec.torch(torch, tens, case.shape)

        wall_mine = _wall_us(mine, cuda.synchronize, args.calls)
        wall_theirs = _wall_us(theirs, torch.cuda.synchronize, args.calls)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.calls):
                mine()
            cuda.synchronize()
            for _ in range(args.calls):
                theirs()
            torch.cuda.synchronize()
        kernels = []
        for ev in prof.key_averages():
            dev_us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
            if dev_us:
                kernels.append((dev_us / args.calls, ev.count / args.calls, ev.key[:90]))
        kernels.sort(reverse=True)
        lines.append(f"\n{case.layer} {op}: wall per call convcore {wall_mine:.1f} us, torch {wall_theirs:.1f} us")
        lines.append("  device us/call  launches/call  kernel")
        lines += [f"  {us:12.1f}  {n:8.1f}  {name}" for us, n, name in kernels[:8]]

    # Host path of a small conv and of hadamard.
    for layer, op in (("lenet_5x5_14_b1", "conv2d"), ("resnet50_act_56_b2", "hadamard")):
        case, spec = cases[layer], OP_SPECS[op]
        dev = {k: cuda.to_device(v) for k, v in spec.make(case.shape, rng).items()}
        spec.call(convcore, dev, case.shape, "cuda")
        cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            spec.call(convcore, dev, case.shape, "cuda")
        cuda.synchronize()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        lines.append(f"\ncProfile, 200 calls of {layer} {op} (tottime):")
        lines += ["  " + ln for ln in buf.getvalue().splitlines() if ln.strip()][4:32]

    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(f"{args.out}/profile.txt", "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
