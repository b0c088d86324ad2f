"""conv_transpose2d on CUDA: the conv2d kernels with the roles of the shapes swapped
(see convcore/conv_transpose.py), plus a bias-add kernel (one thread per output element)."""
from __future__ import annotations

from numba import cuda

from .._cuda_util import THREADS, grid_for, kernel
from ..conv2d import cuda as conv2d


def make_add_bias(dt):
    def add_bias_kernel(out, b):
        # One thread per element of out (N, C, H, W): out[n, c, h, w] += b[c].
        N, C, H, W = out.shape
        total = N * C * H * W
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            w = idx % W
            t = idx // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
            out[n, c, h, w] += b[c]

    return add_bias_kernel


def conv_transpose2d_fwd(x, w, b, out, geom):
    conv2d.conv2d_bwd_data(w, x, out, geom, "auto")
    if b is not None:
        kernel(make_add_bias, out.dtype)[grid_for(out.size), THREADS, out.stream](out, b)


def conv_transpose2d_bwd_data(w, dy, out, geom):
    conv2d.conv2d_fwd(dy, w, None, out, geom, "auto")


def conv_transpose2d_bwd_weight(x, dy, out, geom):
    conv2d.conv2d_bwd_weight(dy, x, out, geom, "auto")


def signatures(dt):
    """Explicit argument types for the offline PTX report: {name: (factory, signature)}."""
    return {"add_bias": (make_add_bias, (dt[:, :, :, ::1], dt[::1]))}
