"""conv2d forward, input gradient and weight gradient on the CPU: the launchers.

Algorithms (``algorithm=``), each in its own module:
- ``direct`` (cpu_direct): loop nests, ``prange`` over output planes; dense stride-1
  layers use the flat-plane kernels instead: cpu_kblock (register-blocked over four
  output channels) forward, weight gradient and, for C >= 4, input gradient; cpu_flat's
  scatter for the other input gradients; for float32 on AVX-512 hosts, the input gradient
  of layers with 4-6 input channels and the forward of those with 4-6 output channels by
  cpu_rows (6 planes × 4 rows × 16 columns; their weight gradient 3 output channels × 5
  taps × 16 columns), the forward of
  cpu_flat_simd (3 output channels × 144 or 128 flat outputs in zmm registers), or with 12-16
  output channels and 8+ images cpu_kvec16 (all channels in one vector × 25 pixels), both
  with narrower tiles on AVX2 hosts (32 flat outputs; 6 pixels), and the weight gradient
  of cpu_wgrad_kvec16 (5×5 filters, 12-16 output channels: all channels in one vector × 25
  taps, from 8 images) or else cpu_wgrad_simd (4 output channels × 5 taps in zmm, from 8
  images, 5×5+); other dense
  float32 forwards (strided: the ResNet stem's) cpu_kvec (64 output channels in four
  vectors × 6 pixels; on AVX2 hosts without AVX-512, 16 channels × 6 pixels).
- ``gemm`` (cpu_gemm): im2col/col2im + BLAS; 1×1 stride-1 unpadded layers skip im2col
  (the input already is the column matrix).
- ``winograd_f2`` / ``winograd_f4`` (cpu_winograd): F(2×2, 3×3) / F(4×4, 3×3) for 3×3
  stride-1 dilation-1 layers, forward, input gradient and (cpu_winograd_wgrad) weight
  gradient (``winograd`` picks the tile).
- depthwise layers (C/groups == 1) use dedicated kernels under ``direct`` and ``auto``:
  cpu_depthwise_rows for 3×3 padding-1 layers, stride 1, or stride 2 on output planes at
  most 64 wide (float32, AVX-512: 16 columns per vector), else cpu_depthwise_strips (L1-sized
  row strips of phase planes, fused tap blocks, bias and ReLU fused into the forward)
  where the right edge is padded at least as much as 'same' pads it (W <= Q·sw: every
  MobileNet-style layer), else cpu_depthwise.
- ``phase`` (cpu_phase): forward and weight gradient of dense layers from phase-split
  planes, register-blocked 4 × 4 over (output channel, tap); ``auto`` takes it for
  strided layers with few input channels and large kernels (the ResNet stem). A cpu
  variant name (variants()).
All are race-free and reduce in a fixed order, so results are deterministic.
"""
from __future__ import annotations

import numpy as np

from .. import host
from ..gemm.cpu import enabled as gemm_enabled
from ..gemm.cpu import matmul, sgemm_sum
from ..gemm.nt import sgemm_nt
from ..workspace import images_per_chunk, scratch
from . import cpu_depthwise_rows, cpu_flat_simd, cpu_kvec, cpu_kvec16, cpu_rows, cpu_wgrad_kvec16, cpu_wgrad_simd
from . import cpu_depthwise_strips as strips
from .cpu_depthwise import (
    _dgrad_depthwise,
    _dgrad_depthwise_s1,
    _fwd_depthwise,
    _fwd_depthwise_s1,
    _wgrad_depthwise,
    _wgrad_depthwise_s1,
)
from .cpu_direct import _bias_grad, _dgrad_direct, _epilogue, _fwd_direct, _wgrad_direct
from .cpu_flat import flat_dgrad
from .cpu_gemm import _col2im, _im2col, _im2col_batch
from .cpu_kblock import kblock_applies_dgrad, kblock_dgrad, kblock_fwd, kblock_wgrad, wgrad_two_taps
from .cpu_phase import phase_applies, phase_fwd, phase_wgrad
from .cpu_winograd import flipped_transposed, tiles, winograd_conv
from .cpu_winograd_wgrad import winograd_wgrad

# ---------------------------------------------------------------- launchers
WINOGRAD = ("winograd", "winograd_f2", "winograd_f4")


def winograd_applies(geom) -> bool:
    """Winograd F(m×m, 3×3) computes exactly the 3×3, stride-1, dilation-1 layers."""
    return geom.R == geom.S == 3 and geom.stride == (1, 1) and geom.dilation == (1, 1)


def variants() -> tuple:
    """The backend's own algorithm names, accepted by the public conv functions next to
    conv.ALGORITHMS: 'phase' (forward and weight gradient of dense layers, cpu_phase)."""
    return ("phase",)


def candidates(direction: str, geom) -> list[str]:
    """Every algorithm this backend can run for ``direction`` ("fwd", "bwd_data" or
    "bwd_weight") on ``geom``, for convcore.tune to time ("direct" is the depthwise kernel
    on depthwise layers, the flat-plane kernels on dense stride-1 ones). Winograd is left
    out of depthwise layers (C/groups == 1), in every direction:
    α²·groups GEMMs of 1×1 cannot beat the depthwise kernels."""
    if direction not in ("fwd", "bwd_data", "bwd_weight"):
        raise ValueError(f"candidates: direction must be 'fwd', 'bwd_data' or 'bwd_weight', got {direction!r}")
    names = ["direct", "gemm"]
    if winograd_applies(geom) and not _depthwise(geom):
        names += ["winograd_f2", "winograd_f4"]
    if direction != "bwd_data" and phase_applies(geom):
        names.append("phase")
    return names


# A Winograd layer costs about α²·(T + _TILE_OVERHEAD) multiply-adds per (k, c) pair for T
# tiles: α²·T in the GEMMs, and the weight transform plus the GEMM's loss on thin products
# weigh about as much as _TILE_OVERHEAD more tiles. im2col + GEMM costs 9·N·P·Q. Refitted
# (128 → 32) once the transforms of small planes ran in blocks of images (they had cost
# more than the GEMMs at 7² and 14²), and (→ 16) once the float32 weight transform
# transposed its taps in registers: interleaved 2-thread timings, ms, gemm / F(2×2) /
# F(4×4), PyTorch, forward: 8×512×7² 7.7 / 6.2 / 5.4, 5.6 (input gradient 8.2 / 6.6 / 5.5,
# 5.9); 2×256×14² 1.9 / 1.6 / 1.5, 1.6 (1.9 / 1.7 / 1.5, 1.8). F(4×4) needs _TILE_OVERHEAD
# < 21 there; 8×256×14² (earlier) 8.7 / 6.2 / 5.7.
_TILE_OVERHEAD = 16
# ... and more on the hosts named here (LLVM CPU names): on AMD Zen 4 (2 threads, interleaved,
# ms, F(2×2) / F(4×4) / PyTorch) 2×256×14² forward 2.68-2.98 / 2.98-3.29 / 2.72-2.94, input
# gradient 2.87 / 3.17 / 2.82, a break-even overhead of 21 tiles; at 32 F(4×4) still takes
# 8×512×7² (9.5 / 11.5 / 8.9), as it should.
_TILE_OVERHEAD_BY_HOST = {"znver4": 32}


# The weight gradient's GEMMs reduce over the tiles (K × T by T × C): at few tiles they run
# further from the GEMM's peak than the forward's, so a tile weighs more. Refitted with the
# blocked transforms (96 → 80), ms, gemm / F(2×2) / F(4×4): 8×512×7² 11.5 / 8.0 / 8.9;
# 8×256×14² 10.3 / 6.5 / 5.7; 2×256×14² 3.5 / 2.1 / 2.7; 2×35×19² → 50 0.56 / 0.41 / 0.49
# (F(2×2) wants > 76 there, F(4×4) at 8×256×14² < 83). auto takes it where the model puts it
# below im2col + GEMM (was 10% below: 8×512×7²'s F(2×2) is 3328 against 3528).
_WGRAD_TILE_OVERHEAD = 80


# Forward and input gradient: a GEMM reducing over few channels runs below its peak (the
# 12×32 tile's loads and stores are spread over fewer FMAs), Winograd's (over C, or K for
# the input gradient) more than im2col's (over 9·C). Both costs are scaled by
# (depth + _SHALLOW) / depth. Fitted on 2 threads, ms, gemm / F(2×2) / F(4×4), forward:
# 8×64×14²: 0.60 / 0.68 / 0.76; 8×35×19²→50: 0.59 / 1.02 / 0.99; 8×48×28²: 1.28 / 1.16 /
# 0.97; 8×32×28²: 0.77 / 0.81 / 0.70 (input gradients alike).
_SHALLOW = 64


def _reduction(geom, direction):
    return geom.Kg if direction == "bwd_data" else geom.Cg


def _gemm_cost(geom, direction="fwd"):
    depth = 9 * _reduction(geom, direction)
    return 9 * geom.N * geom.P * geom.Q * (depth + _SHALLOW) / depth


def _winograd_costs(geom, direction="fwd"):
    (th2, tw2), (th4, tw4) = tiles(geom, 2), tiles(geom, 4)
    overhead = (_WGRAD_TILE_OVERHEAD if direction == "bwd_weight"
                else _TILE_OVERHEAD_BY_HOST.get(host.cpu_name(), _TILE_OVERHEAD))
    depth = _reduction(geom, direction)
    scale = 1.0 if direction == "bwd_weight" else (depth + _SHALLOW) / depth
    return {"winograd_f2": 16 * (geom.N * th2 * tw2 + overhead) * scale,
            "winograd_f4": 36 * (geom.N * th4 * tw4 + overhead) * scale}


def _winograd_tile(geom, direction="fwd"):
    """The cheaper tile by the cost model: F(4×4) does 36 products per 16 outputs, F(2×2)
    16 per 4, but F(4×4) wastes more of the edge tiles and of the GEMMs at small N·P·Q."""
    costs = _winograd_costs(geom, direction)
    return min(costs, key=costs.get)


def _choose(algorithm, geom, direction="fwd", dtype=None):
    if algorithm == "winograd":
        return _winograd_tile(geom, direction)
    if algorithm == "phase" and (direction == "bwd_data" or not phase_applies(geom)):
        raise ValueError(f"conv2d cpu: algorithm='phase' does not apply to the {direction} of input "
                         f"{geom.input_shape}, weight {geom.weight_shape}, groups={geom.groups} (see candidates())")
    if algorithm != "auto":
        return algorithm
    # Weight gradient: Winograd where the cost model puts it below im2col + GEMM, from
    # 16 channels each side (was 64, before the blocked transforms; 2 threads, ms, direct /
    # gemm / F(4×4): 8×35×19² → 50 1.05 / 1.18 / 0.58, 8×32×28² 1.12 / 2.62 / 0.83, 8×16×28²
    # 0.48 / 1.11 / 0.36).
    # On AVX2 hosts (cpu_kblock's two-tap weight gradient) and at batch 1-2, though, the
    # small layers' direct weight gradient is ahead (2 threads, ms, direct / F(2×2) / F(4×4):
    # 1×35×19² → 50 0.38 / 0.65 / 0.55, 2×35×19² 0.63 / 1.11 / 0.84).
    if (direction == "bwd_data" and _rows_dgrad(geom, dtype) or direction == "fwd" and _rows_fwd(geom, dtype)
            or direction == "bwd_weight" and _rows_wgrad(geom, dtype)):
        return "direct"
    if direction == "bwd_weight" and geom.N <= 2 and wgrad_two_taps() and _kblock_small(geom, direction):
        return "direct"
    if direction == "bwd_weight" and _wgrad_by_simd(geom, np.float32 if dtype is None else dtype):
        return "direct"
    if direction == "bwd_weight" and winograd_applies(geom) and geom.Cg >= 16 and geom.Kg >= 16:
        tile = _winograd_tile(geom, direction)
        if _winograd_costs(geom, direction)[tile] < 9 * geom.N * geom.P * geom.Q:
            return tile
    if _kblock_small(geom, direction):
        return "direct"
    if _shallow_direct(geom, direction, dtype):
        return "direct"
    # Winograd where the cost model puts it at least 20% below im2col + GEMM, for layers
    # with channels enough to feed BLAS (measured: 16→16 channels 28×28 is already 1.4×
    # faster than gemm). The margin: at 8×512×7×7→512, F(2×2) estimated 13% cheaper, gemm
    # was ahead with 2 threads (49 vs 42 GFLOP/s) though behind with one (31-40 vs 49-65).
    # No margin where Winograd's products run convcore's narrow tile and im2col's run BLAS
    # (AVX2 hosts, see _winograd_margin).
    if direction != "bwd_weight" and winograd_applies(geom) and geom.Cg >= 16 and geom.Kg >= 16:
        tile = _winograd_tile(geom, direction)
        if _winograd_costs(geom, direction)[tile] < _winograd_margin() * _gemm_cost(geom, direction):
            return tile
    # Small planes with 5x5+ kernels (LeNet): im2col costs more than the GEMM, the flat
    # kernels win forward and weight gradient. (Input gradient: flat and col2im + GEMM
    # measured equal on lenet_5x5_14_b128, so it keeps the GEMM.)
    if direction != "bwd_data" and _flat(geom) and geom.P * geom.Q <= 256 and geom.R * geom.S >= 16:
        return "direct"
    # Strided, few input channels, large kernel (the ResNet stem, 3 → 64 channels 7×7
    # stride 2): im2col's 147-row column matrix costs more than the GEMM. On the 224²
    # stem (2 threads, interleaved timings) the phase kernels beat im2col + GEMM by
    # 1.6-2.5× in the weight gradient (8.3 vs 22.6 ms at batch 8 with convcore's GEMM).
    # The forward went back to im2col + GEMM once it ran image by image with convcore's
    # GEMM (batch 8: 11.1 vs 12.1 ms; batch 1: 1.04 vs 1.36).
    if direction == "bwd_weight" and _stem_like(geom):
        return "phase"
    # Its forward: the kernel with output channels in vectors (cpu_kvec), float32 on
    # AVX-512 hosts (2 threads, ms, kvec / im2col + GEMM: batch 1 1.66 / 2.39, batch 8
    # 8.2 / 10.3) and, with its narrow tile, on AVX2 ones (AMD Zen, 2 threads, kvec /
    # im2col + BLAS / PyTorch: batch 1 5.5 / 11.1 / 7.1, batch 8 57-69 / 103-118 / 62-70).
    if direction == "fwd" and _stem_like(geom) and (dtype is None or np.dtype(dtype) == np.float32) and cpu_kvec.available():
        return "direct"
    # GEMM pays once the reduction (C/g·R·S) is deep enough to feed BLAS;
    # depthwise and tiny-channel layers stay direct.
    return "gemm" if geom.Cg * geom.R * geom.S >= 16 and geom.Kg >= 8 else "direct"


def _winograd_margin():
    """The fraction of im2col + GEMM's cost below which auto takes Winograd (forward, input
    gradient): 0.8, or 1.0 on hosts where Winograd's products run convcore's narrow tile and
    im2col's run OpenBLAS (no AVX-512). There, each of the layers the model put 3-19% below
    im2col + GEMM ran faster by Winograd (AMD Zen 1, 2 threads, separate processes, median
    ms, gemm / Winograd / PyTorch, forward: 1×128×14² F(2×2) 2.3-2.9 / 1.9-2.1 / 2.0; 1×256×10²
    F(2×2) 3.8-6.2 / 4.3-4.8 / 3.1-4.2; 2×64×14² F(4×4) 1.7-1.8 / 0.82-0.84 / 0.75-0.83;
    2×512×7² F(2×2) 9.1-10.7 / 7.7-8.1 / 8.6-8.8; 2×35×19² → 50 F(4×4) 1.6-2.0 / 0.67-0.84 /
    0.76-1.03; input gradient 2×64×14² 1.4-1.5 / 0.54-1.06 / 0.69-1.30)."""
    return 1.0 if gemm_enabled(winograd=True) and not gemm_enabled() else 0.8


def _kblock_small(geom, direction):
    """Small dense stride-1 layers (LeNet conv2; odd_3x3_c35_k50_19's weight gradient): the
    register-blocked flat kernels of cpu_kblock beat Winograd and im2col + GEMM, 2 threads
    (fwd / dgrad / wgrad ms, kblock vs the previous auto, with BLAS's GEMM:
    odd_3x3_c35_k50_19 0.60 / 0.60 / 0.78 vs 0.89 / 0.97 / 0.98; lenet_5x5_14_b128 0.56 /
    1.16 / 0.87 vs 0.88 / 1.27 / 1.08). With convcore's GEMM, im2col + GEMM took back the
    forward and input gradient from 32 channels on (odd: 0.59 / 0.49 vs 0.87 / 0.98).
    Deep reductions (ResNet, VGG) stay on the GEMM, and so do 1×1 layers, whose GEMM needs
    no im2col, in every direction (2-core Zen 5, ms, kblock / GEMM / PyTorch, weight
    gradient: 8×128×16² → 48 0.45 / 0.11 / 0.12, 2×256×14² → 64 0.35 / 0.063 / 0.081;
    forward 8×16×14² → 64 0.060 / 0.031 / 0.053; input gradient 8×64×14² → 16 0.060 /
    0.031 / 0.057)."""
    if not _flat(geom) or geom.P * geom.Q > 400 or geom.R == geom.S == 1:
        return False
    if direction == "bwd_data":
        # At N·⌈C/4⌉ < 8 the scatter has too few blocks for two threads (lenet_5x5_14_b1:
        # 2 blocks, 0.17 ms vs 0.135 for col2im + GEMM).
        return (geom.Kg * geom.R * geom.S <= 512 and geom.Kg < 32 and geom.Cg <= 64
                and geom.N * ((geom.C + 3) // 4) >= 8 and kblock_applies_dgrad(geom))
    return geom.Cg * geom.R * geom.S <= 512 and geom.Kg <= 64 and (direction == "bwd_weight" or geom.Cg < 32)


# Below this many multiply-adds per Winograd GEMM (Kg·Cg·tiles at F(4×4)), its 16 or 36
# products are too small to pay for the transforms against the register-tiled direct kernel.
_SMALL_WINOGRAD = 450_000


def _shallow_direct(geom, direction, dtype):
    """Forward and input gradient of dense stride-1 layers reducing over at most 40 channels
    (C, or K for the input gradient), or small enough that Winograd's GEMMs are tiny
    (_SMALL_WINOGRAD), float32 on AVX-512 hosts: the register-tiled flat kernel
    (cpu_flat_simd) beats Winograd and im2col + GEMM, whose GEMMs run shallow there
    (2 threads, ms, direct / gemm / F(4×4), forward: 8×35×19² → 50 0.52 / 0.67 / 0.73,
    2×35×19² 0.15 / 0.19 / 0.28, 8×32×28² 0.57 / 0.90 / 0.63, 8×16×28² 0.32 / 0.47 / 0.38;
    input gradient: 8×35×19² → 50 (350 k multiply-adds per GEMM) 0.61 / 0.63 / 0.78, at
    batch 2 0.19 / 0.19 / 0.29, 8×32×28² 0.72 / 0.98 / 0.77; but 8×64×14² (524 k) 0.66 /
    0.70 / 0.47 and 8×48×28² (903 k) 1.31 / 1.78 / 1.08). ``dtype`` None: the data type is
    not known (float32 assumed). The conditions are those under which conv2d_fwd and
    conv2d_bwd_data then take cpu_flat_simd (not the slower cpu_kblock). Not 1×1 layers
    without padding, whose GEMM reads the planes as they lie: the flat kernel's few taps
    per strip leave it cropping more than multiplying (2-core Zen 5, ms, input gradient
    of 8×100×23² → 27: flat 0.17, GEMM 0.094, PyTorch 0.195)."""
    if direction == "bwd_weight" or not _flat(geom) or _pointwise(geom):
        return False
    th4, tw4 = tiles(geom, 4)
    small = geom.Kg * geom.Cg * geom.N * th4 * tw4 < _SMALL_WINOGRAD
    if _reduction(geom, direction) > 40 and not small:
        return False
    if dtype is not None and np.dtype(dtype) != np.float32 or not gemm_enabled():
        return False
    blocks = geom.N * -(-geom.K // cpu_flat_simd.KB)  # cpu_flat_simd.applies
    if direction == "bwd_data":
        return kblock_applies_dgrad(geom) and blocks >= 16 and geom.N * -(-geom.C // cpu_flat_simd.KB) >= 16
    return blocks >= 16


def _dgrad_by_flat_simd(dy, out, geom):
    # kblock_applies_dgrad's layers (padding <= dil·(R−1)) in float32 on AVX-512 hosts:
    # 128×16×10² → 6 5×5 (LeNet conv2's input gradient) 0.62-0.68 ms by cpu_kblock's scatter.
    # Not with the narrow AVX2 tile: there the scatter is faster (AMD Zen, 1 thread, ms,
    # flat simd / kblock: 8.9-9.6 / 7.2-7.6), 18² padded planes for 14² outputs.
    return (gemm_enabled() and cpu_flat_simd.applies(dy, out, geom)
            and geom.N * -(-geom.C // cpu_flat_simd.KB) >= 16)


def _rows_dgrad(geom, dtype):
    # The input gradient of dense stride-1 layers with 4-6 input channels and a shallow
    # reduction (K·R·S <= 512), float32 on AVX-512 hosts: cpu_rows's tile of 6 planes × 2
    # rows. 2 threads, ms, rows / the previous auto / im2col + GEMM / PyTorch: 128×6×14²
    # → 16 5×5 (LeNet conv2) 0.57 / 0.98 (cpu_flat_simd) / 1.01 / 1.04; its batch 1
    # 0.030 / 0.053 (GEMM) / 0.053 / 0.114; 8×6×32² → 32 3×3 0.17 / - / 0.31 / 0.49. Deeper,
    # the rows of 64 dY planes fall out of L1 and the GEMM is ahead: 8×4×56² → 64 3×3 1.58
    # / - / 1.40 / 3.85.
    return (_flat(geom) and geom.K * geom.R * geom.S <= 512
            and cpu_rows.applies(geom, np.float32 if dtype is None else dtype))


def _rows_fwd(geom, dtype):
    # The forward of dense stride-1 layers with 4-6 output channels and a shallow reduction
    # (C·R·S <= 512), float32 on AVX-512 hosts, by the same tile (LeNet conv1's 1 → 6
    # channels too, which the depthwise kernels took: one input channel). 2 threads, ms,
    # rows / the previous direct / PyTorch: 128×1×32² → 6 5×5 0.67 / 0.79 / 1.09, batch 8
    # 0.049 / 0.089 / 0.147, batch 1 0.021 / 0.057 / 0.110; 8×3×32² 'same' 0.071 / 0.162 /
    # 0.216; 8×6×14² → 6 0.028 / 0.110 / 0.120.
    return (geom.groups == 1 and geom.C * geom.R * geom.S <= 512
            and cpu_rows.applies_fwd(geom, np.float32 if dtype is None else dtype))


def _rows_wgrad(geom, dtype):
    # The weight gradient of the layers _rows_fwd takes (4-6 output channels), up to C·R·S =
    # 2304 (measured that far): cpu_rows's 3 output channels × 5 taps of a filter row, 16
    # columns, masks out of the image loops. 2 threads, ms, rows / cpu_wgrad_simd / im2col +
    # GEMM / PyTorch: 128×1×32² → 6 5×5 (LeNet conv1) 0.26 / 0.44 / 2.2 / 0.92, batch 8 0.026 /
    # 0.056 / 0.18 / 0.16, batch 1 0.015 / 0.036 / 0.081 / 0.112; 8×16×28² → 6 'same' 0.24 /
    # 0.38 / 1.2 / 0.61; 8×256×14² → 6 3×3 0.78 / 0.96 / 2.5 / 1.15 (8×64×14² → 4 3×3: 0.19 /
    # 0.17 / 0.41 / 0.31, a third of the tile idle).
    return (geom.groups == 1 and geom.C * geom.R * geom.S <= 2304
            and cpu_rows.applies_wgrad(geom, np.float32 if dtype is None else dtype))


def _wgrad_by_simd(geom, dtype):
    # Dense stride-1 layers with 16+ taps from 8 images (LeNet's, conv1's single input
    # channel too), float32 on AVX-512 hosts: cpu_wgrad_simd's register tile, which auto
    # takes for them (_choose). 2 threads, ms, simd / cpu_kblock (conv1: cpu_depthwise) /
    # PyTorch: 128×6×14² → 16 5×5 0.34 / 0.56 / 0.49, 128×1×32² → 6 0.16 / 0.27 / 0.32,
    # 8×6×14² 0.035 / 0.041 / 0.071; at 2-4 images cpu_kblock is ahead (0.017 / 0.013), and
    # so at 3×3 (2×35×19² → 50 0.19 / 0.17: each task packs its dY planes again for each
    # input channel, 9 taps of work per pack). Against im2col + GEMM, which auto had taken
    # for planes over 400 outputs (simd / GEMM / PyTorch): 8×16×28² → 16 5×5 'same' 0.38 /
    # 2.1 / 0.32, 16×8×32² → 8 7×7 0.34 / 4.0 / 0.48, 8×3×128² → 16 1.07 / 9.5 / 0.95,
    # 8×128×14² → 128 5.6 / 5.7 / 2.8.
    return geom.R * geom.S >= 16 and geom.N >= 8 and cpu_wgrad_simd.applies(geom, dtype)


def _stem_like(geom):
    return phase_applies(geom) and geom.stride != (1, 1) and geom.Cg <= 4 and geom.R * geom.S >= 25 and geom.Kg >= 8


def _flat(geom):
    """Dense stride-1 layers: ``direct`` runs the flat-plane kernels of cpu_flat."""
    return geom.stride == (1, 1) and geom.groups == 1 and geom.Cg > 1


def _depthwise(geom):
    """Each output channel reads one input channel (groups == C): the depthwise kernels."""
    return geom.Cg == 1


def _depthwise_launch(stride1_kernel, kernel, geom, out, *arrays):
    sh, sw, pt, pl, dh, dw, _ = _geom_args(geom)
    zero = out.dtype.type(0)
    if sh == 1 and sw == 1:
        stride1_kernel(*arrays, pt, pl, dh, dw, zero)
    else:
        kernel(*arrays, sh, sw, pt, pl, dh, dw, zero)


def _geom_args(geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, pt, pl, dh, dw, geom.groups


# The weight gradient's product by gemm.nt (no copies, read along P·Q) for 1×1 stride-1
# layers with P·Q >= this many pixels per image; below, the reduced index is too short per
# image and the one long GEMM over a reordered copy wins (2 threads, ms, copy + GEMM vs nt:
# 8×256×56²→64 8.8 / 6.2; 8×64×56²→256 5.0 / 3.7; 8×256×28²→256 4.2 / 3.3; 8×100×23²→27
# 0.45 / 0.20; 8×1024×14²→256 2.8 / 3.9). Strided or padded 1×1 layers too, through an
# image-by-image im2col (a strided copy of x), since gemm.nt's threads share the work
# evenly (1×1 stride 2 8×256×56²→512: 8.7 / 7.5; batch 2 1.9 / 1.6; before, 7.4 / 8.0).
# 3×3 layers keep the Goto GEMM (8×35×19²→50 0.68 / 0.88).
_NT_MIN_PIXELS = 256


# On the Intel Xeon host, though, the Goto GEMM summing per-image products in each task
# (sgemm_sum, X[n]ᵀ a transposed view, still no copies) beat both up to 1024 pixels (2
# threads, GFLOP/s, nt / sum / PyTorch: 8×256×28²→256 179 / 237 / 292; 8×1024×14²→256 165 /
# 262 / 255 (the copy + GEMM: 212); batch 2 158 / 275 / 179), not at 56² (8×64×56²→256 182 /
# 192 / 192; 8×256×56²→64 201 / 181 / 178); so 1×1 layers with 128 to 1024 pixels take it.
_SUM_MIN_PIXELS, _SUM_MAX_PIXELS = 128, 1024
# ... unless dW is small: from _NT_MIN_PIXELS on, gemm.nt's dot products beat the summed
# Goto GEMM below this many weights Kg·Cg, whose 12×32 tiles then run part empty (2-core
# Zen 5, ms, sum / nt / PyTorch: 8×100×23² → 27 0.21 / 0.11-0.12 / 0.19; 8×64×28² → 64 0.51
# / 0.18-0.20 / 0.19-0.65; 8×32×28² → 256 0.39 / 0.33 / 0.34; 8×128×28² → 128 0.75 / 0.63 /
# 1.08; but 8×256×28² → 128 1.21 / 1.28 / 1.07 and → 256 2.38 / 2.53 / 3.36).
_SUM_MIN_WEIGHTS = 32768


def _wgrad_nt(x, geom):
    """1×1 float32 weight gradients by gemm.nt or sgemm_sum (conv2d_bwd_weight)."""
    pq = geom.P * geom.Q
    return (x.dtype == np.float32 and gemm_enabled() and geom.R == geom.S == 1 and not _depthwise(geom)
            and (pq >= _NT_MIN_PIXELS or _SUM_MIN_PIXELS <= pq <= _SUM_MAX_PIXELS))


def _fold_batch(geom):
    """Forward by one GEMM over the whole batch's columns: planes under 128 outputs, where
    the per-image products are too narrow for the 32-column tile (2 threads, ms, folded /
    per image: 8×512×7² 3×3 6.1 / 7.1; 128×6×14² 5×5 0.66 / 0.75). Not 1×1 layers: their
    column matrix is x itself, which folding would copy (8×1024×14²: 2.8 / 2.6)."""
    return geom.N > 1 and geom.P * geom.Q < 128 and not _pointwise(geom)


def _pointwise(geom):
    """1×1, stride 1, no padding: the input planes already are the im2col matrix."""
    return geom.R == geom.S == 1 and geom.stride == (1, 1) and not any(geom.padding)


def conv2d_fwd(x, w, b, out, geom, algorithm, activation=None):
    chosen = _choose(algorithm, geom, dtype=x.dtype)
    if chosen in WINOGRAD:
        pt, _, pl, _ = geom.padding
        winograd_conv(x, w, b, out, pt, pl, geom.groups, 4 if chosen == "winograd_f4" else 2, activation == "relu")
        return
    if chosen == "phase":
        phase_fwd(x, w, out, geom)
    elif chosen == "gemm" and _fold_batch(geom):
        # Small planes: one GEMM over all images' columns, (Kg × Cg·R·S) · (Cg·R·S × N·P·Q),
        # instead of N products P·Q columns wide (49 = 32 + 17 runs the tile at 77%).
        crs, pq = geom.Cg * geom.R * geom.S, geom.P * geom.Q
        col = scratch("conv2d.im2col_batch", (geom.groups, crs, geom.N, pq), x.dtype)
        _im2col_batch(x, col, *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
        y = scratch("conv2d.fold_out", (geom.groups, geom.Kg, geom.N, pq), x.dtype)
        matmul(w.reshape(geom.groups, geom.Kg, crs), col.reshape(geom.groups, crs, geom.N * pq),
               out=y.reshape(geom.groups, geom.Kg, geom.N * pq))
        np.copyto(out.reshape(geom.N, geom.groups, geom.Kg, pq), y.transpose(2, 0, 1, 3))
    elif chosen == "gemm":
        w_mat = w.reshape(geom.groups, geom.Kg, geom.Cg * geom.R * geom.S)
        out4 = out.reshape(geom.N, geom.groups, geom.Kg, geom.P * geom.Q)
        if _pointwise(geom):  # the input planes already are the column matrix
            matmul(w_mat[None], x.reshape(geom.N, geom.groups, geom.Cg, geom.P * geom.Q), out=out4)
        else:
            # im2col and its product G images at a time, so the column matrix is still in
            # cache when the GEMM reads it (the 224² stem's is 59 MB at batch 8)
            crs, pq = geom.Cg * geom.R * geom.S, geom.P * geom.Q
            G = images_per_chunk(geom.N, geom.groups * crs * pq * x.dtype.itemsize)
            for n0 in range(0, geom.N, G):
                xs = x[n0:n0 + G]
                col = scratch("conv2d.im2col", (xs.shape[0], geom.groups, crs, pq), x.dtype)
                _im2col(xs, col, *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
                matmul(w_mat[None], col, out=out4[n0:n0 + G])
    elif _rows_fwd(geom, x.dtype):
        cpu_rows.rows_fwd(x, w, out, geom)  # 4-6 output channels: 6 planes × 4 rows × 16 columns
    elif cpu_depthwise_rows.applies(geom, x.dtype):
        cpu_depthwise_rows.rows_fwd(x, w, b, out, activation == "relu", geom.stride[0])  # bias and ReLU fused
        return
    elif _depthwise(geom) and strips.applies(geom):
        strips.launch_fwd(x, w, b, out, geom, activation == "relu")  # bias and ReLU fused
        return
    elif _depthwise(geom):
        _depthwise_launch(_fwd_depthwise_s1, _fwd_depthwise, geom, out, x, w, out)
    elif _flat(geom) and cpu_kvec16.applies(x, out, geom):
        cpu_kvec16.kvec16_fwd(x, w, out, geom)  # 12-16 output channels: one vector × 25 pixels
    elif _flat(geom) and cpu_flat_simd.applies(x, out, geom):
        cpu_flat_simd.flat_simd_fwd(x, w, out, geom.padding, geom.dilation)  # 16-lane register tiles
    elif _flat(geom):
        kblock_fwd(x, w, out, geom)
    elif cpu_kvec.applies(x, out, geom):
        cpu_kvec.kvec_fwd(x, w, out, geom)  # output channels in 16-lane vectors
    else:
        _fwd_direct(x, w, out, *_geom_args(geom))
    if b is not None or activation is not None:
        _epilogue(out, b if b is not None else out.reshape(-1)[:1], b is not None, activation == "relu")


def conv2d_bwd_data(w, dy, out, geom, algorithm):
    chosen = _choose(algorithm, geom, "bwd_data", dy.dtype)
    if chosen in WINOGRAD:
        # Stride 1, dilation 1: dX = conv(dY, W rotated 180° with K ↔ C per group), padded
        # by R−1−p on each side (negative: cropped), which is a forward Winograd conv.
        pt, _, pl, _ = geom.padding
        winograd_conv(dy, w, None, out, 2 - pt, 2 - pl, geom.groups, 4 if chosen == "winograd_f4" else 2, flip=True)
        return
    if chosen == "gemm":
        w_mat = w.reshape(geom.groups, geom.Kg, geom.Cg * geom.R * geom.S)
        dy_mat = dy.reshape(geom.N, geom.groups, geom.Kg, geom.P * geom.Q)
        if _pointwise(geom):  # dX is the product itself: no col2im
            matmul(w_mat.transpose(0, 2, 1)[None], dy_mat, out=out.reshape(geom.N, geom.groups, geom.Cg, geom.P * geom.Q))
            return
        crs, pq = geom.Cg * geom.R * geom.S, geom.P * geom.Q
        if _fold_batch(geom) and geom.Kg >= 64:
            # small planes: one product over all images' columns, (Cg·R·S × Kg) · (Kg × N·P·Q)
            # (8×512×7²: 6.3 vs 7.2 ms; not for shallow Kg: 128×6×14²→16 5×5 0.87 vs 0.65)
            dy_b = scratch("conv2d.dy_batch", (geom.groups, geom.Kg, geom.N, pq), dy.dtype)
            np.copyto(dy_b, dy_mat.transpose(1, 2, 0, 3))
            col = matmul(w_mat.transpose(0, 2, 1), dy_b.reshape(geom.groups, geom.Kg, geom.N * pq),
                         out=scratch("conv2d.col2im_batch", (geom.groups, crs, geom.N * pq), dy.dtype))
            _col2im(col.reshape(geom.groups, crs, geom.N, pq).transpose(2, 0, 1, 3), out, *_geom_args(geom),
                    geom.R, geom.S, geom.P, geom.Q)
            return
        # the product and col2im a cache-sized chunk of images at a time, as the forward's im2col
        G = images_per_chunk(geom.N, geom.groups * crs * pq * dy.dtype.itemsize)
        for n0 in range(0, geom.N, G):
            col = matmul(w_mat.transpose(0, 2, 1)[None], dy_mat[n0:n0 + G],
                         out=scratch("conv2d.col2im", (min(G, geom.N - n0), geom.groups, crs, pq), dy.dtype))
            _col2im(col, out[n0:n0 + G], *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
    elif cpu_depthwise_rows.applies(geom, dy.dtype):
        cpu_depthwise_rows.rows_dgrad(w, dy, out, geom.stride[0])
    elif _depthwise(geom) and strips.applies(geom):
        strips.launch_dgrad(w, dy, out, geom)
    elif _depthwise(geom):
        _depthwise_launch(_dgrad_depthwise_s1, _dgrad_depthwise, geom, out, w, dy, out)
    elif _rows_dgrad(geom, dy.dtype):
        cpu_rows.rows_dgrad(w, dy, out, geom)  # 4-6 input channels: 6 planes × 4 rows × 16 columns
    elif _flat(geom) and kblock_applies_dgrad(geom) and _dgrad_by_flat_simd(dy, out, geom):
        # dX = the forward conv of dY padded by dil·(R−1) − pad with W rotated 180° and
        # K ↔ C, by the register-tiled flat forward
        (pt, pb, pl, pr), (dh, dw) = geom.padding, geom.dilation
        fh, fw = dh * (geom.R - 1), dw * (geom.S - 1)
        flipped = flipped_transposed(w, 1)
        padding = (fh - pt, fh - pb, fw - pl, fw - pr)
        cpu_flat_simd.flat_simd_fwd(dy, flipped, out, padding, geom.dilation)
    elif _flat(geom) and kblock_applies_dgrad(geom):
        kblock_dgrad(w, dy, out, geom)
    elif _flat(geom):
        flat_dgrad(w, dy, out, geom)
    else:
        _dgrad_direct(w, dy, out, *_geom_args(geom))


def conv2d_bwd_weight(x, dy, out, geom, algorithm):
    chosen = _choose(algorithm, geom, "bwd_weight", x.dtype)
    if chosen in WINOGRAD:
        pt, _, pl, _ = geom.padding
        winograd_wgrad(x, dy, out, pt, pl, geom.groups, 4 if chosen == "winograd_f4" else 2)
        return
    if chosen == "gemm":
        crs, pq = geom.Cg * geom.R * geom.S, geom.P * geom.Q
        if _wgrad_nt(x, geom):
            # 1×1: dW[g] = Σ_n dY[n, g] · X[n, g]ᵀ by the dot-product kernel (gemm.nt),
            # both read along P·Q where they lie: no reordered copies of dY or of x (a
            # strided or padded 1×1 layer's x through im2col, image by image).
            dy4 = dy.reshape(geom.N, geom.groups, geom.Kg, pq).transpose(1, 0, 2, 3)
            if _pointwise(geom):
                col = x.reshape(geom.N, geom.groups, crs, pq)
            else:
                col = scratch("conv2d.im2col", (geom.N, geom.groups, crs, pq), x.dtype)
                _im2col(x, col, *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
            if _SUM_MIN_PIXELS <= pq <= _SUM_MAX_PIXELS and (pq < _NT_MIN_PIXELS or geom.Kg * crs >= _SUM_MIN_WEIGHTS):
                # the Goto GEMM summing the images' products in each task, X[n]ᵀ a view
                sgemm_sum(dy4, col.transpose(1, 0, 3, 2), out.reshape(geom.groups, geom.Kg, crs))
            else:
                sgemm_nt(dy4, col.transpose(1, 0, 2, 3), out.reshape(geom.groups, geom.Kg, crs))
            return
        if geom.R == geom.S == 1 and (x.dtype != np.float32 or not gemm_enabled()):
            _wgrad_1x1_blas(x, dy, out, geom)
            return
        # One GEMM per group over the whole batch: (Kg, N·P·Q) × (N·P·Q, Cg·R·S).
        # im2col writes straight into the (g, Cg·R·S, N, P·Q) layout through a
        # transposed view, so neither operand of the product needs a strided copy
        # beyond dy's (small) reorder, and there is no N × weight-size temporary.
        if _pointwise(geom):  # the column matrix is x itself, reordered to (g, Cg, N, P·Q)
            col = scratch("conv2d.im2col_batch", (geom.groups, crs, geom.N, pq), x.dtype)
            np.copyto(col, x.reshape(geom.N, geom.groups, crs, pq).transpose(1, 2, 0, 3))
        else:
            col = scratch("conv2d.im2col_batch", (geom.groups, crs, geom.N, pq), x.dtype)
            _im2col_batch(x, col, *_geom_args(geom), geom.R, geom.S, geom.P, geom.Q)
        dy_mat = scratch("conv2d.dy_batch", (geom.groups, geom.Kg, geom.N, pq), dy.dtype)
        np.copyto(dy_mat, dy.reshape(geom.N, geom.groups, geom.Kg, pq).transpose(1, 2, 0, 3))
        matmul(dy_mat.reshape(geom.groups, geom.Kg, geom.N * pq),
                  col.reshape(geom.groups, crs, geom.N * pq).transpose(0, 2, 1),
                  out=out.reshape(geom.groups, geom.Kg, crs))
    elif chosen == "phase":
        phase_wgrad(x, dy, out, geom)
    elif _rows_wgrad(geom, x.dtype):
        cpu_rows.rows_wgrad(x, dy, out, geom)  # 4-6 output channels: 3 channels × 5 taps × 16 columns
    elif cpu_wgrad_kvec16.applies(geom, x.dtype):
        cpu_wgrad_kvec16.wgrad_kvec16(x, dy, out, geom)  # 5×5, 12-16 output channels in one vector
    elif _wgrad_by_simd(geom, x.dtype):
        cpu_wgrad_simd.wgrad_simd(x, dy, out, geom.padding, geom.dilation)
    elif cpu_depthwise_rows.applies(geom, x.dtype):
        cpu_depthwise_rows.rows_wgrad(x, dy, out, geom.stride[0])
    elif _depthwise(geom) and strips.applies(geom):
        strips.launch_wgrad(x, dy, out, geom)
    elif _depthwise(geom):
        _depthwise_launch(_wgrad_depthwise_s1, _wgrad_depthwise, geom, out, x, dy, out)
    elif _flat(geom):
        kblock_wgrad(x, dy, out, geom)
    else:
        _wgrad_direct(x, dy, out, *_geom_args(geom), out.dtype.type(0))


def _wgrad_1x1_blas(x, dy, out, geom):
    """1×1 weight gradient by BLAS: dW[g] = Σ_n dY[n, g] · X[n, g]ᵀ, one product per (image,
    group) straight from dy and x (X[n]ᵀ a transposed view, which BLAS reads as is; a strided
    or padded layer's x through im2col, a chunk of images at a time), the images' products
    summed in order. Before, dy and x were both reordered to (g, C, N·P·Q) for one product
    over the batch: those copies cost more than the per-image products lose (AMD Zen 1, 2
    threads, separate processes, min ms, reordered / per image / PyTorch: 8×64×56² → 256
    20.4 / 14.0 / 15.7; 8×256×56² → 64 25.4 / 18.7 / 16.4; 8×1024×14² → 256 15.9 / 13.1 /
    13.1; 8×256×28² → 256 16.1 / 12.7 / 13.5; 8×100×23² → 27 0.95 / 0.56 / 0.79)."""
    N, pq, g, Kg, Cg = geom.N, geom.P * geom.Q, geom.groups, geom.Kg, geom.Cg
    dy4 = dy.reshape(N, g, Kg, pq)
    pointwise = _pointwise(geom)
    per_image = g * Kg * Cg + (0 if pointwise else g * Cg * pq)
    G = images_per_chunk(N, per_image * out.itemsize)
    part = scratch("conv2d.wgrad_1x1", (G, g, Kg, Cg), out.dtype)
    dw = out.reshape(g, Kg, Cg)
    for n0 in range(0, N, G):
        n = min(G, N - n0)
        if pointwise:
            col = x[n0:n0 + n].reshape(n, g, Cg, pq)
        else:
            col = scratch("conv2d.im2col", (n, g, Cg, pq), x.dtype)
            _im2col(x[n0:n0 + n], col, *_geom_args(geom), 1, 1, geom.P, geom.Q)
        np.matmul(dy4[n0:n0 + n], col.transpose(0, 1, 3, 2), out=part[:n])
        if n0 == 0:
            np.sum(part[:n], axis=0, out=dw)
        else:
            dw += part[:n].sum(axis=0)


def conv2d_bwd_bias(dy, out):
    _bias_grad(dy, out, out.dtype.type(0))
