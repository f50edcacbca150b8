"""The reference pipeline: the public convmixer-cifar10 script (locuslab/convmixer-cifar10, MIT licence), its
model and its training as that script states them — the baseline that `cmx bench --vs-reference` and
benchmarks/end_to_end.py measure cmx against. Written once, here in the package, so an installed cmx has it.

    model      the paper's Fig. 3 as an nn.Sequential, NCHW, fp32 (`convmixer`)
    data       per-image torchvision PIL transforms (RandomResizedCrop, flip, RandAugment, ColorJitter, ToTensor,
               Normalize, RandomErasing) in a DataLoader; the batch files are read directly (no md5 check), so
               it also runs on subsets
    training   AdamW, the piecewise-linear lr schedule, cross-entropy, clip 1.0 when asked (`train_step`)

Kept step for step with the restatement the project was first benchmarked with, so the figures in
benchmarks/RESULTS.md stay comparable. Prints one line per epoch and a final JSON line.

    python -m cmx.bench.reference --data DIR [--hdim 64 --depth 4 --psize 2 --conv-ks 5 --epochs 5 ...]
    python -m cmx.bench.reference --data DIR --mode aug [--batches 40]   # augmentation img/s (one JSON line)
    python -m cmx.bench.reference --mode step [--hdim 256 --depth 8 --psize 1 --conv-ks 9 --batch-size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..cifar import FOLDER, MEAN, STD, TEST_FILE, TRAIN_FILES, batches_dir
from ..errors import UserError

# The reference set to cmx's ops for `cmx bench`: crop scale 0.75-1, flip, RandAugment 2 ops at magnitude 9,
# erasing p 0.25, and its ColorJitter (an op cmx does not have) off. Its defaults (1 op at magnitude 8, jitter
# 0.1) measured 1,819-1,851 img/s here against 1,891-1,932 with these: the ratio is not flattered.
SAME_OPS = ("--scale", "0.75", "--ra-n", "2", "--ra-m", "9", "--jitter", "0", "--reprob", "0.25")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this cmx: its child runs the same cmx


# ---------------------------------------------------------------------- the model and its step
class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def convmixer(dim: int, depth: int, kernel_size: int, patch_size: int, n_classes: int = 10) -> nn.Module:
    """The paper's Fig. 3, exactly as the public script writes it (an nn.Sequential, NCHW)."""
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim),
        *[nn.Sequential(Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                                               nn.GELU(), nn.BatchNorm2d(dim))),
                        nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(), nn.BatchNorm2d(dim)) for _ in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, n_classes))


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step as the script takes it: zero_grad, cross-entropy on hard labels, backward,
    clip 1.0 (when `clip`), AdamW step. Returns (loss, logits)."""
    opt.zero_grad()
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss, out


# ---------------------------------------------------------------------- its data pipeline
class Batches(torch.utils.data.Dataset):
    """A split read whole from the batch files; one PIL transform per image on access."""

    def __init__(self, root, train: bool, transform):
        folder = batches_dir(root)
        xs, ys = [], []
        for name in TRAIN_FILES if train else (TEST_FILE,):
            with open(folder / name, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(entry["data"])
            ys += entry.get("labels") or entry["fine_labels"]
        self.x = np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3) for PIL
        self.y, self.t = ys, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.t(Image.fromarray(self.x[i])), self.y[i]


def loaders(a: argparse.Namespace):
    """(train loader, test loader) with the script's transforms, batch size and workers."""
    import torchvision.transforms as T

    train_t = T.Compose([T.RandomResizedCrop(32, scale=(a.scale, 1.0), ratio=(1.0, 1.0)),
                         T.RandomHorizontalFlip(p=0.5), T.RandAugment(num_ops=a.ra_n, magnitude=a.ra_m),
                         T.ColorJitter(a.jitter, a.jitter, a.jitter), T.ToTensor(), T.Normalize(MEAN, STD),
                         T.RandomErasing(p=a.reprob)])
    test_t = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    trainset, testset = Batches(a.data, True, train_t), Batches(a.data, False, test_t)
    dl = dict(batch_size=a.batch_size, num_workers=a.workers, persistent_workers=a.workers > 0)
    return (torch.utils.data.DataLoader(trainset, shuffle=True, **dl),
            torch.utils.data.DataLoader(testset, shuffle=False, **dl))


# ---------------------------------------------------------------------- the three modes
def step_rate(a: argparse.Namespace) -> dict:
    """`--mode step`: img/s of train_step on one random batch (3 untimed steps, then `batches` timed)."""
    model = convmixer(a.hdim, a.depth, a.conv_ks, a.psize)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr_max, weight_decay=a.wd)
    X, y = torch.randn(a.batch_size, 3, 32, 32), torch.randint(0, 10, (a.batch_size,))
    for _ in range(3):
        train_step(model, opt, X, y)[0].item()
    t = time.perf_counter()
    for _ in range(a.batches):
        train_step(model, opt, X, y)[0].item()
    dt = time.perf_counter() - t
    return {"mode": "step", "img_per_s": round(a.batches * a.batch_size / dt, 1),
            "config": f"{a.hdim}/{a.depth} p{a.psize} k{a.conv_ks} bs{a.batch_size}"}


def aug_rate(a: argparse.Namespace, trainloader) -> dict:
    """`--mode aug`: img/s of the DataLoader alone (its workers started first), over `batches` batches."""
    it = iter(trainloader)
    next(it)  # start the workers
    t, n = time.perf_counter(), 0
    for _ in range(a.batches):
        try:
            X, y = next(it)
        except StopIteration:
            it = iter(trainloader)
            X, y = next(it)
        n += len(y)
    dt = time.perf_counter() - t
    return {"mode": "aug", "img_per_s": round(n / dt, 1), "workers": a.workers}


def train(a: argparse.Namespace, trainloader, testloader) -> dict:
    """`--mode train`: the script's training, one line per epoch; returns the final figures."""
    model = convmixer(a.hdim, a.depth, a.conv_ks, a.psize)
    sched = lambda t: np.interp([t], [0, a.epochs * 2 // 5, a.epochs * 4 // 5, a.epochs],  # noqa: E731
                                [0, a.lr_max, a.lr_max / 20.0, 0])[0]
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr_max, weight_decay=a.wd)
    t0, acc = time.time(), 0.0
    for epoch in range(a.epochs):
        start, tl, ta, n = time.time(), 0, 0, 0
        model.train()
        for i, (X, y) in enumerate(trainloader):
            lr = sched(epoch + (i + 1) / len(trainloader))
            opt.param_groups[0].update(lr=lr)
            loss, out = train_step(model, opt, X, y, clip=a.clip_norm)
            tl += loss.item() * y.size(0)
            ta += (out.argmax(1) == y).sum().item()
            n += y.size(0)
        model.eval()
        c = m = 0
        with torch.no_grad():
            for X, y in testloader:
                c += (model(X).argmax(1) == y).sum().item()
                m += y.size(0)
        acc = c / m
        print(f"epoch {epoch} train_acc {ta/n:.4f} test_acc {acc:.4f} time {time.time()-start:.1f}s lr {lr:.5f}",
              flush=True)
    return {"test_acc": acc, "wall_s": round(time.time() - t0, 1), "train_images": len(trainloader.dataset)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cmx.bench.reference", description=__doc__.splitlines()[0])
    p.add_argument("--data", help=f"CIFAR-10 folder (holding {FOLDER}); not needed for --mode step")
    p.add_argument("--mode", default="train", choices=["train", "aug", "step"])
    p.add_argument("--batches", default=40, type=int, help="batches to time in aug/step modes")
    p.add_argument("--batch-size", default=128, type=int)
    p.add_argument("--scale", default=0.75, type=float)
    p.add_argument("--reprob", default=0.25, type=float)
    p.add_argument("--ra-m", default=8, type=int)
    p.add_argument("--ra-n", default=1, type=int)
    p.add_argument("--jitter", default=0.1, type=float)
    p.add_argument("--hdim", default=64, type=int)
    p.add_argument("--depth", default=4, type=int)
    p.add_argument("--psize", default=2, type=int)
    p.add_argument("--conv-ks", default=5, type=int)
    p.add_argument("--wd", default=0.01, type=float)
    p.add_argument("--clip-norm", action="store_true")
    p.add_argument("--epochs", default=5, type=int)
    p.add_argument("--lr-max", default=0.01, type=float)
    p.add_argument("--workers", default=1, type=int)
    p.add_argument("--threads", default=0, type=int)
    p.add_argument("--seed", default=0, type=int)
    a = p.parse_args(argv)
    if a.mode != "step" and not a.data:
        p.error(f"--data DIR is needed for --mode {a.mode}")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.mode == "step":
        print(json.dumps(step_rate(a)))
        return
    trainloader, testloader = loaders(a)
    figures = aug_rate(a, trainloader) if a.mode == "aug" else train(a, trainloader, testloader)
    print(json.dumps(figures))


# ---------------------------------------------------------------------- as `cmx bench` runs it
def aug_in_child(data: Path, batch_size: int, batches: int, workers: int = 1, script: Path | None = None) -> float:
    """img/s of the reference's DataLoader with SAME_OPS, in a process of its own as the script runs (this
    module's `--mode aug`, or `script`, e.g. the original, which takes the same flags), from its JSON line."""
    where = [str(script)] if script else ["-m", "cmx.bench.reference"]
    cmd = [sys.executable, *where, "--mode", "aug", "--data", str(data), "--batch-size", str(batch_size),
           "--batches", str(batches), "--workers", str(workers), *SAME_OPS]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"reference {' '.join(where)} --mode aug failed: {tail}")
    return float(json.loads(lines[-1])["img_per_s"])


if __name__ == "__main__":
    main()
