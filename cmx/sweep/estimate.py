"""What a sweep costs on this device: each run's wall time projected from measured rates, and the
wall-clock of the whole sweep on its slots. `cmx sweep --dry-run`, the line a sweep prints at launch and
`cmx runs --watch`'s sweep ETA all come from `project`.

Sources, best first — each projection says which it used and how many runs it rests on:

1. **measured runs** of the results directory on the same device (rates.py): runs of the same shape
   (h, d, p, k, batch, norm and the speed flags as set), scaled by data size × epochs (seconds per
   forward-image unit); else runs differing only in k, the nearest k, scaled by the ratio of the two
   kernels' probed step times (by FLOPs when probing is off); else the runs within 4× its FLOPs per
   image, scaled by FLOPs. Nearest-k first, by a probed ratio, because time is not proportional to FLOPs:
   on CPU large kernels cost more than their FLOPs (k15 1.6–3× its FLOP share of k9, issue 21), and a
   small model's step is mostly augmentation (64/4 p2 k9 took 1.15× k5's time here, for 1.6× its FLOPs).
   Each run also pays its measured startup.
2. **a probe** (probe.py): a few timed optimisation steps, an augmentation chunk and an evaluation pass of
   the shape, in a child process, cached per machine and shape — for a shape with no measured run near
   enough (only when probing is off: every run of the device, scaled by FLOPs, basis "FLOPs (far)").
3. **assumed**: FLOPs at an assumed sustained TFLOP/s (`--tflops`, default 40: an A100 in bf16) — only for
   a device never measured here and not probed.

The FLOPs, counted analytically per image for ConvMixer-h/d with patch p and kernel k at n = (32 // p)²
positions (MACs = multiply-adds; FLOPs = 2 × MACs):

    patch embedding   3·p²·h           per position
    each of d blocks  k²·h + h²        depthwise k×k plus pointwise 1×1, per position
    head              h·10             once

ConvMixer-256/8 p1 k9: n = 1024, (768 + 8 · (81·256 + 256²)) · 1024 + 2560 ≈ 707.5 M MACs ≈ 1.415 GFLOP
forward per image. Training an image costs ≈ 3× its forward (forward + backward w.r.t. activations and
weights). A run is (3 · n_train + n_test / eval_every) forward passes per epoch (50,000 train and 10,000
test images for full CIFAR-10).

Concurrency: with --workers N (CPU) or --per-gpu N, runs share a device, and each takes longer than alone.
The factor is measured where the results hold runs of one shape trained both alone and N at a time
(rates.py reads it from their timestamps); otherwise it is assumed to be N (the device's throughput is
split, no net gain), and the text says so. Device-hours count each run alone on the device; the
wall-clock schedules the runs, each at its shared speed, onto the slots in plan order, as the local
executor starts them (the first free slot takes the next run).
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Callable

from ..cifar import CHANNELS as C_IN, IMAGE_SIZE, N_CLASSES, split_sizes
from ..cifar import TEST_SIZE as CIFAR_TEST, TRAIN_SIZE as CIFAR_TRAIN
from . import probe, rates
DEFAULT_TFLOPS = 40.0  # assumed sustained bf16 throughput of an A100 on ConvMixer (see module docstring)
TRAIN_FACTOR = 3  # forward + backward ≈ 3 forward passes
FAR = 4.0  # runs more than 4× apart in FLOPs per image are scaled from only when nothing nearer exists
ALL_AT_ONCE = 10**6  # slots of a SLURM array without --max-parallel (its queueing is not projected)


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


ASSUMPTION = ("analytic conv FLOPs (patch embed + d·(k²·h + h²) per position) × 3 for training × images × "
              "epochs, plus evaluation, at an assumed {tflops:g} TFLOP/s sustained (set --tflops, or train or "
              "probe a run here to measure)")


# ---------------------------------------------------------------------- projection from measured rates
@dataclass(frozen=True)
class Projection:
    """One run's projected wall time alone on its device (its remaining epochs, plus startup)."""
    seconds: float
    basis: str  # "same shape" | "k9 by FLOPs" | "FLOPs" | "probe" | "assumed"
    n_runs: int  # measured runs it rests on (0 for a probe or an assumption)
    device: str  # the device name it is projected for


@dataclass
class SweepEstimate:
    """Projections of a sweep's runs plus the wall-clock of those left on `slots` slots."""
    runs: list[Projection]  # one per planned run, in plan order; 0 s for a done run
    left: list[bool]  # which runs are still to train
    whole: list[float]  # seconds of each run trained from its first epoch (what the sweep costs from scratch)
    device: str
    slots: int
    share: float  # how much longer a run takes when `slots` share the device (1 with one slot)
    share_basis: str  # how `share` was found: "", "measured from N runs", "assumed"
    wall_s: float  # the runs left, scheduled in plan order onto the slots
    evidence: int  # measured runs of this device in the results directory
    whole_assumed: int = 0  # runs whose from-scratch time rests on the assumed TFLOP/s (none measured here)

    @property
    def unit(self) -> str:
        return "CPU-h" if rates.is_cpu(self.device) else "GPU-h"

    def hours(self, left_only: bool = True) -> float:
        """Device-hours of the runs still to train (their remaining epochs), or of every run from scratch."""
        if not left_only:
            return sum(self.whole) / 3600.0
        return sum(p.seconds for p, todo in zip(self.runs, self.left) if todo) / 3600.0

    def sources(self) -> str:
        """'basis: 3 same shape, 2 k9 by FLOPs, from 4 finished runs measured here', '…: 2 probe (no …)'."""
        counts: dict[str, int] = {}
        for p, todo in zip(self.runs, self.left):
            if todo:
                counts[p.basis] = counts.get(p.basis, 0) + 1
        if not counts:
            return "nothing left to train"
        parts = ", ".join(f"{n} {basis}" for basis, n in counts.items())
        if self.evidence:
            return f"basis: {parts}, from {self.evidence} finished run{'s' if self.evidence != 1 else ''} measured here"
        return f"basis: {parts} (no finished run on this device in the results directory)"

    def slots_text(self) -> str:
        if self.slots == 1:
            return "one at a time"
        if self.slots >= ALL_AT_ONCE:
            return "all at once (the cluster's queue not counted)"
        what = "CPU workers" if rates.is_cpu(self.device) else "slots"
        return f"{self.slots} {what}, each run {self.share:.2g}× as long as alone ({self.share_basis})"


def project(runs: list[tuple], results, *, tflops: float = DEFAULT_TFLOPS, device: str | None = None,
            slots: int = 1, share_of: int | None = None, probing: bool | None = None,
            gpu: str | None = None, cluster: str | None = None, say=None) -> SweepEstimate:
    """Project every (config, epochs done, still to train) of `runs` on `device`, and the wall-clock of
    those still to train on `slots` slots of which `share_of` share one device (default: all of them on
    CPU, one per GPU).

    The device: this machine's for the first config (its GPU `gpu`), or on SLURM (`cluster` "gpu" or "cpu")
    the device of that kind most finished runs trained on — the cluster's nodes are not probed from here."""
    from ..store.resultsdir import ResultsDir

    store = results if isinstance(results, ResultsDir) else ResultsDir(results)
    configs = [r[0] for r in runs]
    every = rates.measured_runs(store)
    if device is None and cluster is not None:
        names = [m.device_name for m in every if rates.is_cpu(m.device_name) == (cluster == "cpu")]
        device = max(set(names), key=names.count) if names else ("cuda" if cluster == "gpu" else "cpu")
        probing = False
    device = device or rates.device_name(configs[0].device if configs else "cpu", gpu)
    measured = [m for m in every if m.device_name == device]
    factor = contention(measured)
    probing = probe.enabled() if probing is None else probing
    # probes: a shape with no finished run of this device near enough to scale from, and a kernel variant
    # of a measured shape with that shape (their ratio scales the measured time; see _project_one)
    to_probe = []
    for config, done, todo in runs:
        basis, used = _comparable(config, measured) if todo else ("same shape", [])
        if basis in ("", "FLOPs (far)"):
            to_probe.append(config)
        elif basis.endswith("by FLOPs"):
            to_probe += [config, config.replace(k=used[0].config.k)]
    timed = probe.step_times(to_probe, device, gpu=gpu, say=say) if probing and to_probe else {}
    startup = rates.startup_seconds(measured)
    evidence = _Evidence(measured, factor, startup, timed, tflops, device)
    one = lambda config, done: _project_one(config, done, evidence)  # noqa: E731
    projections = [one(config, done) for config, done, todo in runs]
    from_scratch = [one(config, 0) for config, done, todo in runs]
    whole = [p.seconds for p in from_scratch]
    share_of = share_of if share_of is not None else (slots if rates.is_cpu(device) else 1)
    share, share_basis = (1.0, "") if share_of <= 1 else factor(share_of)
    left = [bool(r[2]) for r in runs]
    wall = schedule([p.seconds * share for p, todo in zip(projections, left) if todo], slots)
    return SweepEstimate(projections, left, whole, device, slots, share, share_basis, wall, len(measured),
                         sum(p.basis == "assumed" for p in from_scratch))


@dataclass(frozen=True)
class _Evidence:
    """What every run of a sweep is projected from: the finished runs of this device, the contention factor,
    the startup seconds, the probed step times and the assumed TFLOP/s of an unmeasured device."""

    measured: list
    factor: Callable[[int], tuple[float, str]]
    startup: float
    timed: dict
    tflops: float
    device: str


def _project_one(config, done: int, evidence: _Evidence) -> Projection:
    measured, factor, startup, timed = evidence.measured, evidence.factor, evidence.startup, evidence.timed
    tflops, device = evidence.tflops, evidence.device
    n_train, n_test = dataset_sizes(config.data)
    work = rates.units(config, n_train, n_test, done)
    flops = config_forward_flops(config) * work
    if work == 0:
        return Projection(0.0, "done", 0, device)
    alone = lambda m: m.per_unit / factor(m.concurrency)[0]  # noqa: E731 - seconds per unit had it run alone
    key = rates.shape_key(config)
    basis, used = _comparable(config, measured)
    if basis == "same shape":
        rate = statistics.median(alone(m) for m in used)
        return Projection(rate * work + startup, basis, len(used), device)
    reference = rates.shape_key(config.replace(k=used[0].config.k)) if basis.endswith("by FLOPs") else None
    if reference in timed and key in timed:  # the measured k's time × the probed cost of this k against it
        rate = statistics.median(alone(m) for m in used) * timed[key][0] / timed[reference][0]
        return Projection(rate * work + startup, basis.replace("by FLOPs", "× probed ratio"), len(used), device)
    if used and (basis != "FLOPs (far)" or key not in timed):
        per_flop = statistics.median(alone(m) / config_forward_flops(m.config) for m in used)
        return Projection(per_flop * flops + startup, basis, len(used), device)
    if key in timed:
        step_s, eval_s = timed[key]
        steps = n_train // config.batch_size
        evals = sum(1 for e in range(done + 1, config.epochs + 1)
                    if e % config.eval_every == 0 or e == config.epochs)
        return Projection((config.epochs - done) * steps * step_s + evals * n_test * eval_s, "probe", 0, device)
    return Projection(gpu_hours(flops, tflops) * 3600.0, "assumed", 0, device)


def _comparable(config, measured) -> tuple[str, list]:
    """(basis, runs) to project `config`'s time from: runs of its shape; else the nearest k of its shape
    (scaled by FLOPs, or by a probe's ratio of the two kernels); else the runs within FAR× its FLOPs per
    image; else ("FLOPs (far)", all runs), which a probe beats. ("", []): no measured run at all.

    Why not any shape: time per FLOP is not constant — a small model on CPU spends most of a step on
    augmentation, so its rate scaled to a model 30× larger would be far off."""
    if not measured:
        return "", []
    same = [m for m in measured if rates.shape_key(m.config) == rates.shape_key(config)]
    if same:
        return "same shape", same
    other_k = [m for m in measured if _without_k(m.config) == _without_k(config)]
    if other_k:
        nearest = min({m.config.k for m in other_k}, key=lambda k: (abs(k - config.k), -k))
        return f"k{nearest} by FLOPs", [m for m in other_k if m.config.k == nearest]
    flops = config_forward_flops(config)
    near = [m for m in measured if 1 / FAR <= config_forward_flops(m.config) / flops <= FAR]
    return ("FLOPs", near) if near else ("FLOPs (far)", measured)


def _without_k(config) -> tuple:
    return tuple(v for name, v in zip(rates.SHAPE_FIELDS, rates.shape_key(config)) if name != "k")


def contention(measured: list) -> Callable[[int], tuple[float, str]]:
    """factor(n) -> (how many times longer a run takes with n runs sharing the device, how known).

    Measured when some shape was trained both alone and n at a time (ratio of its median rates, median over
    such shapes); otherwise assumed n: sharing splits the device's throughput without a net gain."""
    by_shape: dict[tuple, dict[int, list[float]]] = {}
    for m in measured:
        by_shape.setdefault(rates.shape_key(m.config), {}).setdefault(m.concurrency, []).append(m.per_unit)

    def factor(n: int) -> tuple[float, str]:
        if n <= 1:
            return 1.0, "alone"
        ratios, runs = [], 0
        for levels in by_shape.values():
            if 1 in levels and n in levels:
                ratios.append(statistics.median(levels[n]) / statistics.median(levels[1]))
                runs += len(levels[n]) + len(levels[1])
        if ratios:
            return statistics.median(ratios), f"measured from {runs} runs trained alone and {n} at a time"
        return float(n), f"assumed: {n} runs at once split the device, no runs here measured {n} at a time"

    return factor


def schedule(seconds: list[float], slots: int) -> float:
    """Makespan of runs started in this order, each on the first slot to come free (the local executor)."""
    free = [0.0] * max(1, slots)
    for s in seconds:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += s
    return max(free)
