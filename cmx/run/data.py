"""CIFAR-10 from the official `cifar-10-batches-py` pickle layout, held whole as uint8 tensors.

Why our own loader: torchvision's CIFAR10 class md5-checks every file, so it refuses subsets such as the
10k-image mini set; and its per-image PIL path is what makes reference pipelines CPU-bound. Here the whole
dataset becomes one (N, 3, 32, 32) uint8 tensor that the trainer moves to the device once.

Download (only when the folder has no data at all): the official archive is fetched with HTTP range
resume into a `.part` file, md5-verified with torchvision's utilities, extracted into a temporary folder
and renamed into place, so an interrupted download never leaves a half dataset behind.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import cifar
from ..cifar import ARCHIVE_MD5, CLASSES, FOLDER, MEAN, STD, TEST_FILE, TRAIN_FILES, batches_dir  # noqa: F401 (re-exported)
from ..errors import UserError

URL = cifar.URL  # a module attribute so tests can point the download elsewhere
_BYTES_PER_IMAGE = cifar.BYTES_PER_IMAGE


@dataclass(frozen=True)
class Cifar10:
    train_x: torch.Tensor  # (50000, 3, 32, 32) uint8
    train_y: torch.Tensor  # (50000,) int64
    test_x: torch.Tensor  # (10000, 3, 32, 32) uint8
    test_y: torch.Tensor  # (10000,) int64

    def to(self, device) -> "Cifar10":
        return Cifar10(*(t.to(device, non_blocking=True) for t in
                         (self.train_x, self.train_y, self.test_x, self.test_y)))


def dataset_fingerprint(data: str | os.PathLike) -> str:
    """A name for *which* data a run learns from, used in the run_id.

    "cifar10" for the official files (md5s as torchvision lists them; also when the folder is absent and
    will be downloaded); otherwise "cifar10-<8 hex>" from the files' names and contents, so runs on a
    subset or a re-encoding never share a run_id (and a table row) with full-CIFAR runs, and two subsets of
    the same size (say, drawn with different seeds) never share one either. Hashed once per process
    (≈0.3 s for a full-size set).
    """
    folder = batches_dir(data)
    files = [folder / name for name in (*TRAIN_FILES, TEST_FILE)]
    if not all(f.is_file() for f in files):
        return "cifar10"
    stats = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint(stats)


@functools.lru_cache(maxsize=16)
def _fingerprint(stats: tuple[tuple[str, int, int], ...]) -> str:
    sizes = [size for _, size, _ in stats]
    # a batch pickle is 3072 bytes per image plus ~1% of labels/filenames: 10,000 images ≈ 31.0 MB
    if all(31_000_000 < size < 31_100_000 for size in sizes):
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_md5

        official = dict(CIFAR10.train_list + CIFAR10.test_list)
        if all(check_md5(path, official[Path(path).name]) for path, _, _ in stats):
            return "cifar10"
    digest = hashlib.sha256()
    for path, _, _ in stats:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return f"cifar10-{digest.hexdigest()[:8]}"


def load_cifar10(data: str | os.PathLike, download: bool = True) -> Cifar10:
    """Load (downloading first if the folder holds nothing) and validate; UserError on any problem."""
    folder = batches_dir(data)
    if download and not any((folder / n).exists() for n in (*TRAIN_FILES, TEST_FILE)):
        download_cifar10(folder.parent)
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (folder / n).is_file()]
    if missing:
        raise UserError(f"data dir {folder} is incomplete: missing {', '.join(missing)}; pass --data DIR")
    train = [_read_batch(folder / n) for n in TRAIN_FILES]
    test_x, test_y = _read_batch(folder / TEST_FILE)
    return Cifar10(
        train_x=torch.from_numpy(np.concatenate([x for x, _ in train])),
        train_y=torch.from_numpy(np.concatenate([y for _, y in train])),
        test_x=torch.from_numpy(test_x), test_y=torch.from_numpy(test_y),
    )


def write_subset(source: str | os.PathLike, dest: str | os.PathLike, n_train: int, n_test: int,
                 seed: int = 0) -> Path:
    """Write a random subset of `source` (n_train training and n_test test images, drawn without
    replacement by `seed`) to dest/cifar-10-batches-py in the official layout; returns that folder.

    Why: a quick study (a whole sweep in minutes on a CPU, a smoke test of a cluster setup) on real images.
    Its runs get their own dataset fingerprint, so tables never mix them with full CIFAR-10 runs. The
    folder appears whole or not at all (written beside it, then renamed).
    """
    dest = Path(dest)
    target = dest / FOLDER
    if target.exists():
        raise UserError(f"{target} already exists; pick another destination or remove it")
    data = load_cifar10(source, download=False)
    have_train, have_test = data.train_x.shape[0], data.test_x.shape[0]
    if not (5 <= n_train <= have_train and 1 <= n_test <= have_test):
        raise UserError(f"--train must be 5..{have_train} and --test 1..{have_test} (the images in {source}); "
                        f"got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    train_idx, test_idx = rng.permutation(have_train)[:n_train], rng.permutation(have_test)[:n_test]
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".subset-", dir=dest))
    except OSError as err:
        raise UserError(f"cannot write to {dest} ({err.strerror or err})") from None
    try:
        parts = np.array_split(train_idx, len(TRAIN_FILES))
        for name, idx in (*zip(TRAIN_FILES, parts), (TEST_FILE, test_idx)):
            x, y = (data.test_x, data.test_y) if name == TEST_FILE else (data.train_x, data.train_y)
            batch = {"batch_label": f"{name} (subset, seed {seed})", "labels": y[idx].tolist(),
                     "data": x[idx].reshape(len(idx), _BYTES_PER_IMAGE).numpy(),
                     "filenames": [f"{name}_{int(i)}.png" for i in idx]}
            with open(staging / name, "wb") as fh:
                pickle.dump(batch, fh)
        with open(staging / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": len(parts[0]),
                         "num_vis": _BYTES_PER_IMAGE}, fh)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The official files are pickles; refuse anything but the numpy/bytes objects they contain."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → ((N, 3, 32, 32) uint8, (N,) int64), with one-line errors for every defect."""
    try:
        with open(path, "rb") as fh:
            entry = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, ImportError) as err:
        raise UserError(f"{path}: not a readable CIFAR-10 batch (truncated or corrupt pickle: "
                        f"{type(err).__name__})") from None
    if not isinstance(entry, dict):
        raise UserError(f"{path}: expected a dict with 'data' and 'labels', got {type(entry).__name__}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise UserError(f"{path}: missing 'data' or 'labels' (keys: {sorted(map(str, entry))})")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"])
    if data.ndim != 2 or data.shape[1] != _BYTES_PER_IMAGE or data.dtype != np.uint8:
        raise UserError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    if data.shape[0] == 0:
        raise UserError(f"{path}: holds no images")
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise UserError(f"{path}: labels must be in 0-9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32).copy(), labels.astype(np.int64)


# ---------------------------------------------------------------------- download
def download_cifar10(root: Path, url: str = URL, md5: str = ARCHIVE_MD5, timeout: float = 30.0) -> None:
    """Fetch, verify and unpack the official archive into root/cifar-10-batches-py, atomically."""
    from torchvision.datasets.utils import check_md5, extract_archive

    created = [d for d in (root, *root.parents) if not d.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create data dir {root}: {err.strerror}; pass --data DIR") from None
    archive = root / Path(url).name
    if not (archive.exists() and check_md5(str(archive), md5)):
        part = archive.with_name(archive.name + ".part")
        try:
            _fetch_resumable(url, part, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            if part.exists() and part.stat().st_size == 0:
                part.unlink()  # keep a partial download (it resumes), never an empty one
            for d in created:  # leave no empty folders behind
                with contextlib.suppress(OSError):
                    d.rmdir()
            reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
            raise UserError(f"cannot download CIFAR-10 from {url} ({reason}); pass --data DIR "
                            f"pointing to a folder with {FOLDER}/") from None
        if not check_md5(str(part), md5):
            part.unlink(missing_ok=True)
            raise UserError(f"downloaded CIFAR-10 archive failed its md5 check ({md5}); try again or pass --data DIR")
        os.replace(part, archive)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        extract_archive(str(archive), str(staging))
        target = root / FOLDER
        if target.exists():
            shutil.rmtree(target)  # only reached when it held no batch files (see load_cifar10)
        os.replace(staging / FOLDER, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_resumable(url: str, part: Path, timeout: float) -> None:
    """Download url into `part`, continuing from its current size with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and response.status == 206
        with open(part, "ab" if resumed else "wb") as fh:
            shutil.copyfileobj(response, fh, length=1 << 20)
