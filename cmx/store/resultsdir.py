"""The results directory: the on-disk truth about every run, written so nothing finished is ever lost.

Layout (DIR = --results, default results/ or $CMX_RESULTS):

    DIR/runs/<run_id>/              one run's files, owned by RunDir (rundir.py, which lists them)
    DIR/runs.csv                    one row per finished run; an index rebuildable from the run dirs

runs.csv appends take a file lock so concurrent finishers on one machine or a shared filesystem cannot
interleave rows; a rebuild replaces the file atomically.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import UserError
from ..files import atomic_write_bytes
from .rundir import STATES, RunDir  # noqa: F401 (STATES: the states a listing of runs shows, in order)

INDEX_COLUMNS = (
    "run_id", "finished", "dataset", "h", "d", "p", "k", "norm", "act", "residual",
    "scaling", "flip", "randaug", "mixup", "erasing", "clip", "lr", "wd", "epochs", "batch_size", "seed",
    "test_acc", "best_test_acc", "best_epoch", "params", "wall_s", "img_per_s", "device", "git_commit",
)


def default_results_dir() -> Path:
    return Path(os.environ.get("CMX_RESULTS", "results"))


# ---------------------------------------------------------------------- the results directory
class ResultsDir:
    """The directory of runs and its runs.csv index; `run(run_id)` hands out one run's RunDir."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_results_dir()

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def index_csv(self) -> Path:
        return self.root / "runs.csv"

    def run_dir(self, run_id: str) -> Path:
        return self.run(run_id).path

    def ensure_writable(self) -> None:
        """Fail early with one line (exit 2) instead of after an hour of training."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.runs, prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise UserError(f"results dir {self.root} is not writable: {err.strerror or err}") from None

    # -- the runs
    def run(self, run_id: str) -> RunDir:
        """The run directory of `run_id` (it need not exist yet); its finished result goes into runs.csv."""
        return RunDir(self.runs / run_id, index=lambda result: self.append_index_row(index_row(result)))

    # shorthands for the callers that ask one thing of a run
    def status(self, run_id: str) -> dict | None:
        return self.run(run_id).status()

    def result(self, run_id: str) -> dict | None:
        return self.run(run_id).result()

    def config(self, run_id: str) -> dict | None:
        return self.run(run_id).config()

    def state(self, run_id: str) -> str:
        return self.run(run_id).state()

    def write_config(self, run_id: str, config, dataset: str) -> Path:
        """config.json of a run about to be launched; `config`: a RunConfig (anything with to_dict())."""
        return self.run(run_id).write_config(config.to_dict(), dataset)

    def write_status(self, run_id: str, status: str, **extra: Any) -> dict:
        return self.run(run_id).write_status(status, **extra)

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
            run = self.run(run_id)
            if not run.result_json.exists():
                continue
            result = run.result()
            if result is None or "test_acc" not in result or "config" not in result:
                warnings.warn(f"skipping {run.result_json}: unreadable or incomplete result.json")
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
