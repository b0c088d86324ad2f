"""convcore.tune, CONVCORE_AUTOTUNE and the on-disk cache; set_num_threads."""
import json
import warnings

import numpy as np
import pytest
from helpers import assert_matches, random

import convcore
from convcore import _tuning, conv


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCORE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CONVCORE_AUTOTUNE", raising=False)
    _tuning.clear_cache(memory_only=True)
    yield tmp_path
    _tuning.clear_cache(memory_only=True)


@pytest.fixture
def spy(monkeypatch):
    """Record the algorithm of every conv launcher call."""
    calls = []
    real_lookup = conv.lookup

    def lookup(op, backend):
        launch = real_lookup(op, backend)
        if op not in ("conv2d", "conv2d_input", "conv2d_weight"):
            return launch

        def recording(*args):
            calls.append((op, args[5] if op == "conv2d" else args[4]))
            return launch(*args)
        return recording

    monkeypatch.setattr(conv, "lookup", lookup)
    return calls


def _layer(rng, dtype=np.float32):
    return random(rng, (2, 4, 7, 6), dtype), random(rng, (6, 4, 3, 3), dtype)


def test_tune_measures_every_candidate_and_persists(kernel_backend, rng, fresh_cache):
    x, w = _layer(rng)
    results = convcore.tune(x, w, padding=1, backend=kernel_backend, repeats=1)
    assert set(results) == set(_tuning.DIRECTIONS)
    geom = conv.conv_geometry("t", x.shape, w.shape, 1, 1, 1, 1)
    for direction, result in results.items():
        expected = _tuning.candidates(kernel_backend, direction, geom)
        assert set(result.times_ms) == set(expected)
        assert all(t > 0 for t in result.times_ms.values())
        assert result.algorithm == min(result.times_ms, key=result.times_ms.get)
    on_disk = json.loads((fresh_cache / "tune-v1.json").read_text())
    assert len(on_disk) == 3
    assert sorted(on_disk.values()) == sorted(r.algorithm for r in results.values())
    assert all(key.startswith(f"{kernel_backend}|") for key in on_disk)


def test_auto_uses_the_cached_choice(rng, spy):
    x, w = _layer(rng, np.float64)
    geom = conv.conv_geometry("t", x.shape, w.shape, 1, 1, 1, 1)
    for direction, algorithm in (("fwd", "gemm"), ("bwd_data", "direct"), ("bwd_weight", "gemm")):
        _tuning.record("cpu", direction, geom, np.float64, _tuning.TuneResult(algorithm))
    _tuning.clear_cache(memory_only=True)  # read back from disk
    dy = random(rng, geom.output_shape, np.float64)
    out = convcore.conv2d(x, w, padding=1, backend="cpu")
    convcore.conv2d_input(x.shape, w, dy, padding=1, backend="cpu")
    convcore.conv2d_weight(x, w.shape, dy, padding=1, backend="cpu")
    assert spy == [("conv2d", "gemm"), ("conv2d_input", "direct"), ("conv2d_weight", "gemm")]
    assert_matches(out, convcore.conv2d(x, w, padding=1, backend="numpy"), np.float64, 36, "conv2d")
    # Another dtype is another entry: the heuristic decides.
    convcore.conv2d(x.astype(np.float32), w.astype(np.float32), padding=1, backend="cpu")
    assert spy[-1] == ("conv2d", "auto")


def test_autotune_env_measures_on_first_call(rng, spy, monkeypatch, fresh_cache):
    monkeypatch.setenv("CONVCORE_AUTOTUNE", "1")
    x, w = _layer(rng, np.float64)
    out = convcore.conv2d(x, w, padding=1, backend="cpu")
    candidates = _tuning.candidates("cpu", "fwd", conv.conv_geometry("t", x.shape, w.shape, 1, 1, 1, 1))
    timed = {alg for _, alg in spy[:-1]}
    assert timed == set(candidates) and spy[-1][1] in candidates
    assert_matches(out, convcore.conv2d(x, w, padding=1, backend="numpy"), np.float64, 36, "conv2d")
    assert len(json.loads((fresh_cache / "tune-v1.json").read_text())) == 1
    spy.clear()
    convcore.conv2d(x, w, padding=1, backend="cpu")
    assert len(spy) == 1  # second call: cached, nothing timed


def test_unreadable_or_stale_cache_warns(rng, fresh_cache, spy):
    (fresh_cache / "tune-v1.json").write_text("{not json")
    x, w = _layer(rng, np.float64)
    with pytest.warns(RuntimeWarning, match="unreadable tuning cache"):
        out = convcore.conv2d(x, w, padding=1, backend="cpu")
    assert_matches(out, convcore.conv2d(x, w, padding=1, backend="numpy"), np.float64, 36, "conv2d")
    geom = conv.conv_geometry("t", x.shape, w.shape, 1, 1, 1, 1)
    _tuning.record("cpu", "fwd", geom, np.float64, _tuning.TuneResult("no_such_algorithm"))
    with pytest.warns(RuntimeWarning, match="not a current candidate"):
        convcore.conv2d(x, w, padding=1, backend="cpu")
    assert spy[-1] == ("conv2d", "auto")


def test_tune_rejects_bad_arguments(rng, monkeypatch):
    x, w = _layer(rng)
    with pytest.raises(ValueError, match="directions"):
        convcore.tune(x, w, directions=("sideways",))
    with pytest.raises(ValueError, match="repeats"):
        convcore.tune(x, w, repeats=0)
    with pytest.raises(ValueError, match="input has 4 channels"):
        convcore.tune(x, w[:, :3], backend="cpu")
    monkeypatch.setenv("CONVCORE_AUTOTUNE", "maybe")
    with pytest.raises(ValueError, match="CONVCORE_AUTOTUNE"):
        convcore.conv2d(x, w, backend="cpu")


def test_set_num_threads_keeps_results_bitwise(rng):
    x, w = _layer(rng)
    dy = random(rng, (2, 6, 5, 4), np.float32)
    before = convcore.get_num_threads()
    try:
        results = []
        for n in (1, before):
            convcore.set_num_threads(n)
            assert convcore.get_num_threads() == n
            results.append(convcore.conv2d_weight(x, w.shape, dy, backend="cpu", algorithm="direct"))
        np.testing.assert_array_equal(results[0], results[1])
    finally:
        convcore.set_num_threads(before)
    import numba

    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        convcore.set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(TypeError, match="int"):
        convcore.set_num_threads("2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convcore.set_num_threads(before)


def test_tune_command_fills_the_cache(fresh_cache, capsys):
    from convcore.cli import main

    assert main(["tune", "--suite", "test", "--cases", "tiny_dw", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "tiny_dw3x3s2: fwd" in out and str(fresh_cache) in out
    entries = json.loads((fresh_cache / "tune-v1.json").read_text())
    assert len(entries) == 3 and all("|2,4,8,8,4,3,3|s(2,2)" in key for key in entries)
    with pytest.raises(SystemExit, match="matches"):
        main(["tune", "--suite", "test", "--cases", "no_such_layer"])


def test_select_memo_follows_records_threads_and_autotune(monkeypatch):
    """select() remembers its answer per shape, but a stored choice, a thread-count change and
    CONVCORE_AUTOTUNE each take effect at once."""
    from convcore import _tuning
    from convcore.conv import conv_geometry

    geom = conv_geometry("conv2d", (1, 4, 9, 9), (6, 4, 3, 3), 1, 1, 1, 1)
    calls = []

    def run(alg):
        calls.append(alg)

    _tuning.clear_cache()
    assert _tuning.select("cpu", "fwd", geom, np.float32, run) == "auto"
    picked = _tuning.candidates("cpu", "fwd", geom)[-1]
    _tuning.record("cpu", "fwd", geom, np.float32, _tuning.TuneResult(picked, {picked: 1.0}))
    assert _tuning.select("cpu", "fwd", geom, np.float32, run) == picked
    monkeypatch.setattr(_tuning, "_cpu_threads", lambda: 977)  # another thread count: another key, untuned
    assert _tuning.select("cpu", "fwd", geom, np.float32, run) == "auto"
    monkeypatch.setenv("CONVCORE_AUTOTUNE", "1")
    assert _tuning.select("cpu", "fwd", geom, np.float32, run) in _tuning.candidates("cpu", "fwd", geom)
    assert calls  # measured now
    _tuning.clear_cache()
