"""NumPy reference implementations: the definition of "correct" for every op.

Clarity over speed. Float32 inputs are computed in float64 and rounded once at the
end, so the reference is float64-accurate for every dtype.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def _windows(padded, out_hw, kernel_hw, stride, dilation):
    """View (N, C, P, Q, R, S) of every receptive field of a padded NCHW array."""
    sn, sc, sh, sw = padded.strides
    shape = padded.shape[:2] + tuple(out_hw) + tuple(kernel_hw)
    strides = (sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1])
    return as_strided(padded, shape=shape, strides=strides, writeable=False)


def _pad(x, padding):
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def conv2d(input, weight, bias, stride, padding, dilation, groups, out_hw):
    """out[n,k,p,q] = Σ_c,r,s x[n, g·C/g + c, p·sh − pt + r·dh, q·sw − pl + s·dw] · w[k,c,r,s] + b[k]."""
    dtype = input.dtype
    x = _pad(input.astype(np.float64), padding)
    w = weight.astype(np.float64)
    N, C = x.shape[:2]
    K, Cg, R, S = w.shape
    win = _windows(x, out_hw, (R, S), stride, dilation).reshape(N, groups, Cg, *out_hw, R, S)
    out = np.einsum("ngcpqrs,gkcrs->ngkpq", win, w.reshape(groups, K // groups, Cg, R, S), optimize=True)
    out = out.reshape(N, K, *out_hw)
    if bias is not None:
        out += bias.astype(np.float64)[None, :, None, None]
    return out.astype(dtype)


def conv2d_input(input_shape, weight, grad_output, stride, padding, dilation, groups):
    """The adjoint of conv2d w.r.t. its input: each window scatters back what it read."""
    dtype = grad_output.dtype
    N, C, H, W = input_shape
    K, Cg, R, S = weight.shape
    top, bottom, left, right = padding
    P, Q = grad_output.shape[2:]
    dy = grad_output.astype(np.float64).reshape(N, groups, K // groups, P, Q)
    w = weight.astype(np.float64).reshape(groups, K // groups, Cg, R, S)
    grad_padded = np.zeros((N, groups, Cg, H + top + bottom, W + left + right))
    for r in range(R):
        for s in range(S):
            h0, w0 = r * dilation[0], s * dilation[1]
            rows = slice(h0, h0 + stride[0] * (P - 1) + 1, stride[0])
            cols = slice(w0, w0 + stride[1] * (Q - 1) + 1, stride[1])
            grad_padded[:, :, :, rows, cols] += np.einsum("ngkpq,gkc->ngcpq", dy, w[..., r, s])
    grad = grad_padded.reshape(N, C, H + top + bottom, W + left + right)
    return grad[:, :, top : top + H, left : left + W].astype(dtype)


def conv2d_weight(input, weight_shape, grad_output, stride, padding, dilation, groups):
    """dW[k,c,r,s] = Σ_n,p,q dY[n,k,p,q] · x[n, g·C/g + c, p·sh − pt + r·dh, q·sw − pl + s·dw]."""
    dtype = input.dtype
    K, Cg, R, S = weight_shape
    x = _pad(input.astype(np.float64), padding)
    N = x.shape[0]
    P, Q = grad_output.shape[2:]
    win = _windows(x, (P, Q), (R, S), stride, dilation).reshape(N, groups, Cg, P, Q, R, S)
    dy = grad_output.astype(np.float64).reshape(N, groups, K // groups, P, Q)
    grad = np.einsum("ngkpq,ngcpqrs->gkcrs", dy, win, optimize=True)
    return grad.reshape(K, Cg, R, S).astype(dtype)


def conv2d_bias(grad_output):
    return grad_output.astype(np.float64).sum(axis=(0, 2, 3)).astype(grad_output.dtype)
