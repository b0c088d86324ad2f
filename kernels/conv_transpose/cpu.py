"""conv_transpose2d on the CPU: the conv2d kernels with the roles of the shapes swapped
(see convcore/conv_transpose.py), plus the bias add."""
from __future__ import annotations

from ..conv2d import cpu as conv2d
from ..conv2d.cpu import _epilogue


def conv_transpose2d_fwd(x, w, b, out, geom):
    conv2d.conv2d_bwd_data(w, x, out, geom, "auto")
    if b is not None:
        _epilogue(out, b, True, False)


def conv_transpose2d_bwd_data(w, dy, out, geom):
    conv2d.conv2d_fwd(dy, w, None, out, geom, "auto")


def conv_transpose2d_bwd_weight(x, dy, out, geom):
    conv2d.conv2d_bwd_weight(dy, x, out, geom, "auto")
