"""``convcore bench``: conv2d GFLOP/s per layer and backend, verified, with peers as ratios."""
from __future__ import annotations

import json
import platform

import numpy as np

from .runner import Row, time_call, verified
from .shapes import SUITES


def add_parser(commands):
    bench = commands.add_parser("bench", help="benchmark conv2d against NumPy and PyTorch")
    bench.add_argument("--suite", choices=sorted(SUITES), default="quick")
    bench.add_argument("--backend", default=None, help="comma-separated backends (default: every available one)")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--json", help="write the results as JSON to this path")
    bench.set_defaults(run=run)


def _torch_conv(layer, x, w):
    try:
        import torch
    except ImportError:
        return None
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    return lambda: torch.nn.functional.conv2d(tx, tw, **layer.kwargs)


def run(args) -> int:
    import convcore
    from tqdm import tqdm

    from .. import reference
    from ..conv import conv_geometry

    available = [n for n, info in convcore.backends().items() if info.available and "simulator" not in info.reason]
    names = args.backend.split(",") if args.backend else [n for n in available if n != "numpy"]
    for name in names:
        if name not in available:
            raise SystemExit(f"convcore bench: backend {name!r} is not available: {convcore.backends()[name].reason}")
    rng = np.random.default_rng(0)
    rows = []
    layers = SUITES[args.suite]
    for layer in tqdm(layers, desc=f"bench {args.suite}", unit="layer"):
        x = rng.uniform(-1, 1, layer.input_shape).astype(np.float32)
        w = rng.uniform(-1, 1, layer.weight_shape).astype(np.float32)
        geom = conv_geometry("bench", x.shape, w.shape, layer.stride, layer.padding, 1, layer.groups)
        expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, geom.stride, geom.padding,
                                    geom.dilation, geom.groups, (geom.P, geom.Q))
        peers = {}
        torch_fn = _torch_conv(layer, x, w)
        if torch_fn is not None:
            peers["torch"] = time_call(torch_fn, args.repeats)[0]
        peers["numpy"] = time_call(lambda: convcore.conv2d(x, w, backend="numpy", **layer.kwargs), 1)[0]
        for name in names:
            out = convcore.conv2d(x, w, backend=name, **layer.kwargs)
            ok = verified(out, expected, geom.Cg * geom.R * geom.S)
            med, lo, hi, warm = time_call(lambda: convcore.conv2d(x, w, backend=name, **layer.kwargs), args.repeats)
            rows.append(Row(args.suite, layer.name, "forward", name, geom.flops / med / 1e6, med, lo, hi, warm, ok,
                            vs_torch=peers["torch"] / med if "torch" in peers else None,
                            vs_numpy=peers["numpy"] / med))
    _print_table(rows)
    if args.json:
        machine = {"platform": platform.platform(), "processor": platform.processor(),
                   "backends": {n: str(i) for n, i in convcore.backends().items()}}
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "results": [vars(r) for r in rows]}, handle, indent=1)
    return 0 if all(r.verified for r in rows) else 1


def _ratio(value):
    return f"{value:.2f}x" if value is not None else "n/a"


def _print_table(rows):
    header = f"{'layer':26} {'op':8} {'backend':7} {'GFLOP/s':>8} {'ms':>8} {'vs torch':>9} {'vs numpy':>9} verified"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.layer:26} {r.op:8} {r.backend:7} {r.gflops:8.1f} {r.ms_median:8.2f} {_ratio(r.vs_torch):>9} "
              f"{_ratio(r.vs_numpy):>9} {'yes' if r.verified else 'NO'}")
