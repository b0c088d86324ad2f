"""linear forward and gradients on the CPU.

Index names: m row (all leading axes of the input together), n output feature,
k input feature.

The three matrix products go to ``kernels.gemm.cpu.matmul`` (convcore's blocked AVX-512
GEMM for float32, BLAS otherwise; called from the launcher, outside any ``prange``, so
threads are not nested): a packed, register-blocked GEMM is far faster than a Numba loop
nest for every layer shape that matters, and it is deterministic for a fixed thread count. The bias add and the bias gradient
(a column sum) are hand-written Numba kernels below.
"""
from __future__ import annotations

from numba import njit, prange

from ..gemm.cpu import matmul

_COLUMNS = 64  # columns per prange iteration of the bias gradient


@njit(parallel=True, cache=True)
def _add_bias(out, b):
    # out[m, n] += b[n]; one prange iteration per row, the inner loop contiguous.
    for m in prange(out.shape[0]):
        for n in range(out.shape[1]):
            out[m, n] += b[n]


@njit(parallel=True, cache=True)
def _sum_rows(dy, db):
    # db[n] = Σ_m dy[m, n]. One prange iteration per block of _COLUMNS columns, summing
    # rows in order (deterministic); the inner loop runs along a row, contiguous.
    M, N = dy.shape
    for block in prange((N + _COLUMNS - 1) // _COLUMNS):
        lo = block * _COLUMNS
        hi = min(lo + _COLUMNS, N)
        for n in range(lo, hi):
            db[n] = 0
        for m in range(M):
            for n in range(lo, hi):
                db[n] += dy[m, n]


def linear_fwd(x, w, b, out):
    # out = x · wᵀ (+ b)
    matmul(x, w.T, out=out)
    if b is not None:
        _add_bias(out, b)


def linear_bwd(dy, x, w, grad_input, grad_weight, grad_bias):
    # dX = dY · W;  dW = dYᵀ · X;  db = Σ_m dY[m, :]
    if grad_input.size:
        matmul(dy, w, out=grad_input)
    if grad_weight.size:
        matmul(dy.T, x, out=grad_weight)
    if grad_bias.size:
        _sum_rows(dy, grad_bias)
