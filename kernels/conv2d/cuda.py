"""conv2d forward, input gradient and weight gradient on CUDA: the launchers.

Algorithms (``algorithm=``), each family of kernels in its own module:
- ``direct`` (cuda_direct): one thread per output element; 64-bit indices.
- ``gemm`` (cuda_igemm): implicit GEMM for all three directions, 32-bit indices. ``gemm`` picks the
  block tile from the shape (``_pick_tile``); ``gemm_64x64``, ``gemm_32x32``, ``gemm_128x64``,
  ``gemm_128x128`` force one (``GEMM_TILES``).
- ``depthwise`` (cuda_depthwise): C/groups == 1; a block per tile of one (n, channel) plane with the
  input tile and its halo in shared memory. ``depthwise_unrolled`` (cuda_depthwise_unrolled): the same,
  compiled per filter size, stride and dilation (taps unrolled, weights or per-tap sums in registers,
  several outputs per thread, one pass for the weight gradient); ``auto`` takes it where it applies.
``auto`` chooses among them per shape (``_choose``); ``candidates(direction, geom)`` lists the variant
names that apply to a shape, for ``convcore.tune`` to time, and every launcher accepts them.
The weight gradients reduce through a split workspace summed in index order: no float atomics, so
results are bitwise reproducible run after run.
Every launch goes on the output's stream (``out.stream``: the caller's current stream, bound by
``CudaIO.empty``; 0, the default stream, for NumPy callers).
"""
from __future__ import annotations

import functools

import numpy as np

from convcore._arrays import poison_enabled
from convcore._backend import cuda_simulated
from convcore._device_memory import device_empty

from .._cuda_util import THREADS, grid_for, kernel
from .cuda_depthwise import (
    DW_TILE,
    DW_WGRAD_THREADS,
    depthwise_fits,
    make_bwd_data_depthwise,
    make_bwd_weight_depthwise,
    make_fwd_depthwise,
)
from .cuda_depthwise_unrolled import (
    bwd_data_tile,
    fwd_tile,
    make_bwd_data_depthwise_unrolled,
    make_bwd_weight_depthwise_unrolled,
    make_fwd_depthwise_unrolled,
    unrolled_fits,
    wgrad_tile,
)
from .cuda_direct import make_bwd_bias, make_bwd_data, make_bwd_weight, make_fwd, make_relu_inplace, make_sum_splits
from .cuda_igemm import make_bwd_data_igemm, make_bwd_weight_igemm, make_fwd_igemm, make_fwd_igemm_relu

# Implicit-GEMM block tiles by name: (TM, TN) register tile per thread, BK reduction depth per
# shared-memory stage, (DM, DN) threads per block; the block tile is TM·DM × TN·DN. The simulator runs
# each thread in Python (a 256-thread block with barriers is very slow there), so it gets small tiles of
# the same code, still different from each other; the offline PTX report compiles the GPU tiles.
# The 128-row tiles raise the FMAs per shared-memory load (8x8: 64 FMAs per 16 loads, the
# 4:1 ratio of FP32 lanes to shared-memory lanes); in float64 they keep 4-wide register tiles and
# use 512 threads so that no kernel needs more than 128 registers. The shape heuristic does not
# pick them yet: they are candidates for the tuner.
GEMM_TILES = {
    "64x64": {"float32": (4, 4, 8, 16, 16), "float64": (4, 4, 8, 16, 16)},
    "32x32": {"float32": (2, 2, 8, 16, 16), "float64": (2, 2, 8, 16, 16)},
    "128x64": {"float32": (8, 4, 8, 16, 16), "float64": (4, 4, 8, 32, 16)},
    "128x128": {"float32": (8, 8, 8, 16, 16), "float64": (4, 8, 8, 32, 16)},
}
if cuda_simulated():
    GEMM_TILES = {"64x64": {"float32": (4, 2, 8, 4, 4), "float64": (4, 2, 8, 4, 4)},
                  "32x32": {"float32": (2, 2, 8, 4, 4), "float64": (2, 2, 8, 4, 4)},
                  "128x64": {"float32": (8, 4, 8, 2, 8), "float64": (8, 4, 8, 2, 8)},
                  "128x128": {"float32": (8, 8, 8, 2, 8), "float64": (8, 8, 8, 2, 8)}}

DIRECTIONS = {"forward": "forward", "input": "input", "weight": "weight",
              "conv2d": "forward", "conv2d_input": "input", "conv2d_weight": "weight",
              "fwd": "forward", "bwd_data": "input", "bwd_weight": "weight"}  # the last: convcore.tune's
_SMS = 132  # an H100's multiprocessors: the block count a tile should reach to fill the GPU
# Blocks the split-K weight gradients aim for, and the direct one's threads; fewer in the simulator.
_TARGET_BLOCKS = 8 if cuda_simulated() else 2 * _SMS
_TARGET_THREADS = 1024 if cuda_simulated() else 1 << 16
_INT32_LIMIT = 2 ** 31


def _geom_args(geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, pt, pl, dh, dw, geom.groups


def _tensor_sizes(geom):
    return (geom.N * geom.C * geom.H * geom.W, geom.K * geom.Cg * geom.R * geom.S, geom.N * geom.K * geom.P * geom.Q)


def _fits_int32(geom):
    """The implicit-GEMM and depthwise kernels index in 32 bits: every tensor needs < 2**31 elements.
    (The GEMM kernels also put the groups on gridDim.z, at most 65535.)"""
    return max(_tensor_sizes(geom)) < _INT32_LIMIT and geom.groups <= 65535


def _gemm_shape(direction, geom):
    """(GEMM_M, GEMM_N, GEMM_K) of one group."""
    if direction == "forward":
        return geom.N * geom.P * geom.Q, geom.Kg, geom.Cg * geom.R * geom.S
    if direction == "input":
        return geom.N * geom.H * geom.W, geom.Cg, geom.Kg * geom.R * geom.S
    return geom.Kg, geom.Cg * geom.R * geom.S, geom.N * geom.P * geom.Q


def _pick_tile(direction, geom):
    """The GEMM tile for a shape, from what autotuning chose on an H100 (benchmarks/GPU_NOTES.md):
    the 8-wide register tiles (128×64, 128×128) wherever they still give the GPU enough blocks,
    else 64×64, and 32×32 for small or thin GEMMs. The nominal (GPU) sizes decide, so the choice
    does not change under the simulator."""
    gemm_m, gemm_n, _ = _gemm_shape(direction, geom)
    if min(gemm_m, gemm_n) <= 32:
        return "32x32"
    if direction == "weight":  # split-K supplies the blocks
        return "128x128" if min(gemm_m, gemm_n) >= 128 else "64x64"
    m_tiles, groups = -(-gemm_m // 128), geom.groups
    if m_tiles * -(-gemm_n // 64) * groups >= 96:
        return "128x128" if m_tiles * -(-gemm_n // 128) * groups >= 2 * _SMS else "128x64"
    blocks = -(-gemm_m // 64) * -(-gemm_n // 64) * groups
    return "64x64" if blocks >= _SMS else "32x32"


def variants() -> tuple:
    """The backend's own algorithm names, accepted by the public conv functions next to
    conv.ALGORITHMS (each launcher checks that the variant applies to the shape)."""
    return tuple(f"gemm_{name}" for name in GEMM_TILES) + ("depthwise", "depthwise_unrolled")


def candidates(direction, geom) -> list[str]:
    """The algorithm variants that apply to ``geom`` for ``direction`` ('forward', 'input', 'weight',
    or the op names 'conv2d', 'conv2d_input', 'conv2d_weight'), each accepted by the launchers as
    ``algorithm``. 'gemm' itself (the shape heuristic's pick among the tiles) is left out: a tuner
    should record the concrete tile it timed."""
    direction = _direction(direction)
    names = ["direct"]
    if _fits_int32(geom):
        names += [f"gemm_{name}" for name in GEMM_TILES]
        if geom.Cg == 1 and depthwise_fits(direction, geom):
            names.append("depthwise")
        if geom.Cg == 1 and unrolled_fits(direction, geom):
            names.append("depthwise_unrolled")
    return names


def _direction(direction):
    if direction not in DIRECTIONS:
        raise ValueError(f"conv2d cuda: direction must be one of {tuple(DIRECTIONS)}, got {direction!r}")
    return DIRECTIONS[direction]


def _choose(direction, algorithm, geom):
    """('direct',) | ('gemm', tile name) | ('depthwise',) | ('depthwise', 'unrolled') for a public name or
    a ``candidates`` variant."""
    if algorithm == "auto":
        if not _fits_int32(geom):
            return ("direct",)  # the 64-bit kernels: the only ones exact at this size
        if geom.Cg == 1 and (geom.R, geom.S) == (3, 3) and unrolled_fits(direction, geom):
            # Fewer loads and instructions per output, no spills (see cuda_depthwise_unrolled); other
            # filter sizes are tuning candidates only until a GPU has timed them.
            return ("depthwise", "unrolled")
        if geom.Cg == 1 and depthwise_fits(direction, geom):
            return ("depthwise",)
        # Very shallow reductions or narrow outputs leave the GEMM tile mostly empty.
        depth, width = {"forward": (geom.Cg * geom.R * geom.S, geom.Kg),
                        "input": (geom.Kg * geom.R * geom.S, geom.Cg),
                        "weight": (geom.Cg * geom.R * geom.S, geom.Kg)}[direction]
        return ("gemm", _pick_tile(direction, geom)) if depth >= 8 and width >= 4 else ("direct",)
    if algorithm == "direct":
        return ("direct",)
    if algorithm == "gemm" or algorithm.startswith("gemm_") and algorithm[5:] in GEMM_TILES:
        if not _fits_int32(geom):
            raise ValueError(f"conv2d cuda: algorithm={algorithm!r} indexes in 32 bits and needs tensors of fewer "
                             f"than 2**31 elements and groups <= 65535, got {_tensor_sizes(geom)} (input, weight, "
                             f"output elements), groups={geom.groups}; use 'direct'")
        return ("gemm", _pick_tile(direction, geom) if algorithm == "gemm" else algorithm[5:])
    if algorithm == "depthwise":
        if geom.Cg != 1 or not _fits_int32(geom) or not depthwise_fits(direction, geom):
            raise ValueError(f"conv2d cuda: algorithm='depthwise' does not apply to input {geom.input_shape}, "
                             f"weight {geom.weight_shape} (see candidates())")
        return ("depthwise",)
    if algorithm == "depthwise_unrolled":
        if geom.Cg != 1 or not _fits_int32(geom) or not unrolled_fits(direction, geom):
            raise ValueError(f"conv2d cuda: algorithm='depthwise_unrolled' does not apply to the {direction} of "
                             f"input {geom.input_shape}, weight {geom.weight_shape} (see candidates())")
        return ("depthwise", "unrolled")
    raise ValueError(f"conv2d cuda: unknown algorithm {algorithm!r}; expected 'auto', 'direct', 'gemm', "
                     f"{', '.join(repr('gemm_' + t) for t in GEMM_TILES)}, 'depthwise' or 'depthwise_unrolled'")


def _tile(name, dtype):
    return GEMM_TILES[name][str(dtype)]


# ---------------------------------------------------------------- launchers
def conv2d_fwd(x, w, b, out, geom, algorithm, activation=None):
    has_bias = b is not None
    bias = b if has_bias else out.reshape(-1)[:1]  # never read
    choice = _choose("forward", algorithm, geom)
    if choice[0] == "gemm":
        tile = _tile(choice[1], out.dtype)
        TM, TN, _, DM, DN = tile
        factory = make_fwd_igemm_relu if activation == "relu" else make_fwd_igemm
        blocks = (-(-(geom.N * geom.P * geom.Q) // (TM * DM)), -(-geom.Kg // (TN * DN)), geom.groups)
        kernel(factory, out.dtype, tile)[blocks, DM * DN, out.stream](x, w, bias, has_bias, out, *_geom_args(geom))
        return
    if choice == ("depthwise", "unrolled"):
        (_, _, pt, pl, _, _, groups), tile = _geom_args(geom), fwd_tile(geom.P, geom.Q)
        launch = kernel(make_fwd_depthwise_unrolled, out.dtype, *_unrolled_static(geom), tile)
        blocks = (geom.N * geom.K, -(-geom.P // (tile[0] * tile[2])) * -(-geom.Q // tile[1]))
        launch[blocks, tile[0] * tile[1], out.stream](x, w, bias, has_bias, activation == "relu", out, pt, pl, groups)
        return
    if choice[0] == "depthwise":
        launch, blocks, threads = _depthwise_launch(make_fwd_depthwise, out.dtype, geom, geom.P, geom.Q, geom.K)
        launch[blocks, threads, out.stream](x, w, bias, has_bias, activation == "relu", out, *_geom_args(geom))
        return
    launch = kernel(make_fwd, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](x, w, bias, has_bias, out, *_geom_args(geom))
    if activation == "relu":
        kernel(make_relu_inplace, out.dtype)[grid_for(out.size), THREADS, out.stream](out.reshape(out.size))


def conv2d_bwd_data(w, dy, out, geom, algorithm):
    choice = _choose("input", algorithm, geom)
    if choice[0] == "gemm":
        tile = _tile(choice[1], out.dtype)
        TM, TN, _, DM, DN = tile
        blocks = (-(-(geom.N * geom.H * geom.W) // (TM * DM)), -(-geom.Cg // (TN * DN)), geom.groups)
        kernel(make_bwd_data_igemm, out.dtype, tile)[blocks, DM * DN, out.stream](w, dy, out, *_geom_args(geom))
        return
    if choice == ("depthwise", "unrolled"):
        (_, _, pt, pl, _, _, groups), tile = _geom_args(geom), bwd_data_tile(geom.H, geom.W, geom.R, geom.S, geom.stride)
        launch = kernel(make_bwd_data_depthwise_unrolled, out.dtype, *_unrolled_static(geom), tile)
        blocks = (geom.N * geom.C, -(-geom.H // (tile[0] * tile[2])) * -(-geom.W // tile[1]))
        launch[blocks, tile[0] * tile[1], out.stream](w, dy, out, pt, pl, groups)
        return
    if choice[0] == "depthwise":
        launch, blocks, threads = _depthwise_launch(make_bwd_data_depthwise, out.dtype, geom, geom.H, geom.W, geom.C)
        launch[blocks, threads, out.stream](w, dy, out, *_geom_args(geom))
        return
    launch = kernel(make_bwd_data, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](w, dy, out, *_geom_args(geom))


def conv2d_bwd_weight(x, dy, out, geom, algorithm):
    choice = _choose("weight", algorithm, geom)
    if choice[0] == "gemm":
        tile = _tile(choice[1], out.dtype)
        tiles, splits, chunk = _gemm_splits(tile, geom)
        DM, DN = tile[3], tile[4]
        partial = _workspace((splits,) + tuple(out.shape), out)
        launch = kernel(make_bwd_weight_igemm, out.dtype, tile)
        launch[tiles + (geom.groups * splits,), DM * DN, out.stream](x, dy, partial, chunk, *_geom_args(geom))
    elif choice == ("depthwise", "unrolled"):
        (_, _, pt, pl, _, _, groups), tile = _geom_args(geom), wgrad_tile(geom.Q)
        splits, rows_per_split = _depthwise_splits(geom, 4 * _TARGET_BLOCKS)
        partial = _workspace((splits,) + tuple(out.shape), out)
        launch = kernel(make_bwd_weight_depthwise_unrolled, out.dtype, *_unrolled_static(geom), tile)
        launch[(geom.K, splits), tile[0] * tile[1], out.stream](x, dy, partial, rows_per_split, pt, pl, groups)
    elif choice[0] == "depthwise":
        splits, rows_per_split = _depthwise_splits(geom)
        partial = _workspace((splits,) + tuple(out.shape), out)
        launch = kernel(make_bwd_weight_depthwise, out.dtype)
        launch[(geom.K, splits), DW_WGRAD_THREADS, out.stream](x, dy, partial, rows_per_split, *_geom_args(geom))
    else:
        splits, rows_per_split = _direct_splits(geom)
        partial = _workspace((splits,) + tuple(out.shape), out)
        launch = kernel(make_bwd_weight, out.dtype)
        launch[grid_for(partial.size), THREADS, out.stream](x, dy, partial, rows_per_split, *_geom_args(geom))
    reduce = kernel(make_sum_splits, out.dtype)
    reduce[grid_for(out.size), THREADS, out.stream](partial.reshape(splits, out.size), out.reshape(out.size))


def _unrolled_static(geom):
    """(R, S, stride, dilation) as plain ints: the depthwise_unrolled kernels' compile-time parameters."""
    return int(geom.R), int(geom.S), tuple(map(int, geom.stride)), tuple(map(int, geom.dilation))


def _depthwise_launch(factory, dtype, geom, height, width, planes):
    """One block per (plane n·channels + channel, tile of that plane): planes on x, which has no 65535 limit."""
    TY, TX = DW_TILE[:2]
    blocks = (geom.N * planes, -(-width // TX) * -(-height // TY))
    return kernel(factory, dtype), blocks, TY * TX


def _workspace(shape, out):
    """The split partial sums. Poison mode (the tests) NaN-fills it too: a partial never written shows as NaN."""
    array = device_empty(shape, out.dtype, out.stream)  # CuPy's pool when installed: convcore/_device_memory.py
    if poison_enabled():
        array.copy_to_device(np.full(shape, np.nan, out.dtype), stream=out.stream)
    return array


def _gemm_splits(tile, geom):
    """((M tiles, N tiles), splits, chunk): enough splits of the N·P·Q GEMM-K rows for _TARGET_BLOCKS blocks."""
    TM, TN, BK, DM, DN = tile
    tiles = (-(-geom.Kg // (TM * DM)), -(-(geom.Cg * geom.R * geom.S) // (TN * DN)))
    rows = geom.N * geom.P * geom.Q
    steps = -(-rows // BK)
    splits = max(1, min(steps, -(-_TARGET_BLOCKS // (tiles[0] * tiles[1] * geom.groups))))
    chunk = -(-steps // splits) * BK  # GEMM-K rows per split, a multiple of BK
    return tiles, -(-rows // chunk), chunk


def _direct_splits(geom):
    """(splits, rows per split) of the N·P output rows: about _TARGET_THREADS threads in all."""
    rows = geom.N * geom.P
    splits = max(1, min(rows, -(-_TARGET_THREADS // (geom.K * geom.Cg * geom.R * geom.S))))
    rows_per_split = -(-rows // splits)
    return -(-rows // rows_per_split), rows_per_split


def _depthwise_splits(geom, target_blocks=_TARGET_BLOCKS):
    """Split the N·P output rows of each channel so that K·splits blocks fill the GPU (the unrolled
    kernel's blocks are half as wide and do less per row: it asks for 4× the blocks)."""
    rows = geom.N * geom.P
    splits = max(1, min(rows, -(-target_blocks // geom.K)))
    rows_per_split = -(-rows // splits)
    return -(-rows // rows_per_split), rows_per_split


def conv2d_bwd_bias(dy, out):
    launch = kernel(make_bwd_bias, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](dy, out)


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature[, threads])}.
    Covers the ``make_*`` factories of cuda_direct, cuda_igemm, cuda_depthwise and cuda_depthwise_unrolled
    (the latter at a few filter sizes, strides and planes), every GEMM tile."""
    from numba import boolean, int64

    a4 = dt[:, :, :, ::1]
    geo = (int64,) * 7
    entries = {
        "conv2d_fwd": (make_fwd, (a4, a4, dt[::1], boolean, a4) + geo),
        "relu_inplace": (make_relu_inplace, (dt[::1],)),
        "conv2d_bwd_data": (make_bwd_data, (a4, a4, a4) + geo),
        "conv2d_bwd_weight": (make_bwd_weight, (a4, a4, dt[:, :, :, :, ::1], int64) + geo),
        "sum_splits": (make_sum_splits, (dt[:, ::1], dt[::1])),
        "conv2d_bwd_bias": (make_bwd_bias, (a4, dt[::1])),
    }
    for name, tiles in GEMM_TILES.items():
        tile = tiles[str(dt)]
        threads = tile[3] * tile[4]
        for label, factory, signature in (
            ("conv2d_fwd_igemm", make_fwd_igemm, (a4, a4, dt[::1], boolean, a4) + geo),
            ("conv2d_fwd_igemm_relu", make_fwd_igemm_relu, (a4, a4, dt[::1], boolean, a4) + geo),
            ("conv2d_bwd_data_igemm", make_bwd_data_igemm, (a4, a4, a4) + geo),
            ("conv2d_bwd_weight_igemm", make_bwd_weight_igemm, (a4, a4, dt[:, :, :, :, ::1], int64) + geo),
        ):
            entries[f"{label}_{name}"] = (functools.partial(factory, tile=tile), signature, threads)
    dw_threads = DW_TILE[0] * DW_TILE[1]
    entries["conv2d_fwd_depthwise"] = (make_fwd_depthwise, (a4, a4, dt[::1], boolean, boolean, a4) + geo, dw_threads)
    entries["conv2d_bwd_data_depthwise"] = (make_bwd_data_depthwise, (a4, a4, a4) + geo, dw_threads)
    entries["conv2d_bwd_weight_depthwise"] = (make_bwd_weight_depthwise,
                                              (a4, a4, dt[:, :, :, :, ::1], int64) + geo, DW_WGRAD_THREADS)
    # The unrolled depthwise kernels are compiled per filter size, stride, dilation and tile: MobileNet's
    # 3×3 at stride 1 and 2 and a 5×5, on the GPU tiles of a wide plane (the largest) and a narrow one.
    geo_unrolled = (int64,) * 3
    for R, S, stride, dilation, (P, Q) in ((3, 3, (1, 1), (1, 1), (112, 112)), (3, 3, (2, 2), (1, 1), (56, 56)),
                                          (3, 3, (1, 1), (1, 1), (7, 7)), (5, 5, (1, 1), (1, 1), (28, 28))):
        tag = f"{R}x{S}_s{stride[0]}_{P}x{Q}"  # the plane, not the tile: the simulator's tiles differ
        tile = fwd_tile(P, Q)
        entries[f"conv2d_fwd_depthwise_unrolled_{tag}"] = (
            functools.partial(make_fwd_depthwise_unrolled, R=R, S=S, stride=stride, dilation=dilation, tile=tile),
            (a4, a4, dt[::1], boolean, boolean, a4) + geo_unrolled, tile[0] * tile[1])
        tile = bwd_data_tile(P * stride[0], Q * stride[1], R, S, stride)
        entries[f"conv2d_bwd_data_depthwise_unrolled_{tag}"] = (
            functools.partial(make_bwd_data_depthwise_unrolled, R=R, S=S, stride=stride, dilation=dilation, tile=tile),
            (a4, a4, a4) + geo_unrolled, tile[0] * tile[1])
        tile = wgrad_tile(Q)
        entries[f"conv2d_bwd_weight_depthwise_unrolled_{tag}"] = (
            functools.partial(make_bwd_weight_depthwise_unrolled, R=R, S=S, stride=stride, dilation=dilation,
                              tile=tile),
            (a4, a4, dt[:, :, :, :, ::1], int64) + geo_unrolled, tile[0] * tile[1])
    return entries
