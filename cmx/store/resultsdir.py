"""The results directory: the on-disk truth about every run, written so nothing finished is ever lost.

Layout (DIR = --results, default results/ or $CMX_RESULTS):

    DIR/runs/<run_id>/config.json   every resolved setting + run_id + dataset fingerprint
    DIR/runs/<run_id>/status.json   running|done|failed|interrupted, host, pid, timestamps, epoch, error
    DIR/runs/<run_id>/epochs.csv    epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds
    DIR/runs/<run_id>/checkpoint.pt last completed epoch (or interrupt point); see checkpoint.py
    DIR/runs/<run_id>/model.pt      only on success: the final weights (state_dict)
    DIR/runs/<run_id>/result.json   only on success: final/best accuracy, params, wall time, provenance
    DIR/runs/<run_id>/claims/<N>.json  who trains the run (see claim.py); the highest N is the current claim
    DIR/runs.csv                    one row per finished run; an index rebuildable from the run dirs

Every file is replaced atomically (write tmp in the same dir, fsync, rename), so a reader or a crash sees
either the old or the new version, never half of one. runs.csv appends take a file lock so concurrent
finishers on one machine or a shared filesystem cannot interleave rows.
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import UserError
from ..files import atomic_write_bytes, atomic_write_json, now_iso, parse_iso, read_json

STATUSES = ("running", "done", "failed", "interrupted")  # what a run's status.json may say
STATES = ("done", "running", "interrupted", "failed", "pending")  # a run's state, in display order (pending: no status yet)
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
INDEX_COLUMNS = (
    "run_id", "finished", "dataset", "h", "d", "p", "k", "norm", "act", "residual",
    "scaling", "flip", "randaug", "mixup", "erasing", "clip", "lr", "wd", "epochs", "batch_size", "seed",
    "test_acc", "best_test_acc", "best_epoch", "params", "wall_s", "img_per_s", "device", "git_commit",
)


def default_results_dir() -> Path:
    return Path(os.environ.get("CMX_RESULTS", "results"))


# ---------------------------------------------------------------------- the results directory
class ResultsDir:
    """Paths and safe writes under one results directory. Creating it checks it is writable."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_results_dir()

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def index_csv(self) -> Path:
        return self.root / "runs.csv"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def ensure_writable(self) -> None:
        """Fail early with one line (exit 2) instead of after an hour of training."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.runs, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise UserError(f"results dir {self.root} is not writable: {err.strerror or err}") from None

    # -- per-run files
    def status(self, run_id: str) -> dict | None:
        return read_json(self.run_dir(run_id) / "status.json")

    def result(self, run_id: str) -> dict | None:
        return read_json(self.run_dir(run_id) / "result.json")

    def config(self, run_id: str) -> dict | None:
        return read_json(self.run_dir(run_id) / "config.json")

    def state(self, run_id: str) -> str:
        """'done' if result.json exists (the truth), 'running' while a live process holds the run's claim,
        else the status file's word ('running' without a live claim is 'interrupted'), else 'pending'."""
        if (self.run_dir(run_id) / "result.json").exists():
            return "done"
        from . import claim  # the claim, when there is one, is the truth about who trains the run

        number, held = claim.current(self.run_dir(run_id))
        if claim.is_live(held):
            return "running"
        status = self.status(run_id)
        if status and status.get("status") in STATUSES:
            if status["status"] == "running" and (number or _writer_dead(status) or _stale(status)):
                return "interrupted"  # the process died without saying so (SIGKILL, node loss)
            return status["status"]
        return "pending"

    def write_config(self, run_id: str, config, dataset: str) -> Path:
        """config.json: the run's resolved RunConfig plus its id and dataset, the run's one file of truth.

        Written by whoever creates the run directory first (`train()`, or an executor before launching, so a
        queued run is visible); a local sweep's child reads it back with `cmx train --config`."""
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        path = self.run_dir(run_id) / "config.json"
        atomic_write_json(path, {**config.to_dict(), "run_id": run_id, "dataset": dataset})
        return path

    def write_status(self, run_id: str, status: str, **extra: Any) -> dict:
        assert status in STATUSES, status
        previous = self.status(run_id) or {}
        record = {
            **{k: v for k, v in previous.items() if k in ("started", "epoch", "epochs")},
            "run_id": run_id,
            "status": status,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "updated": now_iso(),
            "error": None,
            **extra,
        }
        record.setdefault("started", now_iso())
        atomic_write_json(self.run_dir(run_id) / "status.json", record)
        return record

    # -- the index
    def append_index_row(self, row: dict[str, Any]) -> None:
        """Append one finished run to runs.csv under a lock; header written once. A run already in the index
        (a --force retrain) has its row replaced, so runs.csv never holds two rows for one run id."""
        line = _csv_line(row)
        with FileLock(str(self.index_csv) + ".lock", timeout=120):
            new = not self.index_csv.exists() or self.index_csv.stat().st_size == 0
            if not new and _has_run(self.index_csv, row["run_id"]):
                lines = self.index_csv.read_text().splitlines(keepends=True)
                kept = [ln for ln in lines[1:] if _run_id_of(ln) != row["run_id"]]
                atomic_write_bytes(self.index_csv, "".join([lines[0], *kept, line]).encode())
                return
            with open(self.index_csv, "a", newline="") as fh:
                if new:
                    fh.write(_csv_line({c: c for c in INDEX_COLUMNS}))
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def rebuild_index(self) -> int:
        """Rewrite runs.csv from the run directories (the truth). Returns the number of rows."""
        rows = [index_row(result) for _, result in self.finished_results()]
        rows.sort(key=lambda r: (str(r.get("finished")), r["run_id"]))
        text = _csv_line({c: c for c in INDEX_COLUMNS}) + "".join(_csv_line(r) for r in rows)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.index_csv) + ".lock", timeout=120):
            atomic_write_bytes(self.index_csv, text.encode())
        return len(rows)

    def run_ids(self) -> list[str]:
        if not self.runs.is_dir():
            return []
        return sorted(p.name for p in self.runs.iterdir() if p.is_dir() and not p.name.startswith("."))

    def finished_results(self) -> list[tuple[str, dict]]:
        """(run_id, result.json) for every finished run; unreadable ones are skipped with a warning."""
        out = []
        for run_id in self.run_ids():
            path = self.run_dir(run_id) / "result.json"
            if not path.exists():
                continue
            result = read_json(path)
            if result is None or "test_acc" not in result or "config" not in result:
                warnings.warn(f"skipping {path}: unreadable or incomplete result.json")
                continue
            out.append((run_id, result))
        return out


def index_row(result: dict) -> dict[str, Any]:
    """The runs.csv row for one result.json."""
    cfg = result.get("config", {})
    prov = result.get("provenance", {})
    row = {c: cfg.get(c) for c in INDEX_COLUMNS if c in cfg}
    row.update(
        run_id=result["run_id"], finished=result.get("finished"), dataset=result.get("dataset"),
        test_acc=result.get("test_acc"), best_test_acc=result.get("best_test_acc"),
        best_epoch=result.get("best_epoch"), params=result.get("params"), wall_s=result.get("wall_s"),
        img_per_s=result.get("img_per_s"), device=prov.get("device_name"), git_commit=prov.get("git_commit"),
    )
    return row


def _run_id_of(line: str) -> str:
    return line.split(",", 1)[0]  # run ids are [a-z0-9-]: never quoted by the csv writer


def _has_run(path: Path, run_id: str) -> bool:
    with open(path) as fh:
        return any(_run_id_of(line) == run_id for line in fh)


def _csv_line(row: dict[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if row.get(c) is None else row.get(c) for c in INDEX_COLUMNS])
    return buf.getvalue()


STALE_AFTER_S = 6 * 3600  # a running run rewrites status.json every epoch; this long without is a dead job


def _stale(status: dict) -> bool:
    """A 'running' status from another host that has not been refreshed for STALE_AFTER_S seconds.

    We cannot see a process on another node, so a run killed hard there (SLURM node failure) would read
    'running' forever and never be resubmitted. Epochs of the paper's models take minutes on a GPU.
    """
    updated = parse_iso(status.get("updated"))
    return updated is not None and time.time() - updated > STALE_AFTER_S


def _writer_dead(status: dict) -> bool:
    """Has the writer of a 'running' status died? Only knowable on the same host."""
    from .claim import pid_alive  # claim.py imports this module

    if status.get("host") != socket.gethostname():
        return False  # another node: trust the file
    pid = status.get("pid")
    return not isinstance(pid, int) or not pid_alive(pid)
