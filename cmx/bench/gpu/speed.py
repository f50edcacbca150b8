"""The GPU check's speed section: augmentation, train-step and eval img/s and peak GPU memory for
256/8 p1 k9 at batch 64 (bf16, channels_last, eager), its variants (fp32, NCHW, torch.compile, batch
128/256/512, 256/8 p2 k9), the augmentation's share of the step, a profiler breakdown of the step by kind
of kernel, and the depthwise convolution's share and achieved bandwidth beside a measured copy bandwidth.

Timing: CUDA events around a block of calls (`time_per_call`), so the GPU runs its queue as in training and
the host never waits between calls; the steps are cmx.bench.speed's (`cmx bench` times the same ones with a
synchronize around each call). Each piece asks the section's Budget first, with an estimate of its cost
(COST_S; a variant's from the base step's measured time), and is recorded "skipped: budget" when it does not
fit. The order puts what a decision needs first, then `cmx bench` as a user runs it, then torch.compile
(a cold compile of the train and eval graphs is the dearest piece).
"""
from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ...augment.pipeline import augment_batch, augment_batches
from ...config import RunConfig
from ...run.engine import EVAL_BATCH
from ...run.tune import place
from ...run.batches import aug_chunk_batches
from . import profile as P
from .budget import SKIP_PREFIX, Budget, run_capped
from ..speed import PeakMemory, cmx_aug_step, cmx_eval_step, cmx_train_step

SECTION = "speed"
BASE = dict(h=256, d=8, p=1, k=9, batch_size=64, amp="bf16", channels_last=True, compile=False)


def amp_off_label() -> str:
    """What "amp off" computes in on CUDA: fp32 tensors, but cuDNN convolutions in TF32 on Ampere and later
    (torch's default, torch.backends.cudnn.allow_tf32; cmx leaves it, so this is what `--amp off` trains
    with) and matmuls as torch.backends.cuda.matmul.allow_tf32 says (default off)."""
    conv = "TF32" if torch.backends.cudnn.allow_tf32 else "fp32"
    matmul = "TF32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return f"amp off (fp32 tensors; convs {conv}, matmul {matmul} on Ampere+)"


# (label, changes to BASE); the order puts the figures a decision needs first
VARIANTS = (
    (amp_off_label(), dict(amp="off")),
    ("NCHW (channels_last off)", dict(channels_last=False)),
    ("batch 128", dict(batch_size=128)),
    ("batch 256", dict(batch_size=256)),
    ("batch 512", dict(batch_size=512)),
    ("256/8 p2 k9", dict(p=2)),
    ("torch.compile", dict(compile=True)),
)
LAST = ("torch.compile",)  # measured after `cmx bench`
STEPS, WARMUP = 20, 3
# estimated seconds of each piece on a GPU from cold (guesses until a GPU has run the check; README)
COST_S = {"bandwidth": 5, "augmentation": 8, "base step": 20, "profile": 20, "cmx bench": 45, "torch.compile": 90}


def time_per_call(fn: Callable[[], None], device: torch.device, steps: int = STEPS, warmup: int = WARMUP) -> float:
    """Seconds per call of `fn`, over a block of `steps` calls after `warmup` untimed ones: CUDA events on a
    GPU (one synchronisation at the end), perf_counter on a CPU."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - start) / steps
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000 / steps


def copy_bandwidth_gb_s(device: torch.device, gib: float = 1.0) -> float:
    """Device-to-device copy rate, bytes read + written per second: the memory ceiling to compare with."""
    src = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = time_per_call(lambda: dst.copy_(src), device, steps=10, warmup=2)
    del src, dst
    return 2 * gib * 2**30 / seconds / 1e9


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_step(config: RunConfig, device: torch.device, x: torch.Tensor, targets: torch.Tensor,
                 eval_images: torch.Tensor, eval_too: bool = True) -> dict:
    """Train-step img/s and peak memory (build + warm-up + timed steps), and eval img/s, for one config."""
    bs = config.batch_size
    notes: list[str] = []
    with PeakMemory(device) as mem:
        step, engine = cmx_train_step(config, place(config, device=device, say=notes.append), x[:bs], targets[:bs],
                                      notes.append)
        t = time_per_call(step, device)
    out = {"train_img_per_s": round(bs / t, 1), "step_ms": round(1000 * t, 3), "peak_mem_mib": round(mem.mb, 1)}
    if notes:
        out["notes"] = notes
    if eval_too:
        evaluate = cmx_eval_step(engine, eval_images)
        out["eval_img_per_s"] = round(len(eval_images) / time_per_call(evaluate, device, steps=5, warmup=2), 1)
    del step, engine
    free_memory(device)
    return out


@dataclass
class Inputs:
    """The section's data on the device: raw images and labels (eval, augmentation), one augmented batch x,
    targets (sliced for every batch size up to its length) and the augmentation generator."""
    images: torch.Tensor
    labels: torch.Tensor
    x: torch.Tensor
    targets: torch.Tensor
    gen: torch.Generator


def inputs(device: torch.device, images: torch.Tensor, labels: torch.Tensor, n: int = 512) -> Inputs:
    """One augmented batch of n (for every batch size up to n), and the raw images for eval and aug."""
    images, labels = images.to(device), labels.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    x, targets = augment_batch(images[:n], labels[:n], gen)
    return Inputs(images, labels, x, targets, gen)


def variant_cost(name: str, base_s: float) -> float:
    """A variant's estimated seconds from the base step's measured build + timing (batch 512: 8× the work)."""
    if name in COST_S:
        return COST_S[name]
    return max(2.0, (3.0 if name == "batch 512" else 1.5) * base_s)


def run(report, images: torch.Tensor, labels: torch.Tensor, budget: Budget, device: torch.device,
        bench_cli: bool = True) -> None:
    """The whole section on `device` (the check passes cuda; tests may pass cpu with tiny settings)."""
    base = RunConfig(**BASE, device=device.type, data="unused")
    data = inputs(device, images, labels)
    images, labels, x, targets, gen = data.images, data.labels, data.x, data.targets, data.gen
    eval_images = images[:EVAL_BATCH]
    label = "256/8 p1 k9 b64 bf16 channels_last eager"

    if device.type == "cuda" and budget.fits(report, SECTION, "device copy bandwidth (ceiling)", COST_S["bandwidth"]):
        bandwidth = copy_bandwidth_gb_s(device)
        report.add(SECTION, "device copy bandwidth (ceiling)", "info", f"{bandwidth:,.0f} GB/s (read + write)",
                   gb_per_s=round(bandwidth, 1))

    aug_rate = None
    if budget.fits(report, SECTION, "augmentation (full paper recipe)", COST_S["augmentation"]):
        aug, aug_n = cmx_aug_step(images, labels, base.batch_size, gen)
        aug_rate = aug_n / time_per_call(aug, device, steps=5, warmup=2)
        report.add(SECTION, "augmentation (full paper recipe)", "info", f"{aug_rate:,.0f} img/s on chunks of {aug_n}",
                   aug_img_per_s=round(aug_rate, 1), chunk_images=aug_n)

    if not budget.fits(report, SECTION, label, COST_S["base step"]):
        return  # every other figure is relative to this one
    t0 = budget.clock()
    main = measure_step(base, device, x, targets, eval_images)
    base_s = budget.clock() - t0
    share = (1 / aug_rate) / (1 / aug_rate + 1 / main["train_img_per_s"]) if aug_rate else None
    report.add(SECTION, label, "info", f"train {main['train_img_per_s']:,.0f} img/s, eval "
               f"{main['eval_img_per_s']:,.0f} img/s, peak {main['peak_mem_mib']:,.0f} MiB"
               + (f"; augmentation {100 * share:.0f}% of step time" if share is not None else ""),
               **main, aug_share_of_step=None if share is None else round(share, 3))

    if budget.fits(report, SECTION, "profile of one step (ms per step by kind)", COST_S["profile"]):
        profile_step(report, base, device, data)

    results = {label: main}

    def variant(name: str, changes: dict) -> None:
        if not budget.fits(report, SECTION, name, variant_cost(name, base_s)):
            return
        figures = measure_step(base.replace(**changes), device, x, targets, eval_images)
        results[name] = figures
        ratio = figures["train_img_per_s"] / main["train_img_per_s"]
        report.add(SECTION, name, "info", f"train {figures['train_img_per_s']:,.0f} img/s ({ratio:.2f}× b64 bf16), "
                   f"eval {figures['eval_img_per_s']:,.0f} img/s, peak {figures['peak_mem_mib']:,.0f} MiB"
                   + (f"; {figures['notes'][0]}" if figures.get("notes") else ""), **figures, vs_base=round(ratio, 3))

    for name, changes in VARIANTS:
        if name not in LAST:
            variant(name, changes)
    if "batch 512" in results:
        gain = results["batch 512"]["train_img_per_s"] / main["train_img_per_s"]
        report.add(SECTION, "batch 64 vs saturation", "info",
                   f"batch 512 trains {gain:.2f}× the img/s of batch 64"
                   + (": several runs per process or per GPU would pay" if gain > 1.5 else
                      ": batch 64 is near saturation; packing runs gains little"), gain_b512_over_b64=round(gain, 3))
    if bench_cli and budget.fits(report, SECTION, f"cmx bench --device {device.type} --json", COST_S["cmx bench"]):
        cmx_bench_cli(report, device, budget)
    for name, changes in VARIANTS:
        if name in LAST:
            variant(name, changes)


def profile_step(report, config: RunConfig, device: torch.device, data: Inputs) -> None:
    """One chunk of the train loop (augment `chunk` batches, then `chunk` optimisation steps) under
    torch.profiler; per-step ms by kind, idle gaps against the same chunk's wall time without the profiler."""
    bs = config.batch_size
    chunk = aug_chunk_batches(bs, data.images.shape[0])
    placement = place(config, device=device)
    step, _ = cmx_train_step(config, placement, data.x[:bs], data.targets[:bs])
    span, span_labels = data.images[:chunk * bs], data.labels[:chunk * bs]

    def loop() -> None:
        with torch.profiler.record_function(P.AUG_RANGE):
            augment_batches(span, span_labels, data.gen, bs)
        for _ in range(chunk):
            step()

    wall_us = time_per_call(loop, device, steps=2, warmup=1) * 1e6
    totals = P.profile_loop(loop, device)
    per_step = {kind: round(totals[kind] / chunk / 1000, 4) for kind in P.KINDS}  # ms
    kernels_us = totals.get("kernels", totals["busy"])
    idle_ms = max(0.0, wall_us - kernels_us) / chunk / 1000
    dw_us = totals[P.DEPTHWISE_FWD] + totals[P.DEPTHWISE_BWD]
    dw_share = dw_us / max(kernels_us, 1e-9)
    element = 4 if placement.amp_dtype is None else torch.finfo(placement.amp_dtype).bits // 8  # bytes
    traffic = P.depthwise_bytes(bs, config.h, config.d, config.p, element)
    gb_s = {kind: traffic[key] * chunk / (totals[name] / 1e6) / 1e9 if totals[name] > 0 else None
            for kind, key, name in (("fwd", "fwd", P.DEPTHWISE_FWD), ("bwd", "bwd", P.DEPTHWISE_BWD))}
    parts = ", ".join(f"{kind} {ms:.2f}" for kind, ms in per_step.items() if ms > 0)
    report.add(SECTION, "profile of one step (ms per step by kind)", "info",
               f"{parts}, idle gaps {idle_ms:.2f} (wall {wall_us / chunk / 1000:.2f} ms/step)",
               ms_per_step=per_step, idle_ms_per_step=round(idle_ms, 4), wall_ms_per_step=round(wall_us / chunk / 1000, 4),
               kernel_ms_per_step=round(kernels_us / chunk / 1000, 4), attributed_ms_per_step=round(totals["busy"] / chunk / 1000, 4))
    fwd, bwd = (f"{v:,.0f}" if v else "n/a" for v in (gb_s["fwd"], gb_s["bwd"]))
    report.add(SECTION, "depthwise conv (k9) share and bandwidth", "info",
               f"{100 * dw_share:.0f}% of kernel time; achieved ≥ {fwd} GB/s forward, ≥ {bwd} GB/s backward "
               f"(activation traffic counted once: a lower bound)", share_of_kernel_time=round(dw_share, 4),
               fwd_gb_per_s=gb_s["fwd"], bwd_gb_per_s=gb_s["bwd"], bytes_per_step=traffic)
    del step
    free_memory(device)


def cmx_bench_cli(report, device: torch.device, budget: Budget) -> None:
    """`cmx bench --device cuda --json` as a user runs it: exit 0 and its three rates; stopped (with what it
    started) at the section's deadline, which is a skip, not a failure."""
    check = f"cmx bench --device {device.type} --json"
    cmd = [sys.executable, "-m", "cmx", "bench", "--device", device.type, "--json", "--steps", "10"]
    with tempfile.TemporaryDirectory(prefix="cmx-gpu-bench-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        t0 = time.monotonic()
        with open(out, "w") as fo, open(err, "w") as fe:
            code = run_capped(cmd, budget.left() - 1, stdout=fo, stderr=fe)
        stdout, stderr = out.read_text(), err.read_text()
    if code == 124:
        report.add(SECTION, check, "skip", f"{SKIP_PREFIX}: stopped at the section's deadline after "
                   f"{time.monotonic() - t0:.0f} s")
        return
    if code != 0:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        report.add(SECTION, check, "FAIL", f"exit {code}: {tail}")
        return
    r = json.loads(stdout.strip().splitlines()[-1])
    report.add(SECTION, check, "pass",
               f"aug {r['aug_img_per_s']:,.0f}, train {r['train_img_per_s']:,.0f}, eval {r['eval_img_per_s']:,.0f} "
               f"img/s, peak {r['peak_mem_mb']:,.0f} MB (amp {r['amp']}, sync-timed)",
               **{k: r[k] for k in ("aug_img_per_s", "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "amp")})
