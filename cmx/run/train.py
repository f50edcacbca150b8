"""`train(config) -> result`: one ConvMixer run, end to end, resumable. The CLI, the local sweep and the
SLURM job all call this.

The paper's recipe (recipe.md): AdamW (eps 1e-3, no decay on 1-D params), a piecewise-linear one-cycle
schedule set every iteration, gradient clipping 1.0, soft-target cross-entropy with label smoothing 0.1,
timm's augmentation applied to whole batches on the training device. The loop reads nothing back from the
device per step: loss/accuracy sums and a divergence marker accumulate on the device and are read every
`SYNC_EVERY` steps and at the end of each epoch.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, tracking
from .allocator import keep_freed_memory
from ..augment.pipeline import augment_batches, normalize, soft_target_cross_entropy
from .config import RunConfig
from .data import Cifar10, dataset_fingerprint, load_cifar10
from ..errors import Diverged, Interrupted, UserError
from .model import build_model, count_params
from .progress import make_reporter
from .provenance import provenance
from .results import EPOCH_COLUMNS, ResultsDir, atomic_write_bytes, atomic_write_json, index_row, now_iso

SYNC_EVERY = 50  # steps between host reads (divergence check, progress numbers)
EVAL_BATCH = 500
AUG_CHUNK_IMAGES = 1024  # augment this many training images per call (whole batches): see augment_batches


# ---------------------------------------------------------------------- pieces of the recipe
def lr_at(t: float, epochs: int, peak: float) -> float:
    """The paper's one-cycle: linear (0,0) → (2E/5, lr) → (4E/5, lr/20) → (E, 0); t in epochs."""
    return float(np.interp(t, [0, epochs * 2 / 5, epochs * 4 / 5, epochs], [0, peak, peak / 20, 0]))


def make_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with timm's split: weight decay on conv/linear weights only, not on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.wd}, {"params": no_decay, "weight_decay": 0.0}]
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.lr, eps=1e-3, **fast)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA where supported, else fp16 (with a GradScaler); off on CPU."""
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[name]


def maybe_compile(model: torch.nn.Module, wanted: bool, say) -> torch.nn.Module:
    """torch.compile when asked and the toolchain works here; otherwise eager, with a note."""
    if not wanted:
        return model
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2))  # fails fast without a working compiler backend
        return torch.compile(model)
    except Exception as err:  # backend/toolchain problems surface as many exception types
        say(f"note: --compile unavailable here ({type(err).__name__}); running eagerly")
        return model


def optimisation_step(run_model, model, optimizer, scaler, autocast, x, targets, clip: bool):
    """One step of the recipe: forward under autocast, soft-target cross-entropy, backward (scaled for fp16),
    gradient clipping at 1.0, AdamW. Returns the detached loss and logits; reads nothing back to the host.
    `cmx bench` times exactly this."""
    with autocast:
        logits = run_model(x)
        loss = soft_target_cross_entropy(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def aug_chunk_batches(batch_size: int, n_images: int) -> int:
    """Batches augmented per `augment_batches` call: about AUG_CHUNK_IMAGES images, at most the data."""
    return max(1, min(AUG_CHUNK_IMAGES, n_images) // batch_size)


@dataclass
class Stop:
    """Set by SIGINT/SIGTERM; the loop checks it at each step boundary. A second signal exits at once."""

    signum: int | None = None
    handlers: dict = field(default_factory=dict)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.handlers[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)  # second signal: at once; checkpoints are atomic, so nothing corrupts
        self.signum = signum

    def uninstall(self):
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------- the run
def train(config: RunConfig, results: str | os.PathLike | None = None, *, resume: str = "auto",
          force: bool = False, progress: str = "none", data: Cifar10 | None = None) -> dict:
    """Train (or continue) the run `config` describes; returns its result.json content.

    resume: "auto" continues from the run's checkpoint if there is one, "restart" starts over.
    force: retrain a run that is already done (its old result is kept as result.<time>.json).
    data: a preloaded dataset (tests, benchmarks); default loads `config.data`.
    """
    reporter = make_reporter(progress)
    keep_freed_memory()
    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.amp, device)
    store = ResultsDir(results)
    store.ensure_writable()
    dataset_tag = dataset_fingerprint(config.data)
    if data is None:
        data = load_cifar10(config.data)
    if data.train_x.shape[0] < config.batch_size:
        raise UserError(f"batch size {config.batch_size} is larger than the {data.train_x.shape[0]} training images")
    run_id = config.run_id(dataset_tag)
    run_dir = store.run_dir(run_id)

    done = store.result(run_id)
    if done is not None and not force:
        reporter.message(f"run {run_id} is already done: test acc {done['test_acc']:.2f}% "
                         f"(best {done['best_test_acc']:.2f}%); use --force to train it again")
        return {**done, "already_done": True}

    tracker = tracking.make_tracker(config, run_dir)  # a missing package is exit 2 here, before anything is written
    reporter = tracking.TrackingReporter(reporter, tracker, config)  # it sees what the reporter sees
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.remove_stale_tmp(run_dir)
    if done is not None:  # --force: keep the old result beside the new run, never delete it
        os.replace(run_dir / "result.json", run_dir / f"result.{time.strftime('%Y%m%d-%H%M%S')}.json")
    ckpt_path = run_dir / checkpoint.FILENAME
    if resume == "restart":
        for name in (checkpoint.FILENAME, "epochs.csv"):
            (run_dir / name).unlink(missing_ok=True)
    atomic_write_json(run_dir / "config.json", {**config.to_dict(), "run_id": run_id, "dataset": dataset_tag})
    store.write_status(run_id, "running", epoch=0, epochs=config.epochs)

    stop = Stop().install()
    try:
        result = _run(config, data, device, amp_dtype, store, run_id, dataset_tag, ckpt_path, reporter, stop)
        tracker.finish(result)
        return result
    except Interrupted as err:
        store.write_status(run_id, "interrupted", error=str(err))
        tracker.fail(err)
        raise
    except Diverged as err:
        store.write_status(run_id, "failed", error=str(err))
        tracker.fail(err)
        raise
    except BaseException as err:
        tracker.fail(err)
        with contextlib.suppress(Exception):
            store.write_status(run_id, "failed", error=f"{type(err).__name__}: {err}"[:500])
        raise
    finally:
        stop.uninstall()
        reporter.stop()


def _run(config, data, device, amp_dtype, store, run_id, dataset_tag, ckpt_path, reporter, stop) -> dict:
    torch.manual_seed(config.seed)  # model init; everything after draws from the explicit generators
    model = build_model(config)
    n_params = count_params(model)
    channels_last = config.channels_last is not False
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    gens = {"shuffle": shuffle_gen, "augment": aug_gen}

    data = data.to(device)
    n_train = data.train_x.shape[0]
    steps = n_train // config.batch_size  # drop_last, as timm (train() checked steps ≥ 1)

    # -- resume
    state = checkpoint.load(ckpt_path)
    epoch, step0, history, best, elapsed, perm = 0, 0, [], (-1.0, 0), 0.0, None
    sums = torch.zeros(3, device=device)  # loss sum, correct count, images (this epoch)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"], gens)
        epoch, step0, history = state["epoch"], state["step"], state["history"]
        best, elapsed, perm = tuple(state["best"]), state["elapsed"], state.get("perm")
        if state.get("sums") is not None:
            sums = state["sums"].to(device)
        reporter.message(f"resuming run {run_id} at epoch {epoch + 1}, step {step0}")
    run_model = maybe_compile(model, config.compile, reporter.message)

    def save(epoch_, step_, perm_, sums_, aug_state=None):
        rng = checkpoint.rng_state(gens)
        if aug_state is not None:  # mid-epoch: the augmentation generator as it was at the chunk's start
            rng["generators"]["augment"] = aug_state
        checkpoint.save(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng, "epoch": epoch_, "step": step_, "perm": perm_,
            "sums": None if sums_ is None else sums_.cpu(), "history": history, "best": list(best),
            "elapsed": elapsed + (time.perf_counter() - t_start), "run_id": run_id,
        })

    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    reporter.start(run_id, config.summary(), config.epochs, steps, epoch)
    t_start, train_time, train_images = time.perf_counter(), 0.0, 0
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    # Batches are augmented in chunks of `chunk` steps, aligned to the epoch's start. A mid-epoch checkpoint
    # stores the augmentation generator as it was at its chunk's start; resuming re-augments that chunk
    # (same numbers, same images) and continues at the saved step, so the run is bit-identical.
    chunk = aug_chunk_batches(config.batch_size, n_train)
    chunk_state, chunk_start, chunk_x, chunk_t = None, -1, None, None

    for epoch in range(epoch, config.epochs):
        t_epoch = time.perf_counter()
        if perm is None:
            perm = torch.randperm(n_train, generator=shuffle_gen)
        idx_all = perm.to(device)
        model.train()
        reported = step0
        for step in range(step0, steps):
            if stop.signum is not None:
                in_chunk = chunk_start <= step < chunk_start + chunk  # this step's chunk is already augmented
                save(epoch, step, perm, sums, chunk_state if in_chunk else None)
                name = signal.Signals(stop.signum).name
                raise Interrupted(f"{name} at epoch {epoch + 1} step {step}: checkpoint saved; "
                                  f"run the same command to resume", stop.signum)
            lr = lr_at(epoch + (step + 1) / steps, config.epochs, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if chunk_start < 0 or step >= chunk_start + chunk:
                chunk_start = step - step % chunk
                chunk_state = aug_gen.get_state()
                span = idx_all[chunk_start * config.batch_size:min(chunk_start + chunk, steps) * config.batch_size]
                chunk_x, chunk_t = augment_batches(
                    data.train_x.index_select(0, span), data.train_y[span], aug_gen, config.batch_size,
                    scaling=config.scaling, flip=config.flip, randaug=config.randaug, mixup=config.mixup,
                    erasing=config.erasing)
            at = (step - chunk_start) * config.batch_size
            idx = idx_all[step * config.batch_size:(step + 1) * config.batch_size]
            x = chunk_x[at:at + config.batch_size].contiguous(memory_format=memory_format)
            targets = chunk_t[at:at + config.batch_size]
            loss_d, logits = optimisation_step(run_model, model, optimizer, scaler, autocast, x, targets,
                                               config.clip)
            # accumulate on the device: no host sync in the step
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss_d), step, bad_step)
            correct = (logits.argmax(1) == data.train_y[idx]).sum()
            sums += torch.stack([loss_d * len(idx), correct.float(), torch.tensor(float(len(idx)), device=device)])
            if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps:
                _check_finite(bad_step, epoch)
                s = sums.tolist()
                reporter.step(step + 1 - reported, loss=f"{s[0] / s[2]:.3f}", acc=f"{100 * s[1] / s[2]:.1f}%")
                reported = step + 1
        loss_sum, correct_sum, seen = sums.tolist()
        epoch_train_s = time.perf_counter() - t_epoch
        train_time += epoch_train_s
        train_images += int(seen)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": 100 * correct_sum / seen,
               "test_loss": None, "test_acc": None}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            row["test_loss"], row["test_acc"] = evaluate(run_model, data, device, amp_dtype, memory_format)
            if row["test_acc"] > best[0]:
                best = (row["test_acc"], epoch + 1)
        row["seconds"] = time.perf_counter() - t_epoch
        history.append(row)
        perm, step0, sums = None, 0, torch.zeros(3, device=device)
        chunk_state, chunk_start, chunk_x, chunk_t = None, -1, None, None
        save(epoch + 1, 0, None, None)
        _write_epochs_csv(store.run_dir(run_id) / "epochs.csv", history)
        store.write_status(run_id, "running", epoch=epoch + 1, epochs=config.epochs)
        reporter.epoch({**row, "img_per_s": seen / max(epoch_train_s, 1e-9)})  # after it is safe on disk

    wall = elapsed + (time.perf_counter() - t_start)
    final = history[-1]
    result = {
        "run_id": run_id, "dataset": dataset_tag, "config": config.to_dict(),
        "test_acc": final["test_acc"], "best_test_acc": best[0], "best_epoch": best[1],
        "params": n_params, "epochs": config.epochs, "seed": config.seed, "wall_s": round(wall, 2),
        "img_per_s": round(train_images / train_time, 1) if train_time > 0 else None,
        "finished": now_iso(), "provenance": provenance(device),
    }
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(store.run_dir(run_id) / "model.pt", buffer.getvalue())  # final weights
    atomic_write_json(store.run_dir(run_id) / "result.json", result)  # from here on, the run is done
    store.append_index_row(index_row(result))
    store.write_status(run_id, "done", epoch=config.epochs, epochs=config.epochs)
    (store.run_dir(run_id) / checkpoint.FILENAME).unlink(missing_ok=True)  # result.json supersedes it
    reporter.message(f"run {run_id} done: test acc {result['test_acc']:.2f}% (best {best[0]:.2f}% at epoch "
                     f"{best[1]}), {wall:.0f}s, results in {store.run_dir(run_id)}")
    return result


def _check_finite(bad_step: torch.Tensor, epoch: int) -> None:
    step = int(bad_step)  # the one host read every SYNC_EVERY steps
    if step >= 0:
        raise Diverged(f"loss became non-finite at epoch {epoch + 1}, step {step + 1}; "
                       f"try a lower --lr or keep --clip on")


@torch.no_grad()
def evaluate(model, data: Cifar10, device, amp_dtype, memory_format) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) on the unaugmented, normalised test split."""
    model.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for i in range(0, data.test_x.shape[0], EVAL_BATCH):
            x = normalize(data.test_x[i:i + EVAL_BATCH]).contiguous(memory_format=memory_format)
            y = data.test_y[i:i + EVAL_BATCH]
            logits = model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    n = data.test_x.shape[0]
    return loss.item() / n, 100.0 * correct.item() / n


def _write_epochs_csv(path: Path, history: list[dict]) -> None:
    lines = [",".join(EPOCH_COLUMNS)]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else (str(row[c]) if c == "epoch" else f"{row[c]:.6g}")
                              for c in EPOCH_COLUMNS))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
