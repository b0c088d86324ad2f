"""Printing, saving, comparing and plotting benchmark rows."""
from __future__ import annotations

import json

from .runner import Row

UNITS = {"gflops": "GFLOP/s", "gbps": "GB/s"}
REGRESSION = 0.10  # a throughput drop beyond this fraction is flagged


def _ratio(value):
    return f"{value:.2f}x" if value is not None else "n/a"


def _rate(value):
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def _verified(row: Row) -> str:
    if row.verified is None:
        return "-"
    return "yes" if row.verified else "NO"


def format_table(rows: list[Row]) -> str:
    """One line per row: throughput, median ms with min–max spread, compile time, peer ratios, verified."""
    layer_w = max([len("layer")] + [len(r.layer) for r in rows])
    op_w = max([len("op")] + [len(r.op) for r in rows])
    header = (f"{'layer':{layer_w}} {'op':{op_w}} {'backend':7} {'rate':>9} {'unit':7} {'ms median':>9} "
              f"{'ms min-max':>17} {'compile s':>9} {'vs torch':>8} {'vs numpy':>8} verified")
    lines = [header, "-" * len(header)]
    for r in rows:
        lead = f"{r.layer:{layer_w}} {r.op:{op_w}} {r.backend:7}"
        if r.throughput is None:
            what = {"missing": r.note, "skipped": f"skipped: {r.note}"}.get(r.status, f"{r.status}: {r.note}")
            lines.append(f"{lead} {what:<85} {_verified(r)}")
            continue
        spread = f"{r.ms_min:.3g}-{r.ms_max:.3g}"
        lines.append(
            f"{lead} {_rate(r.throughput):>9} {UNITS[r.unit]:7} {r.ms_median:9.3f} {spread:>17} {r.compile_s:9.2f} "
            f"{_ratio(r.vs_torch):>8} {_ratio(r.vs_numpy):>8} {_verified(r)}"
            + (f"  ({r.note})" if r.note else "")
        )
    return "\n".join(lines)


def format_machine(machine: dict) -> str:
    lines = [(f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, Numba {machine['numba']} "
             f"({machine['numba_threads']} threads), NumPy {machine['numpy']}, PyTorch {machine['torch'] or 'not installed'}")]
    lines.append(f"roofline: np.matmul float32 {machine['sgemm_size']}^3 = {machine['sgemm_gflops']:.1f} GFLOP/s"
                 + (f"; convcore's GEMM {machine['convcore_sgemm_gflops']:.1f} GFLOP/s"
                    if machine.get("convcore_sgemm_gflops") else "")
                 + (f"; cuBLAS float32 (TF32 off) = {machine['gpu_sgemm_gflops']:.0f} GFLOP/s"
                    if machine.get("gpu_sgemm_gflops") else ""))
    if machine.get("copy_gbps"):
        lines.append(f"memory: copy {machine['copy_gbps']:.1f} GB/s (np.copyto, read + write)"
                     + (f"; GPU device copy {machine['gpu_copy_gbps']:.0f} GB/s" if machine.get("gpu_copy_gbps") else ""))
    if machine.get("omp_wait_policy"):
        alike = ", for convcore's and PyTorch's OpenMP alike" if machine.get("torch") else ""
        lines.append(f"threads: {machine['omp_wait_policy']}{alike}")
    if machine.get("gemm"):
        lines.append(f"gemm: convcore's float32 products use {machine['gemm']}")
    if machine.get("openblas"):
        lines.append(f"blas: {machine['openblas']} (NumPy's OpenBLAS, not PyTorch's)")
    for name, reason in machine["skipped_backends"].items():
        lines.append(f"skipped backend {name}: {reason}")
    lines.append("ratios are peer time / convcore time (above 1: convcore is faster); "
                 "rates use FLOPs 2*N*K*(C/groups)*R*S*P*Q for conv, bytes read once + written once for GB/s")
    return "\n".join(lines)


def save_json(path: str, machine: dict, rows: list[Row]) -> None:
    with open(path, "w") as handle:
        json.dump({"machine": machine, "results": [r.to_json() for r in rows]}, handle, indent=1)


def load_json(path: str) -> tuple[dict, list[Row]]:
    with open(path) as handle:
        data = json.load(handle)
    return data.get("machine", {}), [Row.from_json(r) for r in data["results"]]


def compare(old: list[Row], new: list[Row]) -> tuple[str, list[Row]]:
    """A table of throughput changes against a saved run, and the rows that regressed by over 10%."""
    before = {(r.suite, r.layer, r.op, r.backend): r for r in old if r.throughput}
    lines, regressed = [], []
    for r in new:
        prior = before.get((r.suite, r.layer, r.op, r.backend))
        if prior is None or not r.throughput:
            continue
        change = r.throughput / prior.throughput - 1
        flag = ""
        if change < -REGRESSION:
            flag = "  REGRESSION"
            regressed.append(r)
        lines.append(f"{r.layer:32} {r.op:14} {r.backend:7} {prior.throughput:10.2f} -> {r.throughput:10.2f} "
                     f"{UNITS[r.unit]:7} {change:+7.1%}{flag}")
    head = f"compared with the saved run: {len(lines)} matching rows, {len(regressed)} regressions over {REGRESSION:.0%}"
    return "\n".join([head] + lines), regressed


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("convcore bench --plot needs matplotlib: pip install 'convcore[plot]'") from None
    matplotlib.use("Agg")


def plot(path: str, rows: list[Row]) -> None:
    """Bar chart per unit (GFLOP/s, GB/s): one group of bars per layer/op, one bar per backend."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.throughput]
    units = [u for u in UNITS if any(r.unit == u for r in rows)]
    if not units:
        raise SystemExit("convcore bench --plot: no timed rows to plot")
    backends = sorted({r.backend for r in rows})
    fig, axes = plt.subplots(len(units), 1, figsize=(14, 5 * len(units)), squeeze=False)
    for ax, unit in zip(axes[:, 0], units):
        chosen = [r for r in rows if r.unit == unit]
        labels = list(dict.fromkeys(f"{r.layer}\n{r.op}" for r in chosen))
        width = 0.8 / len(backends)
        for i, backend in enumerate(backends):
            value = {f"{r.layer}\n{r.op}": r.throughput for r in chosen if r.backend == backend}
            ax.bar([x + i * width for x in range(len(labels))], [value.get(label, 0) for label in labels],
                   width, label=backend)
        ax.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(labels))])
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_ylabel(UNITS[unit])
        ax.legend()
    axes[0, 0].set_title("convcore bench")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
