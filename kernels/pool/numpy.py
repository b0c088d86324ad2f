"""The ``numpy`` backend for pooling: the references behind the launcher signature."""
from __future__ import annotations

from convcore import reference


def max_pool2d_fwd(x, out, indices, geom):
    values, argmax = reference.max_pool2d(x, (geom.P, geom.Q), (geom.R, geom.S), geom.stride, geom.padding,
                                          geom.dilation)
    out[...] = values
    if indices is not None:
        indices[...] = argmax


def max_pool2d_bwd(dy, indices, dx, geom):
    dx[...] = reference.max_pool2d_backward(dy, geom.input_shape, indices)


def avg_pool2d_fwd(x, out, geom, count_include_pad):
    out[...] = reference.avg_pool2d(x, (geom.P, geom.Q), (geom.R, geom.S), geom.stride, geom.padding,
                                    count_include_pad)


def avg_pool2d_bwd(dy, dx, geom, count_include_pad):
    dx[...] = reference.avg_pool2d_backward(dy, geom.input_shape, (geom.R, geom.S), geom.stride, geom.padding,
                                            count_include_pad)
