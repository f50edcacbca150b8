"""One run directory: the only code that knows its files, writes them, reads them back and claims the run.

Layout (DIR = the results directory, see resultsdir.py):

    DIR/runs/<run_id>/config.json   every resolved setting + run_id + dataset fingerprint: the run's file of truth
    DIR/runs/<run_id>/status.json   running|done|failed|interrupted, host, pid, timestamps, epoch, error
    DIR/runs/<run_id>/epochs.csv    epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds
    DIR/runs/<run_id>/checkpoint.pt last completed epoch (or interrupt point); see checkpoint.py
    DIR/runs/<run_id>/model.pt      only on success: the final weights (state_dict of CPU tensors)
    DIR/runs/<run_id>/result.json   only on success: final/best accuracy, params, wall time, provenance
    DIR/runs/<run_id>/result.<time>.json  an earlier result, kept when a --force retrain starts
    DIR/runs/<run_id>/claims/<N>.json  who trains the run (see claim.py); the highest N is the current claim
    DIR/runs/<run_id>/train.log, submitted.json  the executors' own: a local child's output, a SLURM job id

Every file is replaced atomically (cmx.files: tmp in the same dir, fsync, rename), so a reader or a crash sees
either the old or the new version, never half of one; a tmp file left by a kill mid-write replaced nothing
and is dropped when the next attempt starts. result.json is written after model.pt and before anything
else: from the moment it exists the run is done, whatever happens to the writes after it.

Torch is imported only by the methods that (de)serialise tensors, so readers (tables, sweeps) stay light.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from . import claim
from ..files import atomic_write_bytes, atomic_write_json, now_iso, parse_iso, read_json

STATUSES = ("running", "done", "failed", "interrupted")  # what a run's status.json may say
STATES = ("done", "running", "interrupted", "failed", "pending")  # a run's state, in display order (pending: no status yet)
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
STALE_AFTER_S = 6 * 3600  # a running run rewrites status.json every epoch; this long without is a dead job


class RunDir:
    """The files of one run. `index`: called with result.json's content once the run is done (the results
    directory passes its runs.csv appender; None for a run dir on its own)."""

    def __init__(self, path: str | os.PathLike, index: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.run_id = self.path.name
        self._index = index

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths
    config_json = property(lambda self: self.path / "config.json")
    status_json = property(lambda self: self.path / "status.json")
    epochs_csv = property(lambda self: self.path / "epochs.csv")
    checkpoint_pt = property(lambda self: self.path / "checkpoint.pt")
    model_pt = property(lambda self: self.path / "model.pt")
    result_json = property(lambda self: self.path / "result.json")
    claims = property(lambda self: claim.claims_dir(self.path))
    train_log = property(lambda self: self.path / "train.log")  # the local executor's child's output
    submitted_json = property(lambda self: self.path / "submitted.json")  # the SLURM job that will train it
    tensorboard_dir = property(lambda self: self.path / "tb")  # --tracker tensorboard's event files

    # -- reading back (None: missing or unreadable)
    def config(self) -> dict | None:
        return read_json(self.config_json)

    def status(self) -> dict | None:
        return read_json(self.status_json)

    def result(self) -> dict | None:
        return read_json(self.result_json)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint, or None if there is none; a corrupt one is a UserError (see checkpoint.load)."""
        from . import checkpoint  # torch: only when training

        return checkpoint.load(self.checkpoint_pt)

    def state(self) -> str:
        """'done' if result.json exists (the truth), 'running' while a live process holds the run's claim,
        else the status file's word ('running' without a live claim is 'interrupted'), else 'pending'."""
        if self.result_json.exists():
            return "done"
        number, held = claim.current(self.path)  # the claim, when there is one, is the truth about who trains
        if claim.is_live(held):
            return "running"
        status = self.status()
        if status and status.get("status") in STATUSES:
            if status["status"] == "running" and (number or _writer_dead(status) or _stale(status)):
                return "interrupted"  # the process died without saying so (SIGKILL, node loss)
            return status["status"]
        return "pending"

    def holder(self) -> dict | None:
        """The live claim on the run, or None when anyone may train it."""
        return claim.holder(self.path)

    # -- claiming
    def claim(self, epochs: int | None = None, on_lost: Callable[[], None] | None = None) -> claim.Claim:
        """Claim the run for this process (a context manager that releases it); RunBusy (exit 4) when a live
        process holds it, and then nothing is written."""
        return claim.acquire(self.path, epochs=epochs, on_lost=on_lost, progress=self.status)

    # -- writing
    def write_config(self, settings: dict[str, Any], dataset: str) -> Path:
        """config.json: the run's resolved settings (RunConfig.to_dict()) plus its id and dataset.

        Written by whoever creates the run directory first (`train()`, or an executor before launching, so a
        queued run is visible); a local sweep's child reads it back with `cmx train --config`."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_json, {**settings, "run_id": self.run_id, "dataset": dataset})
        return self.config_json

    def write_status(self, status: str, **extra: Any) -> dict:
        """status.json; `started`, `epoch` and `epochs` carry over from the previous status unless given."""
        assert status in STATUSES, status
        previous = self.status() or {}
        record = {
            **{k: v for k, v in previous.items() if k in ("started", "epoch", "epochs")},
            "run_id": self.run_id,
            "status": status,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "updated": now_iso(),
            "error": None,
            **extra,
        }
        record.setdefault("started", now_iso())
        atomic_write_json(self.status_json, record)
        return record

    def start(self, settings: dict[str, Any], dataset: str, restart: bool = False) -> None:
        """A training attempt begins (the caller holds the claim): drop tmp files of a killed writer, keep a
        finished result as result.<time>.json (a --force retrain never deletes one), with `restart` drop the
        checkpoint and epochs.csv, then write config.json and a 'running' status at epoch 0."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.result_json.exists():
            os.replace(self.result_json, self.path / f"result.{time.strftime('%Y%m%d-%H%M%S')}.json")
        if restart:
            self.checkpoint_pt.unlink(missing_ok=True)
            self.epochs_csv.unlink(missing_ok=True)
        self.write_config(settings, dataset)
        self.write_status("running", epoch=0, epochs=settings["epochs"])

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Replace checkpoint.pt; on failure (disk full) the previous one is kept (UserError)."""
        from . import checkpoint  # torch: only when training

        checkpoint.save(self.checkpoint_pt, state)

    def end_epoch(self, state: dict[str, Any], history: list[dict], epochs: int) -> None:
        """An epoch is safe on disk: its checkpoint first, then epochs.csv and the status that report it."""
        self.save_checkpoint(state)
        self.write_epochs(history)
        self.write_status("running", epoch=state["epoch"], epochs=epochs)

    def write_epochs(self, history: list[dict]) -> None:
        """epochs.csv, one row per finished epoch (EPOCH_COLUMNS; an epoch without evaluation has empty test_*)."""
        lines = [",".join(EPOCH_COLUMNS)]
        for row in history:
            lines.append(",".join("" if row.get(c) is None else (str(row[c]) if c == "epoch" else f"{row[c]:.6g}")
                                  for c in EPOCH_COLUMNS))
        atomic_write_bytes(self.epochs_csv, ("\n".join(lines) + "\n").encode())

    def finish(self, weights: dict, result: dict[str, Any]) -> None:
        """The run is done: model.pt (CPU tensors, loads anywhere), then result.json (from here on the run is
        done), the index row, a 'done' status; the checkpoint, superseded by result.json, goes."""
        from . import checkpoint  # torch: only when training

        checkpoint.save_weights(self.model_pt, weights)
        atomic_write_json(self.result_json, result)
        if self._index is not None:
            self._index(result)
        self.write_status("done", epoch=result["epochs"], epochs=result["epochs"])
        self.checkpoint_pt.unlink(missing_ok=True)


def _stale(status: dict) -> bool:
    """A 'running' status from another host that has not been refreshed for STALE_AFTER_S seconds.

    We cannot see a process on another node, so a run killed hard there (SLURM node failure) would read
    'running' forever and never be resubmitted. Epochs of the paper's models take minutes on a GPU.
    """
    updated = parse_iso(status.get("updated"))
    return updated is not None and time.time() - updated > STALE_AFTER_S


def _writer_dead(status: dict) -> bool:
    """Has the writer of a 'running' status died? Only knowable on the same host."""
    if status.get("host") != socket.gethostname():
        return False  # another node: trust the file
    pid = status.get("pid")
    return not isinstance(pid, int) or not claim.pid_alive(pid)
