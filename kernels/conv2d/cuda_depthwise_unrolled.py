"""Depthwise conv2d (C/groups == 1) on CUDA with the filter size, stride and dilation compiled in.

The ``depthwise_unrolled`` variant: the same plane/tile decomposition as cuda_depthwise, but each kernel is
compiled per (dtype, R, S, stride, dilation, tile), so every tap loop is unrolled, the taps' window offsets
are constants, the R·S weights (forward) or the R·S partial sums (weight gradient) live in registers, and the
shared-memory window is sized exactly. Index names as in cuda.py.
- forward: blockIdx.x = plane (n, k), blockIdx.y = a (TY·V)×TX tile of its output; thread (ty, tx) computes
  the V vertically adjacent outputs (p0 + ty·V + v, q0 + tx), v < V: consecutive threads → consecutive q, so
  the loads and stores of a warp are coalesced. The block stages the input window of its tile (tile + halo,
  zero outside the padding) in shared memory with a row × column loop (no division per element); each thread
  then reads each window row its V outputs need once, S values of it, and adds them into every output that
  uses that row (window rows shared by vertically adjacent outputs are read once, not R times).
  Bias and ReLU are fused in the epilogue (NaN passes the ReLU, as torch.relu).
- input gradient: blockIdx.x = plane (n, c), blockIdx.y = a (TY·V)×TX tile of dX, thread (ty, tx) → the V
  outputs (h0 + ty·V + v, w0 + tx); for each of the K/groups output channels of c the block stages the dY
  window the tile gathers from and the R·S weights go to registers; each output adds the taps whose
  (h + pt − r·dh) / sh and (w + pl − s·dw) / sw are exact (no test at all at stride 1).
- weight gradient: blockIdx.x = k, blockIdx.y = a split of the N·P output rows; thread (tr, tq) takes rows
  row0 + tr, row0 + tr + RT, … and columns tq, tq + QT, … of them (QT consecutive q per warp: coalesced dY
  loads) and adds dY[n, k, p, q]·X[n, c, h, w] into R·S register sums in ONE pass; then one fixed-order tree
  in shared memory (``sums[tap, thread]``, a barrier per level for all taps together) adds the threads'
  sums, and threads 0 … R·S − 1 write partial[split, k, 0, r, s]. The launcher's ordered sum over splits
  finishes it: deterministic, no atomics.
Index arithmetic is 32-bit as in cuda_igemm (the launchers check every tensor has < 2**31 elements).
"""
from __future__ import annotations

from numba import cuda

from convcore._backend import cuda_simulated

from .cuda_igemm import const32, i32, u32

MAX_FWD_TAPS = 49  # 7×7: the weights stay in registers
MAX_DGRAD_TAPS = 25  # 5×5: the input gradient reloads its weights per output channel (registers)
MAX_WGRAD_TAPS = 25  # 5×5: sums[taps, threads] of float64 within the 48 KB of static shared memory
MAX_SMEM = 48 * 1024
# Threads per block: 256 (forward) and 128 (weight gradient) on a GPU; a handful in the simulator,
# which runs every thread in Python.
FWD_THREADS = 8 if cuda_simulated() else 256
WGRAD_THREADS = 4 if cuda_simulated() else 128


def fwd_tile(P, Q):
    """(TY, TX, V) for a P×Q output plane: a warp-wide row of threads unless the plane is narrow, and up
    to 4 outputs per thread down the columns unless the plane is short."""
    if cuda_simulated():
        TX = 4 if Q > 2 else 2
    else:
        TX = 32 if Q > 16 else 16 if Q > 8 else 8
    TY = FWD_THREADS // TX
    V = 1 if P <= TY else 2 if P <= 2 * TY else 4
    return TY, TX, V


def bwd_data_tile(H, W, R, S, stride):
    """The input gradient's (TY, TX, V): as the forward's for an H×W plane, but at most 2 outputs per
    thread when strided (each output's taps are chosen at run time there) and 1 above 3×3 taps: registers
    (5×5 float64 on sm_80: 160 with 4 outputs, 128 with 1 or 2 — ptxas spends what it is allowed)."""
    TY, TX, V = fwd_tile(H, W)
    if R * S > 9:
        return TY, TX, 1
    return (TY, TX, V) if stride == (1, 1) else (TY, TX, min(V, 2))


def fwd_window(R, S, stride, dilation, tile):
    """(rows, columns) of the input window one forward tile reads."""
    TY, TX, V = tile
    return (TY * V - 1) * stride[0] + (R - 1) * dilation[0] + 1, (TX - 1) * stride[1] + (S - 1) * dilation[1] + 1


def wgrad_tile(Q):
    """(RT, QT): QT threads along q (a warp unless the plane is narrow), RT rows."""
    QT = (2 if Q > 1 else 1) if cuda_simulated() else 32 if Q > 16 else 16 if Q > 8 else 8
    return WGRAD_THREADS // QT, QT


def unrolled_fits(direction, geom) -> bool:
    """Whether the ``depthwise_unrolled`` kernels apply (the caller checks C/groups == 1 and 32-bit sizes)."""
    taps = geom.R * geom.S
    if direction == "forward":
        tile = fwd_tile(geom.P, geom.Q)
        rows, cols = fwd_window(geom.R, geom.S, geom.stride, geom.dilation, tile)
        tiles = -(-geom.P // (tile[0] * tile[2])) * -(-geom.Q // tile[1])
        return taps <= MAX_FWD_TAPS and rows * cols * 8 <= MAX_SMEM and tiles <= 65535
    if direction == "input":
        tile = bwd_data_tile(geom.H, geom.W, geom.R, geom.S, geom.stride)
        rows, cols = bwd_data_window(geom.R, geom.S, geom.stride, geom.dilation, tile)
        tiles = -(-geom.H // (tile[0] * tile[2])) * -(-geom.W // tile[1])
        return taps <= MAX_DGRAD_TAPS and rows * cols * 8 <= MAX_SMEM and tiles <= 65535
    return taps <= MAX_WGRAD_TAPS


def bwd_data_window(R, S, stride, dilation, tile):
    """(rows, columns) of the dY window one input-gradient tile gathers from."""
    TY, TX, V = tile
    return (TY * V - 1 + (R - 1) * dilation[0]) // stride[0] + 2, (TX - 1 + (S - 1) * dilation[1]) // stride[1] + 2


def make_fwd_depthwise_unrolled(dt, R, S, stride, dilation, tile):
    (SH_, SW_), (DH_, DW_) = stride, dilation
    TY_, TX_, V_ = tile
    WH_, WW_ = fwd_window(R, S, stride, dilation, tile)
    ROWS_ = (V_ - 1) * SH_ + (R - 1) * DH_ + 1  # the window rows one thread's V outputs read
    TAPS = R * S
    TY, TX, V, BY = const32(TY_), const32(TX_), const32(V_), const32(TY_ * V_)
    SH, SW, WH, WW, ZERO = const32(SH_), const32(SW_), const32(WH_), const32(WW_), const32(0)

    def conv2d_fwd_depthwise_unrolled_kernel(x, w, b, has_bias, relu, out, pt, pl, groups):
        H, W = i32(x.shape[2]), i32(x.shape[3])
        K = i32(w.shape[0])
        P, Q = i32(out.shape[2]), i32(out.shape[3])
        pt, pl = i32(pt), i32(pl)
        Kg = i32(u32(K) // u32(groups))
        plane = i32(cuda.blockIdx.x)
        n = i32(u32(plane) // u32(K))
        k = i32(u32(plane) % u32(K))
        c = i32(u32(k) // u32(Kg))
        tiles_x = i32(u32(Q + TX - 1) // u32(TX))
        p0 = i32(i32(u32(cuda.blockIdx.y) // u32(tiles_x)) * BY)
        q0 = i32(i32(u32(cuda.blockIdx.y) % u32(tiles_x)) * TX)
        h0 = i32(p0 * SH - pt)
        w0 = i32(q0 * SW - pl)
        tid = i32(cuda.threadIdx.x)
        ty = i32(u32(tid) // u32(TX))
        tx = i32(u32(tid) % u32(TX))
        window = cuda.shared.array((WH_, WW_), dt)
        for i in range(ty, WH, TY):
            h = i32(h0 + i)
            inside = h >= 0 and h < H
            for j in range(tx, WW, TX):
                col = i32(w0 + j)
                v = dt(0)
                if inside and col >= 0 and col < W:
                    v = x[n, c, h, col]
                window[i, j] = v
        weights = cuda.local.array(TAPS, dt)
        for r in range(R):
            for s in range(S):
                weights[r * S + s] = w[k, ZERO, r, s]
        acc = cuda.local.array(V_, dt)
        for v in range(V_):
            acc[v] = dt(0)
        row0 = i32(ty * i32(V * SH))
        col0 = i32(tx * SW)
        cuda.syncthreads()
        # Window row row0 + i feeds output v through tap r = (i − v·SH) / DH when that is an integer in
        # [0, R): all constants once the loops are unrolled.
        for i in range(ROWS_):
            for s in range(S):
                value = window[i32(row0 + i), i32(col0 + s * DW_)]
                for v in range(V_):
                    d = i - v * SH_
                    if d >= 0 and d % DH_ == 0 and d // DH_ < R:
                        acc[v] += value * weights[(d // DH_) * S + s]
        q = i32(q0 + tx)
        bias = dt(0)
        if has_bias:
            bias = b[k]
        for v in range(V_):
            p = i32(p0 + i32(ty * V) + v)
            if p < P and q < Q:
                result = acc[v]
                if has_bias:
                    result += bias
                if relu and result < dt(0):
                    result = dt(0)
                out[n, k, p, q] = result

    return conv2d_fwd_depthwise_unrolled_kernel


def make_bwd_data_depthwise_unrolled(dt, R, S, stride, dilation, tile):
    (SH_, SW_), (DH_, DW_) = stride, dilation
    TY_, TX_, V_ = tile
    WH_, WW_ = bwd_data_window(R, S, stride, dilation, tile)
    TAPS = R * S
    TY, TX, V, BY = const32(TY_), const32(TX_), const32(V_), const32(TY_ * V_)
    SH, SW, WH, WW, ZERO = const32(SH_), const32(SW_), const32(WH_), const32(WW_), const32(0)

    def conv2d_bwd_data_depthwise_unrolled_kernel(w, dy, dx, pt, pl, groups):
        C, H, W = i32(dx.shape[1]), i32(dx.shape[2]), i32(dx.shape[3])
        K = i32(w.shape[0])
        P, Q = i32(dy.shape[2]), i32(dy.shape[3])
        pt, pl = i32(pt), i32(pl)
        Kg = i32(u32(K) // u32(groups))
        plane = i32(cuda.blockIdx.x)
        n = i32(u32(plane) // u32(C))
        c = i32(u32(plane) % u32(C))
        tiles_x = i32(u32(W + TX - 1) // u32(TX))
        h0 = i32(i32(u32(cuda.blockIdx.y) // u32(tiles_x)) * BY)
        w0 = i32(i32(u32(cuda.blockIdx.y) % u32(tiles_x)) * TX)
        # The dY window: rows p_lo … p_lo + WH − 1 hold every p a row of the tile gathers from (floor
        # divisions: the numerators may be negative).
        p_lo = i32(i32(h0 + pt - (R - 1) * DH_) // SH)
        q_lo = i32(i32(w0 + pl - (S - 1) * DW_) // SW)
        tid = i32(cuda.threadIdx.x)
        ty = i32(u32(tid) // u32(TX))
        tx = i32(u32(tid) % u32(TX))
        # Relative to the window's first row / column, output (h, w) gathers tap (r, s) from
        # ((h + pt − r·dh) − p_lo·sh) / sh: non-negative, so unsigned divisions by the constant strides.
        h_rel = i32(h0 + i32(ty * V) + pt - p_lo * SH)
        w_rel = i32(w0 + tx + pl - q_lo * SW)
        window = cuda.shared.array((WH_, WW_), dt)
        weights = cuda.local.array(TAPS, dt)
        acc = cuda.local.array(V_, dt)
        for v in range(V_):
            acc[v] = dt(0)
        for m in range(ZERO, Kg):
            k = i32(c * Kg + m)
            cuda.syncthreads()  # the previous channel's window is no longer read
            for i in range(ty, WH, TY):
                p = i32(p_lo + i)
                inside = p >= 0 and p < P
                for j in range(tx, WW, TX):
                    q = i32(q_lo + j)
                    value = dt(0)
                    if inside and q >= 0 and q < Q:
                        value = dy[n, k, p, q]
                    window[i, j] = value
            for r in range(R):
                for s in range(S):
                    weights[r * S + s] = w[k, ZERO, r, s]
            cuda.syncthreads()
            for s in range(S):
                qw = i32(w_rel - s * DW_)
                qi = i32(u32(qw) // u32(SW))
                if SW_ == 1 or qi * SW == qw:  # out-of-range p, q are zeros of the window
                    for v in range(V_):
                        for r in range(R):
                            ph = i32(h_rel + v - r * DH_)
                            pi = i32(u32(ph) // u32(SH))
                            if SH_ == 1 or pi * SH == ph:
                                acc[v] += window[pi, qi] * weights[r * S + s]
        x_col = i32(w0 + tx)
        for v in range(V_):
            h = i32(h0 + i32(ty * V) + v)
            if h < H and x_col < W:
                dx[n, c, h, x_col] = acc[v]

    return conv2d_bwd_data_depthwise_unrolled_kernel


def make_bwd_weight_depthwise_unrolled(dt, R, S, stride, dilation, tile):
    (SH_, SW_), (DH_, DW_) = stride, dilation
    RT_, QT_ = tile
    NT_, TAPS = RT_ * QT_, R * S
    RT, QT, NT, HALF, TAPS_, ZERO = (const32(v) for v in (RT_, QT_, NT_, NT_ // 2, R * S, 0))
    SH, SW = const32(SH_), const32(SW_)

    def conv2d_bwd_weight_depthwise_unrolled_kernel(x, dy, partial, rows_per_split, pt, pl, groups):
        H, W = i32(x.shape[2]), i32(x.shape[3])
        K = i32(partial.shape[1])
        P, Q = i32(dy.shape[2]), i32(dy.shape[3])
        pt, pl = i32(pt), i32(pl)
        Kg = i32(u32(K) // u32(groups))
        k = i32(cuda.blockIdx.x)
        split = i32(cuda.blockIdx.y)
        c = i32(u32(k) // u32(Kg))
        row0 = i32(split * i32(rows_per_split))
        row_end = i32(min(i32(row0 + i32(rows_per_split)), i32(i32(x.shape[0]) * P)))
        tid = i32(cuda.threadIdx.x)
        tr = i32(u32(tid) // u32(QT))
        tq = i32(u32(tid) % u32(QT))
        acc = cuda.local.array(TAPS, dt)
        for t in range(TAPS):
            acc[t] = dt(0)
        for row in range(i32(row0 + tr), row_end, RT):
            n = i32(u32(row) // u32(P))
            p = i32(row - n * P)
            top = i32(p * SH - pt)
            for q in range(tq, Q, QT):
                g = dy[n, k, p, q]
                left = i32(q * SW - pl)
                for r in range(R):
                    h = i32(top + r * DH_)
                    if h >= 0 and h < H:
                        for s in range(S):
                            col = i32(left + s * DW_)
                            if col >= 0 and col < W:
                                acc[r * S + s] += g * x[n, c, h, col]
        sums = cuda.shared.array((TAPS, NT_), dt)
        for t in range(TAPS):
            sums[t, tid] = acc[t]
        cuda.syncthreads()
        stride = HALF
        while stride > 0:  # a fixed-order tree for all taps at once: the same sums every run
            if tid < stride:
                for t in range(TAPS):
                    sums[t, tid] += sums[t, i32(tid + stride)]
            cuda.syncthreads()
            stride = i32(u32(stride) // u32(2))
        for t in range(tid, TAPS_, NT):  # NT may be below R·S (the simulator's blocks)
            partial[split, k, ZERO, i32(u32(t) // u32(S)), i32(u32(t) % u32(S))] = sums[t, 0]

    return conv2d_bwd_weight_depthwise_unrolled_kernel
