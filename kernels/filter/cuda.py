"""filter2d: Numba CUDA kernel.

out[b, i, j] = Σ_r,s k[r, s] · x[b, src(i + r − ar), src(j + s − as)] (k flipped when convolving);
boundary modes and their codes as in cpu.py. One thread per output element (b, i, j),
grid-stride loop; the kernel is small and read through the cache.
"""
from __future__ import annotations

from numba import cuda

from .._cuda_util import THREADS, grid_for, kernel
from .modes import source_index

_source = cuda.jit(device=True, inline=True)(source_index)


def make_filter2d(dt):
    def filter2d_kernel(x, k, out, mode, cval, flip):
        B, H, W = x.shape
        R, S = k.shape
        ar = (R - 1) // 2 if flip else R // 2
        as_ = (S - 1) // 2 if flip else S // 2
        total = B * H * W
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            j = idx % W
            t = idx // W
            i = t % H
            b = t // H
            acc = dt(0)
            for r in range(R):
                kr = R - 1 - r if flip else r
                h = _source(i + r - ar, H, mode)
                for s in range(S):
                    ks = S - 1 - s if flip else s
                    w = _source(j + s - as_, W, mode)
                    if h < 0 or w < 0:
                        acc += k[kr, ks] * cval
                    else:
                        acc += k[kr, ks] * x[b, h, w]
            out[b, i, j] = acc

    return filter2d_kernel


def filter2d(x, k, out, mode, cval, convolve):
    launch = kernel(make_filter2d, out.dtype)
    launch[grid_for(out.size), THREADS, out.stream](x, k, out, mode, out.dtype.type(cval), convolve)


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature)}."""
    from numba import boolean, int64

    a3 = dt[:, :, ::1]
    return {"filter2d": (make_filter2d, (a3, dt[:, ::1], a3, int64, dt, boolean))}
