"""Measured training rates: how fast finished runs of the results directory trained, per device.

Why from the results directory: it already holds the best evidence of what a run costs on a machine — the
epoch times (epochs.csv, evaluation included) of runs that trained there, with the device in result.json's
provenance. A rate is seconds per unit of work, where one unit is one image's forward pass: an epoch is
3 · (trained images) units (forward + backward) plus the evaluated test images. Same-shape runs give
seconds per unit directly; runs of other shapes give seconds per FLOP (estimate.py counts the FLOPs).

Runs trained side by side on one host (a sweep's --workers) are slower each than a run alone; how many
ran at once is read from the runs' own timestamps (status.json's `started`, result.json's `finished`):
a run's *concurrency* is 1 plus the time-weighted number of other runs of its host overlapping it. Only
CPU runs are counted this way: GPU runs of one host overlap on different GPUs without sharing one. A CPU
run given a part of the cores (a --workers slot: its provenance's `cpu_share`, 2 for 1 of 2) counts as
sharing the device that many ways even while it ran alone: the last run of a 2-worker sweep, alone for
minutes on its one thread, is no faster for it (measured: a k15 run's 297 s, counted as alone, projected
the next seed's k15 at 2 × 297 s). Runs from before `cpu_share` was recorded count their overlaps only.

Reads files only (no torch), so a dry run stays fast.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..cifar import TEST_SIZE, TRAIN_SIZE, split_sizes
from ..machine import cpu_model, parse_share
from ..config import RunConfig
from ..store.resultsdir import ResultsDir
from ..store.rundir import RunDir
from ..files import parse_iso

TRAIN_FACTOR = 3  # forward + backward ≈ 3 forward passes (estimate.py counts FLOPs the same way)
LAUNCH_LINE = "=== cmx sweep "  # how sweep/local.py starts a run's train.log entry: "=== cmx sweep <time>: slot…"
SHAPE_FIELDS = ("h", "d", "p", "k", "batch_size", "norm", "amp", "channels_last", "compile")


def shape_key(config: RunConfig) -> tuple:
    """What decides a step's time: the model's shape, the batch, and the speed flags as set."""
    return tuple(getattr(config, name) for name in SHAPE_FIELDS)


def epoch_units(config: RunConfig, n_train: int, n_test: int, epoch: int) -> float:
    """Forward-image equivalents of one epoch (1-based): training on every full batch, plus evaluation
    when the trainer evaluates after it (every eval_every epochs and after the last)."""
    trained = (n_train // config.batch_size) * config.batch_size  # the trainer drops the last batch
    evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
    return TRAIN_FACTOR * trained + (n_test if evaluated else 0)


def units(config: RunConfig, n_train: int, n_test: int, first_epoch: int = 0) -> float:
    """Units of the epochs after `first_epoch` (the ones a partly trained run has left)."""
    return sum(epoch_units(config, n_train, n_test, e) for e in range(first_epoch + 1, config.epochs + 1))


@dataclass
class Measured:
    """One finished run's measured cost."""
    run_id: str
    config: RunConfig
    device_name: str  # provenance's: "NVIDIA H100 80GB HBM3", "cpu: AMD EPYC 7763 64-Core Processor"
    host: str
    n_train: int
    n_test: int
    seconds: float  # sum of its epochs' seconds (evaluation included)
    units: float  # forward-image equivalents of those epochs
    startup_s: float | None  # started → finished less the epochs: data loading, model build, probe
    started: float | None
    finished: float | None
    concurrency: int = 1  # runs of its host training at the same time (itself included), CPU only
    cpu_share: int = 1  # provenance's: how many ways its launcher split the host's cores (1: all its own)

    @property
    def per_unit(self) -> float:
        return self.seconds / self.units


def measured_runs(results: ResultsDir) -> list[Measured]:
    """Every finished run with readable epoch times and a known device, with its concurrency filled in."""
    found = []
    for run_id in results.run_ids():
        run = _read(results.run(run_id))
        if run is not None:
            found.append(run)
    _fill_concurrency(found)
    return found


def _read(run_dir: RunDir) -> Measured | None:
    try:
        result = json.loads(run_dir.result_json.read_text())
        known = {f.name for f in dataclasses.fields(RunConfig)}  # a field removed since: ignored, not fatal
        config = RunConfig.from_dict({k: v for k, v in result["config"].items() if k in known})
        with open(run_dir.epochs_csv, newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if row.get("seconds")]
        seconds = [float(row["seconds"]) for row in rows]
        epochs = [int(row["epoch"]) for row in rows]
    except Exception:  # noqa: BLE001 - a broken or half-copied run (or an invalid config) is no evidence
        return None
    prov = result.get("provenance") or {}
    sizes = _sizes(result.get("dataset"), config.data)
    if not seconds or not prov.get("device_name") or sizes is None:
        return None
    n_train, n_test = sizes
    work = sum(epoch_units(config, n_train, n_test, e) for e in epochs)
    status = run_dir.status() or {}
    started, finished = parse_iso(status.get("started")), parse_iso(result.get("finished"))
    if status.get("status") == "done" and parse_iso(status.get("updated")):
        finished = max(finished or 0.0, parse_iso(status["updated"]))  # the last write, after model.pt and the index
    launched = _launched(run_dir.train_log)
    startup = None
    if finished is not None and result.get("wall_s") is not None and (launched or started) is not None:
        startup = max(0.0, finished - (launched or started) - float(result["wall_s"]))
    return Measured(result.get("run_id", run_dir.run_id), config, prov["device_name"],
                    prov.get("host") or status.get("host") or "", n_train, n_test, sum(seconds), work,
                    startup, started, finished, cpu_share=parse_share(prov.get("cpu_share")))


def _sizes(dataset: str | None, data: str | None) -> tuple[int, int] | None:
    """(train, test) images of a measured run: the official split, else its batch files if visible here."""
    if dataset == "cifar10":
        return TRAIN_SIZE, TEST_SIZE
    return split_sizes(data) if data else None


def _launched(log: Path) -> float | None:
    """When a sweep started the run's only attempt (its train.log's one '=== cmx sweep <time>:' line): the
    start of the process, so the startup counts the interpreter, torch and the data loading too. None for
    a run trained directly or resumed (status.json's `started` is then the best there is: after loading)."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(LAUNCH_LINE)]
    except OSError:
        return None
    return parse_iso(lines[0][len(LAUNCH_LINE):].split(" ", 1)[0].rstrip(":")) if len(lines) == 1 else None




def _fill_concurrency(runs: list[Measured]) -> None:
    cpu = [r for r in runs if r.device_name.startswith("cpu")]
    timed = [r for r in cpu if r.started is not None and r.finished is not None and r.finished > r.started]
    for run in timed:
        span = run.finished - run.started
        overlap = sum(max(0.0, min(run.finished, o.finished) - max(run.started, o.started))
                      for o in timed if o is not run and o.host == run.host)
        run.concurrency = max(1, round(1 + overlap / span))
    for run in cpu:
        run.concurrency = max(run.concurrency, run.cpu_share)


def startup_seconds(runs: list[Measured]) -> float:
    """Median measured startup of these runs (0 when none recorded it)."""
    values = [r.startup_s for r in runs if r.startup_s is not None]
    return statistics.median(values) if values else 0.0


# ---------------------------------------------------------------------- this machine
def cpu_name() -> str:
    """As provenance.device_name writes it for a CPU (without importing torch)."""
    return "cpu: " + cpu_model()


@functools.lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    """Names of this machine's NVIDIA GPUs by index (nvidia-smi; no CUDA context is created)."""
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip()) if out.returncode == 0 else ()


def device_name(config_device: str, gpu: str | None = None) -> str:
    """The device a run of `config_device` (auto, cpu, cuda) would train on here, named as provenance names it.

    `auto` means CUDA when a GPU is visible (as the engine resolves it); `gpu` is the slot's GPU index.
    """
    if config_device == "cpu":
        return cpu_name()
    names = gpu_names()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    index = gpu if gpu is not None else (visible.split(",")[0] if visible else "0")
    if names:
        return names[int(index)] if index.isdigit() and int(index) < len(names) else names[0]
    return "cuda" if config_device == "cuda" else cpu_name()


def is_cpu(name: str) -> bool:
    return name.startswith("cpu")
