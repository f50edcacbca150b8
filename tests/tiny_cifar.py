"""Tiny CIFAR-10 folders in the official `cifar-10-batches-py` pickle layout, generated for tests.

Images are class-dependent (a colour tint and a bright stripe whose position depends on the label, plus
noise) so a few steps of training can learn something, yet everything stays fast and deterministic.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def make_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    labels = rng.integers(0, 10, size=n)
    x = rng.integers(0, 80, size=(n, 3, 32, 32)).astype(np.int32)
    x[np.arange(n), labels % 3] += 100  # class tint
    for i, label in enumerate(labels):
        x[i, :, 3 * label:3 * label + 3, :] += 70  # class stripe
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072), [int(v) for v in labels]


def write_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"batch_label": path.name, "labels": labels, "data": data,
                     "filenames": [f"img_{i}.png" for i in range(len(labels))]}, fh)


def make_tiny_cifar(root: Path, n_train_per_batch: int = 64, n_test: int = 64, seed: int = 0) -> Path:
    """Write root/cifar-10-batches-py with 5 train batches and a test batch; returns root."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", *make_images(n_train_per_batch, rng))
    write_batch(folder / "test_batch", *make_images(n_test, rng))
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": n_train_per_batch}, fh)
    return Path(root)
