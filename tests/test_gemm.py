"""convcore's float32 GEMM (kernels.gemm.cpu) against a float64 NumPy product: every
blocking edge (register tile 12×32, KC/MC/NC blocks, row/column/k splits), operand layouts
(transposed views, broadcast batches) and the switch between it and BLAS."""
import numpy as np
import pytest
from convcore.kernels import host
from convcore.kernels.gemm import cpu as gemm

RTOL = 2e-6  # relative to max |C|: float32 accumulation over up to a few thousand terms


@pytest.fixture(autouse=True, params=["wide", "narrow"])
def tile(request, monkeypatch):
    """Every test with both register tiles on every host: 12×32 (AVX-512) and the narrow
    6×16 (hosts with 16 vector registers; on AVX-512 the same arithmetic)."""
    monkeypatch.setattr(gemm, "narrow_tile", lambda: request.param == "narrow")
    return request.param


def _check(a, b, out):
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = max(np.abs(ref).max(), 1.0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=RTOL * scale * np.sqrt(a.shape[-1]))


def _operands(rng, a_shape, b_shape):
    return (rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32))


@pytest.mark.parametrize("batch,a_batch,M,K,N", [
    (1, 1, 1, 1, 1),
    (3, 3, 13, 7, 33),      # tails in every direction, K shorter than one FMA loop unroll
    (2, 1, 31, 200, 65),    # broadcast A, K past KC in one slice (K <= KC_ONE)
    (2, 1, 31, 300, 65),    # broadcast A, K across two KC slices (accumulate path)
    (1, 1, 193, 385, 31),   # M across an MC block, K across three slices, N under one sliver
    (4, 1, 25, 5, 500),
    (1, 1, 12, 64, 2080),   # N across an NC panel, exact 12-row tile
    (2, 2, 18, 230, 48),    # exact narrow tiles (6 rows, 16 columns), K across two slices
])
def test_sgemm_matches_float64_product(rng, batch, a_batch, M, K, N):
    a, b = _operands(rng, (a_batch, M, K), (batch, K, N))
    out = np.full((batch, M, N), np.nan, np.float32)
    gemm.sgemm(a, b, out)
    _check(a, b, out)


@pytest.mark.parametrize("a_layout,prepack_limit", [("rows", gemm._PREPACK_LIMIT), ("columns", gemm._PREPACK_LIMIT),
                                                     ("columns", 0)])
@pytest.mark.parametrize("blocks", [(12, 32, 1), (24, 64, 2), (36, 40, 3), (13, 33, 1)])
def test_sgemm_forced_splits(rng, monkeypatch, blocks, a_layout, prepack_limit):
    # Row and column blocks (tasks packing their own B) and split-K with partial buffers;
    # (13, 33) is rounded up to tile multiples. A row-major A is read in place (its last 2
    # rows packed); a column-major one is packed once up front, or (limit 0) block by block
    # inside every task.
    monkeypatch.setattr(gemm, "_PREPACK_LIMIT", prepack_limit)
    a, b = _operands(rng, (1, 50, 1000), (2, 1000, 70))
    if a_layout == "columns":
        a = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
    out = np.full((2, 50, 70), np.nan, np.float32)
    gemm.sgemm(a, b, out, blocks=blocks)
    _check(a, b, out)


@pytest.mark.parametrize("K", [gemm.KC + 1, gemm.KC_ONE, gemm.KC_ONE + 1])
@pytest.mark.parametrize("a_layout", ["rows", "aliased", "columns"])
@pytest.mark.parametrize("blocks", [None, (12, 32, 2)])
def test_sgemm_one_slice_up_to_kc_one(rng, K, a_layout, blocks):
    # A reduction of at most KC_ONE runs as one slice, even when a k split is asked for
    # (the packed A's layout has no slice boundary to split at); one more and it is cut in
    # KC slices again. A read in place, packed up front (rows 4 KB apart) or per block.
    width = 1024 if a_layout == "aliased" else K
    a = rng.standard_normal((1, 2 * gemm.MR + 7, width)).astype(np.float32)[:, :, :K]
    if a_layout == "columns":
        a = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
    b = rng.standard_normal((3, K, 2 * gemm.NR + 5)).astype(np.float32)
    out = np.full((3, a.shape[1], b.shape[2]), np.nan, np.float32)
    gemm.sgemm(a, b, out, blocks=blocks)
    _check(a, b, out)


@pytest.mark.parametrize("tail", range(1, gemm.MR))
@pytest.mark.parametrize("b_layout", ["rows", "columns"])
def test_sgemm_every_short_last_sliver(rng, tail, b_layout):
    # A last sliver of 1..11 rows: 1-4 run _micro4, 5-8 _micro8 (straight into C, only their
    # rows written), 9-11 the 12-row tile through the edge tile. K spans two KC slices (the
    # accumulating pass); B read in place (row-major, short rows) or packed (column-major);
    # N ends in a partial sliver. The row past the product (NaN) must stay untouched.
    M, K, N = 2 * gemm.MR + tail, gemm.KC_ONE + 9, 2 * gemm.NR + 5
    a, b = _operands(rng, (1, M, K), (2, K, N))
    if b_layout == "columns":
        b = np.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)
    full = np.full((2, M + 1, N), np.nan, np.float32)
    out = full[:, :M]
    gemm.sgemm(a, b, out)
    _check(a, b, out)
    assert np.isnan(full[:, M]).all()


@pytest.mark.parametrize("tail", [1, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("a_layout", ["rows", "aliased", "columns"])
def test_sgemm_every_short_last_column_sliver(rng, tail, a_layout):
    # A last column sliver of 1..8 columns against packed A slivers runs _micro_tail (4
    # columns a pass, transposed); 9 takes _micro16. A row-major A is read in place (only its
    # edge rows packed; full slivers keep the 12×16 tile), rows 4 KB apart or a column-major
    # A come packed. K spans two KC slices; M ends in a short sliver. The column past C
    # (NaN) must stay untouched.
    M, K, N = 2 * gemm.MR + 5, gemm.KC_ONE + 9, gemm.NR + tail
    width = 1024 if a_layout == "aliased" else K
    a = rng.standard_normal((1, M, width)).astype(np.float32)[:, :, :K]
    b = rng.standard_normal((3, K, N)).astype(np.float32)
    if a_layout == "columns":
        a = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
    full = np.full((3, M, N + 1), np.nan, np.float32)
    out = full[:, :, :N]
    gemm.sgemm(a, b, out)
    _check(a, b, out)
    assert np.isnan(full[:, :, N]).all()


@pytest.mark.parametrize("M", [gemm._B_IN_PLACE_ROWS - 7, gemm._B_IN_PLACE_ROWS + 13])
@pytest.mark.parametrize("b_layout", ["rows", "columns"])
@pytest.mark.parametrize("N", [3 * gemm.NR + 5, gemm._B_IN_PLACE_STRIDE // 4 + 2 * gemm.NR + 5])
@pytest.mark.parametrize("K", [gemm._SHORT_K - 3, gemm.KC_ONE + 29])
@pytest.mark.parametrize("cpu", ["skylake-avx512", "znver4"])
def test_sgemm_b_read_in_place_or_packed(rng, M, b_layout, N, K, cpu, monkeypatch):
    # Up to _B_IN_PLACE_ROWS rows of C per task a row-major B's full 32-column slivers are
    # read in place (only the partial last one packed), if its rows are at most
    # _B_IN_PLACE_STRIDE bytes long and, on Zen 4, the slices at most _SHORT_K deep;
    # otherwise, or column-major, B is packed. K in one short slice or over two KC slices
    # (the accumulating pass), N ends in a partial sliver; both hosts' rules on any host.
    monkeypatch.setattr(gemm.host, "cpu_name", lambda: cpu)
    a, b = _operands(rng, (1, M, K), (2, K, N))
    if b_layout == "columns":
        b = np.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)
    out = np.full((2, M, b.shape[2]), np.nan, np.float32)
    gemm.sgemm(a, b, out, blocks=(M, b.shape[2], 1))
    _check(a, b, out)


def test_b_in_place_depth_by_host(monkeypatch):
    # Zen 4 reads a row-major B in place only in short reductions; other hosts up to KC_MAX.
    monkeypatch.setattr(gemm.host, "cpu_name", lambda: "znver4")
    assert gemm._b_in_place_depth() == gemm._SHORT_K
    monkeypatch.setattr(gemm.host, "cpu_name", lambda: "znver5")
    assert gemm._b_in_place_depth() == gemm.KC_MAX


@pytest.mark.parametrize("N", [16, 48, 40, 7])
@pytest.mark.parametrize("a_layout", ["rows", "columns"])
def test_sgemm_sixteen_column_tails(rng, N, a_layout):
    # A panel's last 1..16 columns go to the 12×16 kernel: straight into C at exactly 16,
    # through the edge tile below; rows read in place and packed (25 = 2·12 + 1), K over
    # two slices (the accumulating pass).
    a, b = _operands(rng, (2, 25, gemm.KC_ONE + 3), (2, gemm.KC_ONE + 3, N))
    if a_layout == "columns":
        a = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)
    out = np.full((2, 25, N), np.nan, np.float32)
    gemm.sgemm(a, b, out)
    _check(a, b, out)


def test_sgemm_rows_4k_apart_are_packed(rng):
    # Row-major A and B whose rows lie 4 KB apart (1024 floats) are packed rather than read
    # in place (their rows would share one L1 set); K over several slices, edge rows.
    a, b = _operands(rng, (1, 25, 1024), (2, 1024, 1024))
    assert (a.strides[1] % gemm._SET_STRIDE, b.strides[1] % gemm._SET_STRIDE) == (0, 0)
    out = np.full((2, 25, 1024), np.nan, np.float32)
    gemm.sgemm(a, b, out)
    _check(a, b, out)


def test_sgemm_shared_4k_apart_a_packed_once(rng, monkeypatch):
    # A row-major A with rows 4 KB apart, shared by the batch (a weight), is packed once up
    # front; B's full slivers are then read in place (under _B_IN_PLACE_ROWS rows), the
    # full 12-row tiles straight into C, the last 5 rows and 7 columns through the edge
    # tile; K over two slices (the accumulating pass).
    compiled = "_compiled_narrow" if gemm.narrow_tile() else "_compiled"
    pack, kernel = getattr(gemm, compiled)()
    packs = []
    monkeypatch.setattr(gemm, compiled, lambda: (lambda a, ap: packs.append(a.shape) or pack(a, ap), kernel))
    a, b = _operands(rng, (1, 29, 1024), (3, 1024, 2 * gemm.NR + 7))
    assert a.strides[1] % gemm._SET_STRIDE == 0 and b.strides[1] % gemm._SET_STRIDE != 0
    out = np.full((3, 29, b.shape[2]), np.nan, np.float32)
    gemm.sgemm(a, b, out)
    _check(a, b, out)
    assert packs == [a.shape]


def test_split_gives_enough_tasks_for_the_threads():
    m_block, n_block, k_split = gemm._split(1, 64, 576, 401408, 2)
    tasks = -(-64 // m_block) * -(-576 // n_block) * k_split
    assert tasks >= 4
    assert m_block in (64,) or m_block % gemm.MR == 0  # one block, or tile multiples
    assert n_block in (576,) or n_block % gemm.NR == 0
    assert gemm._split(8, 256, 196, 1024, 2) == (256, 196, 1)  # the batch alone is enough
    m_block, n_block, k_split = gemm._split(1, 5, 20, 3000, 2)  # too small to split rows/columns
    assert (m_block, n_block) == (5, 20) and k_split == 2


def test_split_keeps_whole_rows_when_the_threads_divide_the_batch(rng):
    # batch 2 on 2 threads: one matrix per thread already, so rows and the reduction stay
    # whole (two row blocks would each pack the same B); columns still split, and a batch
    # the threads do not divide splits rows as before. The products through it are right.
    assert gemm._split(2, 256, 196, 1024, 2) == (256, 196, 1)
    assert gemm._split(3, 256, 196, 1024, 2)[0] < 256
    assert gemm._split(2, 12, 32, 401408, 2)[2] == 1
    assert gemm._split(1, 12, 32, 401408, 2)[2] > 1
    assert gemm._split(2, 512, 784, 256, 2)[1] < 784
    for batch in (2, 3):
        a, b = _operands(rng, (1, 2 * gemm.MR + 5, 300), (batch, 300, gemm.NR + 7))
        out = np.full((batch, a.shape[1], b.shape[2]), np.nan, np.float32)
        gemm.sgemm(a, b, out)
        _check(a, b, out)


def test_short_reductions_split_rows_into_balanced_blocks(rng, monkeypatch):
    # K <= _SHORT_K: row blocks of at most _SHORT_K_ROWS rows, tile multiples, balanced
    # (64 rows: 36 + 28, not 48 + 16); a longer K keeps whole rows. The product through
    # such a split (a ragged last block, edge rows and columns) is still right.
    monkeypatch.setattr(gemm.host, "cpu_name", lambda: "skylake-avx512")
    K = gemm._SHORT_K
    assert gemm._split(36, 64, 3136, K, 2)[0] == 36
    assert gemm._split(8, 256, 3136, K, 2)[0] == 48
    assert gemm._split(8, 256, 3136, K + 1, 2)[0] == 256
    a, b = _operands(rng, (3, 61, K - 5), (3, K - 5, 2 * gemm.NR + 9))
    out = np.full((3, 61, b.shape[2]), np.nan, np.float32)
    assert gemm._split(3, 61, b.shape[2], K - 5, 2)[0] == 36
    gemm.sgemm(a, b, out)
    _check(a, b, out)


def test_short_reductions_keep_whole_rows_on_the_hosts_measured_so(rng, monkeypatch):
    # On _WHOLE_ROWS_HOSTS (AMD Zen 4) short reductions of _WHOLE_ROWS_MIN rows or more keep
    # whole row blocks like long ones (fewer rows still split); the product through that
    # split is still right.
    monkeypatch.setattr(gemm.host, "cpu_name", lambda: "znver4")
    K, M = gemm._SHORT_K, gemm._WHOLE_ROWS_MIN + 5
    assert gemm._split(36, 64, 3136, K, 2)[0] == 36
    assert gemm._split(8, 256, 3136, K, 2)[0] == 256
    a, b = _operands(rng, (4, M, K - 5), (4, K - 5, 2 * gemm.NR + 9))
    out = np.full((4, M, b.shape[2]), np.nan, np.float32)
    assert gemm._split(4, M, b.shape[2], K - 5, 2)[0] == M
    gemm.sgemm(a, b, out)
    _check(a, b, out)


@pytest.mark.parametrize("T", [1, 2])
def test_sgemm_sum_adds_the_products_of_each_batch(rng, T):
    # out[t] = Σ_r a[t, r] @ b[t, r]: B a transposed view (a weight gradient's X[n]ᵀ), A a
    # strided view; K over two KC slices, edge rows and columns, several tasks per t.
    a = rng.standard_normal((T, 3, 2 * gemm.MR + 5, 2 * gemm.KC + 7)).astype(np.float32)[:, :, :, 3:]
    b = rng.standard_normal((T, 3, 3 * gemm.NR + 9, 2 * gemm.KC + 4)).astype(np.float32).transpose(0, 1, 3, 2)
    out = np.full((T, a.shape[2], b.shape[3]), np.nan, np.float32)
    gemm.sgemm_sum(a, b, out)
    expected = np.einsum("trmk,trkn->tmn", a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.sqrt(3 * a.shape[3]))


def test_matmul_transposed_and_broadcast_operands(rng):
    # The conv kernels' products: Wᵀ views, a broadcast weight batch, a transposed B
    # (the weight gradient's col matrix), 2-D operands (linear).
    w = rng.standard_normal((3, 20, 45)).astype(np.float32)
    x = rng.standard_normal((4, 3, 20, 37)).astype(np.float32)
    out = np.full((4, 3, 45, 37), np.nan, np.float32)
    gemm.matmul(w.transpose(0, 2, 1)[None], x, out=out)
    _check(w.transpose(0, 2, 1)[None], x, out)
    col = rng.standard_normal((3, 50, 300)).astype(np.float32)
    dy = rng.standard_normal((3, 7, 300)).astype(np.float32)
    got = gemm.matmul(dy, col.transpose(0, 2, 1))
    _check(dy, col.transpose(0, 2, 1), got)
    a, b = _operands(rng, (17, 40), (29, 40))
    got = gemm.matmul(a, b.T)
    assert got.shape == (17, 29)
    _check(a, b.T, got)


def test_matmul_sends_float32_to_sgemm_and_float64_to_numpy(rng, monkeypatch):
    calls = []
    real = gemm.sgemm
    monkeypatch.setattr(gemm, "sgemm", lambda *args, **kw: calls.append(args[2].shape) or real(*args, **kw))
    monkeypatch.setattr(gemm, "enabled", lambda winograd=False: True)
    a, b = _operands(rng, (6, 9), (9, 5))
    gemm.matmul(a, b)
    assert calls == [(1, 6, 5)]
    got = gemm.matmul(a.astype(np.float64), b.astype(np.float64))
    assert calls == [(1, 6, 5)] and got.dtype == np.float64
    _check(a, b, got)


def test_conv2d_gemm_algorithm_goes_through_sgemm(rng, monkeypatch):
    import convcore

    calls = []
    real = gemm.sgemm
    monkeypatch.setattr(gemm, "sgemm", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    monkeypatch.setattr(gemm, "enabled", lambda winograd=False: True)
    x = rng.standard_normal((2, 5, 9, 9)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    y = convcore.conv2d(x, w, padding=1, algorithm="gemm", backend="cpu")
    assert calls
    ref = convcore.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, backend="numpy")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value,expected", [("blas", False), ("convcore", True), ("BLAS ", False)])
def test_cpu_gemm_environment_switch(monkeypatch, value, expected):
    monkeypatch.setenv("CONVCORE_CPU_GEMM", value)
    gemm.enabled.cache_clear()
    try:
        assert gemm.enabled() is expected
    finally:
        gemm.enabled.cache_clear()


def test_cpu_gemm_environment_switch_rejects_unknown(monkeypatch):
    monkeypatch.setenv("CONVCORE_CPU_GEMM", "mkl")
    gemm.enabled.cache_clear()
    try:
        with pytest.raises(ValueError, match="CONVCORE_CPU_GEMM='mkl'"):
            gemm.enabled()
    finally:
        gemm.enabled.cache_clear()


def test_auto_follows_the_host_cpu(monkeypatch):
    monkeypatch.delenv("CONVCORE_CPU_GEMM", raising=False)
    for has_avx512 in (False, True):
        monkeypatch.setattr(host, "avx512", lambda v=has_avx512: v)
        gemm.enabled.cache_clear()
        assert gemm.enabled() is has_avx512
    gemm.enabled.cache_clear()


def test_auto_without_avx512_sends_only_winograds_products_to_sgemm(rng, monkeypatch):
    # On AVX2 hosts the narrow tile runs Winograd's batched products (forward and input
    # gradient); im2col + GEMM's single products stay with BLAS, and so does everything
    # under CONVCORE_CPU_GEMM=blas.
    import convcore

    calls = []
    real = gemm.sgemm
    monkeypatch.setattr(gemm, "sgemm", lambda *args, **kw: calls.append(args[2].shape) or real(*args, **kw))
    monkeypatch.setattr(host, "avx512", lambda: False)
    monkeypatch.delenv("CONVCORE_CPU_GEMM", raising=False)
    gemm.enabled.cache_clear()
    try:
        assert gemm.enabled() is False and gemm.enabled(winograd=True) is True
        assert "Winograd's products: convcore's 6x16" in gemm.describe()
        x = rng.standard_normal((2, 16, 10, 10)).astype(np.float32)
        w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
        ref = convcore.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, backend="numpy")
        dy = rng.standard_normal(ref.shape).astype(np.float32)
        ref_dx = convcore.conv2d_input(x.shape, w.astype(np.float64), dy.astype(np.float64), padding=1,
                                       backend="numpy")
        for algorithm, a2 in (("winograd_f2", 16), ("winograd_f4", 36)):
            calls.clear()
            y = convcore.conv2d(x, w, padding=1, algorithm=algorithm, backend="cpu")
            assert calls and all(shape[0] == a2 for shape in calls), (algorithm, calls)
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
            calls.clear()
            dx = convcore.conv2d_input(x.shape, w, dy, padding=1, algorithm=algorithm, backend="cpu")
            assert calls and all(shape[0] == a2 for shape in calls), (algorithm, calls)
            np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4 * np.abs(ref_dx).max())
        calls.clear()
        y = convcore.conv2d(x, w, padding=1, algorithm="gemm", backend="cpu")
        assert calls == []
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        monkeypatch.setenv("CONVCORE_CPU_GEMM", "blas")
        gemm.enabled.cache_clear()
        convcore.conv2d(x, w, padding=1, algorithm="winograd_f4", backend="cpu")
        assert calls == [] and gemm.describe() == "NumPy's BLAS (np.matmul)"
    finally:
        gemm.enabled.cache_clear()


def test_transpose16_any_strides(rng):
    # A 16×16 block between two arrays at row strides 20 and 25, from offsets 3 and 5;
    # nothing else in dst is written.
    from convcore.kernels.gemm.simd import transpose16
    from numba import njit

    @njit
    def run(src, dst):
        transpose16(src, 3, 20, dst, 5, 25)

    src = rng.standard_normal(40 * 20).astype(np.float32)
    dst = np.full(30 * 25, np.nan, np.float32)
    run(src, dst)
    np.testing.assert_array_equal(dst[5:5 + 16 * 25].reshape(16, 25)[:, :16], src[3:3 + 16 * 20].reshape(16, 20)[:, :16].T)
    dst[5:5 + 16 * 25].reshape(16, 25)[:, :16] = np.nan
    assert np.isnan(dst).all()



@pytest.mark.parametrize("rows", [12, 5, 16])
def test_transpose_rows_writes_only_its_lanes(rng, rows):
    # rows×16 at row stride 20 from offset 3, transposed into rows of stride 17 from offset
    # 2: each destination row gets its first `rows` lanes and nothing past them.
    from convcore.kernels.gemm.simd import transpose_rows
    from numba import literally, njit

    @njit
    def run(src, dst, count):
        transpose_rows(src, 3, 20, literally(count), dst, 2, 17)

    src = rng.standard_normal(20 * 20).astype(np.float32)
    dst = np.full(16 * 17 + 20, np.nan, np.float32)
    run(src, dst, rows)
    written = dst[2:2 + 16 * 17].reshape(16, 17)
    np.testing.assert_array_equal(written[:, :rows], src[3:3 + rows * 20].reshape(rows, 20)[:, :16].T)
    written[:, :rows] = np.nan
    assert np.isnan(dst).all()
