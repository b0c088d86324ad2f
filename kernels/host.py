"""What the host CPU offers the register-tiled kernels, asked of LLVM once per process.

The tiles are sized for the vector register file: 32 registers with AVX-512, 16 without
(AVX2 hosts). Every kernel that sizes a tile, or picks between a wide and a narrow
variant, asks here (``narrow_registers``), so a host counts the same way everywhere.
"""

from __future__ import annotations

import functools

from llvmlite import binding as llvm


@functools.lru_cache(maxsize=None)
def _features() -> dict:
    # asked once: the routing questions below run on every dispatch, the query takes ~0.2 ms
    return dict(llvm.get_host_cpu_features())


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """LLVM's name for the host CPU ('znver4', 'skylake-avx512', ...): for the few choices
    measured to go opposite ways on different microarchitectures with the same features."""
    return str(llvm.get_host_cpu_name())


def avx512() -> bool:
    """AVX-512F: 32 vector registers of 16 float32 lanes."""
    return bool(_features().get("avx512f", False))


def avx2_fma() -> bool:
    """AVX2 with FMA: 8-lane fused multiply-adds (16-lane vectors run as register pairs)."""
    return bool(_features().get("avx2", False)) and bool(_features().get("fma", False))


def narrow_registers() -> bool:
    """16 vector registers (no AVX-512): the tiles that hold 32 spill, so kernels take
    their narrow variants."""
    return not avx512()
