"""conv_transpose2d and its gradients (PyTorch semantics), built on the conv2d kernels.

A transposed convolution is the input gradient of a convolution with the roles of
the shapes swapped: with weight (C_in, C_out/groups, R, S) read as a conv2d weight
(K=C_in, C/groups=C_out/groups, R, S),

    conv_transpose2d(x, W)          == conv2d_input(output_shape, W, grad_output=x)
    conv_transpose2d_input(dy, W)   == conv2d(dy, W)
    conv_transpose2d_weight(x, dy)  == conv2d_weight(input=dy, grad_output=x)

so the backends reuse conv2d's launchers (only the bias add is new). The conv2d
geometry has padding (ph, ph − oph, pw, pw − opw): the bottom/right side can be
negative, meaning output_padding rows that no window reaches (the kernels only read
the top/left padding). Its output size H_out = (H−1)·sh − 2·ph + dh·(R−1) + oph + 1.
"""
from __future__ import annotations

from . import _args
from ._arrays import io_for
from ._backend import lookup, resolve
from .conv import ConvGeometry


def _int(value, name, op):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    return int(value)


def transpose_geometry(op, input_shape, weight_shape, stride, padding, output_padding, groups,
                       dilation) -> ConvGeometry:
    """Validate a transposed convolution and return the geometry of the equivalent conv2d,
    whose *input* is the transposed convolution's output."""
    if len(input_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C_in, H, W), got shape {tuple(input_shape)}")
    if len(weight_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_in, C_out/groups, R, S), got shape {tuple(weight_shape)}")
    N, C_in, H, W = (int(v) for v in input_shape)
    K, Cog, R, S = (int(v) for v in weight_shape)
    groups = _int(groups, "groups", op)
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    if min(C_in, Cog, R, S) <= 0:
        raise ValueError(f"{op}: channels and kernel sizes must be positive, got input {tuple(input_shape)}, "
                         f"weight {tuple(weight_shape)}")
    if C_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels={C_in}")
    if K != C_in:
        raise ValueError(f"{op}: input has {C_in} channels but weight {tuple(weight_shape)} expects {K} "
                         f"(weight is (in_channels, out_channels/groups, R, S))")
    stride = _args.positive_pair(stride, "stride", op)
    dilation = _args.positive_pair(dilation, "dilation", op)
    padding = _args.pair(padding, "padding", op)
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding}")
    output_padding = _args.pair(output_padding, "output_padding", op)
    if min(output_padding) < 0:
        raise ValueError(f"{op}: output_padding must be non-negative, got {output_padding}")
    for o, s, d in zip(output_padding, stride, dilation):
        if not (o < s or o < d):
            raise ValueError(f"{op}: output_padding={output_padding} must be smaller than either "
                             f"stride={stride} or dilation={dilation}")
    H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (R - 1) + output_padding[0] + 1
    W_out = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (S - 1) + output_padding[1] + 1
    if H_out <= 0 or W_out <= 0:
        raise ValueError(f"{op}: output size ({H_out}, {W_out}) is not positive for input {H}x{W}, kernel {R}x{S}, "
                         f"stride {stride}, padding {padding}, dilation {dilation}, output_padding {output_padding}")
    conv_padding = (padding[0], padding[0] - output_padding[0], padding[1], padding[1] - output_padding[1])
    return ConvGeometry(N, Cog * groups, H_out, W_out, C_in, R, S, H, W, stride, conv_padding, dilation, groups)


def output_shape(geom: ConvGeometry):
    """The transposed convolution's output shape (the equivalent conv2d's input shape)."""
    return geom.input_shape


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     *, backend=None):
    """2-D transposed convolution (``torch.nn.functional.conv_transpose2d``).

    Args:
        input: (N, C_in, H, W) float32 or float64.
        weight: (C_in, C_out/groups, R, S), same dtype. bias: optional (C_out,).
        stride, padding, output_padding, dilation: int or pair; output_padding (extra rows and
            columns at the bottom/right) must be smaller than stride or dilation.
        groups: split channels into groups.
        backend: 'numpy', 'cpu', 'cuda' or None for the process default.
    Shape:
        H_out = (H−1)·sh − 2·ph + dh·(R−1) + oph + 1, likewise W_out; output (N, C_out, H_out, W_out).
    Returns:
        The output, same dtype as the input.
    """
    op = "conv_transpose2d"
    name = resolve(backend, input, weight, bias)
    io = io_for(name, input, weight, bias)
    x, w, b = io.to_backend(input), io.to_backend(weight), io.to_backend(bias)
    _args.check_ndim(x, 4, "input", op, "(N, C_in, H, W)")
    _args.check_ndim(w, 4, "weight", op, "(C_in, C_out/groups, R, S)")
    if b is not None:
        _args.check_ndim(b, 1, "bias", op, "(C_out,)")
    dtype = _args.common_dtype(op, input=x, weight=w, bias=b)
    geom = transpose_geometry(op, x.shape, w.shape, stride, padding, output_padding, groups, dilation)
    if b is not None and tuple(b.shape) != (geom.C,):
        raise ValueError(f"{op}: bias must have shape ({geom.C},) to match out_channels, got {tuple(b.shape)}")
    out = io.empty(output_shape(geom), dtype)
    if geom.N:
        lookup("conv_transpose2d", name)(x, w, b, out, geom)
    return io.finish(out)


def _check_grad_output(op, dy, geom):
    _args.check_ndim(dy, 4, "grad_output", op, "(N, C_out, H_out, W_out)")
    if tuple(dy.shape) != output_shape(geom):
        raise ValueError(f"{op}: grad_output has shape {tuple(dy.shape)} but the transposed convolution of input "
                         f"{geom.output_shape} with weight {geom.weight_shape} produces {output_shape(geom)}")


def conv_transpose2d_input(input_shape, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1, *, backend=None):
    """Gradient of conv_transpose2d w.r.t. its input: conv2d(grad_output, weight) with the same
    stride, padding, dilation and groups. Returns an array of shape ``input_shape``."""
    op = "conv_transpose2d_input"
    name = resolve(backend, weight, grad_output)
    input_shape = _args.check_shape_tuple(input_shape, 4, "input_shape", op)
    io = io_for(name, weight, grad_output)
    w, dy = io.to_backend(weight), io.to_backend(grad_output)
    _args.check_ndim(w, 4, "weight", op, "(C_in, C_out/groups, R, S)")
    dtype = _args.common_dtype(op, weight=w, grad_output=dy)
    geom = transpose_geometry(op, input_shape, w.shape, stride, padding, output_padding, groups, dilation)
    _check_grad_output(op, dy, geom)
    out = io.empty(input_shape, dtype)
    if geom.N:
        lookup("conv_transpose2d_input", name)(w, dy, out, geom)
    return io.finish(out)


def conv_transpose2d_weight(input, weight_shape, grad_output, stride=1, padding=0, output_padding=0, groups=1,
                            dilation=1, *, backend=None):
    """Gradient of conv_transpose2d w.r.t. its weight: conv2d_weight with grad_output as the
    convolution's input and ``input`` as its output gradient. Deterministic (no float atomics).
    Returns an array of shape ``weight_shape`` (C_in, C_out/groups, R, S). The bias gradient
    is ``conv2d_bias(grad_output)``."""
    op = "conv_transpose2d_weight"
    name = resolve(backend, input, grad_output)
    weight_shape = _args.check_shape_tuple(weight_shape, 4, "weight_shape", op)
    io = io_for(name, input, grad_output)
    x, dy = io.to_backend(input), io.to_backend(grad_output)
    _args.check_ndim(x, 4, "input", op, "(N, C_in, H, W)")
    dtype = _args.common_dtype(op, input=x, grad_output=dy)
    geom = transpose_geometry(op, x.shape, weight_shape, stride, padding, output_padding, groups, dilation)
    _check_grad_output(op, dy, geom)
    if geom.N == 0:
        return io.finish(io.zeros(weight_shape, dtype))
    out = io.empty(weight_shape, dtype)
    lookup("conv_transpose2d_weight", name)(x, dy, out, geom)
    return io.finish(out)
