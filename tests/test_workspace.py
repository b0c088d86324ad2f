"""Scratch buffers (kernels.workspace) and the conv algorithms that use them: reuse per
(thread, tag), the size limit, and results that never see a previous call's data."""
import threading

import numpy as np
import pytest
from convcore.kernels import workspace

import convcore


@pytest.fixture(autouse=True)
def _fresh_buffers():
    workspace.release()
    yield
    workspace.release()


def test_same_tag_reuses_memory_and_other_tags_do_not():
    a = workspace.scratch("t.a", (10, 20), np.float32)
    again = workspace.scratch("t.a", (5, 8), np.float64)  # smaller, another dtype: same memory
    other = workspace.scratch("t.b", (10, 20), np.float32)
    assert np.shares_memory(a, again) and not np.shares_memory(a, other)
    assert again.shape == (5, 8) and again.dtype == np.float64 and again.flags.c_contiguous
    bigger = workspace.scratch("t.a", (100, 20), np.float32)
    assert bigger.shape == (100, 20) and workspace.held_bytes() == bigger.nbytes + other.nbytes


def test_buffers_over_the_limit_are_not_kept(monkeypatch):
    monkeypatch.setattr(workspace, "LIMIT", 1000)
    small = workspace.scratch("t.small", (100,), np.float32)  # 400 bytes: kept
    big = workspace.scratch("t.big", (200,), np.float32)      # 800 more: over the limit
    assert workspace.held_bytes() == small.nbytes
    assert not np.shares_memory(big, workspace.scratch("t.big", (200,), np.float32))


def test_threads_have_their_own_buffers():
    mine = workspace.scratch("t.thread", (64,), np.float32)
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(workspace.scratch("t.thread", (64,), np.float32)))
    worker.start()
    worker.join()
    assert not np.shares_memory(mine, theirs[0])


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("algorithm", ["gemm", "winograd_f2", "winograd_f4"])
def test_repeated_calls_never_see_the_previous_call(rng, algorithm, dtype, atol):
    # Each call writes every element its scratch holds: a second call on other data (and a
    # smaller shape after a larger one) must match the reference exactly as the first did.
    w = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    for n, h in ((3, 11), (1, 7), (2, 9)):
        x = rng.standard_normal((n, 5, h, h)).astype(dtype)
        dy = rng.standard_normal((n, 6, h, h)).astype(dtype)
        ref = convcore.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, backend="numpy")
        ref_dx = convcore.conv2d_input(x.shape, w.astype(np.float64), dy.astype(np.float64), padding=1, backend="numpy")
        ref_dw = convcore.conv2d_weight(x.astype(np.float64), w.shape, dy.astype(np.float64), padding=1, backend="numpy")
        np.testing.assert_allclose(convcore.conv2d(x, w, padding=1, backend="cpu", algorithm=algorithm), ref, atol=atol)
        np.testing.assert_allclose(convcore.conv2d_input(x.shape, w, dy, padding=1, backend="cpu", algorithm=algorithm),
                                   ref_dx, atol=atol)
        np.testing.assert_allclose(convcore.conv2d_weight(x, w.shape, dy, padding=1, backend="cpu", algorithm=algorithm),
                                   ref_dw, atol=atol)
    assert workspace.held_bytes() > 0


def test_images_per_chunk(monkeypatch):
    monkeypatch.setattr(workspace, "CHUNK_BYTES", 1000)
    assert workspace.images_per_chunk(8, 300) == 3          # as many as fit
    assert workspace.images_per_chunk(8, 5000) == 1         # one at least
    assert workspace.images_per_chunk(8, 300, at_least=5) == 5
    assert workspace.images_per_chunk(2, 10) == 2           # never more than there are
