"""Explicit SIMD vectors for Numba CPU kernels: a ``float32x16`` value type and the few
operations a GEMM micro-kernel needs (load, store, broadcast, fused multiply-add, add).

Why: LLVM's loop vectoriser keeps a register tile of accumulators in memory when they
live in an array, so a Numba loop nest cannot hold the 24 vector accumulators a GEMM
micro-kernel needs. A value of this type is an LLVM ``<16 x float>`` SSA value: local
variables of it live in registers (zmm on AVX-512; on narrower hosts LLVM splits each
into 2 or 4 registers, still correct).

Loads and stores take an array and a flat element offset from its data pointer (any
layout, any rank: the caller computes the offset from the strides); they are unaligned
and unchecked, like every raw index in a kernel.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16


@njit(inline="always")
def lanes(count):
    """``count`` clamped to 0..LANES: how many lanes of a masked load or store lie in range."""
    return max(0, min(LANES, count))
_VEC = ir.VectorType(ir.FloatType(), LANES)


class Float32x16(types.Type):
    def __init__(self):
        super().__init__(name="float32x16")


float32x16 = Float32x16()


@register_model(Float32x16)
class _Float32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _vector_pointer(context, builder, array_type, array, offset):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), _VEC.as_pointer())


@intrinsic
def vload(typingctx, array, offset):
    """The 16 float32 at ``array``'s data pointer + ``offset`` elements."""
    def codegen(context, builder, signature, args):
        return builder.load(_vector_pointer(context, builder, signature.args[0], *args), align=4)

    return float32x16(array, offset), codegen


@intrinsic
def vstore(typingctx, array, offset, vector):
    """Write ``vector`` to the 16 float32 at ``array``'s data pointer + ``offset``."""
    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()

    return types.void(array, offset, vector), codegen


@intrinsic
def load_at(typingctx, array, offset):
    """The element at ``array``'s data pointer + ``offset`` elements (raw: any layout, no
    wraparound code for a signed offset, no bounds check), in the array's dtype."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.load(builder.gep(data, [args[1]]), align=4)

    return array.dtype(array, offset), codegen


@intrinsic
def store_at(typingctx, array, offset, value):
    """Write ``value`` (of the array's dtype) at ``array``'s data pointer + ``offset`` elements."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        builder.store(args[2], builder.gep(data, [args[1]]), align=4)
        return context.get_dummy_value()

    return types.void(array, offset, array.dtype), codegen


def _prefetch(rw, locality):
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        pointer = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        builder.call(fn, [pointer, ir.Constant(i32, rw), ir.Constant(i32, locality), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def prefetch_write(typingctx, array, offset):
    """Prefetch the cache line of ``array``'s data pointer + ``offset`` elements for writing
    (llvm.prefetch, rw = 1, all levels: prefetchw): a hint, it never faults."""
    return types.void(array, offset), _prefetch(1, 3)


@intrinsic
def prefetch_l2(typingctx, array, offset):
    """Prefetch the cache line of ``array``'s data pointer + ``offset`` elements for reading
    into L2 and outward, not L1 (llvm.prefetch, rw = 0, locality 2: prefetcht1): a hint, it
    never faults, so the address may lie past the array."""
    return types.void(array, offset), _prefetch(0, 2)


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(_VEC, [0.0] * LANES)

    return float32x16(), codegen


@intrinsic
def vbroadcast(typingctx, value):
    """All 16 lanes set to the float32 ``value``."""
    def codegen(context, builder, signature, args):
        one = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(one, ir.Constant(_VEC, ir.Undefined), lanes)

    return float32x16(types.float32), codegen


@intrinsic
def vbroadcast_load(typingctx, array, offset):
    """All 16 lanes set to the float32 at ``array``'s data pointer + ``offset`` (one
    ``vbroadcastss`` from memory: no index wraparound code, no scalar register)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        value = builder.load(builder.gep(data, [args[1]]), align=4)
        one = builder.insert_element(ir.Constant(_VEC, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(one, ir.Constant(_VEC, ir.Undefined), lanes)

    return float32x16(array, offset), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a·b + c lane by lane, one rounding (llvm.fma)."""
    def codegen(context, builder, signature, args):
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32")
        return builder.call(fma, args)

    return float32x16(float32x16, float32x16, float32x16), codegen


@intrinsic
def vmul(typingctx, a, b):
    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], args[1])

    return float32x16(float32x16, float32x16), codegen


@intrinsic
def vadd(typingctx, a, b):
    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return float32x16(float32x16, float32x16), codegen


def _lane_mask(builder, count):
    # <16 x i1>: lane i < count
    index = ir.Constant(ir.VectorType(ir.IntType(64), LANES), list(range(LANES)))
    count64 = builder.sext(count, ir.IntType(64)) if count.type.width < 64 else count
    splat = builder.shuffle_vector(
        builder.insert_element(ir.Constant(ir.VectorType(ir.IntType(64), LANES), ir.Undefined), count64,
                               ir.Constant(ir.IntType(32), 0)),
        ir.Constant(ir.VectorType(ir.IntType(64), LANES), ir.Undefined),
        ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
    return builder.icmp_signed("<", index, splat)


def _masked_load(context, builder, array_type, array, offset, mask):
    # llvm.masked.load of the 16 float32 at the array's data pointer + offset: the lanes of
    # ``mask`` read, the others 0 and not read
    pointer = _vector_pointer(context, builder, array_type, array, offset)
    load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VEC, [_VEC.as_pointer(), ir.IntType(32), mask.type, _VEC]),
        "llvm.masked.load.v16f32.p0v16f32")
    return builder.call(load, [pointer, ir.Constant(ir.IntType(32), 4), mask, ir.Constant(_VEC, [0.0] * LANES)])


@intrinsic
def vload_first(typingctx, array, offset, count):
    """The first ``count`` (0..16) float32 at ``array``'s data pointer + ``offset``, the
    other lanes 0 (llvm.masked.load: nothing past ``count`` is read)."""
    def codegen(context, builder, signature, args):
        return _masked_load(context, builder, signature.args[0], args[0], args[1], _lane_mask(builder, args[2]))

    return float32x16(array, offset, count), codegen


@intrinsic
def vload_lanes(typingctx, array, offset, first, end):
    """Lanes first..end−1 (0 <= first <= end <= 16) of the 16 float32 at ``array``'s data
    pointer + ``offset``, the others 0; nothing outside them is read (a masked load: a row
    shifted by one column, its edge lane zero, with no read before the array)."""
    def codegen(context, builder, signature, args):
        mask = builder.and_(_lane_mask(builder, args[3]), builder.not_(_lane_mask(builder, args[2])))
        return _masked_load(context, builder, signature.args[0], args[0], args[1], mask)

    return float32x16(array, offset, first, end), codegen


@intrinsic
def vrelu(typingctx, a):
    """Lane-wise ``0 if a < 0 else a``: a NaN lane stays NaN (as the scalar ReLU keeps it)."""
    def codegen(context, builder, signature, args):
        zero = ir.Constant(_VEC, [0.0] * LANES)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])

    return float32x16(float32x16), codegen


@intrinsic
def vstore_first(typingctx, array, offset, vector, count):
    """Write the first ``count`` (0..16) lanes of ``vector`` to ``array``'s data pointer +
    ``offset`` (llvm.masked.store: nothing past ``count`` is written)."""
    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], args[1])
        mask = _lane_mask(builder, args[3])
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_VEC, _VEC.as_pointer(), ir.IntType(32), mask.type]),
            "llvm.masked.store.v16f32.p0v16f32")
        builder.call(store, [args[2], pointer, ir.Constant(ir.IntType(32), 4), mask])
        return context.get_dummy_value()

    return types.void(array, offset, vector, count), codegen


def _two_vector_shuffle(name, lanes, doc):
    # An intrinsic returning the 16 lanes ``lanes`` (indices into the 32 lanes of a, b) of
    # two float32x16 values: one fixed shufflevector (vpermt2ps on AVX-512).
    indices = ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(lanes))

    def typer(typingctx, a, b):
        def codegen(context, builder, signature, args):
            return builder.shuffle_vector(args[0], args[1], indices)

        return float32x16(float32x16, float32x16), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


veven = _two_vector_shuffle("veven", range(0, 2 * LANES, 2),
                            "Lanes 0, 2, ..., 30 of the 32 lanes a, b: the even columns of a stride-2 row.")
vodd = _two_vector_shuffle("vodd", range(1, 2 * LANES, 2),
                           "Lanes 1, 3, ..., 31 of the 32 lanes a, b: the odd columns of a stride-2 row.")
vzip_lo = _two_vector_shuffle("vzip_lo", [i // 2 + (LANES if i % 2 else 0) for i in range(LANES)],
                              "a0, b0, a1, b1, ..., a7, b7: the first halves of a and b interleaved "
                              "(the inverse of veven/vodd, with vzip_hi).")
vzip_hi = _two_vector_shuffle("vzip_hi", [LANES // 2 + i // 2 + (LANES if i % 2 else 0) for i in range(LANES)],
                              "a8, b8, ..., a15, b15: the second halves of a and b interleaved.")


@intrinsic
def vsum(typingctx, vector):
    """The sum of the 16 lanes, as a float32 (a fixed pairwise tree: deterministic)."""
    def codegen(context, builder, signature, args):
        v = args[0]
        width = LANES
        while width > 1:
            width //= 2
            lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(width))))
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), width),
                                                          list(range(width, 2 * width))))
            v = builder.fadd(lo, hi)
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return types.float32(float32x16), codegen


def _transpose_masks(d):
    # Round d of the 16×16 block transpose: row i (i & d == 0) and row i + d swap their
    # off-diagonal d-wide blocks (shufflevector indices: 0..15 the first row, 16..31 the second).
    lo = [lane if lane & d == 0 else LANES + lane - d for lane in range(LANES)]
    hi = [lane + d if lane & d == 0 else LANES + lane for lane in range(LANES)]
    return (ir.Constant(ir.VectorType(ir.IntType(32), LANES), lo), ir.Constant(ir.VectorType(ir.IntType(32), LANES), hi))


def _transpose_codegen(context, builder, src_ty, dst_ty, args, rows):
    # the 16×16 transpose of the first ``rows`` source rows (the others zero), storing the
    # first ``rows`` lanes of each transposed row (a masked store when rows < 16)
    s, s0, ss, d, d0, ds = args
    i64 = ir.IntType(64)
    s0, ss, d0, ds = (builder.sext(v, i64) if v.type.width < 64 else v for v in (s0, ss, d0, ds))
    vectors = []
    for i in range(LANES):
        if i < rows:
            offset = builder.add(s0, builder.mul(ss, ir.Constant(i64, i)))
            vectors.append(builder.load(_vector_pointer(context, builder, src_ty, s, offset), align=4))
        else:
            vectors.append(ir.Constant(_VEC, [0.0] * LANES))
    d_ = 1
    while d_ < LANES:
        lo, hi = _transpose_masks(d_)
        for i in range(LANES):
            if i & d_ == 0:
                a, b = vectors[i], vectors[i + d_]
                vectors[i], vectors[i + d_] = builder.shuffle_vector(a, b, lo), builder.shuffle_vector(a, b, hi)
        d_ *= 2
    mask = ir.Constant(ir.VectorType(ir.IntType(1), LANES), [lane < rows for lane in range(LANES)])
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_VEC, _VEC.as_pointer(), ir.IntType(32), mask.type]),
        "llvm.masked.store.v16f32.p0v16f32")
    for lane in range(LANES):
        offset = builder.add(d0, builder.mul(ds, ir.Constant(i64, lane)))
        pointer = _vector_pointer(context, builder, dst_ty, d, offset)
        if rows == LANES:
            builder.store(vectors[lane], pointer, align=4)
        else:
            builder.call(store, [vectors[lane], pointer, ir.Constant(ir.IntType(32), 4), mask])
    return context.get_dummy_value()


@intrinsic
def transpose16(typingctx, src, src_offset, src_stride, dst, dst_offset, dst_stride):
    """dst[dst_offset + l·dst_stride + i] = src[src_offset + i·src_stride + l] for i, l < 16:
    a 16×16 float32 block transposed in registers (16 loads, 4 rounds of 16 shuffles, 16
    stores), rows of both at any stride."""
    def codegen(context, builder, signature, args):
        return _transpose_codegen(context, builder, signature.args[0], signature.args[3], args, LANES)

    return types.void(src, src_offset, src_stride, dst, dst_offset, dst_stride), codegen


@intrinsic
def transpose_rows(typingctx, src, src_offset, src_stride, rows, dst, dst_offset, dst_stride):
    """transpose16 of a rows×16 block, ``rows`` a compile-time constant 1..16:
    dst[dst_offset + l·dst_stride + i] = src[src_offset + i·src_stride + l] for i < rows,
    l < 16 (rows loads; nothing past lane rows of a destination row is written). GEMM's
    12-row A slivers from a row-major A."""
    if not isinstance(rows, types.IntegerLiteral) or not 1 <= rows.literal_value <= LANES:
        return None
    count = rows.literal_value

    def codegen(context, builder, signature, args):
        return _transpose_codegen(context, builder, signature.args[0], signature.args[4],
                                  (args[0], args[1], args[2], args[4], args[5], args[6]), count)

    return types.void(src, src_offset, src_stride, rows, dst, dst_offset, dst_stride), codegen
