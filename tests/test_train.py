"""Training end to end: digits on cpu through ``convcore train``, one step on every backend
giving the same parameters, the segmentation example, and fit's history and errors."""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from helpers import random

from convcore import nn, optim
from convcore.cli import main
from convcore.nn.module import to_backend, to_host
from convcore.train import fit

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convcore_train_learns_digits(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from convcore.train import evaluate, load_digits_split

    save, plot = tmp_path / "digits.npz", tmp_path / "curves.png"
    assert main(["train", "--epochs", "6", "--save", str(save), "--plot", str(plot), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "epoch   6/6" in printed and "samples/s" in printed and "test accuracy" in printed
    assert plot.stat().st_size > 0
    model = nn.load(save)
    _, accuracy = evaluate(model, nn.CrossEntropyLoss(), load_digits_split(0)[1])
    assert accuracy >= 0.95


def test_train_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit, match=r"pip install convcore\[examples\]"):
        main(["train", "--epochs", "1"])


def _tiny_net():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))


@pytest.mark.parametrize("make_optimizer", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                            lambda p: optim.Adam(p, lr=0.01)], ids=["sgd", "adam"])
def test_one_step_same_on_every_backend(backend, dtype, rng, make_optimizer):
    nn.manual_seed(1)
    reference = _tiny_net().to("cpu", dtype=np.float64)
    x = random(rng, (2, 1, 4, 4), dtype)
    y = np.array([0, 2])
    results = {}
    for name in ("cpu", backend):
        model = _tiny_net().to(name, dtype=dtype)
        model.load_state_dict(reference.state_dict())
        loss_fn, optimizer = nn.CrossEntropyLoss(), make_optimizer(model.parameters())
        for _ in range(2):
            loss_fn(model(to_backend(x, name)), y)
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
        results[name] = model.state_dict()
        assert all(to_host(p.data).dtype == dtype for p in model.parameters())
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for key, value in results["cpu"].items():
        np.testing.assert_allclose(results[backend][key], value, rtol=tolerance, atol=tolerance, err_msg=key)


def test_segmentation_example_learns():
    metrics = _example("segmentation").main(["--train", "128", "--test", "32", "--epochs", "4", "--width", "4",
                                             "--quiet"])
    assert metrics["iou"] > 0.5 and metrics["pixel_accuracy"] > 0.85


def test_fit_history_and_errors(rng):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to("cpu")
    x = random(rng, (40, 4), np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    history = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5), (x, y), epochs=3,
                  batch_size=8, val_data=(x, y), progress=False)
    assert set(history) == {"loss", "accuracy", "samples_per_s", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    with pytest.raises(ValueError, match="40 inputs and 39 targets"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (x, y[:-1]), 1, 8)
    with pytest.raises(ValueError, match="batch_size=0"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (x, y), 1, 0)


def test_digits_example_runs(tmp_path):
    pytest.importorskip("sklearn")
    accuracy = _example("digits").main(["--epochs", "1", "--save", str(tmp_path / "m.npz")])
    assert accuracy > 0.5  # one epoch: well above chance (0.1)
