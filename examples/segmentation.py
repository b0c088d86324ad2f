"""A tiny encoder–decoder learning to segment disks from a noisy background.

    python examples/segmentation.py [--size 16] [--epochs 15] [--backend cpu]

Synthetic data: each image has one to three disks of random radius and brightness on
a background with a random brightness ramp and Gaussian noise; the target is the disk
mask. The encoder halves the resolution with a strided Conv2d, the decoder restores it
with a ConvTranspose2d; a Sigmoid gives per-pixel probabilities trained with MSELoss.
Reports pixel accuracy and intersection-over-union on held-out images.
"""
import argparse

import numpy as np

from convcore import nn, optim
from convcore.nn.module import to_backend, to_host
from convcore.train import fit


def make_disks(count, size, rng):
    """Images (count, 1, size, size) float32 and their disk masks (same shape, 0/1)."""
    rows, cols = np.mgrid[0:size, 0:size]
    images = np.empty((count, 1, size, size), np.float32)
    masks = np.zeros((count, 1, size, size), np.float32)
    for i in range(count):
        for _ in range(rng.integers(1, 4)):
            radius = rng.uniform(0.12, 0.25) * size
            cy, cx = rng.uniform(radius, size - radius, size=2)
            masks[i, 0][(rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2] = 1.0
        ramp = rng.uniform(-0.3, 0.3) * (rows / size) + rng.uniform(-0.3, 0.3) * (cols / size)
        brightness = rng.uniform(0.6, 1.0)
        images[i, 0] = ramp + brightness * masks[i, 0] + rng.normal(0.0, 0.15, size=(size, size))
    return images, masks


def encoder_decoder(width=8):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),             # encoder: size/2
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),    # decoder: back to size
        nn.Conv2d(width, 1, 3, padding=1), nn.Sigmoid())


def segment_metrics(model, images, masks):
    """Pixel accuracy and IoU of the thresholded predictions."""
    model.eval()
    dtype = model.parameters()[0].dtype
    predicted = to_host(model(to_backend(images, model.backend, dtype))) > 0.5
    truth = masks > 0.5
    union = np.logical_or(predicted, truth).sum()
    return {"pixel_accuracy": float((predicted == truth).mean()),
            "iou": float(np.logical_and(predicted, truth).sum() / union) if union else 1.0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--train", type=int, default=512, help="training images")
    parser.add_argument("--test", type=int, default=128, help="held-out images")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--backend", default="cpu", choices=("numpy", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train_data = make_disks(args.train, args.size, rng)
    test_data = make_disks(args.test, args.size, rng)
    nn.manual_seed(args.seed)
    model = encoder_decoder(args.width).to(args.backend)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    fit(model, nn.MSELoss(), optimizer, train_data, epochs=args.epochs, batch_size=32, seed=args.seed,
        progress=not args.quiet, log=None if args.quiet else print)
    metrics = segment_metrics(model, *test_data)
    print(f"held-out pixel accuracy {metrics['pixel_accuracy']:.4f}, IoU {metrics['iou']:.4f}")
    return metrics


if __name__ == "__main__":
    main()
