"""The ``numpy`` backend for the softmax family: the references behind the launcher signature."""
from __future__ import annotations

from convcore import reference


def _as_rows(array, layout):
    return array.reshape(layout)  # (outer, length, inner); the reduced axis is 1


def softmax_fwd(x, out, layout):
    out[...] = reference.softmax(_as_rows(x, layout), axis=1).reshape(out.shape)


def log_softmax_fwd(x, out, layout):
    out[...] = reference.log_softmax(_as_rows(x, layout), axis=1).reshape(out.shape)


def softmax_bwd(dy, y, out, layout):
    out[...] = reference.softmax_backward(_as_rows(dy, layout), _as_rows(y, layout), axis=1).reshape(out.shape)


def log_softmax_bwd(dy, y, out, layout):
    out[...] = reference.log_softmax_backward(_as_rows(dy, layout), _as_rows(y, layout), axis=1).reshape(out.shape)


def cross_entropy_fwd(x, t, losses, out, reduction):
    if out is None:
        losses[...] = reference.cross_entropy(x, t, "none")
    else:
        out[...] = reference.cross_entropy(x, t, reduction)


def cross_entropy_bwd(x, t, g, reduction, out):
    out[...] = reference.cross_entropy_backward(x, t, g if reduction == "none" else g[0], reduction)
