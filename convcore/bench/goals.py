"""The speed goals of the CPU and GPU issues, checked against a ``convcore bench --json`` file.

    python -m convcore.bench.goals out.json [--markdown]

CPU (backend ``cpu``, ratios vs PyTorch's CPU conv in the same run): every conv row
(forward, input and weight gradient) ≥ 1.0x, their geometric mean ≥ 1.2x, depthwise
≥ 2.0x, 3x3 stride-1 layers above the SGEMM rate of the header (the faster of np.matmul and
convcore's GEMM).
GPU (backend ``cuda``, vs cuDNN with TF32 off): ResNet-50 3x3 and 1x1 layers ≥ 0.7x,
depthwise and the fused conv + bias + ReLU ≥ 1.0x, Hadamard/ReLU ≥ 85% of the device
copy bandwidth.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .report import load_json
from .runner import Row

CONV_OPS = ("conv2d", "conv2d_input", "conv2d_weight", "conv2d_bias_relu")


@dataclass
class Goal:
    backend: str
    layer: str
    op: str
    measure: str  # "vs torch" or "of copy" or "vs SGEMM"
    value: float | None
    target: float

    @property
    def met(self) -> bool:
        return self.value is not None and self.value >= self.target


def _is_depthwise(row: Row) -> bool:
    return "dw3x3" in row.layer


def _is_3x3_s1(row: Row) -> bool:
    return "3x3" in row.layer and "s2" not in row.layer and not _is_depthwise(row)


def check(machine: dict, rows: list[Row]) -> tuple[list[Goal], dict]:
    """Every goal row, and per-backend summaries (geometric mean of the conv ratios)."""
    goals, summary = [], {}
    timed = [r for r in rows if r.status == "ok" and r.verified]
    for row in timed:
        if row.backend == "cpu" and row.op in CONV_OPS:
            target = 2.0 if _is_depthwise(row) else 1.0
            goals.append(Goal("cpu", row.layer, row.op, "vs torch", row.vs_torch, target))
            if _is_3x3_s1(row) and row.op != "conv2d_bias_relu" and machine.get("sgemm_gflops"):
                # Against the faster of NumPy's and convcore's own GEMM: the best a GEMM path could do here.
                roof = max(machine["sgemm_gflops"], machine.get("convcore_sgemm_gflops") or 0.0)
                goals.append(Goal("cpu", row.layer, row.op, "vs SGEMM", row.throughput / roof, 1.0))
        elif row.backend == "cuda" and row.op in CONV_OPS:
            if row.op == "conv2d_bias_relu" or _is_depthwise(row):
                goals.append(Goal("cuda", row.layer, row.op, "vs torch", row.vs_torch, 1.0))
            elif row.layer.startswith("resnet50") and ("3x3" in row.layer or "1x1" in row.layer):
                goals.append(Goal("cuda", row.layer, row.op, "vs torch", row.vs_torch, 0.7))
        elif row.backend == "cuda" and row.op in ("hadamard", "relu") and machine.get("gpu_copy_gbps"):
            goals.append(Goal("cuda", row.layer, row.op, "of copy", row.throughput / machine["gpu_copy_gbps"], 0.85))
    for backend in ("cpu", "cuda"):
        ratios = [r.vs_torch for r in timed if r.backend == backend and r.op in CONV_OPS and r.vs_torch]
        if ratios:
            summary[backend] = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
    return goals, summary


def format_goals(goals: list[Goal], summary: dict) -> str:
    lines = ["| backend | layer | op | measure | value | goal | met |", "|---|---|---|---|---|---|---|"]
    for g in goals:
        value = "n/a" if g.value is None else f"{g.value:.2f}"
        lines.append(f"| {g.backend} | {g.layer} | {g.op} | {g.measure} | {value} | {g.target:.2f} | "
                     f"{'yes' if g.met else 'NO'} |")
    for backend, mean in summary.items():
        target = " (goal 1.2x)" if backend == "cpu" else ""
        lines.append(f"\n{backend}: geometric mean of conv ratios vs torch = {mean:.2f}x{target}")
    met = sum(g.met for g in goals)
    lines.append(f"{met} of {len(goals)} goals met")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convcore.bench.goals", description=__doc__.split("\n")[0])
    parser.add_argument("json", help="a file written by convcore bench --json")
    args = parser.parse_args(argv)
    machine, rows = load_json(args.json)
    goals, summary = check(machine, rows)
    print(format_goals(goals, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
