"""NumPy references for softmax, log_softmax and cross-entropy (PyTorch semantics).

Everything goes through a stable log-sum-exp: lse = m + log Σ e^(x − m), m = max x,
so large logits never overflow and a −inf logit gives probability 0.
"""
from __future__ import annotations

import numpy as np


def _log_softmax64(x, axis):
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        shifted = x - m
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    return np.exp(_log_softmax64(x, axis)).astype(np.asarray(x).dtype)


def log_softmax(x, axis=-1):
    return _log_softmax64(x, axis).astype(np.asarray(x).dtype)


def softmax_backward(grad_output, output, axis=-1):
    """dX = y ⊙ (dY − Σ_axis dY ⊙ y)   (torch's _softmax_backward_data)."""
    g, y = np.asarray(grad_output, np.float64), np.asarray(output, np.float64)
    return (y * (g - np.sum(g * y, axis=axis, keepdims=True))).astype(np.asarray(output).dtype)


def log_softmax_backward(grad_output, output, axis=-1):
    """dX = dY − e^y ⊙ Σ_axis dY   (torch's _log_softmax_backward_data)."""
    g, y = np.asarray(grad_output, np.float64), np.asarray(output, np.float64)
    return (g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)).astype(np.asarray(output).dtype)


def cross_entropy(logits, target, reduction="mean"):
    """loss_n = −log_softmax(logits)[n, target_n]; then mean, sum or none over n."""
    logp = _log_softmax64(logits, 1)
    target = np.asarray(target)
    losses = -logp[np.arange(logp.shape[0]), target]
    dtype = np.asarray(logits).dtype
    if reduction == "none":
        return losses.astype(dtype)
    with np.errstate(invalid="ignore"):
        total = losses.sum() if reduction == "sum" else losses.mean() if losses.size else np.float64(np.nan)
    return np.asarray(total, dtype=dtype)


def cross_entropy_backward(logits, target, grad_output=1.0, reduction="mean"):
    """dlogits[n, c] = g_n · (softmax(logits)[n, c] − [c = target_n]),
    g_n = grad_output / N (mean), grad_output (sum) or grad_output[n] (none)."""
    probs = np.exp(_log_softmax64(logits, 1))
    N = probs.shape[0]
    probs[np.arange(N), np.asarray(target)] -= 1.0
    g = np.asarray(grad_output, np.float64)
    if reduction == "none":
        scale = g.reshape(N, 1)
    elif reduction == "sum":
        scale = g.reshape(())
    else:
        scale = g.reshape(()) / N if N else g.reshape(())
    return (probs * scale).astype(np.asarray(logits).dtype)
