"""The GPU check's real runs: a short training of 256/8 p1 k9 on real images, and packing (4 short runs one
at a time vs all four at once on one GPU, through `cmx sweep --gpus 0 --per-gpu N`).

Training: a 2-epoch probe measures the seconds per epoch (its second epoch, past the one-time start-up), then
the real run gets as many epochs as fit in the time given (the one-cycle schedule needs the count up front).
Its 200-epoch full-CIFAR-10 time is projected from its mean epoch time scaled by 50,000 / its training
images; evaluation scales the same way when the test split keeps CIFAR-10's 1:5 ratio to the training split
(cifar10-mini's 2,000:10,000 does). Labelled a projection.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...cifar import TRAIN_SIZE
from ...paper import PAPER_EPOCHS
from ...config import RunConfig
from ...run.data import load_cifar10
from ...store.resultsdir import ResultsDir

SECTION_TRAIN, SECTION_PACK = "training", "packing"
MODEL = dict(h=256, d=8, p=1, k=9, batch_size=64)
PACK_RUNS, PACK_EPOCHS = 4, 2
TRAINING_MIN_S = 50  # the probe (2 epochs, start-up included) and one epoch more, on cifar10-mini (estimate)
PACK_RUN_S = 12  # one `cmx train` of the packing sweep, alone: Python + torch + CUDA start, 2 short epochs (estimate)


def epoch_seconds(results: Path, run_id: str) -> list[float]:
    return list(pd.read_csv(ResultsDir(results).run(run_id).epochs_csv)["seconds"])


def short_training(report, data: Path, seconds: float, device: str = "cuda", model: dict = MODEL,
                   progress: str = "lines") -> dict:
    """Train `model` on `data` for as many epochs as fit in `seconds` (probe included); report and return
    its figures."""
    from ...run.train import train

    t0 = time.monotonic()
    images = load_cifar10(data, download=False)  # loaded once for the probe and the run
    n_train = images.train_x.shape[0]
    with tempfile.TemporaryDirectory(prefix="cmx-gpu-check-") as tmp:
        probe_cfg = RunConfig(**model, epochs=2, device=device, data=str(data))
        probe = train(probe_cfg, Path(tmp) / "probe", progress="none", data=images)
        per_epoch = epoch_seconds(Path(tmp) / "probe", probe["run_id"])[-1]
        left = seconds - (time.monotonic() - t0)
        epochs = int(min(PAPER_EPOCHS, left // per_epoch - 1))  # one epoch's margin for start-up
        report.add(SECTION_TRAIN, "probe (2 epochs)", "info", f"{per_epoch:.1f} s per epoch of {n_train:,} images "
                   f"→ {max(epochs, 0)} epochs fit", seconds_per_epoch=round(per_epoch, 3),
                   epochs_chosen=max(epochs, 0))
        if epochs < 1:
            report.add(SECTION_TRAIN, f"{model['h']}/{model['d']} p{model['p']} k{model['k']} on real images", "skip",
                       f"skipped: budget (an epoch takes {per_epoch:.0f} s, {left:.0f} s left)")
            return {"epochs": 0, "seconds_per_epoch": per_epoch}
        config = RunConfig(**model, epochs=epochs, device=device, data=str(data))
        result = train(config, Path(tmp) / "run", progress=progress, data=images)
        seconds_each = epoch_seconds(Path(tmp) / "run", result["run_id"])
    steady = seconds_each[1:] or seconds_each  # the first epoch carries the start-up
    projected_h = PAPER_EPOCHS * (sum(steady) / len(steady)) * TRAIN_SIZE / n_train / 3600
    figures = {"epochs": epochs, "train_images": n_train, "test_acc": result["test_acc"],
               "best_test_acc": result["best_test_acc"], "img_per_s": result["img_per_s"],
               "wall_s": result["wall_s"], "projected_200_epoch_full_cifar_hours": round(projected_h, 3),
               "projection_method": "projection: 200 × mean epoch seconds (first epoch excluded) × 50,000 / "
                                    "training images (eval scales alike at CIFAR-10's 1:5 test:train ratio)"}
    verdict = "pass" if result["test_acc"] >= 40 else "FAIL"  # chance is 10%
    report.add(SECTION_TRAIN, f"{model['h']}/{model['d']} p{model['p']} k{model['k']} on real images", verdict,
               f"{epochs} epochs: test acc {result['test_acc']:.2f}% (best {result['best_test_acc']:.2f}%), "
               f"{result['img_per_s']:,.0f} img/s; projected 200-epoch full CIFAR-10: {projected_h:.2f} h "
               f"(projection)", **figures)
    return figures


def packing_sweep(directory: Path, data: Path, device: str = "cuda", model: dict = MODEL,
                  epochs: int = PACK_EPOCHS, runs: int = PACK_RUNS) -> Path:
    """A sweep file of `runs` short runs (seeds 0..runs-1) of `model`."""
    base = {**model, "epochs": epochs, "device": device, "data": str(data)}
    path = Path(directory) / "packing.yaml"  # JSON is YAML: the sweep loader reads it as written
    path.write_text(json.dumps({"name": "gpu-check-packing", "base": base, "seeds": list(range(runs))}))
    return path


@dataclass(frozen=True)
class Packing:
    """What the packing section trains: `runs` short runs of MODEL, `epochs` each, on `n_train` images."""
    n_train: int
    runs: int = PACK_RUNS
    epochs: int = PACK_EPOCHS

    @property
    def images(self) -> int:
        """Training images of all the runs together (whole batches, as the train loop takes them)."""
        return self.runs * self.epochs * (self.n_train // MODEL["batch_size"]) * MODEL["batch_size"]


def packing(report, data: Path, budget, run_sweep, plan: Packing) -> None:
    """Total img/s of `plan.runs` runs with --per-gpu 1 and --per-gpu `plan.runs`. `run_sweep(file, results,
    per_gpu, timeout)` runs the sweep and returns its exit code, 124 when stopped for time (the driver passes
    a `cmx sweep` subprocess, killed with its trainings); `budget` (budget.Budget) is asked before each."""
    runs, epochs, n_train, images = plan.runs, plan.epochs, plan.n_train, plan.images
    rates = {}
    with tempfile.TemporaryDirectory(prefix="cmx-gpu-pack-") as tmp:
        sweep = packing_sweep(Path(tmp), data, epochs=epochs, runs=runs)
        for per_gpu in (1, runs):
            check = f"{runs} runs, --per-gpu {per_gpu}"
            if not budget.fits(report, SECTION_PACK, check, PACK_RUN_S * (runs if per_gpu == 1 else 2)):
                continue
            t0 = budget.clock()
            code = run_sweep(sweep, Path(tmp) / f"per-gpu-{per_gpu}", per_gpu, budget.left() - 1)
            wall = budget.clock() - t0
            if code == 124:
                report.add(SECTION_PACK, check, "skip", f"skipped: budget: cmx sweep stopped at the section's "
                           f"deadline after {wall:.0f} s")
                continue
            if code != 0:
                report.add(SECTION_PACK, check, "FAIL", f"cmx sweep exited {code} after {wall:.0f} s")
                continue
            rates[per_gpu] = images / wall
            report.add(SECTION_PACK, check, "info",
                       f"{rates[per_gpu]:,.0f} img/s in total ({wall:.0f} s wall for {runs} × {epochs} epochs of "
                       f"{n_train:,} images, start-up included)", total_img_per_s=round(rates[per_gpu], 1),
                       wall_s=round(wall, 1), runs=runs, epochs=epochs)
    if len(rates) == 2:
        gain = rates[runs] / rates[1]
        report.add(SECTION_PACK, f"--per-gpu {runs} vs 1", "info", f"{gain:.2f}× the total img/s",
                   gain=round(gain, 3))
