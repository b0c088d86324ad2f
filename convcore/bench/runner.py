"""Run one (case, op): verify every contender, then time them interleaved, rep by rep.

Contenders are the convcore backends under test plus the peers: PyTorch (on the CPU with
as many threads as Numba, on the GPU cuDNN with TF32 off) and the NumPy reference. The
first call of each is the warm-up: it JIT-compiles (reported as ``compile_s``) and its
result is the one verified against the float64 reference. Then rep by rep every
contender runs once in turn, so a noisy neighbour slows them all alike.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .ops import OP_SPECS, reference, verify


@dataclass
class Row:
    suite: str
    layer: str
    shape: str
    op: str
    backend: str
    unit: str  # "gflops" or "gbps"
    throughput: float | None = None
    ms_median: float | None = None
    ms_min: float | None = None
    ms_max: float | None = None
    compile_s: float | None = None
    vs_torch: float | None = None
    vs_numpy: float | None = None
    torch_ms: float | None = None
    numpy_ms: float | None = None
    verified: bool | None = None  # None: nothing was timed (op missing, backend skipped)
    max_rel_error: float | None = None
    status: str = "ok"  # ok | missing | skipped | error
    note: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        data[self.unit] = data.pop("throughput")
        data.pop("unit")
        return data

    @classmethod
    def from_json(cls, data: dict) -> Row:
        data = dict(data)
        unit = "gflops" if "gflops" in data else "gbps"
        data["throughput"] = data.pop(unit, None)
        data["unit"] = unit
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class Contender:
    """Something timed: a zero-argument callable, and how to wait for it to finish."""

    def __init__(self, fn, sync=None, to_host=np.asarray, compiles=True):
        self.fn, self.sync, self.to_host = fn, sync or (lambda: None), to_host
        self.compiles = compiles  # False: nothing to compile, the first call is a sample too
        self.samples: list[float] = []
        self.first_s = None
        self.error = None

    def warm_up(self):
        """First call (compiles if needed); returns the result on the host."""
        self.sync()
        start = time.perf_counter()
        result = self.fn()
        self.sync()
        self.first_s = time.perf_counter() - start
        if not self.compiles:
            self.samples.append(self.first_s * 1e3)
        return self.to_host(result)

    def time_once(self):
        self.sync()
        start = time.perf_counter()
        self.fn()
        self.sync()
        self.samples.append((time.perf_counter() - start) * 1e3)

    @property
    def median(self):
        return float(np.median(self.samples)) if self.samples else None


def _cuda_host(result):
    return result.copy_to_host() if hasattr(result, "copy_to_host") else np.asarray(result)


class Peers:
    """The machinery for each kind of contender: device placement and synchronisation."""

    def __init__(self, use_torch: bool = True):
        self.torch = None
        if use_torch:
            try:
                import torch
            except ImportError:
                torch = None
            if torch is not None:
                import numba

                torch.set_num_threads(numba.get_num_threads())
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
                self.torch = torch

    def convcore(self, spec, inputs, shape, backend) -> Contender:
        import convcore

        if backend == "cuda":
            from numba import cuda

            device = {k: cuda.to_device(v) for k, v in inputs.items()}  # timed without host↔device copies
            return Contender(lambda: spec.call(convcore, device, shape, "cuda"), cuda.synchronize, _cuda_host)
        return Contender(lambda: spec.call(convcore, inputs, shape, backend), compiles=backend != "numpy")

    def torch_peer(self, spec, inputs, shape, device: str) -> Contender | None:
        torch = self.torch
        if torch is None or (device == "cuda" and not torch.cuda.is_available()):
            return None
        tensors = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
        sync = torch.cuda.synchronize if device == "cuda" else None

        def run():
            with torch.no_grad():
                return spec.torch(torch, tensors, shape)

        return Contender(run, sync, lambda r: r.detach().cpu().numpy())


def run_op(case, op: str, backends: list[str], suite: str, peers: Peers, repeats: int, numpy_repeats: int,
           rng) -> list[Row]:
    """Rows for one (case, op), one per backend."""
    spec = OP_SPECS[op]
    base = {"suite": suite, "layer": case.layer, "shape": str(case.shape), "op": op, "unit": spec.unit}
    ok, reason = spec.available()
    if not ok:
        return [Row(backend=b, status="missing", note=reason, **base) for b in backends]
    inputs = spec.make(case.shape, rng)
    expected = reference(spec, inputs, case.shape)
    terms = spec.terms(case.shape)

    mine = {b: peers.convcore(spec, inputs, case.shape, b) for b in backends}
    timed_numpy = "numpy" not in mine and numpy_repeats > 0  # 0: the reference checks results, untimed
    others = {"numpy": peers.convcore(spec, inputs, case.shape, "numpy")} if timed_numpy else {}
    for device in sorted({"cuda" if b == "cuda" else "cpu" for b in backends}):
        peer = peers.torch_peer(spec, inputs, case.shape, device)
        if peer is not None:
            others[f"torch:{device}"] = peer
    contenders = {**mine, **others}
    rows = {}
    for name, contender in contenders.items():
        try:
            result = contender.warm_up()
        except Exception as exc:  # noqa: BLE001 (reported in its row, and exits non-zero; never swallowed)
            contender.error = f"{type(exc).__name__}: {exc}"
            continue
        if name in mine:
            good, error = verify(result, expected, terms)
            rows[name] = Row(backend=name, verified=good, max_rel_error=error, **base)
    live = {n: c for n, c in contenders.items() if c.error is None}
    reps = {n: numpy_repeats if n == "numpy" else repeats for n in live}
    for _rep in range(max(reps.values(), default=0)):
        for name, contender in live.items():
            if len(contender.samples) < reps[name]:
                contender.time_once()

    work = spec.work(case.shape)
    torch_cpu, torch_gpu = contenders.get("torch:cpu"), contenders.get("torch:cuda")
    numpy_peer = contenders.get("numpy")
    out = []
    for name in backends:
        contender = mine[name]
        if contender.error is not None:
            out.append(Row(backend=name, verified=False, status="error", note=contender.error, **base))
            continue
        row = rows[name]
        median = contender.median
        row.throughput = work / median / 1e6  # work per ms → G per s
        row.ms_median, row.ms_min, row.ms_max = median, min(contender.samples), max(contender.samples)
        row.compile_s = max(0.0, contender.first_s - median / 1e3)
        torch_peer = torch_gpu if name == "cuda" else torch_cpu
        if torch_peer is not None and torch_peer.error is None:
            row.torch_ms = torch_peer.median
            row.vs_torch = torch_peer.median / median
        elif torch_peer is not None:
            row.note = f"torch failed: {torch_peer.error}"
        if numpy_peer is not None and numpy_peer.error is None:
            row.numpy_ms = numpy_peer.median
            row.vs_numpy = numpy_peer.median / median
        if not row.verified:
            row.note = (row.note + "; " if row.note else "") + f"max rel error {row.max_rel_error:.2e}"
        out.append(row)
    return out


def settle_allocator(megabytes: int = 30) -> None:
    """Put the C allocator in the state of a process that has freed a large array.

    glibc's malloc serves blocks above its mmap threshold (128 KB at start) with a fresh
    mmap, so every call that allocates such a block (a conv's output, a library's scratch)
    pays a page fault per 4 KB while the threshold is low. Freeing an mmapped block raises
    the threshold to that block's size (up to 32 MB; 30 here), after which such blocks are reused
    from the heap. A training process reaches that state at once; a bench process reached
    it by accident (the SGEMM roofline's 16 MB matrices). Measured (2-core VM, PyTorch
    2.13, ResNet stem 1×3×224² → 64 7×7 stride 2, whose 3.2 MB output is allocated per
    call): 3.2 ms per call before, 1.15 ms after freeing one 16 MB array. So the bench (and
    benchmarks/ab_algorithms.py) set it deliberately, for every contender alike."""
    block = np.empty(megabytes * 2**20, dtype=np.uint8)
    del block


def sgemm_gflops(size: int = 2048, repeats: int = 3, matmul=np.matmul) -> float:
    """A float32 matmul rate (size³; np.matmul unless given convcore's): the roofline the conv
    numbers sit under."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def copy_gbps(megabytes: int = 256, repeats: int = 5) -> float:
    """Host memory copy rate (np.copyto, bytes read + written): the roofline for GB/s rows."""
    n = megabytes * 2**20 // 8
    src = np.ones(n)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def gpu_copy_gbps(megabytes: int = 512, repeats: int = 10) -> float | None:
    """Device-to-device copy rate on the GPU (bytes read + written), or None without one."""
    from .._backend import cuda_simulated

    if cuda_simulated():
        return None
    try:
        from numba import cuda

        if not cuda.is_available():
            return None
    except ImportError:
        return None
    n = megabytes * 2**20 // 4
    src = cuda.to_device(np.ones(n, np.float32))
    dst = cuda.device_array_like(src)
    dst.copy_to_device(src)
    cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_to_device(src)
        cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def torch_gpu_sgemm_gflops(torch, size: int = 4096, repeats: int = 5) -> float | None:
    """cuBLAS float32 (TF32 off) rate, when PyTorch sees a GPU."""
    if torch is None or not torch.cuda.is_available():
        return None
    a = torch.randn(size, size, device="cuda")
    b = torch.randn(size, size, device="cuda")
    a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
