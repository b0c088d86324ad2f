"""float32 matrix product C = A·B on the CPU: a GotoBLAS/BLIS-style blocked GEMM around a
12×32 register-tile micro-kernel written with explicit 16-lane vectors (kernels.gemm.simd).

Why convcore carries its own: NumPy's OpenBLAS picks its kernels at run time and may be
held to narrower ones than the CPU has (``OPENBLAS_CORETYPE``, old builds); this one is
compiled by Numba for the host CPU, so on an AVX-512 machine it always runs 512-bit FMAs.
On other hosts ``matmul`` leaves the product to BLAS (see ``enabled``); forced on there, it
runs a narrow 6×16 tile (``narrow_tile``: 12 ymm accumulators; the 12×32 tile needs 48 and
spills), 1.6-1.9× faster than the wide tile on AVX2 (AMD Zen 1, 2 threads, alternating
calls: 2048³ 29.5 vs 18.0 GFLOP/s, 36 × 512×512·512×32 59.1 vs 32.6, 36 × 128×128·128×392
44.4 vs 22.9), about level with OpenBLAS there.

Index names: C is M×N, A is M×K, B is K×N; i row of C, j column, p the reduced index.

Blocking (the loops of the Goto algorithm): for each NC-column panel of B and KC-deep
slice, B is packed into 32-column slivers (kc×32, contiguous: one sliver stays in L1 while
the micro-kernel sweeps the A block); for each MC-row block of A, A is packed into 12-row
slivers (kc×12, the A block stays in L2). The micro-kernel keeps the 12×32 tile of C in 24
zmm accumulators across the whole kc loop: per step it loads two vectors of B, broadcasts
12 values of A and issues 24 FMAs. Slivers are zero-padded, so edge tiles run the same
kernel into a local tile and only the valid part is added to C; except a last sliver of at
most 8 rows (every power-of-two M: 64 = 5·12 + 4), which runs an 8- or 4-row kernel
(_micro8, _micro4) straight into C, writing only its rows: the 12-row tile spent 11% of a
64-row product's FMAs on zero rows. In-process, interleaved, 2 threads (AMD Zen 4), time
short-row / 12-row: 16 × 64×64·64×784 0.92, 8 × 64×576·64×3136 0.94, 1 × 64×147·147×12544
(the stem's im2col) 0.92, 8 × 256×1024·1024×196 0.98, 36 × 512×512·512×32 0.97. A last
column sliver of at most 8 columns against packed A runs transposed (_micro_tail: lanes along
the A sliver's 12 rows), not as 12 rows × 16 lanes with 12 of them on zero columns.

Threads: one ``prange`` iteration per task, a task being one matrix of the batch, an M×N
block of it, and (split-K, when the batch and blocks are too few) a slice of the reduced
index whose partial product goes to its own buffer, summed in a fixed order afterwards
(deterministic for a given thread count). Each task packs into its own buffers.
"""
# ruff: noqa: E702 -- the micro-kernel writes its 12×2 register tile one row per line
from __future__ import annotations

import functools
import logging
import math
import os
from types import FunctionType

import numpy as np
from numba import config, get_num_threads, get_thread_id, njit, prange, types

from .. import host
from ..precompile import njit_cached
from ..workspace import scratch
from .simd import (
    load_at,
    prefetch_write,
    store_at,
    transpose16,
    transpose_rows,
    vadd,
    vbroadcast_load,
    vfma,
    vload,
    vload_first,
    vstore,
    vzero,
)

log = logging.getLogger("convcore.gemm")

MR, NR = 12, 32   # register tile: 12 rows × 2 vectors of 16 lanes
NARROW_MR, NARROW_NR = 6, 16  # the narrow tile (16 vector registers, AVX2): 6 rows × 1 vector
KC = 192          # reduced-index depth of one packed slice: a B sliver is 24 KB (L1: 48 KB)
# ... except that a reduction of at most KC_ONE runs as one slice: C then takes one pass, not
# a 192-deep pass and a thin one (K = 256: 192 + 64). AMD Zen 4, 2 threads, in-process,
# shuffled, time one slice / KC slices: 8 × 256×256·256×784 (MobileNet pointwise 28²) 0.94,
# 8 × 512×256·256×784 0.96, 8 × 64×256·256×3136 0.93, 16 × 256×256·256×98 0.98; as
# convolutions: 1×1 stride 2 8×256×56² → 512 forward 0.92, pointwise 28² forward 0.97, 3×3
# 256 channels at 14² input gradient 0.95. Longer reductions keep KC = 192: 256-deep slices
# lost there (K = 1152: 1.03; 1024: 1.01).
KC_ONE = 256
KC_MAX = max(KC, KC_ONE)  # the deepest slice: packing buffers are sized for it
MC = 192          # rows of one packed A block: 144 KB (L2: 1 MB)
NC = 2048         # columns of one packed B panel: 1.5 MB
_B_IN_PLACE_ROWS = 256  # rows of C per task at most for which B is read in place
_B_IN_PLACE_STRIDE = 4096  # bytes between rows of B at most for reading it in place
_SHORT_K, _SHORT_K_ROWS = 96, 48  # reductions this short: row blocks at most this tall (_split)
# Hosts (LLVM CPU names) on which short reductions keep whole row blocks: there each task's
# repacking of the B panel for every 48-row block cost more than the blocks saved (AMD Zen 4,
# 2 threads, sgemm blocks=, median ms, 48-row / whole rows: 8 × 256×64·64×3136 (1×1 expand)
# 7.7 / 6.2; 36 × 64×64·64×3136 (VGG 224² Winograd) 13.2 / 10.5; 16 × 128×64·64×1568 3.3 /
# 2.9; 8 × 256×64·64×784 1.58 / 1.46). The Intel Xeon measurement above went the other way.
# Only from _WHOLE_ROWS_MIN rows: at 35-64 rows the convolutions went both ways (Zen 4, 2
# threads, interleaved, whole rows / 48-row time: 8×64×56² 3×3 Winograd forward 1.11, input
# gradient 0.98; 2×64×224² forward 0.91; 8×35×19² → 50 forward 1.08), at 256 rows they
# gained or held (8×64×56² → 256 1×1 forward 0.88; 8×256×56² → 64 input gradient 1.00).
_WHOLE_ROWS_HOSTS = ("znver4",)
_WHOLE_ROWS_MIN = 128
# Hosts (LLVM CPU names) on which a row-major B is read in place only for slices at most this
# deep; elsewhere up to KC_MAX. On Zen 4 (32 KB L1, 72-entry L1 TLB) a deeper in-place sliver
# (rows 784-3136 bytes apart: 2-3 cache lines each, a page per row or two) no longer stays in
# L1 while the A slivers go by, and packing it won (in-process, shuffled, 2 threads, time
# packed / in place: 8 × 256×1024·1024×196 (1×1 14² forward) 0.91-0.92, 8 × 128×1152·1152×784
# (3×3 28² im2col) 0.82-0.87, 8 × 256×256·256×784 (pointwise 28²) 0.90-1.04, 16 × 256×256·
# 256×98 0.95-1.01), except in short reductions (36 × 64×64·64×392, Winograd F(4×4) at 56²
# batch 2: 1.09-1.13), which keep reading it in place.
_B_IN_PLACE_DEPTH_BY_HOST = {"znver4": _SHORT_K}
_SET_STRIDE = 4096  # bytes between addresses of one L1 set (48 KB, 12 ways, 64 B lines)
_PREPACK_LIMIT = 2**23  # floats (32 MB) of A packed up front at most (the 3x3 512-channel dgrad Wᵀ is 2.4 M)


@njit(inline="always")
def _store_row(c, r, x0, x1, accumulate):
    # one 32-column row of a register tile into c[r:r + 32], added to it when accumulate
    if accumulate:
        x0 = vadd(x0, vload(c, r)); x1 = vadd(x1, vload(c, r + 16))
    vstore(c, r, x0); vstore(c, r + 16, x1)


@njit(inline="always")
def _micro(ap, a0, rs, ps, bp, b0, bs, kc, c, c0, ldc, accumulate):
    # c[c0 + i·ldc + j] (+)= Σ_p ap[a0 + i·rs + p·ps] · bp[b0 + p·bs + j], i < 12, j < 32.
    # A packed: (rs, ps) = (1, MR); A read in place from a row-major matrix: (lda, 1). B
    # packed: bs = NR; B read in place: its row stride. Constants are passed as such where
    # they are, so LLVM folds them after inlining.
    x00 = vzero(); x01 = vzero(); x10 = vzero(); x11 = vzero(); x20 = vzero(); x21 = vzero()
    x30 = vzero(); x31 = vzero(); x40 = vzero(); x41 = vzero(); x50 = vzero(); x51 = vzero()
    x60 = vzero(); x61 = vzero(); x70 = vzero(); x71 = vzero(); x80 = vzero(); x81 = vzero()
    x90 = vzero(); x91 = vzero(); xa0 = vzero(); xa1 = vzero(); xb0 = vzero(); xb1 = vzero()
    # The C tile's 24 lines are asked for now, to be in L1 when the loop ends: loaded there
    # (or stored to, missing) only after it, they stalled each call once C had left the
    # cache (in-process, shuffled, 2 threads, time new/old over two runs: 8 × 256×64·64×3136
    # (1×1 56² expand forward) 0.95 / 0.95, 8 × 256×256·256×784 0.97 / 0.98, 1024³ 0.98 /
    # 0.97; Winograd's 36 × 64×64·64×392 and 16 × 256×256·256×98, C in cache, 1.00-1.02).
    for i in range(MR):
        prefetch_write(c, c0 + i * ldc); prefetch_write(c, c0 + i * ldc + 16)
    for p in range(kc):
        u = b0 + p * bs
        v0 = vload(bp, u)
        v1 = vload(bp, u + 16)
        o = a0 + p * ps
        a = vbroadcast_load(ap, o); x00 = vfma(a, v0, x00); x01 = vfma(a, v1, x01)
        a = vbroadcast_load(ap, o + 1 * rs); x10 = vfma(a, v0, x10); x11 = vfma(a, v1, x11)
        a = vbroadcast_load(ap, o + 2 * rs); x20 = vfma(a, v0, x20); x21 = vfma(a, v1, x21)
        a = vbroadcast_load(ap, o + 3 * rs); x30 = vfma(a, v0, x30); x31 = vfma(a, v1, x31)
        a = vbroadcast_load(ap, o + 4 * rs); x40 = vfma(a, v0, x40); x41 = vfma(a, v1, x41)
        a = vbroadcast_load(ap, o + 5 * rs); x50 = vfma(a, v0, x50); x51 = vfma(a, v1, x51)
        a = vbroadcast_load(ap, o + 6 * rs); x60 = vfma(a, v0, x60); x61 = vfma(a, v1, x61)
        a = vbroadcast_load(ap, o + 7 * rs); x70 = vfma(a, v0, x70); x71 = vfma(a, v1, x71)
        a = vbroadcast_load(ap, o + 8 * rs); x80 = vfma(a, v0, x80); x81 = vfma(a, v1, x81)
        a = vbroadcast_load(ap, o + 9 * rs); x90 = vfma(a, v0, x90); x91 = vfma(a, v1, x91)
        a = vbroadcast_load(ap, o + 10 * rs); xa0 = vfma(a, v0, xa0); xa1 = vfma(a, v1, xa1)
        a = vbroadcast_load(ap, o + 11 * rs); xb0 = vfma(a, v0, xb0); xb1 = vfma(a, v1, xb1)
    _store_row(c, c0, x00, x01, accumulate)
    _store_row(c, c0 + ldc, x10, x11, accumulate)
    _store_row(c, c0 + 2 * ldc, x20, x21, accumulate)
    _store_row(c, c0 + 3 * ldc, x30, x31, accumulate)
    _store_row(c, c0 + 4 * ldc, x40, x41, accumulate)
    _store_row(c, c0 + 5 * ldc, x50, x51, accumulate)
    _store_row(c, c0 + 6 * ldc, x60, x61, accumulate)
    _store_row(c, c0 + 7 * ldc, x70, x71, accumulate)
    _store_row(c, c0 + 8 * ldc, x80, x81, accumulate)
    _store_row(c, c0 + 9 * ldc, x90, x91, accumulate)
    _store_row(c, c0 + 10 * ldc, xa0, xa1, accumulate)
    _store_row(c, c0 + 11 * ldc, xb0, xb1, accumulate)


@njit(inline="always")
def _micro16(ap, a0, rs, ps, bp, b0, bs, kc, c, c0, ldc, accumulate):
    # _micro for the last 1..16 columns of a panel: c[c0 + i·ldc + j] (+)= Σ_p ap[a0 + i·rs
    # + p·ps] · bp[b0 + p·bs + j], i < 12, j < 16 (one vector per row: half the FMAs of a
    # 32-column tile spent on zero padding).
    x0 = vzero(); x1 = vzero(); x2 = vzero(); x3 = vzero(); x4 = vzero(); x5 = vzero()
    x6 = vzero(); x7 = vzero(); x8 = vzero(); x9 = vzero(); xa = vzero(); xb = vzero()
    for p in range(kc):
        v = vload(bp, b0 + p * bs)
        o = a0 + p * ps
        x0 = vfma(vbroadcast_load(ap, o), v, x0); x1 = vfma(vbroadcast_load(ap, o + rs), v, x1)
        x2 = vfma(vbroadcast_load(ap, o + 2 * rs), v, x2); x3 = vfma(vbroadcast_load(ap, o + 3 * rs), v, x3)
        x4 = vfma(vbroadcast_load(ap, o + 4 * rs), v, x4); x5 = vfma(vbroadcast_load(ap, o + 5 * rs), v, x5)
        x6 = vfma(vbroadcast_load(ap, o + 6 * rs), v, x6); x7 = vfma(vbroadcast_load(ap, o + 7 * rs), v, x7)
        x8 = vfma(vbroadcast_load(ap, o + 8 * rs), v, x8); x9 = vfma(vbroadcast_load(ap, o + 9 * rs), v, x9)
        xa = vfma(vbroadcast_load(ap, o + 10 * rs), v, xa); xb = vfma(vbroadcast_load(ap, o + 11 * rs), v, xb)
    if accumulate:
        x0 = vadd(x0, vload(c, c0)); x1 = vadd(x1, vload(c, c0 + ldc)); x2 = vadd(x2, vload(c, c0 + 2 * ldc))
        x3 = vadd(x3, vload(c, c0 + 3 * ldc)); x4 = vadd(x4, vload(c, c0 + 4 * ldc)); x5 = vadd(x5, vload(c, c0 + 5 * ldc))
        x6 = vadd(x6, vload(c, c0 + 6 * ldc)); x7 = vadd(x7, vload(c, c0 + 7 * ldc)); x8 = vadd(x8, vload(c, c0 + 8 * ldc))
        x9 = vadd(x9, vload(c, c0 + 9 * ldc)); xa = vadd(xa, vload(c, c0 + 10 * ldc)); xb = vadd(xb, vload(c, c0 + 11 * ldc))
    vstore(c, c0, x0); vstore(c, c0 + ldc, x1); vstore(c, c0 + 2 * ldc, x2); vstore(c, c0 + 3 * ldc, x3)
    vstore(c, c0 + 4 * ldc, x4); vstore(c, c0 + 5 * ldc, x5); vstore(c, c0 + 6 * ldc, x6); vstore(c, c0 + 7 * ldc, x7)
    vstore(c, c0 + 8 * ldc, x8); vstore(c, c0 + 9 * ldc, x9); vstore(c, c0 + 10 * ldc, xa); vstore(c, c0 + 11 * ldc, xb)


@njit(inline="always")
def _micro8(ap, a0, rs, ps, bp, b0, bs, kc, c, c0, ldc, accumulate, rows):
    # _micro for a last sliver of 5..8 rows (rows < MR): c[c0 + i·ldc + j] (+)= Σ_p
    # ap[a0 + i·rs + p·ps] · bp[b0 + p·bs + j], i < rows, j < 32, in 16 accumulators, so
    # the empty rows of the sliver cost no FMAs; only the first ``rows`` rows are written.
    x00 = vzero(); x01 = vzero(); x10 = vzero(); x11 = vzero(); x20 = vzero(); x21 = vzero()
    x30 = vzero(); x31 = vzero(); x40 = vzero(); x41 = vzero(); x50 = vzero(); x51 = vzero()
    x60 = vzero(); x61 = vzero(); x70 = vzero(); x71 = vzero()
    for p in range(kc):
        u = b0 + p * bs
        v0 = vload(bp, u)
        v1 = vload(bp, u + 16)
        o = a0 + p * ps
        a = vbroadcast_load(ap, o); x00 = vfma(a, v0, x00); x01 = vfma(a, v1, x01)
        a = vbroadcast_load(ap, o + 1 * rs); x10 = vfma(a, v0, x10); x11 = vfma(a, v1, x11)
        a = vbroadcast_load(ap, o + 2 * rs); x20 = vfma(a, v0, x20); x21 = vfma(a, v1, x21)
        a = vbroadcast_load(ap, o + 3 * rs); x30 = vfma(a, v0, x30); x31 = vfma(a, v1, x31)
        a = vbroadcast_load(ap, o + 4 * rs); x40 = vfma(a, v0, x40); x41 = vfma(a, v1, x41)
        a = vbroadcast_load(ap, o + 5 * rs); x50 = vfma(a, v0, x50); x51 = vfma(a, v1, x51)
        a = vbroadcast_load(ap, o + 6 * rs); x60 = vfma(a, v0, x60); x61 = vfma(a, v1, x61)
        a = vbroadcast_load(ap, o + 7 * rs); x70 = vfma(a, v0, x70); x71 = vfma(a, v1, x71)
    _store_row(c, c0, x00, x01, accumulate)
    _store_row(c, c0 + ldc, x10, x11, accumulate)
    _store_row(c, c0 + 2 * ldc, x20, x21, accumulate)
    _store_row(c, c0 + 3 * ldc, x30, x31, accumulate)
    _store_row(c, c0 + 4 * ldc, x40, x41, accumulate)
    if rows > 5:
        _store_row(c, c0 + 5 * ldc, x50, x51, accumulate)
    if rows > 6:
        _store_row(c, c0 + 6 * ldc, x60, x61, accumulate)
    if rows > 7:
        _store_row(c, c0 + 7 * ldc, x70, x71, accumulate)


@njit(inline="always")
def _micro4(ap, a0, rs, ps, bp, b0, bs, kc, c, c0, ldc, accumulate, rows):
    # _micro8 for a last sliver of 1..4 rows: 8 accumulators, the first ``rows`` rows written.
    x00 = vzero(); x01 = vzero(); x10 = vzero(); x11 = vzero(); x20 = vzero(); x21 = vzero()
    x30 = vzero(); x31 = vzero()
    for p in range(kc):
        u = b0 + p * bs
        v0 = vload(bp, u)
        v1 = vload(bp, u + 16)
        o = a0 + p * ps
        a = vbroadcast_load(ap, o); x00 = vfma(a, v0, x00); x01 = vfma(a, v1, x01)
        a = vbroadcast_load(ap, o + 1 * rs); x10 = vfma(a, v0, x10); x11 = vfma(a, v1, x11)
        a = vbroadcast_load(ap, o + 2 * rs); x20 = vfma(a, v0, x20); x21 = vfma(a, v1, x21)
        a = vbroadcast_load(ap, o + 3 * rs); x30 = vfma(a, v0, x30); x31 = vfma(a, v1, x31)
    _store_row(c, c0, x00, x01, accumulate)
    if rows > 1:
        _store_row(c, c0 + ldc, x10, x11, accumulate)
    if rows > 2:
        _store_row(c, c0 + 2 * ldc, x20, x21, accumulate)
    if rows > 3:
        _store_row(c, c0 + 3 * ldc, x30, x31, accumulate)


@njit(inline="always")
def _micro_short(ap, a0, bp, b0, bs, kc, c, c0, ldc, accumulate, rows):
    # a packed last sliver of 1..8 rows (ap[a0 + p·MR + i]): _micro4 up to 4 rows, else _micro8
    if rows <= 4:
        _micro4(ap, a0, 1, MR, bp, b0, bs, kc, c, c0, ldc, accumulate, rows)
    else:
        _micro8(ap, a0, 1, MR, bp, b0, bs, kc, c, c0, ldc, accumulate, rows)


@njit(inline="always")
def _micro_tail(ap, a0, kc, bp, b0, c, c0, ldc, accumulate, rows, cols, tile):
    # The last 1..4 columns of a panel against one packed 12-row A sliver, transposed: lanes
    # along the sliver's rows (ap[a0 + p·MR + i], a masked 12-lane load), one accumulator
    # per column (x_j += A[:, p] · B[p, j], bp[b0 + p·NR + j], zero-padded past the panel),
    # then c[c0 + i·ldc + j] (+)= x_j[i] for i < rows, j < cols through ``tile``. 12 of 16
    # lanes do work, against 4 of 16 for _micro16 on a 4-column tail (a 14² plane's 196 =
    # 6·32 + 4 columns).
    x0 = vzero(); x1 = vzero(); x2 = vzero(); x3 = vzero()
    for p in range(kc):
        v = vload_first(ap, a0 + p * MR, MR)
        u = b0 + p * NR
        x0 = vfma(vbroadcast_load(bp, u), v, x0); x1 = vfma(vbroadcast_load(bp, u + 1), v, x1)
        x2 = vfma(vbroadcast_load(bp, u + 2), v, x2); x3 = vfma(vbroadcast_load(bp, u + 3), v, x3)
    vstore(tile, 0, x0); vstore(tile, 16, x1); vstore(tile, 32, x2); vstore(tile, 48, x3)
    for i in range(rows):
        for j in range(cols):
            value = load_at(tile, j * 16 + i)
            if accumulate:
                value += load_at(c, c0 + i * ldc + j)
            store_at(c, c0 + i * ldc + j, value)


@njit(inline="always")
def _micro6(ap, a0, rs, ps, bp, b0, bs, kc, c, c0, ldc, accumulate):
    # The narrow tile's micro-kernel: c[c0 + i·ldc + j] (+)= Σ_p ap[a0 + i·rs + p·ps] ·
    # bp[b0 + p·bs + j], i < 6, j < 16. On AVX2 each 16-lane vector is two ymm registers:
    # 12 accumulators, 2 for B and 1 broadcast of the 16 (the 12×32 tile needs 48 and
    # spills); per step 12 FMAs for 2 vector loads and 6 broadcasts.
    x0 = vzero(); x1 = vzero(); x2 = vzero(); x3 = vzero(); x4 = vzero(); x5 = vzero()
    for p in range(kc):
        v = vload(bp, b0 + p * bs)
        o = a0 + p * ps
        x0 = vfma(vbroadcast_load(ap, o), v, x0); x1 = vfma(vbroadcast_load(ap, o + rs), v, x1)
        x2 = vfma(vbroadcast_load(ap, o + 2 * rs), v, x2); x3 = vfma(vbroadcast_load(ap, o + 3 * rs), v, x3)
        x4 = vfma(vbroadcast_load(ap, o + 4 * rs), v, x4); x5 = vfma(vbroadcast_load(ap, o + 5 * rs), v, x5)
    if accumulate:
        x0 = vadd(x0, vload(c, c0)); x1 = vadd(x1, vload(c, c0 + ldc)); x2 = vadd(x2, vload(c, c0 + 2 * ldc))
        x3 = vadd(x3, vload(c, c0 + 3 * ldc)); x4 = vadd(x4, vload(c, c0 + 4 * ldc)); x5 = vadd(x5, vload(c, c0 + 5 * ldc))
    vstore(c, c0, x0); vstore(c, c0 + ldc, x1); vstore(c, c0 + 2 * ldc, x2)
    vstore(c, c0 + 3 * ldc, x3); vstore(c, c0 + 4 * ldc, x4); vstore(c, c0 + 5 * ldc, x5)


@njit(inline="always")
def _pack_panel(src, first, lanes, lane_stride, kc, depth_stride, dst, out, width):
    # dst[out + p·width + l] = src[first + l·lane_stride + p·depth_stride] for l < lanes,
    # p < kc, lanes lanes..width zero: one sliver of A (lanes = rows) or B (lanes = columns),
    # read straight through the strides, the inner loop along whichever index is contiguous.
    zero = np.float32(0)
    if depth_stride == 1:
        # A transposed operand (B = X[n]ᵀ of a 1×1 weight gradient): whole 16-lane groups go
        # by 16×16 blocks transposed in registers, the last kc % 16 steps (or everything, for
        # lanes not in 16s: A's short last slivers; its full ones go by _pack_a_slivers's
        # 12×16 blocks) element by element.
        full = kc - kc % 16 if lanes % 16 == 0 and width % 16 == 0 else 0
        for l0 in range(0, lanes, 16):
            for p0 in range(0, full, 16):
                transpose16(src, first + l0 * lane_stride + p0, lane_stride, dst, out + p0 * width + l0, width)
        for lane in range(lanes):
            for p in range(full, kc):
                store_at(dst, out + p * width + lane, load_at(src, first + lane * lane_stride + p))
    else:
        for p in range(kc):
            for lane in range(lanes):
                store_at(dst, out + p * width + lane, load_at(src, first + lane * lane_stride + p * depth_stride))
    for p in range(kc):
        for lane in range(lanes, width):
            store_at(dst, out + p * width + lane, zero)


@njit(inline="always")
def _pack_a_slivers(src, row0, mc, p0, kc, dst, base):
    # dst[base + s·kc·MR + p·MR + i] = src[row0 + s·MR + i, p0 + p] for the ⌈mc/MR⌉ slivers s
    # of rows row0..row0+mc (rows past mc zero).
    # A full sliver of a row-major A goes by MR×16 blocks transposed in registers (the last
    # kc % 16 columns element by element): element by element, packing the 1×1 14² layer's
    # 256×1024 weight took 74 µs of a 1.2 ms batch-2 forward, by blocks 34 µs (in-process,
    # shuffled, 2 threads, product time new/old: 2 × 256×1024·1024×196 0.95-0.97, 8 × the
    # same 0.99, 1024³ 0.97).
    s0, s1 = src.strides[0] // 4, src.strides[1] // 4
    for s in range((mc + MR - 1) // MR):
        first = (row0 + s * MR) * s0 + p0 * s1
        out = base + s * kc * MR
        if s1 == 1 and mc - s * MR >= MR:
            full = kc - kc % 16
            for q in range(0, full, 16):
                transpose_rows(src, first + q, s0, MR, dst, out + q * MR, MR)
            for i in range(MR):
                for p in range(full, kc):
                    store_at(dst, out + p * MR + i, load_at(src, first + i * s0 + p))
        else:
            _pack_panel(src, first, min(MR, mc - s * MR), s0, kc, s1, dst, out, MR)


def _pack_a(a, ap):
    # All of A, packed once (when several tasks share it): for matrix t, slice pc (_slice_depth deep),
    # sliver s: ap[t, pc·Mp + s·kc·MR + p·MR + i] = a[t, s·MR + i, pc + p] (Mp = M rounded
    # up to MR). One prange iteration per (t, slice, sliver).
    batch, M, K = a.shape
    Mp = ap.shape[1] // K
    slivers = Mp // MR
    depth = _slice_depth(K)
    slices = (K + depth - 1) // depth
    for task in prange(batch * slices * slivers):
        s = task % slivers
        pc = (task // slivers) % slices * depth
        t = task // (slivers * slices)
        kc = min(depth, K - pc)
        _pack_a_slivers(a[t], s * MR, min(MR, M - s * MR), pc, kc, ap[t], pc * Mp + s * kc * MR)


@njit(inline="always")
def _slice_depth(K):
    # the depth of the k slices of a K-deep product (the last one may be shorter)
    return K if K <= KC_ONE else KC


@njit(inline="always")
def _pack_b(b, p0, kc, j0, nc, bp, partial_only):
    # bp[(j // NR)·kc·NR + p·NR + j % NR] = b[p0 + p, j0 + j], columns past nc zero; full
    # slivers of a row-major b copy two vectors per row (skipped when partial_only: the
    # micro-kernel reads them in place).
    s0, s1 = b.strides[0] // 4, b.strides[1] // 4
    for s in range((nc + NR - 1) // NR):
        base = s * kc * NR
        cols = min(NR, nc - s * NR)
        first = p0 * s0 + (j0 + s * NR) * s1
        if s1 == 1 and cols == NR:
            if partial_only:
                continue
            for p in range(kc):
                vstore(bp, base + p * NR, vload(b, first + p * s0))
                if NR > 16:  # a compile-time constant: the wide tile's second vector
                    vstore(bp, base + p * NR + 16, vload(b, first + p * s0 + 16))
        else:
            _pack_panel(b, first, cols, s1, kc, s0, bp, base, NR)


@njit(inline="always")
def _block(a, ap, Mp, prepacked, b, c, i0, i1, j0, j1, p0, p1, al, bp, tile, add, b_depth):
    # c[i0:i1, j0:j1] (+)= a[i0:i1, p0:p1] · b[p0:p1, j0:j1] (added to c when add); i0 and p0
    # multiples of MR and KC;
    # c has unit column stride. A comes packed by _pack_a in ap when prepacked, else each
    # MC×KC block is packed here into al (read once, straight into L2).
    ldc = c.strides[0] // 4
    lda = a.strides[0] // 4
    ldb = b.strides[0] // 4
    # A row-major A is read in place by the micro-kernel, unless its rows lie a multiple of
    # 4 KB apart: the 12 rows of a sliver then fall in one L1 set (12 ways) and evict the B
    # sliver (in-process A/B, packing those: 8 × 256×1024 · 1024×196 median time 0.87×,
    # 2048³ 0.83×).
    direct = not prepacked and a.strides[1] == 4 and (lda * 4) % _SET_STRIDE != 0
    # Few rows of C: packing a B panel would cost about as much as the products that use
    # it, so a row-major B's full slivers are read in place too (only a partial one is
    # packed), with the same exception for rows 4 KB apart; A is then read in place or
    # comes packed up front. Only for rows of B at most 4 KB long: a KC-deep sliver of
    # longer rows touches a page per row, more than the L1 TLB holds (Intel Xeon, 2
    # threads, 8 × 64×576 · 576×3136: 130 GFLOP/s in place, 187 packed; 784-column B, a
    # 28² plane, the same either way). Nor for slices deeper than b_depth (_b_in_place_depth:
    # on Zen 4 only short reductions).
    # slices as _pack_a cuts them, from the whole reduction (a split-K task's range
    # starts on a KC multiple, and split-K needs K > KC_ONE)
    depth = _slice_depth(b.shape[0])
    b_direct = ((direct or prepacked) and b.strides[1] == 4 and i1 - i0 <= _B_IN_PLACE_ROWS
                and (ldb * 4) % _SET_STRIDE != 0 and ldb * 4 <= _B_IN_PLACE_STRIDE and depth <= b_depth)
    for jc in range(j0, j1, NC):
        nc = min(NC, j1 - jc)
        for pc in range(p0, p1, depth):
            kc = min(depth, p1 - pc)
            _pack_b(b, pc, kc, jc, nc, bp, b_direct)
            for ic in range(i0, i1, MC):
                mc = min(MC, i1 - ic)
                full = mc - mc % MR if direct else 0  # rows read in place; the rest is packed
                if not prepacked and full < mc:
                    _pack_a_slivers(a, ic + full, mc - full, pc, kc, al, full * kc)
                packed = ap if prepacked else al
                for jr in range(0, nc, NR):
                    cols = min(NR, nc - jr)
                    b_at = pc * ldb + jc + jr
                    for ir in range(0, mc, MR):
                        rows = min(MR, mc - ir)
                        at = (ic + ir) * lda + pc * 1
                        a0 = pc * Mp + (ic + ir) * kc if prepacked else ir * kc
                        if NR == 32 and cols == NR and rows <= 8:
                            # a last sliver of at most 8 rows (always packed): the short-row
                            # kernels, straight into C (the 12-row tile spent up to 11/12 of
                            # its FMAs on zero rows: 64 = 5·12 + 4 output channels)
                            c_at = (ic + ir) * ldc + jc + jr
                            if b_direct:
                                _micro_short(packed, a0, b, b_at, ldb, kc, c, c_at, ldc, (add or pc > p0), rows)
                            else:
                                _micro_short(packed, a0, bp, jr * kc, NR, kc, c, c_at, ldc, (add or pc > p0), rows)
                            continue
                        if b_direct and cols == NR:
                            if ir < full:
                                _micro(a, at, lda, 1, b, b_at, ldb, kc, c, (ic + ir) * ldc + jc + jr, ldc, (add or pc > p0))
                                continue
                            if rows == MR:
                                _micro(packed, a0, 1, MR, b, b_at, ldb, kc, c, (ic + ir) * ldc + jc + jr, ldc, (add or pc > p0))
                                continue
                            _micro(packed, a0, 1, MR, b, b_at, ldb, kc, tile, 0, NR, False)
                        elif cols == NR and ir < full:
                            _micro(a, at, lda, 1, bp, jr * kc, NR, kc, c, (ic + ir) * ldc + jc + jr, ldc, (add or pc > p0))
                            continue
                        elif cols == NR and rows == MR:
                            _micro(packed, a0, 1, MR, bp, jr * kc, NR, kc, c, (ic + ir) * ldc + jc + jr, ldc, (add or pc > p0))
                            continue
                        elif cols == 16 and ir < full:
                            _micro16(a, at, lda, 1, bp, jr * kc, NR, kc, c, (ic + ir) * ldc + jc + jr, ldc, (add or pc > p0))
                            continue
                        elif cols == 16 and rows == MR:
                            _micro16(packed, a0, 1, MR, bp, jr * kc, NR, kc, c, (ic + ir) * ldc + jc + jr, ldc, (add or pc > p0))
                            continue
                        elif NR == 32 and cols <= 8 and ir >= full:
                            # a tail of at most 8 columns against a packed A sliver: transposed,
                            # 4 columns a pass (zero-padded B past the panel)
                            c_at = (ic + ir) * ldc + jc + jr
                            _micro_tail(packed, a0, kc, bp, jr * kc, c, c_at, ldc, (add or pc > p0), rows, min(cols, 4), tile)
                            if cols > 4:
                                _micro_tail(packed, a0, kc, bp, jr * kc + 4, c, c_at + 4, ldc, (add or pc > p0), rows, cols - 4,
                                            tile)
                            continue
                        elif cols < 16 and ir < full:
                            _micro16(a, at, lda, 1, bp, jr * kc, NR, kc, tile, 0, NR, False)
                        elif cols < 16:
                            _micro16(packed, a0, 1, MR, bp, jr * kc, NR, kc, tile, 0, NR, False)
                        elif ir < full:
                            _micro(a, at, lda, 1, bp, jr * kc, NR, kc, tile, 0, NR, False)
                        else:
                            _micro(packed, a0, 1, MR, bp, jr * kc, NR, kc, tile, 0, NR, False)
                        for i in range(rows):
                            for j in range(cols):
                                if (add or pc > p0):
                                    c[ic + ir + i, jc + jr + j] += tile[i * NR + j]
                                else:
                                    c[ic + ir + i, jc + jr + j] = tile[i * NR + j]


def _gemm(a, ap, Mp, prepacked, b, c, m_block, n_block, k_block, partial, work, R, b_depth):
    # c[t] = Σ_{r < R} a[u % len(a)] · b[u % len(b)], u = t·R + r, for every t < len(c) (A
    # packed in ap when prepacked; R = 1: one product each). Task = (t, row block, column
    # block, k slice), summing its R products in order; k slice s > 0 writes partial[s − 1,
    # t], summed into c[t] below in slice order.
    batch, M, N = c.shape
    K = b.shape[1]
    mt = (M + m_block - 1) // m_block
    nt = (N + n_block - 1) // n_block
    k_split = (K + k_block - 1) // k_block
    for task in prange(batch * mt * nt * k_split):
        s = task % k_split
        rest = task // k_split
        j = rest % nt
        i = (rest // nt) % mt
        t = rest // (nt * mt)
        # this thread's packing buffers (allocated per task, a 1.6 MB B panel came from mmap
        # and page-faulted on every call in a process whose heap the compiler had fragmented)
        mine = work[get_thread_id()]
        bn = min(NC, n_block + NR) * KC_MAX
        bp = mine[:bn]
        al = mine[bn:bn + MC * KC_MAX]
        tile = mine[bn + MC * KC_MAX:bn + MC * KC_MAX + MR * NR]
        target = c[t] if s == 0 else partial[s - 1, t]
        for r in range(R):
            u = t * R + r
            _block(a[u % a.shape[0]], ap[u % ap.shape[0]], Mp, prepacked, b[u % b.shape[0]], target,
                   i * m_block, min(M, (i + 1) * m_block), j * n_block, min(N, (j + 1) * n_block),
                   s * k_block, min(K, (s + 1) * k_block), al, bp, tile, r > 0, b_depth)
    if k_split > 1:
        for row in prange(batch * M):
            t = row // M
            i = row % M
            for s in range(k_split - 1):
                for j in range(N):
                    c[t, i, j] += partial[s, t, i, j]


def _split(batch, M, N, K, threads, mr=MR, nr=NR):
    # Row/column blocks (multiples of the register tile) and k slices giving at least
    # 2·threads tasks when the product is big enough to share; blocks stay as large as
    # possible, since each task packs its own operands. Rows are not split when the threads
    # divide the batch: prange hands each thread an equal run of tasks, so that balances
    # nothing, and the two row blocks of one matrix each pack its whole B (AMD Zen 4, 2
    # threads, in-process, shuffled, time whole / halved rows: 2 × 256×1024·1024×196 (1×1
    # 14² forward at batch 2) 0.95-0.97, 2 × 1024×256·256×196 (its input gradient) 0.96-
    # 0.99), nor the reduction (split-K adds a pass over C). Columns still split (a shared
    # A is packed once up front or read in place, and half the B panel stays in L2: 2 ×
    # 512×256·256×784 whole / halved 1.00-1.01).
    want = 2 * threads if threads > 1 else 1
    balanced = batch % threads == 0
    m_block, n_block, k_split = M, N, 1
    while batch * _cdiv(M, m_block) * _cdiv(N, n_block) < want:
        if n_block >= 2 * nr and n_block >= m_block:
            n_block = _round_up(_cdiv(n_block, 2), nr)
        elif m_block >= 2 * mr and not balanced:
            m_block = _round_up(_cdiv(m_block, 2), mr)
        else:
            break
    if K <= _SHORT_K and m_block > _SHORT_K_ROWS and not (M >= _WHOLE_ROWS_MIN and host.cpu_name() in _WHOLE_ROWS_HOSTS):
        # A short reduction: each C tile gets few FMAs per store, and blocks of at most
        # _SHORT_K_ROWS rows (balanced) ran faster, repacked B panels and all (Intel Xeon,
        # 2 threads, GFLOP/s, full rows -> 36-48: 36 × 64×64·64×3136 (a Winograd product)
        # 95-129 -> 180-187, 8 × 256×64·64×3136 (1×1 expand) 197 -> 247; K = 256 lost).
        # Not for tall products on _WHOLE_ROWS_HOSTS, where repacking B for each block costs more than it saves.
        m_block = _round_up(_cdiv(M, _cdiv(M, _SHORT_K_ROWS)), mr)
    tasks = batch * _cdiv(M, m_block) * _cdiv(N, n_block)
    while tasks * k_split < want and K // (2 * k_split) >= 4 * KC and not balanced:
        k_split *= 2
    return m_block, n_block, k_split


def _b_in_place_depth():
    return _B_IN_PLACE_DEPTH_BY_HOST.get(host.cpu_name(), KC_MAX)


def _cdiv(a, b):
    return -(-a // b)


def _round_up(a, b):
    return _cdiv(a, b) * b


@functools.lru_cache(maxsize=None)
def _compiled():
    # One specialisation for every operand layout: generic-layout 3-D float32 arrays (a
    # C-contiguous array converts to it), compiled on first use, not at import.
    f2c = types.Array(types.float32, 2, "C")
    f3 = types.Array(types.float32, 3, "A")
    f4c = types.Array(types.float32, 4, "C")
    # Compiled in a child process and loaded from Numba's cache (kernels.precompile: this
    # process's JIT code of the micro-kernel ran at half speed).
    pack = njit_cached(_pack_a, types.void(f3, f2c), "_compiled", parallel=True)
    gemm = njit_cached(_gemm, types.void(f3, f2c, types.intp, types.boolean, f3, f3, types.intp, types.intp, types.intp,
                                         f4c, f2c, types.intp, types.intp), "_compiled", parallel=True)
    return pack, gemm


def _narrow_clone(func, namespace):
    # func (a plain Python function) with its globals looked up in namespace instead of
    # this module's, under its own name (Numba's cache names entries by qualified name).
    clone = FunctionType(func.__code__, namespace, func.__name__ + "_narrow", func.__defaults__, func.__closure__)
    clone.__qualname__ = func.__qualname__ + "_narrow"
    clone.__module__ = func.__module__
    return clone


@functools.lru_cache(maxsize=None)
def _compiled_narrow():
    # _pack_a and _gemm for the narrow tile: the same code, with MR, NR and the micro-
    # kernels bound to NARROW_MR, NARROW_NR and _micro6 (compile-time constants, as the
    # wide tile's are), through copies of the inlined helpers that read them.
    namespace = dict(globals(), MR=NARROW_MR, NR=NARROW_NR, _micro=_micro6, _micro16=_micro6)
    for name in ("_pack_a_slivers", "_pack_b", "_block"):
        namespace[name] = njit(inline="always")(_narrow_clone(globals()[name].py_func, namespace))
    f2c = types.Array(types.float32, 2, "C")
    f3 = types.Array(types.float32, 3, "A")
    f4c = types.Array(types.float32, 4, "C")
    pack = njit_cached(_narrow_clone(_pack_a, namespace), types.void(f3, f2c), "_compiled_narrow", parallel=True)
    gemm = njit_cached(_narrow_clone(_gemm, namespace),
                       types.void(f3, f2c, types.intp, types.boolean, f3, f3, types.intp, types.intp, types.intp,
                                  f4c, f2c, types.intp, types.intp), "_compiled_narrow", parallel=True)
    return pack, gemm


def narrow_tile() -> bool:
    """Whether sgemm runs the narrow 6×16 tile (_micro6): on hosts without AVX-512, whose 16
    vector registers cannot hold the 12×32 tile."""
    return host.narrow_registers()


# Winograd's products on AVX2 (AMD Zen 1, 2 threads, pytest-benchmark medians, ms, narrow
# tile / OpenBLAS: 36 × 512×512·512×32, ResNet-50's 7² layer at batch 8, 10.1 / 11.5;
# 36 × 128×128·128×392 8.2 / 9.1), while single large products stay BLAS's (2048³ 266 /
# 244). `convcore bench --suite full --cases resnet50_3x3,vgg16_3x3,odd_3x3`, two runs each
# way, alternating processes, ratio to PyTorch, CONVCORE_CPU_GEMM=blas / auto: the 7² layer
# forward 1.16-1.18 / 1.58-1.71, input gradient 0.77-0.81 / 1.15-1.42; geometric mean of the
# 24 Winograd rows 1.45-1.60 / 1.62-1.70.
@functools.lru_cache(maxsize=None)
def enabled(winograd: bool = False) -> bool:
    """Whether ``matmul`` uses this GEMM for float32: on hosts with AVX-512, unless
    ``CONVCORE_CPU_GEMM=blas``. ``CONVCORE_CPU_GEMM=convcore`` forces it on any host.
    ``winograd``: the caller's products are Winograd's 16 or 36 products of one shape (the
    transformed weight times the transformed input tiles), which the narrow tile runs
    faster than OpenBLAS on AVX2 hosts, so they take it there too."""
    choice = os.environ.get("CONVCORE_CPU_GEMM", "auto").strip().lower()
    if choice not in ("auto", "convcore", "blas"):
        raise ValueError(f"CONVCORE_CPU_GEMM={choice!r}: expected 'auto', 'convcore' or 'blas'")
    if choice == "blas":
        log.info("float32 GEMMs go to NumPy's BLAS (CONVCORE_CPU_GEMM=blas)")
        return False
    if choice == "auto" and not host.avx512():
        if winograd:
            log.info("Winograd's float32 products go to convcore's narrow 6x16 tile (no AVX-512 here)")
            return True
        log.info("float32 GEMMs go to NumPy's BLAS: the host CPU has no AVX-512 for convcore's 16-lane kernel")
        return False
    return True


def describe() -> str:
    if not enabled():
        if enabled(winograd=True):
            return "NumPy's BLAS (np.matmul); Winograd's products: convcore's 6x16 micro-kernel (no AVX-512 here)"
        return "NumPy's BLAS (np.matmul)"
    if narrow_tile():
        return "convcore's 6x16 micro-kernel, 16-lane vectors as register pairs (no AVX-512 here) (float32), BLAS for float64"
    return "convcore's 12x32 micro-kernel, AVX-512 (float32), BLAS for float64"


def sgemm(a, b, out, blocks=None, summed=1):
    """out[t] = a[t % len(a)] @ b[t % len(b)] for float32 3-D arrays (any strides for a and b;
    out with unit column stride). Shapes are the caller's to check. ``blocks`` (rows,
    columns, k slices per task) overrides ``_split``; rows and columns round up to the tile.
    ``summed`` = R > 1: out[t] = Σ_{r < R} a[u % len(a)] @ b[u % len(b)], u = t·R + r (the
    products summed in order inside each task: no per-product temporaries)."""
    batch, M, N = out.shape
    K = a.shape[2]
    if M == 0 or N == 0:
        return out
    if K == 0:
        out[...] = 0
        return out
    narrow = narrow_tile()
    mr, nr = (NARROW_MR, NARROW_NR) if narrow else (MR, NR)
    m_block, n_block, k_split = blocks or _split(batch, M, N, K, get_num_threads(), mr, nr)
    if blocks:
        m_block, n_block = min(_round_up(m_block, mr), _round_up(M, mr)), _round_up(n_block, nr)
    # whole slices of _slice_depth (a reduction of at most KC_ONE is one: no split-K there)
    k_block = _round_up(_cdiv(K, k_split), _slice_depth.py_func(K))
    k_split = _cdiv(K, k_block)
    partial = np.empty((k_split - 1, batch, M, N) if k_split > 1 else (0, 1, 1, 1), dtype=np.float32)
    Mp = _round_up(M, mr)
    # A with unit column stride is read in place (no packing: for a short N, packing A
    # cost half as much as the product). Otherwise A is packed once up front when several
    # tasks read the same matrix (a weight broadcast over the batch, or split columns) and
    # it is small enough to stay in cache, else block by block inside each task.
    # A row-major A whose rows lie a multiple of 4 KB apart is packed anyway (see _block):
    # once up front too when shared (8 × 256×1024 · 1024×196, the 1×1 14² 1024-channel
    # layer: every task had packed all of A).
    shared = batch // a.shape[0] * _cdiv(N, n_block) > 1
    aliased = a.strides[2] == 4 and a.strides[1] % _SET_STRIDE == 0
    prepacked = shared and (a.strides[2] != 4 or aliased) and a.shape[0] * Mp * K <= _PREPACK_LIMIT
    ap = np.empty((a.shape[0], Mp * K) if prepacked else (1, 1), dtype=np.float32)
    pack, gemm = _compiled_narrow() if narrow else _compiled()
    if prepacked:
        pack(a, ap)
    work = scratch("gemm.work", (config.NUMBA_NUM_THREADS, min(NC, n_block + nr) * KC_MAX + MC * KC_MAX + mr * nr),
                   np.float32)
    gemm(a, ap, Mp, prepacked, b, out, m_block, n_block, k_block, partial, work, summed, _b_in_place_depth())
    return out


def sgemm_sum(a, b, out):
    """out[t] = Σ_r a[t, r] @ b[t, r] for float32 a (T, R, M, K), b (T, R, K, N) (any strides)
    and out (T, M, N) with unit column stride: weight gradients, dW = Σ_n dY[n] · X[n]ᵀ with
    X[n]ᵀ a transposed view. Shapes are the caller's to check."""
    for t in range(out.shape[0]):  # one call per t: (R, M, K) views of any strides, no copies
        sgemm(a[t], b[t], out[t:t + 1], summed=a.shape[1])
    return out


def matmul(a, b, out=None, winograd=False):
    """``np.matmul(a, b, out=out)`` for the products convcore's CPU kernels issue: float32
    goes to ``sgemm`` when ``enabled(winograd)`` and the batch dimensions of ``a`` and ``b``
    are a trailing part of ``out``'s (leading ones broadcast), everything else to NumPy."""
    if out is None:
        out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]),
                       dtype=np.result_type(a, b))
    if not (a.dtype == b.dtype == out.dtype == np.float32 and enabled(winograd)):
        return np.matmul(a, b, out=out)  # float64, or BLAS chosen (enabled() logged why)
    if out.ndim < 2 or not (out.strides[-1] == 4 or out.shape[-1] == 1):
        _log_once(f"float32 product into out of shape {out.shape}, strides {out.strides} goes to NumPy's BLAS: "
                  "convcore's GEMM writes rows with unit stride")
        return np.matmul(a, b, out=out)
    batch_shape = out.shape[:-2]
    a3, b3, out3 = _as_batch(a, batch_shape), _as_batch(b, batch_shape), _as_batch(out, batch_shape)
    if a3 is None or b3 is None or out3 is None or out3.strides[-1] not in (4, 0):
        _log_once(f"float32 product {a.shape} @ {b.shape} -> {out.shape} goes to NumPy's BLAS: "
                  "a batch layout convcore's GEMM does not index")
        return np.matmul(a, b, out=out)
    sgemm(a3, b3, out3)
    return out


_LOGGED = set()


def _log_once(message):
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)


def _as_batch(x, batch_shape):
    # x as (B, rows, cols) where t % B indexes x's batch for the flat batch index t of
    # batch_shape; None when x's batch shape isn't a trailing part (after leading ones).
    own = x.shape[:-2]
    while own and own[0] == 1:
        own = own[1:]
    if own and tuple(batch_shape[len(batch_shape) - len(own):]) != own:
        return None
    view = x.view()
    try:
        view.shape = (math.prod(own),) + x.shape[-2:]  # raises rather than copy
    except AttributeError:
        return None
    return view
