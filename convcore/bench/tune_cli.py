"""``convcore tune``: fill the tuning cache for every conv layer of a benchmark suite."""
from __future__ import annotations

import numpy as np

from .shapes import SUITES, ConvLayer, suite


def add_parser(commands) -> None:
    tune = commands.add_parser(
        "tune", help="time every conv algorithm per layer of a suite and cache the fastest (see convcore.tune)",
        description="Time every algorithm for each conv layer of a benchmark suite (forward, input and weight "
                    "gradient) and keep the fastest in the on-disk tuning cache used by algorithm='auto'.")
    tune.add_argument("--suite", choices=SUITES, default="quick")
    tune.add_argument("--backend", default="cpu", help="cpu or cuda (default cpu)")
    tune.add_argument("--cases", default=None, help="comma-separated substrings of layer names to keep")
    tune.add_argument("--repeats", type=int, default=3, help="timed calls per candidate")
    tune.set_defaults(run=run)


def run(args) -> int:
    from tqdm import tqdm

    from .. import _tuning
    from ..conv import tune

    if args.backend not in ("cpu", "cuda"):
        raise SystemExit(f"convcore tune: --backend must be cpu or cuda, got {args.backend!r}")
    layers = {}
    for case in suite(args.suite):  # one entry per distinct geometry
        if isinstance(case.shape, ConvLayer) and case.shape not in layers.values():
            layers[case.layer] = case.shape
    if args.cases:
        wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
        layers = {name: layer for name, layer in layers.items() if any(w in name for w in wanted)}
    if not layers:
        raise SystemExit(f"convcore tune: no conv layer of suite {args.suite!r} matches --cases {args.cases!r}")
    rng = np.random.default_rng(0)
    print(f"tuning cache: {_tuning.cache_path()}")
    for name, layer in tqdm(layers.items(), desc="tune", unit="layer"):
        x = rng.uniform(-1, 1, layer.input_shape).astype(np.float32)
        w = rng.uniform(-1, 1, layer.weight_shape).astype(np.float32)
        results = tune(x, w, stride=layer.stride, padding=layer.padding, groups=layer.groups, backend=args.backend,
                       repeats=args.repeats)
        cells = ", ".join(f"{direction} {r.algorithm} ({r.times_ms[r.algorithm]:.2f} ms of "
                          + "/".join(f"{t:.2f}" for t in r.times_ms.values()) + ")"
                          for direction, r in results.items())
        tqdm.write(f"{name}: {cells}")
    return 0
