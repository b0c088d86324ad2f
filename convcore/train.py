"""Training loop and the ``convcore train`` command (a LeNet-style CNN on scikit-learn's 8x8 digits).

``fit`` shuffles, runs forward → loss → backward → step per mini-batch, shows a tqdm
bar per epoch and returns a history: per epoch loss, accuracy and samples/s (and the
validation loss and accuracy when ``val_data`` is given).
"""
from __future__ import annotations

import time

import numpy as np

from .nn.module import to_backend, to_host


def _batches(count, batch_size, order):
    for start in range(0, count, batch_size):
        yield order[start:start + batch_size]


def _check_data(name, data):
    try:
        inputs, targets = data
    except (TypeError, ValueError):
        raise TypeError(f"fit: {name} must be a pair (inputs, targets)") from None
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(f"fit: {name} has {len(inputs)} inputs and {len(targets)} targets (need as many, > 0)")
    return inputs, targets


def _correct(outputs, targets) -> int:
    """Correct predictions: argmax over classes, for class-index targets; 0 otherwise (e.g. regression)."""
    if targets.ndim != 1 or outputs.ndim != 2:
        return 0
    return int(np.sum(np.argmax(outputs, axis=1) == targets))


def evaluate(model, loss_fn, data, batch_size: int = 256):
    """Mean loss and accuracy of ``model`` on ``data`` = (inputs, targets), in eval mode."""
    inputs, targets = _check_data("data", data)
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    dtype = model.parameters()[0].dtype
    for index in _batches(len(inputs), batch_size, np.arange(len(inputs))):
        outputs = model(to_backend(inputs[index], model.backend, dtype))
        total_loss += loss_fn(outputs, targets[index]) * len(index)
        correct += _correct(to_host(outputs), targets[index])
    model.train(was_training)
    return total_loss / len(inputs), correct / len(inputs)


def fit(model, loss_fn, optimizer, train_data, epochs: int, batch_size: int, val_data=None, *, seed=None,
        progress: bool = True, log=None) -> dict:
    """Train ``model`` for ``epochs`` passes over ``train_data`` = (inputs, targets).

    Returns a history dict of per-epoch lists: ``loss``, ``accuracy``, ``samples_per_s``
    (and ``val_loss``, ``val_accuracy`` with ``val_data``). ``log`` (e.g. ``print``)
    receives one summary line per epoch.
    """
    from tqdm import tqdm

    inputs, targets = _check_data("train_data", train_data)
    if epochs < 0 or batch_size <= 0:
        raise ValueError(f"fit: epochs={epochs} must be >= 0 and batch_size={batch_size} positive")
    rng = np.random.default_rng(seed)
    dtype = model.parameters()[0].dtype
    history = {"loss": [], "accuracy": [], "samples_per_s": []}
    if val_data is not None:
        history.update(val_loss=[], val_accuracy=[])
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(inputs))
        total_loss, correct = 0.0, 0
        start = time.perf_counter()
        bar = tqdm(total=len(inputs), desc=f"epoch {epoch}/{epochs}", unit="sample", disable=not progress,
                   leave=False)
        for index in _batches(len(inputs), batch_size, order):
            outputs = model(to_backend(inputs[index], model.backend, dtype))
            loss = loss_fn(outputs, targets[index])
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            total_loss += loss * len(index)
            correct += _correct(to_host(outputs), targets[index])
            bar.update(len(index))
            bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        elapsed = time.perf_counter() - start
        history["loss"].append(total_loss / len(inputs))
        history["accuracy"].append(correct / len(inputs))
        history["samples_per_s"].append(len(inputs) / elapsed)
        line = (f"epoch {epoch:3d}/{epochs}  loss {history['loss'][-1]:.4f}  acc {history['accuracy'][-1]:.4f}  "
                f"{history['samples_per_s'][-1]:8.0f} samples/s")
        if val_data is not None:
            val_loss, val_accuracy = evaluate(model, loss_fn, val_data, batch_size=max(batch_size, 256))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_accuracy)
            line += f"  val_loss {val_loss:.4f}  val_acc {val_accuracy:.4f}"
        if log is not None:
            log(line)
    return history


# -- the digits demo (``convcore train``, examples/digits.py) ------------------------------

def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """scikit-learn's bundled 8x8 digits (no download) as float32 (N, 1, 8, 8) in [0, 1], stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("convcore train needs scikit-learn: pip install convcore[examples]") from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target.astype(np.int64),
                                                        test_size=test_fraction, random_state=seed,
                                                        stratify=digits.target)
    return (x_train, y_train), (x_test, y_test)


def lenet():
    """A LeNet-style CNN for 1x8x8 inputs: two conv–ReLU–pool stages and a linear classifier."""
    from . import nn

    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def plot_history(history: dict, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install convcore[examples]") from None
    epochs = range(1, len(history["loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, axis in (("loss", left), ("accuracy", right)):
        axis.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], label="test")
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def add_parser(commands):
    import argparse

    parser = commands.add_parser("train", help="train a LeNet-style CNN on scikit-learn's 8x8 digits",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backend", default="cpu", choices=("numpy", "cpu", "cuda"), help="where to train")
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training split")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per SGD step")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, the initialisation and the shuffling")
    parser.add_argument("--save", default="digits_model.npz", help="where to save the trained model (.npz)")
    parser.add_argument("--plot", default=None, help="draw the training curves to this image (matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-epoch progress bar")
    parser.set_defaults(run=run)


def run(args) -> int:

    # Numba's OpenMP threads spin-wait between kernels by default. This net's kernels are tiny,
    # so on a busy machine the spinning threads steal the cores the next kernel needs: measured
    # on 2 loaded cores, 2 epochs took 9.8 s spinning and 2.2 s with passive waiting. Set before
    # the first parallel kernel starts the thread pool; an explicit setting is respected.
    from ._backend import openmp_waiting_defaults

    openmp_waiting_defaults()  # also GOMP_SPINCOUNT: see convcore._backend
    import convcore

    from . import nn, optim

    info = convcore.backends()[args.backend]
    if not info.available:
        raise SystemExit(f"convcore train: backend {args.backend!r} is not available: {info.reason}")
    train_data, test_data = load_digits_split(args.seed)
    nn.manual_seed(args.seed)
    model = lenet().to(args.backend)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    print(f"digits: {len(train_data[0])} train / {len(test_data[0])} test images, backend {args.backend}")
    print(model)
    start = time.perf_counter()
    history = fit(model, loss_fn, optimizer, train_data, args.epochs, args.batch_size, val_data=test_data,
                  seed=args.seed, progress=not args.no_progress, log=print)
    elapsed = time.perf_counter() - start
    test_loss, test_accuracy = evaluate(model, loss_fn, test_data)
    print(f"test accuracy {test_accuracy:.4f} (loss {test_loss:.4f}) after {args.epochs} epochs in {elapsed:.1f} s")
    model.save(args.save)
    print(f"saved the model to {args.save} (reload with convcore.nn.load)")
    if args.plot:
        plot_history(history, args.plot)
        print(f"saved training curves to {args.plot}")
    return 0
