"""The ``numpy`` backend for conv_transpose2d: its own reference forward, and the conv2d
references for the gradients (padding is symmetric there: the output size is fixed by
the arrays, so the extra bottom/right padding is never read)."""
from __future__ import annotations

from convcore import reference


def conv_transpose2d_fwd(x, w, b, out, geom):
    (ph, pw) = geom.padding[0], geom.padding[2]
    output_padding = (ph - geom.padding[1], pw - geom.padding[3])
    out[...] = reference.conv_transpose2d(x, w, b, geom.stride, (ph, pw), output_padding, geom.groups, geom.dilation)


def conv_transpose2d_bwd_data(w, dy, out, geom):
    ph, pw = geom.padding[0], geom.padding[2]
    out[...] = reference.conv2d(dy, w, None, geom.stride, (ph, ph, pw, pw), geom.dilation, geom.groups,
                                (geom.P, geom.Q))


def conv_transpose2d_bwd_weight(x, dy, out, geom):
    ph, pw = geom.padding[0], geom.padding[2]
    out[...] = reference.conv2d_weight(dy, geom.weight_shape, x, geom.stride, (ph, ph, pw, pw), geom.dilation,
                                       geom.groups)
