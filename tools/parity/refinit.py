"""The reference initialisation shared with exvit (crates/exvit-zoo/src/refinit.rs).

Each tensor's values come from a counter-based SplitMix64 stream keyed by seed ^ fnv1a64(key):
element i is mix(base + (i + 1) * golden) >> 11, scaled by 2**-53 to a float64 in [0, 1).
Both sides compute the same float64 expressions and round to float32, so the weights are
bit-identical and never need to be committed.
"""
import math

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
MASK64 = (1 << 64) - 1


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        return z ^ (z >> np.uint64(31))


def uniform_stream(seed: int, key: str, n: int) -> np.ndarray:
    base = np.uint64((seed ^ fnv1a64(key)) & MASK64)
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        states = base + i * GOLDEN
    return (mix(states) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def reference_values(seed: int, key: str, shape) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    last = key.rsplit(".", 1)[-1]
    if last == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    u = uniform_stream(seed, key, n)
    one_d = len(shape) == 1
    if last == "running_var" or (last == "weight" and one_d):
        v = 0.5 + u
    elif last == "running_mean" or (last == "bias" and one_d):
        v = (u - 0.5) * 0.4
    else:
        fan_in = max(n // max(shape[0], 1), 1)
        v = (2.0 * u - 1.0) * math.sqrt(3.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def reference_input(seed: int, shape) -> np.ndarray:
    n = int(np.prod(shape))
    return uniform_stream(seed, "input", n).astype(np.float32).reshape(shape)


def reference_init(model, seed: int) -> None:
    import torch

    with torch.no_grad():
        for key, t in model.state_dict().items():
            t.copy_(torch.from_numpy(reference_values(seed, key, t.shape)))
