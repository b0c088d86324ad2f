"""``convcore bench`` on the tiny "test" suite: schema, verification, filters, compare, plot. No timing asserts."""
import json

import numpy as np
import pytest

import convcore
from convcore import _backend
from convcore._backend import cuda_simulated
from convcore.bench import report
from convcore.bench.ops import OP_SPECS, reference, verify
from convcore.bench.runner import Row
from convcore.bench.shapes import CONV_OPS, ConvLayer, suite
from convcore.cli import main
from convcore.conv import conv_geometry

FAST = ["--suite", "test", "--backend", "cpu", "--repeats", "1", "--numpy-repeats", "1"]
FIELDS = {"suite", "layer", "op", "backend", "ms_median", "ms_min", "ms_max", "vs_torch", "vs_numpy", "verified",
          "compile_s"}


def _bench(tmp_path, *extra):
    path = tmp_path / "bench.json"
    code = main(["bench", *FAST, "--json", str(path), *extra])
    return code, json.loads(path.read_text())


def test_json_schema_and_table(tmp_path, capsys):
    code, data = _bench(tmp_path, "--ops", "conv2d,conv2d_input,conv2d_weight")
    assert code == 0
    assert {"platform", "cpu_count", "numba_threads", "sgemm_gflops", "skipped_backends", "backends"} <= set(data["machine"])
    assert data["machine"]["sgemm_gflops"] > 0
    timed = [r for r in data["results"] if r["backend"] == "cpu"]
    assert {(r["layer"], r["op"]) for r in timed} == {(c.layer, op) for c in suite("test") if c.ops == CONV_OPS for op in c.ops}
    for row in timed:
        assert FIELDS | {"gflops"} <= set(row), row
        assert row["verified"] is True and row["gflops"] > 0 and row["vs_numpy"] > 0
        assert row["ms_min"] <= row["ms_median"] <= row["ms_max"]
    out = capsys.readouterr().out
    assert "verified" in out and "tiny_3x3" in out and "GFLOP/s" in out and "roofline" in out


def test_memory_bound_rows_report_gbps_or_missing(tmp_path):
    code, data = _bench(tmp_path, "--ops", "hadamard,relu,max_pool2d,avg_pool2d,cross_entropy,softmax,linear", "--no-torch")
    assert code == 0
    rows = [r for r in data["results"] if r["backend"] == "cpu"]
    assert {r["op"] for r in rows} == {"hadamard", "relu", "max_pool2d", "avg_pool2d", "cross_entropy", "softmax", "linear"}
    for row in rows:
        unit = "gflops" if row["op"] == "linear" else "gbps"
        assert unit in row
        if hasattr(convcore, row["op"]):
            assert row["verified"] is True and row[unit] > 0
        else:  # listed, never silently absent
            assert row["status"] == "missing" and row["note"] == "not available (op missing)"


def test_wrong_result_is_not_verified(tmp_path, capsys, monkeypatch):
    def garbage(x, w, b, out, geom, algorithm):
        out[...] = np.random.default_rng(1).uniform(-1, 1, out.shape)

    monkeypatch.setitem(_backend._resolved, ("conv2d", "cpu"), garbage)
    code, data = _bench(tmp_path, "--ops", "conv2d,conv2d_weight", "--no-torch")
    assert code == 1
    verified = {(r["op"], r["verified"]) for r in data["results"] if r["backend"] == "cpu"}
    assert verified == {("conv2d", False), ("conv2d_weight", True)}
    out = capsys.readouterr().out
    assert " NO" in out and "NOT verified" in out


def test_raising_backend_is_reported_as_error(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(_backend._resolved, ("conv2d_input", "cpu"), broken)
    code, data = _bench(tmp_path, "--ops", "conv2d_input", "--no-torch")
    assert code == 1
    rows = [r for r in data["results"] if r["backend"] == "cpu"]
    assert rows and all(r["status"] == "error" and "kernel exploded" in r["note"] and r["verified"] is False
                        for r in rows)


def test_ops_filter_and_torch_peer(tmp_path):
    pytest.importorskip("torch")
    code, data = _bench(tmp_path, "--ops", "conv2d_weight")
    assert code == 0
    assert {r["op"] for r in data["results"]} == {"conv2d_weight"}
    assert all(r["vs_torch"] > 0 for r in data["results"] if r["backend"] == "cpu")


def test_missing_op_is_listed(tmp_path, monkeypatch):
    monkeypatch.delattr(convcore, "relu", raising=False)
    code, data = _bench(tmp_path, "--ops", "relu")
    assert code == 0
    rows = [r for r in data["results"] if r["backend"] == "cpu"]
    assert rows and all(r["status"] == "missing" and r["verified"] is None for r in rows)


def test_bad_arguments():
    with pytest.raises(SystemExit, match="unknown op"):
        main(["bench", "--ops", "conv3d"])
    with pytest.raises(SystemExit, match="unknown backend"):
        main(["bench", "--backend", "tpu"])


def test_simulated_cuda_is_skipped_not_timed(tmp_path, capsys):
    # Under the test suite's simulator the cuda backend is never timed, and says why: in the header
    # by default, and in every row when it was asked for.
    if not cuda_simulated():
        pytest.skip("a real GPU is present: the cuda backend is benchmarked, not skipped")
    path = tmp_path / "default.json"
    assert main(["bench", "--suite", "test", "--ops", "relu", "--no-torch", "--repeats", "1", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert "simulator" in data["machine"]["skipped_backends"]["cuda"]
    assert {r["backend"] for r in data["results"]} == {"cpu"}
    path = tmp_path / "cuda.json"
    assert main(["bench", "--suite", "test", "--backend", "cuda", "--ops", "conv2d", "--json", str(path)]) == 2
    out = capsys.readouterr().out
    assert "skipped backend cuda" in out and "simulator" in out
    rows = json.loads(path.read_text())["results"]
    assert rows and all(r["status"] == "skipped" and "simulator" in r["note"] and r["verified"] is None for r in rows)


def _row(layer, gflops):
    return Row("test", layer, "", "conv2d", "cpu", "gflops", throughput=gflops, verified=True)


def test_compare_flags_regressions_over_ten_percent(tmp_path, capsys):
    text, regressed = report.compare([_row("a", 100.0), _row("b", 100.0), _row("c", 100.0)],
                                     [_row("a", 85.0), _row("b", 95.0), _row("c", 130.0)])
    assert [r.layer for r in regressed] == ["a"]
    assert text.count("REGRESSION") == 1 and "-15.0%" in text and "+30.0%" in text
    # Through the CLI, against a saved run far faster than any timing noise could explain.
    _code, data = _bench(tmp_path, "--ops", "conv2d", "--no-torch")
    for row in data["results"]:
        if row.get("gflops"):
            row["gflops"] = 1e9
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    capsys.readouterr()
    main(["bench", *FAST, "--ops", "conv2d", "--no-torch", "--compare", str(old)])
    assert "REGRESSION" in capsys.readouterr().out


def test_json_round_trip():
    row = Row("quick", "l", "x", "relu", "cpu", "gbps", throughput=3.0, ms_median=1.0, verified=True)
    data = row.to_json()
    assert data["gbps"] == 3.0 and "throughput" not in data and "unit" not in data
    assert Row.from_json(data) == row


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    report.plot(str(path), [_row("a", 10.0), Row("test", "b", "", "relu", "cpu", "gbps", throughput=2.0)])
    assert path.stat().st_size > 1000


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match="needs matplotlib"):
        main(["bench", "--suite", "test", "--plot", "x.png"])


def test_verify_tolerance():
    expected = np.linspace(-1, 1, 50)
    assert verify(expected.astype(np.float32), expected, 10)[0]
    assert not verify(expected + 1e-3, expected, 10)[0]
    assert not verify(np.full(50, np.nan), expected, 10)[0]
    assert not verify(expected[:10], expected, 10)[0]


def test_suites_are_consistent():
    for name in ("quick", "full", "test"):
        cases = suite(name)
        assert cases and len({c.layer for c in cases}) == len(cases), name
        for case in cases:
            assert set(case.ops) <= set(OP_SPECS)
            assert all(isinstance(case.shape, OP_SPECS[op].shape_type) for op in case.ops)
            if isinstance(case.shape, ConvLayer):
                layer = case.shape
                conv_geometry("bench", layer.input_shape, layer.weight_shape, layer.stride, layer.padding, 1,
                              layer.groups)
    full = {c.layer for c in suite("full")}
    assert {c.layer for c in suite("quick")} <= full and not {c.layer for c in suite("test")} & full


def test_reference_is_float64():
    layer = suite("test")[0].shape
    spec = OP_SPECS["conv2d"]
    inputs = spec.make(layer, np.random.default_rng(0))
    assert reference(spec, inputs, layer).dtype == np.float64


def test_cuda_contender_path():
    # Not timed: checks the device placement, sync and copy-back (in the simulator where there is no GPU).
    from convcore.bench.runner import Peers

    case = suite("test")[0]
    spec = OP_SPECS["conv2d"]
    inputs = spec.make(case.shape, np.random.default_rng(0))
    contender = Peers(use_torch=False).convcore(spec, inputs, case.shape, "cuda")
    assert verify(contender.warm_up(), reference(spec, inputs, case.shape), spec.terms(case.shape))[0]


def test_goals_classify_rows():
    from convcore.bench.goals import check, format_goals
    from convcore.bench.runner import Row

    def row(backend, layer, op, throughput, vs_torch, unit="gflops"):
        return Row("full", layer, "", op, backend, unit, throughput=throughput, vs_torch=vs_torch, verified=True)

    rows = [row("cpu", "resnet50_3x3_56", "conv2d", 150.0, 1.5), row("cpu", "mobilenet_dw3x3_112", "conv2d", 9.0, 1.5),
            row("cpu", "lenet_5x5_14_b1", "conv2d_weight", 3.0, 0.8), row("cuda", "resnet50_1x1_56_expand", "conv2d", 9e3, 0.75),
            row("cuda", "resnet50_act_56", "relu", 2400.0, 1.0, "gbps"),
            row("cuda", "resnet50_act_56", "hadamard", 2000.0, 1.0, "gbps")]
    rows.append(Row("full", "x", "", "conv2d", "cpu", "gflops", status="error"))  # not timed: no goal
    goals, summary = check({"sgemm_gflops": 100.0, "gpu_copy_gbps": 2600.0}, rows)
    met = {(g.layer, g.op, g.measure): g.met for g in goals}
    assert met == {("resnet50_3x3_56", "conv2d", "vs torch"): True, ("resnet50_3x3_56", "conv2d", "vs SGEMM"): True,
                   ("mobilenet_dw3x3_112", "conv2d", "vs torch"): False, ("lenet_5x5_14_b1", "conv2d_weight", "vs torch"): False,
                   ("resnet50_1x1_56_expand", "conv2d", "vs torch"): True, ("resnet50_act_56", "relu", "of copy"): True,
                   ("resnet50_act_56", "hadamard", "of copy"): False}
    assert abs(summary["cpu"] - (1.5 * 1.5 * 0.8) ** (1 / 3)) < 1e-12
    assert "5 of 7 goals met" not in format_goals(goals, summary) and "4 of 7 goals met" in format_goals(goals, summary)


def test_sgemm_goal_uses_the_faster_gemm():
    from convcore.bench.goals import check
    from convcore.bench.runner import Row

    rows = [Row("full", "resnet50_3x3_56", "", "conv2d", "cpu", "gflops", throughput=150.0, vs_torch=1.5, verified=True)]
    for convcore_gemm, met in ((None, True), (120.0, True), (200.0, False)):
        goals, _ = check({"sgemm_gflops": 100.0, "convcore_sgemm_gflops": convcore_gemm}, rows)
        sgemm = [g for g in goals if g.measure == "vs SGEMM"]
        assert [g.met for g in sgemm] == [met]
        assert sgemm[0].value == 150.0 / max(100.0, convcore_gemm or 0.0)


def test_numpy_repeats_zero_still_verifies_but_times_no_numpy_peer(tmp_path, monkeypatch):
    """--numpy-repeats 0 (GPU runs): every row is still checked against the reference, but NumPy is not timed."""
    from convcore.bench import runner

    timed_backends = []
    real = runner.Peers.convcore

    def spy(self, spec, inputs, shape, backend):
        timed_backends.append(backend)
        return real(self, spec, inputs, shape, backend)

    monkeypatch.setattr(runner.Peers, "convcore", spy)
    path = tmp_path / "bench.json"
    args = ["bench", "--suite", "test", "--backend", "cpu", "--repeats", "1", "--numpy-repeats", "0",
            "--ops", "conv2d", "--no-torch", "--json", str(path)]
    assert main(args) == 0
    rows = json.loads(path.read_text())["results"]
    assert rows and all(r["verified"] is True and r["vs_numpy"] is None for r in rows)
    assert "numpy" not in timed_backends and "cpu" in timed_backends


def test_negative_numpy_repeats_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="numpy-repeats"):
        main(["bench", "--suite", "test", "--backend", "cpu", "--numpy-repeats", "-1"])
