"""Timed steps for shapes never trained here: the estimate's second source, after measured runs.

Why a probe: a device with no finished run of the results directory has no measured rate, and an assumed
TFLOP/s is wrong by orders of magnitude on a CPU. So, as `cmx bench` and the CPU settings probe
(cmx/run/tune.py) do, a child process builds each shape's engine — with the settings a run would get,
the CPU probe's choice included — and times a few optimisation steps on random data at the run's batch
size, and an evaluation pass. Augmentation, data loading and checkpoints are not timed, so the projection
is a little low (measured runs, when there are some, count them). torch.compile is not applied (compiling
takes longer than the probe; a compiled run is then usually faster than projected).

The answer is cached per machine (device, threads, torch version) and shape in
$CMX_CACHE_DIR/step_times.json, so each shape is probed once. `CMX_ESTIMATE_PROBE=off` (the test suite's
setting) or `--no-probe` skips probing.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from .. import cache
from ..config import RunConfig
from .rates import SHAPE_FIELDS

PROBE_WARMUP, PROBE_STEPS = 2, 3
SLOW_S = 5.0  # timed steps stop once they add up to this (a 256/8 p1 step takes seconds on a small CPU)
EVAL_IMAGES = 1000  # evaluated images timed (two of the engine's eval batches)


def enabled() -> bool:
    return os.environ.get("CMX_ESTIMATE_PROBE", "on") != "off"


CACHE = "step_times.json"  # in $CMX_CACHE_DIR (cmx/cache.py)


def cache_path() -> Path:
    return cache.cache_path(CACHE)


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "?"


def cache_key(device_name: str, threads: int | None, config: RunConfig) -> str:
    shape = ", ".join(f"{name}={getattr(config, name)}" for name in SHAPE_FIELDS)
    return f"{device_name} | {threads or 'default'} threads | torch {_torch_version()} | {shape}"


def step_times(configs: list[RunConfig], device_name: str, threads: int | None = None, gpu: str | None = None,
               say=None) -> dict[tuple, tuple[float, float]]:
    """(seconds per optimisation step, seconds per evaluated image) by rates.shape_key, for every config:
    from the cache, else measured in one child process (then cached; `say` hears that it starts). A failed
    probe gives no entry."""
    from .rates import shape_key

    entries = cache.read_cache(CACHE)
    found, missing = {}, {}
    for config in configs:
        entry = entries.get(cache_key(device_name, threads, config))
        if entry:
            found[shape_key(config)] = (entry["step_s"], entry["eval_s_per_image"])
        else:
            missing.setdefault(shape_key(config), config)
    if missing:
        if say:
            say(f"estimate: probing {len(missing)} shape(s) never measured on {device_name} "
                f"(a few steps each; cached in {cache_path()})")
        timed = measure(list(missing.values()), threads, gpu)
        for key, config in missing.items():
            if key in timed:
                found[key] = timed[key]
                entries[cache_key(device_name, threads, config)] = {"step_s": timed[key][0],
                                                                    "eval_s_per_image": timed[key][1]}
        cache.write_cache(CACHE, entries)
    return found


def measure(configs: list[RunConfig], threads: int | None = None, gpu: str | None = None) -> dict:
    """Run `probe` in a child (its memory and one-time costs stay out of the sweep). Shape key → timings."""
    from .rates import shape_key

    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    payload = json.dumps([{**c.to_dict(), "data": "-"} for c in configs])
    try:
        done = subprocess.run([sys.executable, "-m", "cmx.sweep.probe", payload], capture_output=True, text=True,
                              env=env, timeout=600)
        timings = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else []
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        timings = []
    return {shape_key(c): tuple(t) for c, t in zip(configs, timings) if t is not None}


def probe(config: RunConfig) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluated image) of `config` on its device.

    A training step as the loop runs it: the median of PROBE_STEPS optimisation steps plus its share of
    one augmentation call over a chunk of batches (the loop augments a chunk at a time; on CPU with a small
    model augmentation is most of the step: 64/4-size models spend ~0.3 s of a 0.3 s step there)."""
    import torch

    from ..augment.pipeline import augment_batches
    from ..run.batches import AUG_CHUNK_IMAGES, aug_chunk_batches
    from ..run.engine import Engine
    from ..run.seeding import run_generators
    from ..run.tune import place

    placement = place(config, say=lambda msg: None)  # the settings a run would get, the CPU probe's included
    device = placement.device
    engine = Engine.build(config.replace(compile=False), placement, say=lambda msg: None)
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    chunk = aug_chunk_batches(config.batch_size, AUG_CHUNK_IMAGES)  # as the loop augments
    images = torch.randint(0, 256, (chunk * config.batch_size, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (chunk * config.batch_size,), generator=gen)
    images, labels = images.to(device), labels.to(device)
    aug_gen = run_generators(config.seed, device)["augment"]
    c = config
    augment = lambda: augment_batches(images, labels, aug_gen, c.batch_size, scaling=c.scaling,  # noqa: E731
                                      flip=c.flip, randaug=c.randaug, mixup=c.mixup, erasing=c.erasing)
    x, targets = augment()  # warm-up
    augment_s = timed(augment) / chunk
    x, targets = x[:c.batch_size], targets[:c.batch_size]
    steps = []
    for i in range(PROBE_WARMUP + PROBE_STEPS):  # a slow shape (seconds a step) stops after one timed step
        steps.append(timed(lambda: engine.step(x, targets)))
        if i >= PROBE_WARMUP and sum(steps[PROBE_WARMUP:]) > SLOW_S:
            break
    steps = steps[PROBE_WARMUP:]
    engine.evaluate(images[:EVAL_IMAGES // 4], labels[:EVAL_IMAGES // 4])  # warm-up
    test = torch.randint(0, 256, (EVAL_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=gen).to(device)
    test_y = torch.randint(0, 10, (EVAL_IMAGES,), generator=gen).to(device)
    eval_s = timed(lambda: engine.evaluate(test, test_y)) / EVAL_IMAGES
    return statistics.median(steps) + augment_s, eval_s


if __name__ == "__main__":  # the child of measure(): one JSON line, [step_s, eval_s_per_image] or null each
    from ..run.allocator import keep_freed_memory

    keep_freed_memory()  # as train() runs: the projection is of a run's time, page faults not included
    out = []
    for values in json.loads(sys.argv[1]):
        try:
            out.append(list(probe(RunConfig.from_dict(values))))
        except Exception:  # noqa: BLE001 - one shape that cannot run here (memory) leaves the others
            out.append(None)
    print(json.dumps(out))
