"""Parameter initialisation as PyTorch's defaults, from one seedable generator.

``kaiming_uniform`` with a=√5 gives bound = gain·√(3/fan_in) = 1/√fan_in, and biases
are uniform in ±1/√fan_in, where fan_in = weight.shape[1]·(receptive field) — so for
ConvTranspose2d, whose weight is (C_in, C_out/groups, R, S), it is C_out/groups·R·S,
exactly as torch.nn.init computes it.
"""
from __future__ import annotations

import math

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind parameter initialisation and Dropout masks."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def fan_in(shape) -> int:
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive


def kaiming_uniform(shape, a: float = math.sqrt(5), dtype=np.float32) -> np.ndarray:
    gain = math.sqrt(2.0 / (1 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(shape))
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def bias_uniform(size: int, fan: int, dtype=np.float32) -> np.ndarray:
    bound = 1.0 / math.sqrt(fan) if fan > 0 else 0.0
    return _generator.uniform(-bound, bound, size=(size,)).astype(dtype)
