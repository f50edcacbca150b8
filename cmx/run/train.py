"""`train(config) -> result`: one ConvMixer run, end to end, resumable. The one entry into training: the CLI,
the local sweep's child processes, the SLURM job and the tests all call it with a `RunConfig`.

The loop reads top to bottom as: lr → batch → step → accumulate → (every SYNC_EVERY steps) sync → epoch end
(evaluate, checkpoint, epochs.csv, status). What and how it trains is the engine's (engine.py: device,
precision, memory format, AdamW, the step, evaluation); where it is, the `TrainState`'s (to and from a
checkpoint); which images it sees, `AugmentedChunks`'. The loop reads nothing back from the device per
step: loss/accuracy sums and a divergence marker accumulate on the device and are read every `SYNC_EVERY`
steps and at the end of each epoch. It stops when the caller's `StopRequest` is set (stop.py).
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import RunConfig
from ..errors import Diverged, Interrupted, UserError
from ..files import now_iso
from ..store import checkpoint
from ..store.resultsdir import ResultsDir
from ..store.rundir import RunDir
from . import tracking
from .allocator import keep_freed_memory
from .batches import AugmentedChunks
from .data import Cifar10, dataset_fingerprint, load_cifar10
from .engine import Engine
from .model import count_params
from .placement import resolve_device
from .progress import Reporter, make_reporter
from .provenance import provenance, weights_sha256
from .seeding import run_generators
from .stop import StopRequest
from .tune import place

SYNC_EVERY = 50  # steps between host reads (divergence check, progress numbers)


def lr_at(t: float, epochs: int, peak: float) -> float:
    """The paper's one-cycle: linear (0,0) → (2E/5, lr) → (4E/5, lr/20) → (E, 0); t in epochs."""
    return float(np.interp(t, [0, epochs * 2 / 5, epochs * 4 / 5, epochs], [0, peak, peak / 20, 0]))


# ---------------------------------------------------------------------- what the loop carries
@dataclass
class TrainState:
    """Where a run is: everything the loop carries from step to step and keeps in its checkpoint."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the current epoch
    history: list[dict] = field(default_factory=list)  # one epochs.csv row per finished epoch
    best: tuple[float, int] = (-1.0, 0)  # (best test accuracy, its epoch)
    elapsed: float = 0.0  # wall seconds of earlier attempts
    perm: torch.Tensor | None = None  # this epoch's shuffling order, once drawn
    sums: torch.Tensor | None = None  # (3,) on the device: loss sum, correct count, images of this epoch

    @classmethod
    def from_checkpoint(cls, saved: dict, engine: Engine, generators: dict[str, torch.Generator]) -> "TrainState":
        engine.load_state_dict(saved)
        checkpoint.set_rng_state(saved["rng"], generators)
        sums = saved.get("sums")
        return cls(epoch=saved["epoch"], step=saved["step"], history=saved["history"], best=tuple(saved["best"]),
                   elapsed=saved["elapsed"], perm=saved.get("perm"),
                   sums=None if sums is None else sums.to(engine.device))

    def to_checkpoint(self, engine: Engine, generators: dict[str, torch.Generator], run_id: str,
                      elapsed: float, augment_state: torch.Tensor | None = None) -> dict:
        """The checkpoint dict (0.1's format plus "engine", the chosen settings). `augment_state`: mid-epoch,
        the augmentation generator as it was at the start of the current chunk (AugmentedChunks.snapshot)."""
        rng = checkpoint.rng_state(generators)
        if augment_state is not None:
            rng["generators"]["augment"] = augment_state
        return {**engine.state_dict(), "engine": engine.settings(), "rng": rng, "epoch": self.epoch,
                "step": self.step, "perm": self.perm, "sums": None if self.sums is None else self.sums.cpu(),
                "history": self.history, "best": list(self.best), "elapsed": elapsed, "run_id": run_id}


@dataclass
class Trained:
    """What the loop hands to `_finish`: the trained engine, where the run ended, and what the loop measured."""

    engine: Engine
    state: TrainState
    params: int
    wall_s: float
    img_per_s: float | None  # training images per second of training time (evaluation excluded)
    images: dict  # {"train": n, "test": n}: so a report can state the test set's binomial error


# ---------------------------------------------------------------------- the run
def train(config: RunConfig, results: str | os.PathLike | None = None, *, resume: str = "auto",
          force: bool = False, progress: str = "none", data: Cifar10 | None = None,
          stop: StopRequest | None = None) -> dict:
    """Train (or continue) the run `config` describes; returns its result.json content.

    resume: "auto" continues from the run's checkpoint if there is one, "restart" starts over.
    force: retrain a run that is already done (its old result is kept as result.<time>.json).
    data: a preloaded dataset (tests, benchmarks); default loads `config.data`.
    stop: set it (e.g. from a signal handler, see stop.stop_on_signals) to checkpoint at the next step and
          raise Interrupted; None: the run cannot be stopped other than by killing the process.
    """
    reporter = make_reporter(progress)
    keep_freed_memory()
    device = resolve_device(config.device)
    store = ResultsDir(results)
    store.ensure_writable()
    dataset_tag = dataset_fingerprint(config.data)
    if data is None:
        data = load_cifar10(config.data)
    if data.train_x.shape[0] < config.batch_size:
        raise UserError(f"batch size {config.batch_size} is larger than the {data.train_x.shape[0]} training images")
    run = store.run(config.run_id(dataset_tag))

    done = run.result()
    if done is not None and not force:
        return _already_done(reporter, run.run_id, done)
    tracker = tracking.make_tracker(config, run)  # a missing package is exit 2 here, before anything is written
    reporter = tracking.TrackingReporter(reporter, tracker, config)  # it sees what the reporter sees
    stop = stop or StopRequest()
    # One run, one trainer: claim it before writing anything (claim.py); released on every way out. A holder
    # judged dead by another process (which took the run over) is stopped like a pre-emption.
    with run.claim(epochs=config.epochs, on_lost=lambda: stop.request(signal.SIGTERM)):
        done = run.result()  # again: the previous holder may have just finished it
        if done is not None and not force:
            return _already_done(reporter, run.run_id, done)
        run.start(config.to_dict(), dataset_tag, restart=resume == "restart")  # --force: the old result is kept
        try:
            result = _finish(config, run, dataset_tag, _run(config, data, device, run, reporter, stop), reporter)
            tracker.finish(result)
            return result
        except Interrupted as err:
            run.write_status("interrupted", error=str(err))
            tracker.fail(err)
            raise
        except Diverged as err:
            run.write_status("failed", error=str(err))
            tracker.fail(err)
            raise
        except BaseException as err:
            tracker.fail(err)
            with contextlib.suppress(Exception):
                run.write_status("failed", error=f"{type(err).__name__}: {err}"[:500])
            raise
        finally:
            reporter.stop()


def _already_done(reporter, run_id: str, done: dict) -> dict:
    reporter.message(f"run {run_id} is already done: test acc {done['test_acc']:.2f}% "
                     f"(best {done['best_test_acc']:.2f}%); use --force to train it again")
    return {**done, "already_done": True}


def _run(config: RunConfig, data: Cifar10, device: torch.device, run: RunDir, reporter: Reporter,
         stop: StopRequest) -> Trained:
    saved = run.load_checkpoint()
    placement = place(config, (saved or {}).get("engine"), device, say=reporter.message)  # kept on resume
    engine = Engine.build(config, placement, say=reporter.message, compile_now=False)
    n_params = count_params(engine.model)
    gens = run_generators(config.seed, device)
    data = data.to(device)
    n_train = data.train_x.shape[0]
    steps = n_train // config.batch_size  # drop_last, as timm (train() checked steps ≥ 1)

    state = TrainState() if saved is None else TrainState.from_checkpoint(saved, engine, gens)
    if saved is not None:
        reporter.message(f"resuming run {run.run_id} at epoch {state.epoch + 1}, step {state.step}")
    engine.compile(reporter.message)
    batches = AugmentedChunks(data, config, gens["augment"], steps)
    t_start, train_time, train_images = time.perf_counter(), 0.0, 0
    elapsed = lambda: state.elapsed + (time.perf_counter() - t_start)  # noqa: E731
    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, on the device
    batch_images = torch.tensor(float(config.batch_size), device=device)  # made once: no copy per step
    reporter.start(run.run_id, config.summary(), config.epochs, steps, state.epoch)

    for epoch in range(state.epoch, config.epochs):
        t_epoch = time.perf_counter()
        if state.perm is None:
            state.perm = torch.randperm(n_train, generator=gens["shuffle"])
        if state.sums is None:
            state.sums = torch.zeros(3, device=device)
        batches.start_epoch(state.perm.to(device))
        engine.model.train()
        reported = state.step
        for step in range(state.step, steps):
            if stop.is_set():
                state.epoch, state.step = epoch, step
                run.save_checkpoint(state.to_checkpoint(engine, gens, run.run_id, elapsed(), batches.snapshot(step)))
                raise Interrupted(f"{stop.reason} at epoch {epoch + 1} step {step}: checkpoint saved; "
                                  f"run the same command to resume", stop.signum)
            lr = lr_at(epoch + (step + 1) / steps, config.epochs, config.lr)
            engine.set_lr(lr)
            x, targets, labels = batches.batch(step)
            loss, logits = engine.step(x, targets)
            # accumulate on the device: no host sync in the step
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step, bad_step)
            correct = (logits.argmax(1) == labels).sum()
            state.sums += torch.stack([loss * config.batch_size, correct.float(), batch_images])
            if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps:
                _check_finite(bad_step, epoch)
                s = state.sums.tolist()
                reporter.step(step + 1 - reported, loss=f"{s[0] / s[2]:.3f}", acc=f"{100 * s[1] / s[2]:.1f}%")
                reported = step + 1

        # -- epoch end: evaluate, then make the epoch safe on disk (RunDir.end_epoch) before reporting it
        loss_sum, correct_sum, seen = state.sums.tolist()
        epoch_train_s = time.perf_counter() - t_epoch
        train_time += epoch_train_s
        train_images += int(seen)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": 100 * correct_sum / seen,
               "test_loss": None, "test_acc": None}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            row["test_loss"], row["test_acc"] = engine.evaluate(data.test_x, data.test_y)
            if row["test_acc"] > state.best[0]:
                state.best = (row["test_acc"], epoch + 1)
        row["seconds"] = time.perf_counter() - t_epoch
        state.history.append(row)
        state.epoch, state.step, state.perm, state.sums = epoch + 1, 0, None, None
        run.end_epoch(state.to_checkpoint(engine, gens, run.run_id, elapsed()), state.history, config.epochs)
        reporter.epoch({**row, "img_per_s": seen / max(epoch_train_s, 1e-9)})

    return Trained(engine, state, n_params, elapsed(), train_images / train_time if train_time > 0 else None,
                   images={"train": n_train, "test": int(data.test_x.shape[0])})


def _finish(config: RunConfig, run: RunDir, dataset_tag: str, trained: Trained, reporter: Reporter) -> dict:
    """result.json's content from what the loop measured; RunDir.finish writes the final weights, then
    result.json (from here on the run is done), the index row and the status."""
    engine, (best, best_epoch) = trained.engine, trained.state.best
    result = {
        "run_id": run.run_id, "dataset": dataset_tag, "config": config.to_dict(),
        "test_acc": trained.state.history[-1]["test_acc"], "best_test_acc": best, "best_epoch": best_epoch,
        "params": trained.params, "images": trained.images, "epochs": config.epochs, "seed": config.seed,
        "wall_s": round(trained.wall_s, 2), "img_per_s": round(trained.img_per_s, 1) if trained.img_per_s else None,
        "finished": now_iso(), "provenance": {**provenance(engine.device), "engine": engine.describe()},
    }
    weights = {name: t.detach().cpu() for name, t in engine.model.state_dict().items()}  # one read, at the end
    result["weights_sha256"] = weights_sha256(weights)  # identical arms → "not testable"
    run.finish(weights, result)
    reporter.message(f"run {run.run_id} done: test acc {result['test_acc']:.2f}% (best {best:.2f}% at epoch "
                     f"{best_epoch}), {trained.wall_s:.0f}s, results in {run.path}")
    return result


def _check_finite(bad_step: torch.Tensor, epoch: int) -> None:
    step = int(bad_step)  # the one host read every SYNC_EVERY steps
    if step >= 0:
        raise Diverged(f"loss became non-finite at epoch {epoch + 1}, step {step + 1}; "
                       f"try a lower --lr or keep --clip on")
