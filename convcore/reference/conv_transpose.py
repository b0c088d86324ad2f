"""NumPy reference for conv_transpose2d (PyTorch semantics), written as its own definition:
every input pixel scatters its weighted kernel into the output. (Its gradients are
conv2d and conv2d_weight, whose references live in conv2d.py.)
"""
from __future__ import annotations

import numpy as np


def conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    """y[n, g·Co/g + o, h·sh − ph + r·dh, w·sw − pw + s·dw] += x[n, g·Ci/g + i, h, w] · W[g·Ci/g + i, o, r, s].

    Output rows run over [0, H_out) with H_out = (H−1)·sh − 2·ph + dh·(R−1) + oph + 1; likewise columns.
    """
    dtype = input.dtype
    x = input.astype(np.float64)
    w = weight.astype(np.float64)
    N, C_in, H, W = x.shape
    _, Cog, R, S = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    H_out = (H - 1) * sh - 2 * ph + dh * (R - 1) + oph + 1
    W_out = (W - 1) * sw - 2 * pw + dw * (S - 1) + opw + 1
    # Uncropped output: row h·sh + r·dh for every tap, plus the output_padding rows.
    full = np.zeros((N, groups, Cog, (H - 1) * sh + dh * (R - 1) + 1 + oph, (W - 1) * sw + dw * (S - 1) + 1 + opw))
    xg = x.reshape(N, groups, C_in // groups, H, W)
    wg = w.reshape(groups, C_in // groups, Cog, R, S)
    for r in range(R):
        for s in range(S):
            rows = slice(r * dh, r * dh + (H - 1) * sh + 1, sh)
            cols = slice(s * dw, s * dw + (W - 1) * sw + 1, sw)
            full[:, :, :, rows, cols] += np.einsum("ngihw,gio->ngohw", xg, wg[..., r, s])
    out = full.reshape(N, groups * Cog, *full.shape[3:])[:, :, ph : ph + H_out, pw : pw + W_out]
    if bias is not None:
        out = out + bias.astype(np.float64)[None, :, None, None]
    return out.astype(dtype)
