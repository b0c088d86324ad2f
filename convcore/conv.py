"""conv2d and its gradients, with PyTorch semantics.

Cross-correlation on NCHW input with weight ``(K, C/groups, R, S)``. Every public
function follows the same path: normalise arguments → check → move arrays to the
backend → allocate the output → dispatch to the backend's kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _args, _tuning
from ._arrays import io_for
from ._backend import lookup, resolve

ALGORITHMS = ("auto", "direct", "gemm", "winograd", "winograd_f2", "winograd_f4")
WINOGRAD = ("winograd", "winograd_f2", "winograd_f4")
ACTIVATIONS = (None, "relu")


@dataclass(frozen=True)
class ConvGeometry:
    """Every size a conv kernel needs, checked. Letters are the field's notation:
    N batch, C/K input/output channels, H×W input, R×S kernel, P×Q output."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple
    padding: tuple  # (top, bottom, left, right)
    dilation: tuple
    groups: int

    @property
    def Cg(self) -> int:
        return self.C // self.groups

    @property
    def Kg(self) -> int:
        return self.K // self.groups

    @property
    def input_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self):
        return (self.K, self.Cg, self.R, self.S)

    @property
    def output_shape(self):
        return (self.N, self.K, self.P, self.Q)

    @property
    def flops(self) -> int:
        return 2 * self.N * self.K * self.Cg * self.R * self.S * self.P * self.Q


# conv_geometry's results by their arguments, when those are plain (below): a layer called
# again with the same shapes skips the checks (4.4 of the ~17 us a small conv spent before
# its kernel, on a 2-core Zen 4). Only arguments of exact types are keys, since the checks
# tell 1 from True and from 1.0 while a dict does not.
_GEOMETRIES: dict = {}
_GEOMETRIES_MAX = 4096


def _plain(value) -> bool:
    kind = type(value)
    return kind is int or kind is str or kind is tuple and all(type(v) is int for v in value)


def conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups) -> ConvGeometry:
    """Validate a convolution's configuration and compute its output size."""
    # Shapes go through int() either way, so equal shapes of any element types agree.
    if (type(groups) is int and type(input_shape) is tuple and type(weight_shape) is tuple
            and _plain(stride) and _plain(padding) and _plain(dilation)):
        key = (op, input_shape, weight_shape, stride, padding, dilation, groups)
        try:
            geom = _GEOMETRIES.get(key)
        except TypeError:  # an unhashable element: the checks below name it
            return _conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups)
        if geom is None:
            if len(_GEOMETRIES) >= _GEOMETRIES_MAX:
                _GEOMETRIES.clear()
            geom = _GEOMETRIES[key] = _conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups)
        return geom
    return _conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups)


def _conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups) -> ConvGeometry:
    if len(input_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(input_shape)}")
    if len(weight_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (K, C/groups, R, S), got shape {tuple(weight_shape)}")
    N, C, H, W = (int(v) for v in input_shape)
    K, Cg, R, S = (int(v) for v in weight_shape)
    if isinstance(groups, bool) or not isinstance(groups, int) and not hasattr(groups, "__index__"):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    groups = int(groups)
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    if min(C, K, R, S) <= 0:
        raise ValueError(f"{op}: channels and kernel sizes must be positive, "
                         f"got input {tuple(input_shape)}, weight {tuple(weight_shape)}")
    if C % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels={C}")
    if K % groups:
        raise ValueError(f"{op}: groups={groups} must divide out_channels={K} (weight shape {tuple(weight_shape)})")
    if Cg * groups != C:
        raise ValueError(
            f"{op}: input has {C} channels but weight {tuple(weight_shape)} with groups={groups} expects {Cg * groups}"
        )
    stride = _args.positive_pair(stride, "stride", op)
    dilation = _args.positive_pair(dilation, "dilation", op)
    padding = _args.conv_padding(padding, (R, S), stride, dilation, op)
    top, bottom, left, right = padding
    P = (H + top + bottom - dilation[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + left + right - dilation[1] * (S - 1) - 1) // stride[1] + 1
    if P <= 0 or Q <= 0:
        raise ValueError(
            f"{op}: output size ({P}, {Q}) is not positive for input {H}x{W}, padding {padding}, "
            f"kernel {R}x{S}, dilation {dilation}, stride {stride}"
        )
    return ConvGeometry(N, C, H, W, K, R, S, P, Q, stride, padding, dilation, groups)


def _check_algorithm(op, algorithm, backend):
    """One of ALGORITHMS, or one of the backend's own variant names (what ``candidates()``
    lists and ``tune`` records, e.g. cuda's 'gemm_64x64'); the launcher then checks that
    the variant applies to the shape."""
    if algorithm in ALGORITHMS:
        return
    variants = lookup("conv2d_variants", backend)() if backend in ("cpu", "cuda") else ()
    if algorithm not in variants:
        extra = f" or a {backend} variant {variants}" if variants else ""
        raise ValueError(f"{op}: algorithm must be one of {ALGORITHMS}{extra}, got {algorithm!r}")


def _check_winograd(op, algorithm, geom, backend):
    """Winograd F(m×m, 3×3) exists for 3×3, stride-1, dilation-1 layers, forward and both
    gradients, on the cpu backend. The geometry is checked on every backend (the numpy
    backend then ignores the algorithm, as it ignores every algorithm)."""
    if algorithm not in WINOGRAD:
        return
    if (geom.R, geom.S) != (3, 3) or geom.stride != (1, 1) or geom.dilation != (1, 1):
        raise ValueError(
            f"{op}: algorithm={algorithm!r} needs a 3x3 kernel, stride 1 and dilation 1, got kernel "
            f"{geom.R}x{geom.S}, stride {geom.stride}, dilation {geom.dilation}"
        )
    if backend == "cuda":
        raise ValueError(f"{op}: algorithm={algorithm!r} is cpu-only; the cuda backend has 'auto', 'direct' and 'gemm'")


def _check_bias(op, bias, K):
    if bias is not None and tuple(bias.shape) != (K,):
        raise ValueError(f"{op}: bias must have shape ({K},) to match out_channels, got {tuple(bias.shape)}")


def _check_grad_output(op, grad_output, geom):
    _args.check_ndim(grad_output, 4, "grad_output", op, "(N, K, P, Q)")
    if tuple(grad_output.shape) != geom.output_shape:
        raise ValueError(
            f"{op}: grad_output has shape {tuple(grad_output.shape)} but the convolution of input "
            f"{geom.input_shape} with weight {geom.weight_shape} produces {geom.output_shape}"
        )


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algorithm="auto",
           activation=None):
    """2-D cross-correlation (``torch.nn.functional.conv2d``).

    Args:
        input: (N, C, H, W) float32 or float64 array.
        weight: (K, C/groups, R, S), same dtype.
        bias: optional (K,).
        stride, dilation: int or pair. padding: int, pair, (top, bottom, left, right),
            'valid' or 'same' (stride 1 only).
        groups: split channels into groups convolved independently.
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
        algorithm: 'auto', 'direct', 'gemm' (cpu: im2col + BLAS; cuda: implicit GEMM, the
            block tile chosen per shape), or, cpu only, for 3×3 stride-1 dilation-1 layers,
            'winograd' (Winograd F(m×m, 3×3), tile picked per shape), 'winograd_f2' (F(2×2))
            or 'winograd_f4' (F(4×4): fewest multiplications, float32 error about 15× gemm's,
            well inside tolerance). The numpy backend ignores it (after the same geometry
            check). 'auto' on cuda uses the depthwise kernels when C/groups == 1. The
            gradients take the same names.
            'auto' uses the choice ``tune`` cached for this layer, else measures now when
            CONVCORE_AUTOTUNE=1, else a heuristic.
        activation: None or 'relu', applied after the bias; fused into the CUDA
            implicit-GEMM epilogue (one pass over the output instead of three).
    Shape:
        P = ⌊(H + pt + pb − dh·(R−1) − 1) / sh⌋ + 1, likewise Q; output (N, K, P, Q).
    Returns:
        The output, same dtype as the input, as the caller's kind of array.
    """
    op = "conv2d"
    name = resolve(backend, input, weight, bias)
    _check_algorithm(op, algorithm, name)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    io = io_for(name, input, weight, bias)
    x, w, b = io.to_backend(input), io.to_backend(weight), io.to_backend(bias)
    _args.check_ndim(x, 4, "input", op, "(N, C, H, W)")
    _args.check_ndim(w, 4, "weight", op, "(K, C/groups, R, S)")
    if b is not None:
        _args.check_ndim(b, 1, "bias", op, "(K,)")
    dtype = _args.common_dtype(op, input=x, weight=w, bias=b)
    geom = conv_geometry(op, x.shape, w.shape, stride, padding, dilation, groups)
    _check_winograd(op, algorithm, geom, name)
    _check_bias(op, b, geom.K)
    out = io.empty(geom.output_shape, dtype)
    if geom.N:
        launch = lookup("conv2d", name)
        if algorithm == "auto":
            algorithm = _tuning.select(name, "fwd", geom, dtype, lambda alg: launch(x, w, b, out, geom, alg, activation))
        launch(x, w, b, out, geom, algorithm, activation)
    return io.finish(out)


def conv2d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algorithm="auto"):
    """Gradient of conv2d w.r.t. its input (``torch.nn.grad.conv2d_input``).

    dX[n,c,h,w] = Σ_k,r,s dY[n,k,(h + pt − r·dh)/sh,(w + pl − s·dw)/sw] · W[k,c,r,s]
    over the terms where the divisions are exact and in range.
    ``algorithm`` as in :func:`conv2d` (Winograd included: at stride 1 this is a
    convolution of dY with the flipped weight).
    Returns an array of shape ``input_shape``.
    """
    op = "conv2d_input"
    name = resolve(backend, weight, grad_output)
    _check_algorithm(op, algorithm, name)
    input_shape = _args.check_shape_tuple(input_shape, 4, "input_shape", op)
    io = io_for(name, weight, grad_output)
    w, dy = io.to_backend(weight), io.to_backend(grad_output)
    _args.check_ndim(w, 4, "weight", op, "(K, C/groups, R, S)")
    dtype = _args.common_dtype(op, weight=w, grad_output=dy)
    geom = conv_geometry(op, input_shape, w.shape, stride, padding, dilation, groups)
    _check_winograd(op, algorithm, geom, name)
    _check_grad_output(op, dy, geom)
    out = io.empty(geom.input_shape, dtype)
    if geom.N:
        launch = lookup("conv2d_input", name)
        if algorithm == "auto":
            algorithm = _tuning.select(name, "bwd_data", geom, dtype, lambda alg: launch(w, dy, out, geom, alg))
        launch(w, dy, out, geom, algorithm)
    return io.finish(out)


def conv2d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algorithm="auto"):
    """Gradient of conv2d w.r.t. its weight (``torch.nn.grad.conv2d_weight``).

    dW[k,c,r,s] = Σ_n,p,q dY[n,k,p,q] · X[n, g·C/g + c, p·sh − pt + r·dh, q·sw − pl + s·dw].
    Deterministic on every backend: the reduction order is fixed (no float atomics).
    ``algorithm`` as in :func:`conv2d`: on the cpu backend, 3×3 stride-1 dilation-1 layers
    also take the Winograd names (dU = Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ X B), one GEMM per transform
    element reduced over the tiles, then dW = Gᵀ dU G).
    Returns an array of shape ``weight_shape``.
    """
    op = "conv2d_weight"
    name = resolve(backend, input, grad_output)
    _check_algorithm(op, algorithm, name)
    weight_shape = _args.check_shape_tuple(weight_shape, 4, "weight_shape", op)
    io = io_for(name, input, grad_output)
    x, dy = io.to_backend(input), io.to_backend(grad_output)
    _args.check_ndim(x, 4, "input", op, "(N, C, H, W)")
    dtype = _args.common_dtype(op, input=x, grad_output=dy)
    geom = conv_geometry(op, x.shape, weight_shape, stride, padding, dilation, groups)
    _check_winograd(op, algorithm, geom, name)
    _check_grad_output(op, dy, geom)
    if geom.N == 0:
        out = io.zeros(geom.weight_shape, dtype)
    else:
        out = io.empty(geom.weight_shape, dtype)
        launch = lookup("conv2d_weight", name)
        if algorithm == "auto":
            algorithm = _tuning.select(name, "bwd_weight", geom, dtype, lambda alg: launch(x, dy, out, geom, alg))
        launch(x, dy, out, geom, algorithm)
    return io.finish(out)


def conv2d_bias(grad_output, *, backend=None):
    """Gradient of conv2d w.r.t. its bias: the sum of ``grad_output`` over N, P, Q."""
    op = "conv2d_bias"
    name = resolve(backend, grad_output)
    io = io_for(name, grad_output)
    dy = io.to_backend(grad_output)
    _args.check_ndim(dy, 4, "grad_output", op, "(N, K, P, Q)")
    dtype = _args.common_dtype(op, grad_output=dy)
    if dy.shape[0] == 0 or dy.shape[2] * dy.shape[3] == 0:
        return io.finish(io.zeros((dy.shape[1],), dtype))
    out = io.empty((dy.shape[1],), dtype)
    lookup("conv2d_bias", name)(dy, out)
    return io.finish(out)


def tune(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None,
         directions=_tuning.DIRECTIONS, repeats: int = 3, activation=None) -> dict:
    """Time every algorithm for this layer and keep the fastest in the on-disk cache.

    Afterwards ``algorithm="auto"`` calls with the same backend, dtype and geometry use
    the measured choice (see ``convcore._tuning`` for the cache and CONVCORE_AUTOTUNE).
    ``input`` and ``weight`` give the shapes and dtype; gradients are timed on random
    ``grad_output`` data.

    Args:
        directions: any of 'fwd', 'bwd_data', 'bwd_weight'.
        repeats: timed calls per candidate (after one warm-up call that also compiles).
    Returns:
        ``{direction: TuneResult(algorithm, times_ms)}``.
    """
    op = "tune"
    directions = (directions,) if isinstance(directions, str) else tuple(directions)
    bad = [d for d in directions if d not in _tuning.DIRECTIONS]
    if bad or not directions:
        raise ValueError(f"{op}: directions must be a non-empty subset of {_tuning.DIRECTIONS}, got {directions!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"{op}: repeats must be a positive int, got {repeats!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    name = resolve(backend, input, weight, bias)
    io = io_for(name, input, weight, bias)
    x, w, b = io.to_backend(input), io.to_backend(weight), io.to_backend(bias)
    _args.check_ndim(x, 4, "input", op, "(N, C, H, W)")
    _args.check_ndim(w, 4, "weight", op, "(K, C/groups, R, S)")
    dtype = _args.common_dtype(op, input=x, weight=w, bias=b)
    geom = conv_geometry(op, x.shape, w.shape, stride, padding, dilation, groups)
    _check_bias(op, b, geom.K)
    if geom.N == 0:
        raise ValueError(f"{op}: input has batch size 0; nothing to time (input shape {geom.input_shape})")
    rng = np.random.default_rng(0)
    dy = io.to_backend(rng.standard_normal(geom.output_shape).astype(dtype))
    runs = {
        "fwd": (lookup("conv2d", name), geom.output_shape,
                lambda launch, out: lambda alg: launch(x, w, b, out, geom, alg, activation)),
        "bwd_data": (lookup("conv2d_input", name), geom.input_shape,
                     lambda launch, out: lambda alg: launch(w, dy, out, geom, alg)),
        "bwd_weight": (lookup("conv2d_weight", name), geom.weight_shape,
                       lambda launch, out: lambda alg: launch(x, dy, out, geom, alg)),
    }
    results = {}
    for direction in directions:
        launch, shape, make_run = runs[direction]
        result = _tuning.measure(name, direction, geom, make_run(launch, io.empty(shape, dtype)), repeats)
        if name != "numpy":
            _tuning.record(name, direction, geom, dtype, result)
        results[direction] = result
    return results
