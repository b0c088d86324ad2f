"""Train a LeNet-style CNN on scikit-learn's bundled 8x8 digits with convcore.nn.

    python examples/digits.py [--backend cpu|cuda|numpy] [--epochs 12]

The same as ``convcore train``, written out: data, model, loss, optimiser, fit, evaluate, save.
Needs the examples extra: pip install convcore[examples].
"""
import argparse

from convcore import nn, optim
from convcore.train import evaluate, fit, load_digits_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu", choices=("numpy", "cpu", "cuda"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default="digits_model.npz")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_digits_split(args.seed)  # (N, 1, 8, 8) float32 in [0, 1]
    nn.manual_seed(args.seed)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
                          nn.Flatten(), nn.Linear(32 * 2 * 2, 10))
    model.to(args.backend)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(model, loss_fn, optimizer, (x_train, y_train), epochs=args.epochs, batch_size=32,
        val_data=(x_test, y_test), seed=args.seed, log=print)
    loss, accuracy = evaluate(model, loss_fn, (x_test, y_test))
    print(f"test accuracy {accuracy:.4f}, loss {loss:.4f}")
    model.save(args.save)
    print(f"saved {args.save}; reload with convcore.nn.load({args.save!r})")
    return accuracy


if __name__ == "__main__":
    main()
