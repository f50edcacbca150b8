"""`cmx bench`: measured throughput of cmx's pieces on this device, optionally beside the reference's.

What is measured (img/s = images per second; each number is the median over timed rounds, so a burst of
load from other processes on a shared machine moves it less than a mean would):
    aug    `augment_batches` with every paper stage on, on the training device, including the gather, on one
           chunk of batches (~1024 images) as the train loop augments them
    train  one optimisation step exactly as `cmx.run.train` runs it: its model, memory format, autocast dtype,
           optional torch.compile, soft-target loss, zero_grad, backward, clip 1.0, AdamW (foreach/fused)
    eval   the no-grad forward of `cmx.run.train.evaluate` (normalise uint8 → model) at the eval batch size
    peak memory of building the model and training it (params, grads, AdamW state, activations):
           CUDA max_memory_allocated; on CPU the process's peak RSS over that phase (Linux VmHWM, reset via
           /proc/self/clear_refs), else the growth of ru_maxrss — approximate, since freed memory is reused
With `vs_reference`, the reference pipeline (cmx.bench.reference, the public script's) in the same run:
    aug    its own pipeline in a process of its own, as the script runs (`python -m cmx.bench.reference --mode
           aug`): per-image torchvision PIL transforms in a DataLoader, 1 worker
    train  its Fig. 3 model and step (NCHW, fp32, plain AdamW, hard-label cross-entropy, clip 1.0), in this
           process so that its steps can be interleaved round by round with cmx's
    eval   that model's no-grad forward, NCHW fp32
Projections (labelled as such) scale the measured rates to other configs by analytic FLOPs.
"""
from __future__ import annotations

import gc
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..augment.pipeline import augment_batch, augment_batches, normalize
from ..cifar import BYTES_PER_IMAGE, N_CLASSES, TEST_SIZE, TRAIN_FILES, TRAIN_SIZE, write_folder
from ..errors import UserError
from ..paper import PAPER_EPOCHS
from ..run.allocator import keep_freed_memory
from ..config import RunConfig
from ..run.engine import EVAL_BATCH, Engine
from ..run.placement import Placement, resolve_device
from ..run.seeding import init_weights, run_generators
from ..run.tune import place
from ..run.batches import AUG_CHUNK_IMAGES, aug_chunk_batches
from ..sweep.estimate import forward_flops
from . import reference
from .reference import convmixer as reference_convmixer

# sweeps/ of the repository this cmx runs from, when it runs from a checkout (cmx/bench/speed.py → the root)
CHECKOUT_SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


# ---------------------------------------------------------------------- timing and memory
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, device: torch.device,
                limits: dict[str, int] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run each fn once per round, in turn (A B A B ...), each timed alone between device syncs.

    Interleaving puts every contender under the same background load; `limits` caps the rounds of a slow
    contender (it stops taking turns after that many). `clock=time.process_time` times CPU seconds instead
    of wall seconds (one thread on a loaded machine: the work, not the scheduler). Returns seconds per
    call, per contender.
    """
    limits = limits or {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(rounds):
        for name, fn in fns.items():
            if i >= limits.get(name, rounds):
                continue
            sync(device)
            start = clock()
            fn()
            sync(device)
            times[name].append(clock() - start)
    return times


def rate(images: int, seconds: list[float]) -> float:
    """Images per second from the median call time."""
    return images / statistics.median(seconds)


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of what runs inside `with PeakMemory(device) as m:` (m.mb afterwards), and how."""

    def __init__(self, device: torch.device):
        self.device, self.mb, self.method = device, 0.0, ""

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        self.base = _proc_status_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
            self.method = "cpu peak RSS (VmHWM) minus RSS at start, approximate"
        except OSError:
            self.base = self._maxrss_mb()
            self.method = "cpu growth of ru_maxrss, approximate (0 if an earlier phase peaked higher)"
        return self

    @staticmethod
    def _maxrss_mb() -> float:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # macOS reports bytes

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.method.startswith("cpu peak RSS"):
            self.mb = max(0.0, (_proc_status_mb("VmHWM") or 0.0) - (self.base or 0.0))
        else:
            self.mb = max(0.0, self._maxrss_mb() - self.base)
        return False


def prime(placement: Placement) -> None:
    """One tiny train step per memory format (and the placement's autocast dtype), so that process-wide
    one-time costs (library and kernel loading, thread pools, autograd engine) land in no contender's memory
    or time."""
    device = placement.device
    for memory_format in (torch.contiguous_format, torch.channels_last):
        for dtype in {None, placement.amp_dtype}:
            model = reference_convmixer(8, 1, 3, 4).to(device, memory_format=memory_format)
            opt = torch.optim.AdamW(model.parameters(), foreach=True)
            x = torch.randn(4, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(x).float().logsumexp(1).mean()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    sync(device)


# ---------------------------------------------------------------------- cmx's step, eval and augmentation
def cmx_train_step(config: RunConfig, placement: Placement, x: torch.Tensor, targets: torch.Tensor,
                   say=lambda msg: None) -> tuple[Callable[[], None], Engine]:
    """One step of the train loop on a fixed augmented batch: the engine's step (engine.py, the code
    training runs) plus, as the loop does, the lr write and the on-device loss/accuracy sums. `placement`:
    as `cmx.run.tune.place` resolves it for `config`."""
    engine = Engine.build(config, placement, say=say)
    device = placement.device
    labels = targets.argmax(1)
    sums = torch.zeros(3, device=device)  # loss sum, correct, images: accumulated on the device, as train.py
    batch_images = torch.tensor(float(len(x)), device=device)

    def step() -> None:
        engine.set_lr(config.lr)
        loss, logits = engine.step(x, targets)
        correct = (logits.argmax(1) == labels).sum()
        sums.add_(torch.stack([loss * len(x), correct.float(), batch_images]))

    return step, engine


def cmx_eval_step(engine: Engine, images: torch.Tensor) -> Callable[[], None]:
    """The engine's evaluation forward (normalise uint8 → model) on one batch."""
    def step() -> None:
        engine.forward_eval(images).argmax(1)

    return step


def cmx_aug_step(train_x: torch.Tensor, train_y: torch.Tensor, batch_size: int,
                 gen: torch.Generator) -> tuple[Callable[[], None], int]:
    """The train loop's gather + full paper augmentation of one chunk of whole batches (fresh random images
    each call), as `cmx.run.train` augments them; returns (step, images per call)."""
    perm_gen = torch.Generator().manual_seed(0)
    n = aug_chunk_batches(batch_size, train_x.shape[0]) * batch_size

    def step() -> None:
        idx = torch.randint(0, train_x.shape[0], (n,), generator=perm_gen).to(train_x.device)
        augment_batches(train_x.index_select(0, idx), train_y[idx], gen, batch_size, scaling=True, flip=True,
                        randaug=True, mixup=True, erasing=True)

    return step, n


# ---------------------------------------------------------------------- the reference (cmx.bench.reference)
def reference_train_step(config: RunConfig, device: torch.device, x: torch.Tensor,
                         y: torch.Tensor) -> tuple[Callable[[], None], nn.Module]:
    """The reference's `--mode step` (reference.train_step): fp32 NCHW, plain AdamW (wd 0.01), cross-entropy,
    clip, loss.item()."""
    model = init_weights(config.seed, lambda: reference_convmixer(config.h, config.d, config.k, config.p)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    x = x.contiguous()

    def step() -> None:
        reference.train_step(model, opt, x, y)[0].item()

    return step, model


def reference_eval_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    @torch.no_grad()
    def step() -> None:
        model.eval()
        model(x).argmax(1)
        model.train()

    return step


def write_random_cifar(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random uint8 images in the official layout (what the reference's pipeline reads); returns root."""
    rng = np.random.default_rng(seed)
    per = -(-n_train // len(TRAIN_FILES))

    def batch(n: int):
        return rng.integers(0, 256, (n, BYTES_PER_IMAGE), dtype=np.uint8), rng.integers(0, N_CLASSES, n).tolist()

    train = [batch(per) for _ in TRAIN_FILES]  # drawn in file order, then the test batch, as before
    return write_folder(root, train, batch(n_test))


# ---------------------------------------------------------------------- projections
def paper_sweep_configs(sweep: Path | None) -> list[RunConfig]:
    """The distinct runs of a sweep file (via cmx.sweep.plan), or [] when there is none."""
    if sweep is None or not Path(sweep).is_file():
        return []
    from ..sweep.plan import make_plan

    with tempfile.TemporaryDirectory() as empty:  # plan against an empty results dir: every run counts
        return [run.config for run in make_plan(sweep, results=empty).runs]


def project_seconds(config: RunConfig, rates: dict[str, float], measured: RunConfig,
                    n_train: int = TRAIN_SIZE, n_test: int = TEST_SIZE) -> float:
    """Projected wall seconds of `config` (its epochs, batch, eval cadence) from the rates measured on
    `measured`: train and eval img/s scaled by the forward-FLOPs ratio, augmentation unscaled (it does not
    depend on the model), serial as in the train loop; checkpoints and start-up left out."""
    scale = forward_flops(measured.h, measured.d, measured.p, measured.k) / forward_flops(
        config.h, config.d, config.p, config.k)
    per_train_image = 1 / (rates["train"] * scale) + 1 / rates["aug"]
    train_images = (n_train // config.batch_size) * config.batch_size
    evals = -(-config.epochs // config.eval_every)
    return config.epochs * train_images * per_train_image + evals * n_test / (rates["eval"] * scale)


# ---------------------------------------------------------------------- the whole benchmark
@dataclass
class BenchOptions:
    steps: int = 10  # timed rounds per measurement (train, aug; eval uses max(2, steps // 4))
    warmup: int = 2  # untimed steps first (compilation, allocator, oneDNN primitive caches)
    eval_batch_size: int = EVAL_BATCH
    data: Path | None = None
    vs_reference: bool = False
    reference_steps: int | None = None  # cap on the (slow) reference train/eval rounds; default = steps
    reference_script: Path | None = None  # run the reference's augmentation from this script, not cmx.bench.reference
    sweep: Path | None = Path("sweeps/paper.yaml")


def run_bench(config: RunConfig, opts: BenchOptions, say=lambda msg: None) -> dict:
    """Measure (and with opts.vs_reference compare); returns one flat dict (the `--json` object)."""
    device = resolve_device(config.device)
    if opts.steps < 1 or opts.warmup < 0 or opts.eval_batch_size < 1:
        raise UserError("--steps and --eval-batch-size must be ≥ 1, --warmup ≥ 0")
    if opts.vs_reference and opts.reference_script is not None and not Path(opts.reference_script).is_file():
        raise UserError(f"reference script {opts.reference_script} not found")
    bs = config.batch_size
    if opts.data is not None:
        from ..run.data import load_cifar10

        loaded = load_cifar10(opts.data, download=False)
        images, labels = loaded.train_x, loaded.train_y
        if images.shape[0] < bs:
            raise UserError(f"--batch-size {bs} is larger than the {images.shape[0]} training images in {opts.data}")
    else:  # random images: the augmentation does the same work whatever the pixels
        n = max(4 * bs, opts.eval_batch_size, AUG_CHUNK_IMAGES)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))
    images, labels = images.to(device), labels.to(device)
    gen = run_generators(config.seed, device)["augment"]
    x, targets = augment_batch(images[:bs], labels[:bs], gen)  # one realistic training batch
    inputs = StepInputs(x, targets, images[:opts.eval_batch_size])
    # the engine's placement, resolved once here (on CPU possibly by tune.py's probe) so that no probe runs
    # inside the timed or memory-measured phases below
    placement = place(config, device=device, say=say)
    out: dict = {"device": str(device), "config": f"{config.h}/{config.d} p{config.p} k{config.k}",
                 "batch_size": bs, "eval_batch_size": len(inputs.eval_images), "steps": opts.steps,
                 "amp": placement.precision, "channels_last": placement.channels_last,
                 "conv_path": placement.conv_path, "settings_chosen_by": placement.chosen_by,
                 "compile": config.compile, "threads": torch.get_num_threads(),
                 "aug_images": "real" if opts.data else "random"}

    _measure_steps(config, placement, opts, inputs, out, say)
    _measure_augmentation(opts, AugInputs(images, labels, gen, bs), out, say)
    _project(config, opts, out)
    return out


@dataclass
class StepInputs:
    """What the train and eval steps are timed on."""

    x: torch.Tensor  # (B, 3, 32, 32) one augmented, normalised training batch
    targets: torch.Tensor  # (B, 10) its soft targets
    eval_images: torch.Tensor  # (E, 3, 32, 32) uint8, one evaluation batch


def _measure_steps(config: RunConfig, placement: Placement, opts: BenchOptions, inputs: StepInputs, out: dict,
                   say) -> None:
    """The train step (first, so its memory phase starts from a small process) and the eval forward,
    interleaved with the reference's when asked; fills `out`."""
    bs, ref_rounds = config.batch_size, opts.reference_steps or opts.steps
    device, x, targets, eval_images = placement.device, inputs.x, inputs.targets, inputs.eval_images
    x_ref = x.contiguous()
    # -- train step (first, so the memory phase starts from a small process)
    say("measuring the train step")
    prime(placement)
    with PeakMemory(device) as mem:
        step, engine = cmx_train_step(config, placement, x, targets, say)
        for _ in range(max(opts.warmup, 1)):
            step()
    out["peak_mem_mb"], out["peak_mem_method"] = round(mem.mb, 1), mem.method
    steps_now = {"cmx": step}
    if opts.vs_reference:
        with PeakMemory(device) as ref_mem:
            ref_step, ref_model = reference_train_step(config, device, x_ref, targets.argmax(1))
            for _ in range(max(opts.warmup, 1)):
                ref_step()
        out["reference_peak_mem_mb"] = round(ref_mem.mb, 1)
        steps_now["reference"] = ref_step
    # Timed as cmx.run.train runs (glibc keeps freed blocks); only now, so that freed memory is not reused across
    # the two memory phases above. The reference's in-process step gets the same help: ratios are conservative.
    keep_freed_memory()
    t = interleaved(steps_now, opts.steps, device, {"reference": ref_rounds})
    out["train_img_per_s"] = round(rate(bs, t["cmx"]), 2)
    if opts.vs_reference:
        out["reference_train_img_per_s"] = round(rate(bs, t["reference"]), 2)

    # -- eval forward
    say("measuring inference")
    evals = {"cmx": cmx_eval_step(engine, eval_images)}
    if opts.vs_reference:
        evals["reference"] = reference_eval_step(ref_model, normalize(eval_images).contiguous())
    for fn in evals.values():
        for _ in range(max(opts.warmup, 1)):
            fn()
    n_eval = max(2, opts.steps // 4)
    t = interleaved(evals, n_eval, device, {"reference": min(n_eval, ref_rounds)})
    out["eval_img_per_s"] = round(rate(len(eval_images), t["cmx"]), 2)
    if opts.vs_reference:
        out["reference_eval_img_per_s"] = round(rate(len(eval_images), t["reference"]), 2)
    del steps_now, evals, step, engine
    if opts.vs_reference:
        del ref_step, ref_model



@dataclass
class AugInputs:
    """What the augmentation is measured on: the training images (uint8, on the device), their labels, the
    augmentation's generator and the batch size."""
    images: torch.Tensor
    labels: torch.Tensor
    gen: torch.Generator
    batch_size: int


def _measure_augmentation(opts: BenchOptions, inputs: AugInputs, out: dict, say) -> None:
    """The augmentation of one chunk of batches, beside the reference's DataLoader when asked; fills `out`."""
    # -- augmentation: cmx blocks alternating with runs of the reference's own pipeline (3 pairs with
    # --vs-reference), so that both see the same background load; the per-pair ratios show its spread
    say("measuring augmentation")
    bs = inputs.batch_size
    aug, aug_n = cmx_aug_step(inputs.images, inputs.labels, bs, inputs.gen)
    for _ in range(max(opts.warmup, 1)):
        aug()
    pairs = 3 if opts.vs_reference else 1
    block = max(2, -(-opts.steps // pairs)) if opts.vs_reference else opts.steps
    aug_times, ref_aug, pair_ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        ref_data = opts.data
        if opts.vs_reference and ref_data is None:
            ref_data = write_random_cifar(Path(tmp), n_train=max(10 * bs, 1000), n_test=bs)
        for _ in range(pairs):
            times = interleaved({"cmx": aug}, block, inputs.images.device)["cmx"]
            aug_times += times
            if opts.vs_reference:
                ref_aug.append(reference.aug_in_child(ref_data, bs, max(10, 2 * opts.steps),
                                                      script=opts.reference_script))
                pair_ratios.append(round(rate(aug_n, times) / ref_aug[-1], 2))
    out["aug_img_per_s"] = round(rate(aug_n, aug_times), 1)
    if opts.vs_reference:
        out["reference_aug_img_per_s"] = round(statistics.median(ref_aug), 1)
        out["reference_workers"] = 1
        out["reference_aug_ops"] = " ".join(reference.SAME_OPS)
        out["aug_ratio_per_pair"] = pair_ratios
        for key in ("aug", "train", "eval"):
            out[f"{key}_ratio"] = round(out[f"{key}_img_per_s"] / out[f"reference_{key}_img_per_s"], 2)



def _project(config: RunConfig, opts: BenchOptions, out: dict) -> None:
    """A 200-epoch run and the sweep file, from the measured rates (labelled a projection)."""
    # -- projections
    rates = {"train": out["train_img_per_s"], "aug": out["aug_img_per_s"], "eval": out["eval_img_per_s"]}
    paper_run = config.replace(epochs=PAPER_EPOCHS, eval_every=1)
    out["projected_run_hours"] = round(project_seconds(paper_run, rates, config) / 3600, 2)
    runs = paper_sweep_configs(opts.sweep)
    if runs:
        out["projected_sweep_runs"] = len(runs)
        out["projected_sweep_hours"] = round(sum(project_seconds(c, rates, config) for c in runs) / 3600, 1)
        out["projected_sweep_file"] = str(opts.sweep)
    out["projection_method"] = (
        "projection, not a measurement: 50,000 train + 10,000 test images per epoch; the measured train and "
        "eval img/s scaled by each config's forward-FLOPs ratio (cmx.sweep.estimate), augmentation img/s unscaled, "
        "serial as in the train loop")

def default_sweep() -> Path | None:
    """sweeps/paper.yaml in the working directory, else in the checkout this cmx runs from; None for an
    installed cmx run elsewhere (then no sweep is projected)."""
    for candidate in (Path("sweeps/paper.yaml"), CHECKOUT_SWEEPS / "paper.yaml"):
        if candidate.is_file():
            return candidate
    return None
