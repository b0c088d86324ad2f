"""Depthwise conv2d (C/groups == 1) on the CPU in row strips that stay in L1.

Same index notation as cpu_direct. A depthwise layer does 2·R·S flops per byte moved, so
it is bound by memory: these kernels read each input plane once and write each output
plane once, with everything in between in a per-thread buffer of a few KiB, allocated
once per thread (not per plane) outside the hot loops, and prefetch the input rows
ahead in software. Threads take chunks of planes from a shared counter (see
_next_chunk), so a thread that starts late does less of the work.

Phase planes of width Q. Tap (r, s) of output (p, q) reads input row p·sh + r·dh − pt and
column q·sw + s·dw − pl. Writing r·dh − pt = rs·sh + bh and s·dw − pl = cs·sw + bw
(floor division, 0 <= bh < sh, 0 <= bw < sw), that is row p + rs, column q + cs of the
phase plane (bh, bw), which holds input rows i·sh + bh and columns j·sw + bw (0 outside the
input). Stored as rows of exactly Q columns and flattened, every tap is then one
contiguous loop over the strip at a constant offset rs·Q + cs, and the output strip is
the output plane's own memory (no scratch columns, no crop). The columns a tap wraps
into (q + cs outside [0, Q): the neighbouring row) are padding; a per-column mask
selects 0 there. That holds when W <= Q·sw, i.e. the layer pads the right edge at
least as much as 'same' does (every MobileNet/ResNet depthwise layer): a wrapped
column q + cs >= Q is input column >= Q·sw >= W. Other layers use cpu_depthwise.

The input gradient is the same loop the other way round: phase (bh, bw) of dX at (i, j)
sums w[r, s]·dY[i − rs, j − cs] over the taps of that phase, a stride-1 loop over dY
(whose rows are Q long already) into Q-wide phase rows, interleaved back into dX rows
(written in place at stride 1 when W == Q). The weight gradient is Σ dY[u]·x_phase[u +
offset] per tap over the same strips: dot products, accumulated per channel in a fixed
order (images, then strips, then the vector lanes' fixed reduction), so deterministic.

Taps are grouped into blocks of up to 3 rows × 3 columns: the taps of one output phase
that read one input phase column bw, i.e. up to three row offsets (base pointers) times
up to three column shifts, each shift with its own mask row. One block is one fused loop
(up to nine loads and FMAs per store); more independent base pointers than that and
LLVM's runtime alias checks pass its limit and the loop stays scalar. The loops are
generated for every (rows, columns) shape below, and the block table is built once
per geometry in Python (``plan``).

The masks are rows of the data type (1 inside, 0 outside) and a column is zeroed by a
select on the already loaded sum (``c if m != 0 else 0``), not by a bit test: Numba
widens ``byte & bit`` to 64 bits, which AVX-512 absorbs in mask registers but AVX2 pays
for with widening and packing (on a 2-core AMD Zen AVX2 host, the forward of 8×32×112²
3×3 took 11.4 ms with bit masks, 3.3 with no masks at all). A select, unlike a multiply by
0, keeps an Inf or NaN of the neighbouring row out.
"""
from __future__ import annotations

from functools import lru_cache

import llvmlite.ir as ir
import numpy as np
from numba import get_num_threads, njit, prange, uintp
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from .. import host
from ..gemm.simd import LANES, veven, vload, vload_first, vodd, vstore, vstore_first

# Strip sizing: the input phase rows, output rows and masks of one strip fit in this many
# bytes (L1 is 32-48 KiB on current x86 cores).
STRIP_BYTES = 24 * 1024
# Work is cut into this many chunks per thread (of planes, or of channels for the weight
# gradient), handed out dynamically (see _next_chunk).
CHUNKS_PER_THREAD = 32

# Block table columns: output phase, first-writer flag, rows, columns, then three
# (input phase, row offset) bases, three (column shift, mask row offset) columns, nine taps
# (row-major, -1 = none).
OUT_PH, FIRST, NR, NC, BASE, SHIFT, TAP = 0, 1, 2, 3, 4, 10, 16
NCOL = TAP + 9


def _split(v, stride):
    return v // stride, v % stride  # floor division: (shift, phase)


def _column_shifts(S, sw, pl, dw, Q):
    return sorted({cs for cs in (_split(s * dw - pl, sw)[0] for s in range(S)) if cs and -Q < cs < Q})


def applies(geom) -> bool:
    """The layers these kernels compute: depthwise, the right edge padded at least as much
    as 'same' pads it (W <= Q·sw), at most 7 distinct column shifts (S <= 7 taps wide)."""
    sw, pl, dw = geom.stride[1], geom.padding[2], geom.dilation[1]
    return geom.Cg == 1 and geom.W <= geom.Q * sw and len(_column_shifts(geom.S, sw, pl, dw, geom.Q)) <= 7


@lru_cache(maxsize=256)
def plan(direction, R, S, sh, sw, pt, pl, dh, dw, Q, out_rows, itemsize):
    """(blocks, masks, d_min, d_span, strip_rows, empty_out_phases) for one geometry.

    direction "fwd"/"wgrad": output rows p read input phase rows p + rs of phase (bh, bw)
    at column q + cs; "dgrad": dX phase (bh, bw) rows i read dY rows i − rs at column
    j − cs. A block's row offsets are counted from d_min (the strip buffer's first row).
    ``out_rows`` is the number of rows of the strip-mined output (P, or ceil(H / sh)
    dX phase rows); ``masks`` holds rows of strip_rows·Q values of the data type, one per
    column shift (the first, all 1, for the unshifted columns), 1 where column u % Q +
    shift is inside [0, Q), else 0; a block names each shift's row by its offset."""
    dgrad = direction == "dgrad"
    row_keys = {}  # r -> (bh, d)
    col_keys = {}  # s -> (bw, shift)
    for r in range(R):
        rs, bh = _split(r * dh - pt, sh)
        row_keys[r] = (bh, -rs if dgrad else rs)
    for s in range(S):
        cs, bw = _split(s * dw - pl, sw)
        if -Q < cs < Q:  # else every output column reads padding
            col_keys[s] = (bw, -cs if dgrad else cs)
    n_in, n_out = (1, sh * sw) if dgrad else (sh * sw, 1)
    d_vals = [d for _, d in row_keys.values()]
    d_min, d_span = min(d_vals), max(d_vals) - min(d_vals)
    shifts = sorted({c for _, c in col_keys.values() if c})
    assert len(shifts) <= 7, "applies() admits at most 7 column shifts"
    # Strip rows: input phase rows + output rows + the mask rows within STRIP_BYTES.
    per_row = Q * itemsize * (n_in + n_out + 1 + len(shifts))
    rows = max(1, min(out_rows, STRIP_BYTES // per_row - d_span))
    mask_row = {0: 0, **{c: (b + 1) * rows * Q for b, c in enumerate(shifts)}}  # offsets into masks
    q = np.arange(rows * Q) % Q
    masks = np.ones((1 + len(shifts), rows * Q), np.float32 if itemsize == 4 else np.float64)
    for b, c in enumerate(shifts):
        masks[b + 1] = (q + c >= 0) & (q + c < Q)
    masks = masks.reshape(-1)
    # Group the taps: fwd/wgrad by input column phase bw (output phase 0, input phase
    # (bh, bw)); dgrad by output phase (bh, bw) (input phase 0). Each group is a full grid
    # of its rows × its columns, cut into blocks of <= 3 × 3.
    groups = {}
    for r, (bh, d) in row_keys.items():
        for s, (bw, c) in col_keys.items():
            if dgrad:
                key, base = bh * sw + bw, (0, d - d_min)
            else:
                key, base = bw, (bh * sw + bw, d - d_min)
            g = groups.setdefault(key, ({}, {}))
            g[0].setdefault(base, []).append(r)
            g[1].setdefault(c, s)
    blocks, seen = [], set()
    for key in sorted(groups):
        bases, cols = groups[key]
        out_ph = key if dgrad else 0
        base_list = sorted(bases)
        col_list = sorted(cols)
        for i in range(0, len(base_list), 3):
            for j in range(0, len(col_list), 3):
                bl, cl = base_list[i:i + 3], col_list[j:j + 3]
                row = [out_ph, out_ph not in seen, len(bl), len(cl)]
                seen.add(out_ph)
                for k in range(3):
                    row += list(bl[min(k, len(bl) - 1)])
                for k in range(3):
                    c = cl[min(k, len(cl) - 1)]
                    row += [c, mask_row[c]]
                taps = [-1] * 9
                for a, bkey in enumerate(bl):
                    r = bases[bkey][0]
                    for b, c in enumerate(cl):
                        taps[a * 3 + b] = r * S + cols[c]
                blocks.append(row + taps)
    blocks = np.array(blocks, np.int64).reshape(-1, NCOL)
    empty = np.array([ph for ph in range(n_out) if ph not in seen], np.int64)
    return blocks, masks, d_min, d_span, rows, empty


# Software prefetch distance, in elements ahead of the row being read: the hardware
# prefetchers alone reached 13 GB/s reading phase-split rows on one core of a 2-core VM,
# 33 GB/s with prefetches 2048 elements (8 KiB of float32) ahead.
PREFETCH = 2048


@intrinsic
def _prefetch(typingctx, arr, index):
    """Prefetch arr[index] into all cache levels (no fault if out of range)."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])  # no bounds check: a prefetch never faults
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, types.intp), codegen


@njit(inline="always")
def _prefetch_range(a, start, n):
    # One prefetch per 64-byte line of a[start:start + n].
    step = max(64 // a.itemsize, 1)
    for j in range(0, n, step):
        _prefetch(a, start + j)


# ---------------------------------------------------------------- strip producers / consumers
# Everything below indexes flat arrays with unsigned (uintp) indices: array views made in
# the hot loops cost a reference count each, and signed indices a negative-index select.
@njit(inline="always")
def _fill(buf, start, n, zero):
    for i in range(n):
        buf[uintp(start + i)] = zero


def _split_columns(xf, srow, W, buf, de, do, Q, zero):
    """buf[de + j] = src[2j], buf[do + j] = src[2j + 1] for j in [0, Q), 0 past the W
    columns of the row src = xf[srow:]: a stride-2 row split into its column phases."""


@overload(_split_columns, inline="always")
def _split_columns_impl(xf, srow, W, buf, de, do, Q, zero):
    if xf.dtype == types.float32 and buf.dtype == types.float32 and host.avx512():
        # 32 columns a step into two 16-lane phase rows, masked at the row's ends (LLVM
        # vectorised the loop below 32 outputs at a time, so at Q < 32 its 8-wide remainder
        # and scalar tail ran: 5 of every 6 input floats in the 2×128×56² stride-2
        # MobileNet layer, whose forward the phase rows' loading dominated). AVX-512 hosts
        # only, like convcore's other 16-lane kernels: without it the permutes and masked
        # stores split into several narrower instructions each (not measured on AVX2).
        # Decided when the kernel compiles; Numba's cache is per CPU.
        def vector(xf, srow, W, buf, de, do, Q, zero):
            for j in range(0, Q, LANES):
                rest = W - 2 * j
                if rest >= 2 * LANES and Q - j >= LANES:
                    a, b = vload(xf, srow + 2 * j), vload(xf, srow + 2 * j + LANES)
                    vstore(buf, de + j, veven(a, b))
                    vstore(buf, do + j, vodd(a, b))
                else:
                    a = vload_first(xf, srow + 2 * j, min(max(rest, 0), LANES))
                    b = vload_first(xf, srow + 2 * j + LANES, min(max(rest - LANES, 0), LANES))
                    n = min(Q - j, LANES)
                    vstore_first(buf, de + j, veven(a, b), n)
                    vstore_first(buf, do + j, vodd(a, b), n)
        return vector

    def scalar(xf, srow, W, buf, de, do, Q, zero):
        ne = min((W + 1) // 2, Q)
        no = min(W // 2, Q)
        for j in range(no):
            buf[uintp(de + j)] = xf[uintp(srow + 2 * j)]
            buf[uintp(do + j)] = xf[uintp(srow + 2 * j + 1)]
        for j in range(no, ne):
            buf[uintp(de + j)] = xf[uintp(srow + 2 * j)]
        _fill(buf, de + ne, Q - ne, zero)
        _fill(buf, do + no, Q - no, zero)
    return scalar


@njit(inline="always")
def _load_phase_rows(xf, sbase, H, W, buf, row0, nrows, sh, sw, Q, plane, ahead, zero):
    """Phase (bh, bw) rows t in [0, nrows) of a strip: buf[Q + ph·plane + t·Q + j] =
    src[(row0 + t)·sh + bh, j·sw + bw] for j in [0, Q), 0 outside src, where src is the
    H×W plane at xf[sbase:]. Prefetches what lies ``ahead`` elements past each row read."""
    if sh == 1 and sw == 1 and W == Q:
        # The strip's rows are contiguous in src and in buf: one flat copy.
        t_lo = min(max(-row0, 0), nrows)
        t_hi = max(min(H - row0, nrows), t_lo)
        _fill(buf, Q, t_lo * Q, zero)
        _fill(buf, Q + t_hi * Q, (nrows - t_hi) * Q, zero)
        d = Q + t_lo * Q
        s = sbase + (row0 + t_lo) * W
        _prefetch_range(xf, s + ahead, (t_hi - t_lo) * W)
        for i in range((t_hi - t_lo) * W):
            buf[uintp(d + i)] = xf[uintp(s + i)]
        return
    for bh in range(sh):
        for t in range(nrows):
            h = (row0 + t) * sh + bh
            if h < 0 or h >= H:
                for bw in range(sw):
                    _fill(buf, Q + (bh * sw + bw) * plane + t * Q, Q, zero)
                continue
            srow = sbase + h * W
            _prefetch_range(xf, srow + ahead, W)
            if sw == 1:
                n = min(W, Q)
                d = Q + bh * plane + t * Q
                for j in range(n):
                    buf[uintp(d + j)] = xf[uintp(srow + j)]
                _fill(buf, d + n, Q - n, zero)
            elif sw == 2:
                de = Q + (bh * 2) * plane + t * Q
                _split_columns(xf, srow, W, buf, de, de + plane, Q, zero)
            else:
                for bw in range(sw):
                    d = Q + (bh * sw + bw) * plane + t * Q
                    n = min((W - bw + sw - 1) // sw, Q) if W > bw else 0
                    for j in range(n):
                        buf[uintp(d + j)] = xf[uintp(srow + j * sw + bw)]
                    _fill(buf, d + n, Q - n, zero)


@njit(inline="always")
def _store_phase_rows(obuf, dxf, dbase, H, W, i0, nrows, sh, sw, Q, oplane):
    """dst[i·sh + bh, j·sw + bw] = obuf[ph·oplane + (i − i0)·Q + j] for rows i in
    [i0, i0 + nrows) and every column of the H×W plane dst at dxf[dbase:] (W <= Q·sw)."""
    for t in range(nrows):
        for bh in range(sh):
            h = (i0 + t) * sh + bh
            if h >= H:
                break
            drow = dbase + h * W
            if sw == 1:
                s = bh * oplane + t * Q
                for j in range(W):
                    dxf[uintp(drow + j)] = obuf[uintp(s + j)]
            elif sw == 2:
                se = (bh * 2) * oplane + t * Q
                so = se + oplane
                for j in range(W // 2):
                    dxf[uintp(drow + 2 * j)] = obuf[uintp(se + j)]
                    dxf[uintp(drow + 2 * j + 1)] = obuf[uintp(so + j)]
                if W % 2:
                    dxf[uintp(drow + W - 1)] = obuf[uintp(se + W // 2)]
            else:
                for bw in range(sw):
                    s = (bh * sw + bw) * oplane + t * Q
                    n = (W - bw + sw - 1) // sw if W > bw else 0
                    for j in range(n):
                        dxf[uintp(drow + j * sw + bw)] = obuf[uintp(s + j)]


# ---------------------------------------------------------------- the blocks
# One fused loop per block shape (rows nr, columns nc <= 3), generated: an output loop
# acc[ob + i] (=|+=) Σ_c sel(mask has k_c, Σ_r w_rc·buf[b_r + s_c + i]) and a dot-product
# loop Σ_i sel(mask has k_c, y[i])·buf[b_r + s_c + i] for every (r, c).
_W = ", ".join(f"w{r}{c}" for r in range(3) for c in range(3))


def _block_source(nr, nc):
    def col(c):
        return " + ".join(f"w{r}{c} * buf[uintp(b{r} + s{c} + i)]" for r in range(nr))

    # Each column's sum is computed first, then selected: loads outside the condition, so
    # LLVM selects (a compare and an and) instead of masking the loads.
    cols = "\n".join(f"            c{c} = {col(c)}" for c in range(nc))
    v = " + ".join(f"(c{c} if mf[uintp(k{c} + i)] != zero else zero)" for c in range(nc))
    sums = [f"a{r}{c}" if r < nr and c < nc else "zero" for r in range(3) for c in range(3)]
    # The weight gradient selects each product (not dY before the multiply: 0 · Inf is NaN).
    prods = "\n".join(f"        t{r}{c} = y * buf[uintp(b{r} + s{c} + i)]" for r in range(nr) for c in range(nc))
    dots = "\n".join(f"        a{r}{c} += t{r}{c} if m{c} else zero" for r in range(nr) for c in range(nc))
    ys = "\n".join(f"        m{c} = mf[uintp(k{c} + i)] != zero" for c in range(nc))
    init = " = ".join(f"a{r}{c}" for r in range(nr) for c in range(nc))
    return f"""
def _out_{nr}{nc}(acc, ob, buf, b0, b1, b2, s0, s1, s2, k0, k1, k2, mf, {_W}, L, first, zero):
    if first:
        for i in range(L):
{cols}
            acc[uintp(ob + i)] = {v}
    else:
        for i in range(L):
{cols}
            acc[uintp(ob + i)] += {v}


def _dot_{nr}{nc}(buf, yf, yb, b0, b1, b2, s0, s1, s2, k0, k1, k2, mf, L, zero):
    {init} = zero
    for i in range(L):
        y = yf[uintp(yb + i)]
{prods}
{ys}
{dots}
    return ({", ".join(sums)})
"""


def _dispatch_source(kind, args):
    lines = [f"def _{kind}_block(nr, nc, {args}):"]
    for nr in range(1, 4):
        for nc in range(1, 4):
            lines.append(f"    {'if' if (nr, nc) == (1, 1) else 'elif'} nr == {nr} and nc == {nc}:")
            lines.append(f"        return _{kind}_{nr}{nc}({args})")
    lines.append(f"    return _{kind}_33({args})")
    return "\n".join(lines) + "\n"


def _build_blocks():
    namespace = {"uintp": uintp}
    source = "".join(_block_source(nr, nc) for nr in range(1, 4) for nc in range(1, 4))
    exec(compile(source, "<cpu_depthwise_strips blocks>", "exec"), namespace)
    for name in list(namespace):
        if name.startswith(("_out_", "_dot_")):
            namespace[name] = njit(fastmath=True)(namespace[name])
    out_args = f"acc, ob, buf, b0, b1, b2, s0, s1, s2, k0, k1, k2, mf, {_W}, L, first, zero"
    dot_args = "buf, yf, yb, b0, b1, b2, s0, s1, s2, k0, k1, k2, mf, L, zero"
    exec(compile(_dispatch_source("out", out_args) + _dispatch_source("dot", dot_args),
                 "<cpu_depthwise_strips dispatch>", "exec"), namespace)
    return njit(inline="always")(namespace["_out_block"]), njit(inline="always")(namespace["_dot_block"])


_out_block, _dot_block = _build_blocks()


@njit(inline="always")
def _base(blocks, bi, t, Q, plane):
    return Q + blocks[bi, BASE + 2 * t] * plane + blocks[bi, BASE + 2 * t + 1] * Q


@njit(inline="always")
def _tap_weight(blocks, bi, t, wf, wbase, zero):
    tap = blocks[bi, TAP + t]
    return wf[wbase + tap] if tap >= 0 else zero


@njit(inline="always")
def _run_blocks(acc, abase, oplane, buf, plane, Q, blocks, mf, wf, wbase, L, accumulate, zero):
    """acc[abase + out_ph·oplane + u] (+)= the blocks' taps for u in [0, L)."""
    for bi in range(blocks.shape[0]):
        _out_block(blocks[bi, NR], blocks[bi, NC], acc, abase + blocks[bi, OUT_PH] * oplane, buf,
                   _base(blocks, bi, 0, Q, plane), _base(blocks, bi, 1, Q, plane), _base(blocks, bi, 2, Q, plane),
                   blocks[bi, SHIFT], blocks[bi, SHIFT + 2], blocks[bi, SHIFT + 4],
                   blocks[bi, SHIFT + 1], blocks[bi, SHIFT + 3], blocks[bi, SHIFT + 5], mf,
                   _tap_weight(blocks, bi, 0, wf, wbase, zero), _tap_weight(blocks, bi, 1, wf, wbase, zero),
                   _tap_weight(blocks, bi, 2, wf, wbase, zero), _tap_weight(blocks, bi, 3, wf, wbase, zero),
                   _tap_weight(blocks, bi, 4, wf, wbase, zero), _tap_weight(blocks, bi, 5, wf, wbase, zero),
                   _tap_weight(blocks, bi, 6, wf, wbase, zero), _tap_weight(blocks, bi, 7, wf, wbase, zero),
                   _tap_weight(blocks, bi, 8, wf, wbase, zero),
                   L, blocks[bi, FIRST] != 0 and not accumulate, zero)


# ---------------------------------------------------------------- scheduling
# Numba's OpenMP prange splits the iterations statically, so a call lasts as long as its
# slowest thread: with OMP_WAIT_POLICY=PASSIVE (convcore's default) a worker thread takes
# 0.05-0.2 ms to wake up on a small VM, as long as the whole of a 14x14 layer. So each
# thread (one prange iteration per thread) takes chunks from a shared atomic counter
# until none are left: the threads that start first do more of them. Every output
# element (or weight-gradient channel) is computed by one chunk in a fixed order,
# whichever thread runs it, so the results do not depend on the schedule. (The counter
# comes from the caller: an array allocated inside the parallel function is not shared.)
@intrinsic
def _next_chunk(typingctx, counter):
    """Atomically counter[0] += 1; returns the old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [context.get_constant(types.intp, 0)])
        return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "seq_cst")

    return types.int64(counter), codegen


@njit(inline="always")
def _chunk(c, nchunks, total):
    return c * total // nchunks, (c + 1) * total // nchunks


# ---------------------------------------------------------------- forward
@njit(cache=True)
def _epilogue_strip(of, ob, L, b, relu, zero):
    # Bias and ReLU on a strip still in cache. Not fastmath (its own function, so its own
    # flags): ReLU must keep NaN (NaN < 0 is false), as torch.relu and cpu_direct do.
    if relu:
        for i in range(L):
            v = of[uintp(ob + i)] + b
            of[uintp(ob + i)] = zero if v < zero else v
    else:
        for i in range(L):
            of[uintp(ob + i)] += b


@njit(parallel=True, cache=True, fastmath=True)
def fwd(x, w, out, bias, has_bias, relu, sh, sw, blocks, masks, d_min, d_span, rows, counter, nthreads, zero):
    # One chunk of output planes (n, k) per prange iteration; strips of ``rows`` output rows,
    # computed in place in the output plane, the bias and ReLU applied while in cache.
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    xf, wf, of = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    plane = (rows + d_span) * Q + Q  # one phase plane of the strip, with a row of margin
    total = N * K
    nchunks = min(total, CHUNKS_PER_THREAD * nthreads)
    for _ in prange(nthreads):
        buf = np.zeros(Q + sh * sw * plane, x.dtype)
        while True:
            ch = _next_chunk(counter)
            if ch >= nchunks:
                break
            lo, hi = _chunk(ch, nchunks, total)
            n, k = lo // K, lo % K  # then stepped, not divided, per plane
            for nk in range(lo, hi):
                sbase = (n * C + (k if M == 1 else k // M)) * H * W
                b = bias[k] if has_bias else zero
                for p0 in range(0, P, rows):
                    pb = min(rows, P - p0)
                    L = pb * Q
                    ob = nk * P * Q + p0 * Q
                    _load_phase_rows(xf, sbase, H, W, buf, p0 + d_min, pb + d_span, sh, sw, Q, plane, PREFETCH, zero)
                    _run_blocks(of, ob, 0, buf, plane, Q, blocks, masks, wf, k * R * S, L, False, zero)
                    if blocks.shape[0] == 0:
                        _fill(of, ob, L, zero)
                    if has_bias or relu:
                        _epilogue_strip(of, ob, L, b, relu, zero)
                k += 1
                if k == K:
                    n, k = n + 1, 0


# ---------------------------------------------------------------- input gradient
@njit(parallel=True, cache=True, fastmath=True)
def dgrad(w, dy, dx, sh, sw, blocks, masks, d_min, d_span, rows, empty, counter, nthreads, zero):
    # One chunk of input planes (n, c) per prange iteration; strips of ``rows`` dX phase
    # rows; the M output planes of c accumulate in a fixed order.
    N, C, H, W = dx.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    wf, dyf, dxf = w.reshape(-1), dy.reshape(-1), dx.reshape(-1)
    Hph = (H + sh - 1) // sh
    plane = (rows + d_span) * Q + Q
    oplane = rows * Q
    direct = sh == 1 and sw == 1 and W == Q  # dX rows are the phase rows: accumulate in place
    total = N * C
    nchunks = min(total, CHUNKS_PER_THREAD * nthreads)
    for _ in prange(nthreads):
        buf = np.zeros(Q + plane, dy.dtype)
        obuf = np.zeros(1 if direct else sh * sw * oplane, dy.dtype)
        while True:
            ch = _next_chunk(counter)
            if ch >= nchunks:
                break
            lo, hi = _chunk(ch, nchunks, total)
            n, c = lo // C, lo % C  # then stepped, not divided, per plane
            for nc in range(lo, hi):
                dbase = nc * H * W
                for i0 in range(0, Hph, rows):
                    ib = min(rows, Hph - i0)
                    L = ib * Q
                    acc = dxf if direct else obuf
                    abase = dbase + i0 * Q if direct else 0
                    for m in range(M):
                        k = c * M + m
                        _load_phase_rows(dyf, (n * K + k) * P * Q, P, Q, buf, i0 + d_min, ib + d_span, 1, 1, Q, plane,
                                         PREFETCH, zero)
                        _run_blocks(acc, abase, oplane, buf, plane, Q, blocks, masks, wf, k * R * S, L, m > 0, zero)
                    for e in range(empty.shape[0]):
                        _fill(acc, abase + empty[e] * oplane, L, zero)
                    if not direct:
                        _store_phase_rows(obuf, dxf, dbase, H, W, i0, ib, sh, sw, Q, oplane)
                c += 1
                if c == C:
                    n, c = n + 1, 0


# ---------------------------------------------------------------- weight gradient
@njit(parallel=True, cache=True, fastmath=True)
def wgrad(x, dy, dw_out, sh, sw, blocks, masks, d_min, d_span, rows, counter, nthreads, zero):
    # One chunk of output channels k at a time; per tap a dot product over images and
    # strips in a fixed order (images, then strips: deterministic), summed in float64.
    # Images outermost within a chunk, so the planes x[n, c] and dY[n, k] of a chunk are
    # read in memory order (the prefetcher's and _load_phase_rows' prefetch ahead).
    N, C, H, W = x.shape
    K, _, R, S = dw_out.shape
    P, Q = dy.shape[2], dy.shape[3]
    M = K // C
    xf, dyf = x.reshape(-1), dy.reshape(-1)
    plane = (rows + d_span) * Q + Q
    nchunks = min(K, CHUNKS_PER_THREAD * nthreads)
    RS = R * S
    for _ in prange(nthreads):
        buf = np.zeros(Q + sh * sw * plane, x.dtype)
        tot = np.zeros((K // nchunks + 1) * RS, np.float64)
        while True:
            ch = _next_chunk(counter)
            if ch >= nchunks:
                break
            lo, hi = _chunk(ch, nchunks, K)
            tot[:] = 0.0
            for n in range(N):
                for k in range(lo, hi):
                    sbase = (n * C + k // M) * H * W
                    tb = (k - lo) * RS
                    for p0 in range(0, P, rows):
                        pb = min(rows, P - p0)
                        L = pb * Q
                        _load_phase_rows(xf, sbase, H, W, buf, p0 + d_min, pb + d_span, sh, sw, Q, plane, PREFETCH,
                                         zero)
                        for bi in range(blocks.shape[0]):
                            sums = _dot_block(blocks[bi, NR], blocks[bi, NC], buf, dyf, (n * K + k) * P * Q + p0 * Q,
                                              _base(blocks, bi, 0, Q, plane), _base(blocks, bi, 1, Q, plane),
                                              _base(blocks, bi, 2, Q, plane),
                                              blocks[bi, SHIFT], blocks[bi, SHIFT + 2], blocks[bi, SHIFT + 4],
                                              blocks[bi, SHIFT + 1], blocks[bi, SHIFT + 3], blocks[bi, SHIFT + 5],
                                              masks, L, zero)
                            for t in range(9):
                                tap = blocks[bi, TAP + t]
                                if tap >= 0:
                                    tot[tb + tap] += sums[t]
            for k in range(lo, hi):
                for t in range(RS):
                    dw_out[k, 0, t // S, t % S] = tot[(k - lo) * RS + t]


# ---------------------------------------------------------------- launchers
def _geom(geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom.stride, geom.padding, geom.dilation
    return sh, sw, pt, pl, dh, dw


def launch_fwd(x, w, b, out, geom, relu):
    sh, sw, pt, pl, dh, dw = _geom(geom)
    blocks, masks, d_min, d_span, rows, _ = plan("fwd", geom.R, geom.S, sh, sw, pt, pl, dh, dw,
                                                geom.Q, geom.P, out.dtype.itemsize)
    zero = out.dtype.type(0)
    has_bias = b is not None
    fwd(x, w, out, b if has_bias else out.reshape(-1)[:1], has_bias, relu, sh, sw, blocks, masks,
        d_min, d_span, rows, np.zeros(1, np.int64), get_num_threads(), zero)


def launch_dgrad(w, dy, dx, geom):
    sh, sw, pt, pl, dh, dw = _geom(geom)
    hph = -(-geom.H // sh)
    blocks, masks, d_min, d_span, rows, empty = plan("dgrad", geom.R, geom.S, sh, sw, pt, pl, dh, dw,
                                                     geom.Q, hph, dx.dtype.itemsize)
    dgrad(w, dy, dx, sh, sw, blocks, masks, d_min, d_span, rows, empty, np.zeros(1, np.int64), get_num_threads(),
          dx.dtype.type(0))


def launch_wgrad(x, dy, dw_out, geom):
    sh, sw, pt, pl, dh, dw = _geom(geom)
    blocks, masks, d_min, d_span, rows, _ = plan("wgrad", geom.R, geom.S, sh, sw, pt, pl, dh, dw,
                                                geom.Q, geom.P, dw_out.dtype.itemsize)
    wgrad(x, dy, dw_out, sh, sw, blocks, masks, d_min, d_span, rows, np.zeros(1, np.int64),
          get_num_threads(), dw_out.dtype.type(0))
