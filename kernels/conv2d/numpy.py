"""The ``numpy`` backend for conv2d: the references behind the launcher signature."""
from __future__ import annotations

import numpy as np

from convcore import reference


def conv2d_fwd(x, w, b, out, geom, algorithm, activation=None):
    out[...] = reference.conv2d(x, w, b, geom.stride, geom.padding, geom.dilation, geom.groups, (geom.P, geom.Q))
    if activation == "relu":
        np.maximum(out, 0, out=out)  # NaN propagates, as torch.relu


def conv2d_bwd_data(w, dy, out, geom, algorithm):
    out[...] = reference.conv2d_input(geom.input_shape, w, dy, geom.stride, geom.padding, geom.dilation, geom.groups)


def conv2d_bwd_weight(x, dy, out, geom, algorithm):
    out[...] = reference.conv2d_weight(x, geom.weight_shape, dy, geom.stride, geom.padding, geom.dilation, geom.groups)


def conv2d_bwd_bias(dy, out):
    out[...] = reference.conv2d_bias(dy)


def candidates(direction, geom):
    return ["auto"]  # the reference has one algorithm
