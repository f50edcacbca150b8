"""Facts about CIFAR-10 that several layers need, stated once: image size, split sizes, channel statistics,
the official archive and its folder layout. No torch import, so planning and analysis can use them cheaply.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Sequence

IMAGE_SIZE = 32  # pixels per side; a patch larger than this leaves nothing to mix
CHANNELS = 3
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N_CLASSES = len(CLASSES)
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000  # the official split
BYTES_PER_IMAGE = CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # one uint8 image, as a row of a batch file's 'data'
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel, on [0, 1] pixels
STD = (0.2471, 0.2435, 0.2616)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


def batches_dir(data: str | os.PathLike) -> Path:
    """Accept either the parent folder or the cifar-10-batches-py folder itself."""
    data = Path(data)
    return data if data.name == FOLDER or (data / TEST_FILE).exists() else data / FOLDER


def split_sizes(data: str | os.PathLike) -> tuple[int, int] | None:
    """(train, test) image counts of a folder in the official layout, from its batch files' sizes (no pixels
    read: each pickle holds uint8 rows plus a small header); None when its batch files are not all there."""
    folder = batches_dir(data)
    files = [folder / name for name in (*TRAIN_FILES, TEST_FILE)]
    if not all(f.is_file() for f in files):
        return None
    counts = [f.stat().st_size // BYTES_PER_IMAGE for f in files]
    return sum(counts[:-1]), counts[-1]


def write_folder(root: str | os.PathLike, train: Sequence[tuple[Any, Sequence[int]]],
                 test: tuple[Any, Sequence[int]]) -> Path:
    """Write root/cifar-10-batches-py in the official layout: TRAIN_FILES[i] holds train[i] and TEST_FILE
    holds test, each (uint8 rows (n, BYTES_PER_IMAGE), labels) pickled as the archive's dicts; returns root."""
    if len(train) != len(TRAIN_FILES):
        raise ValueError(f"{len(TRAIN_FILES)} training batches expected, got {len(train)}")
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in (*zip(TRAIN_FILES, train), (TEST_FILE, test)):
        entry = {"batch_label": name, "labels": [int(v) for v in labels], "data": data}
        (folder / name).write_bytes(pickle.dumps(entry))
    return Path(root)
