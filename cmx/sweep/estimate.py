"""How much compute a run costs, projected from FLOPs (not measured): GPU-hours for `cmx sweep --dry-run`.

Why analytic: a sweep is planned before any GPU is touched, and the paper's 43 CIFAR runs differ mostly in
h, d, p and k, whose cost is easy to count exactly. Per image, ConvMixer-h/d with patch p and kernel k runs
at n = (32 // p)² positions (MACs = multiply-adds; FLOPs = 2 × MACs):

    patch embedding   3·p²·h           per position
    each of d blocks  k²·h + h²        depthwise k×k plus pointwise 1×1, per position
    head              h·10             once

ConvMixer-256/8 p1 k9: n = 1024, (768 + 8 · (81·256 + 256²)) · 1024 + 2560 ≈ 707.5 M MACs ≈ 1.415 GFLOP
forward per image. Training an image costs ≈ 3× its forward (forward + backward w.r.t. activations and
weights) ≈ 4.2 GFLOP. A run is (3 · n_train + n_test / eval_every) forward passes per epoch (50,000 train
and 10,000 test images for full CIFAR-10). Norms, activations, augmentation and the optimizer are left out:
they add memory traffic, not many FLOPs, and are what the assumed throughput has to absorb.

GPU-hours = FLOPs / (sustained TFLOP/s · 10¹² · 3600). The default 40 TFLOP/s is an *assumption* for an
A100 in bf16 on these convolutions (≈13% of its 312 TFLOP/s dense peak: the depthwise convolutions are
memory-bound, the 1×1 ones are small matmuls); pass `--tflops` with a number measured by `cmx bench` on
your hardware. The result is a projection for planning, not a measurement.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..cifar import CHANNELS as C_IN, IMAGE_SIZE, N_CLASSES, split_sizes
from ..cifar import TEST_SIZE as CIFAR_TEST, TRAIN_SIZE as CIFAR_TRAIN
DEFAULT_TFLOPS = 40.0  # assumed sustained bf16 throughput of an A100 on ConvMixer (see module docstring)
TRAIN_FACTOR = 3  # forward + backward ≈ 3 forward passes


def forward_flops(h: int, d: int, p: int, k: int, image: int = IMAGE_SIZE) -> float:
    """Convolution + head FLOPs of one forward pass of one image (2 FLOPs per multiply-add)."""
    positions = (image // p) ** 2
    per_position = C_IN * p * p * h + d * (k * k * h + h * h)
    return 2.0 * (positions * per_position + h * N_CLASSES)


def config_forward_flops(config) -> float:
    return forward_flops(config.h, config.d, config.p, config.k)


def dataset_sizes(data: str | os.PathLike | None) -> tuple[int, int]:
    """(train, test) image counts from the batch files' sizes (no pixels read); full CIFAR-10 if absent.

    Absent data is what a run would download: the official 50,000/10,000 split.
    """
    return (split_sizes(data) if data else None) or (CIFAR_TRAIN, CIFAR_TEST)


def run_flops(config, n_train: int = CIFAR_TRAIN, n_test: int = CIFAR_TEST) -> float:
    """FLOPs of a whole run: every epoch trains on n_train images and evaluates n_test / eval_every."""
    forward = config_forward_flops(config)
    train_images = (n_train // config.batch_size) * config.batch_size  # the trainer drops the last batch
    evals = -(-config.epochs // config.eval_every)  # ceil: evaluated every N epochs and after the last one
    return forward * (TRAIN_FACTOR * train_images * config.epochs + n_test * evals)


def gpu_hours(flops: float, tflops: float = DEFAULT_TFLOPS) -> float:
    """Hours on one GPU sustaining `tflops` TFLOP/s."""
    if not tflops > 0:
        raise ValueError(f"throughput must be > 0 TFLOP/s, got {tflops}")
    return flops / (tflops * 1e12) / 3600.0


@dataclass(frozen=True)
class Estimate:
    forward_gflop: float  # per image
    run_pflop: float  # whole run
    gpu_hours: float


def estimate(config, tflops: float = DEFAULT_TFLOPS, sizes: tuple[int, int] | None = None) -> Estimate:
    """The projection for one RunConfig; `sizes` = (n_train, n_test), default read from config.data."""
    n_train, n_test = sizes if sizes is not None else dataset_sizes(config.data)
    flops = run_flops(config, n_train, n_test)
    return Estimate(config_forward_flops(config) / 1e9, flops / 1e15, gpu_hours(flops, tflops))


ASSUMPTION = ("projection, not a measurement: analytic conv FLOPs (patch embed + d·(k²·h + h²) per position) "
              "× 3 for training × images × epochs, plus evaluation, at an assumed {tflops:g} TFLOP/s sustained "
              "per GPU (set --tflops from `cmx bench`)")
