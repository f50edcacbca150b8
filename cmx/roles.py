"""Roles: which paper row a scaled-down run stands for, recorded in `<results>/roles.json`.

A sweep file's `paper:` key says that its runs (say ConvMixer-64/4 p2 k5 on 10,000 images, 4 epochs)
stand for a row of the paper (256/8 p1 k5). That is a fact about the study, not about the run: the run's
config.json and run id stay its own (the same run may serve several studies, or none), so the role cannot
live in the run directory. `cmx sweep` records the roles it planned here, and `cmx table` reads them: a
run with a role counts for the rows it stands for instead of being matched by its own configuration.

    roles.json = {"version": 1,
                  "runs": {run_id: [{"row": "table8:kernel:256/8 p1 k5 wd 0",   # paper.PaperRow.row_id
                                     "sweep": "mini-kernel", "label": "",       # who asked for the run
                                     "where": "sweeps/mini/kernel.yaml:4",      # the `paper:` line
                                     "paper": {"h": 256, "d": 8, "p": 1}}]}}   # the changes it gave

Several sweeps may share a results dir, so a write merges: for each run it planned, a sweep replaces the
entries of the sweeps that asked for that run (a `paper:` edited or removed in the file takes effect) and
keeps everyone else's. Entries of runs a sweep no longer plans are left alone (planning a subset, e.g.
`--seeds 0`, must not forget the other seeds' roles). Writes are atomic, under a file lock.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock

from .errors import UserError
from .files import atomic_write_json

ROLES_FILE = "roles.json"
VERSION = 1


@dataclass(frozen=True)
class Role:
    """One run standing for one paper row, as one sweep entry asked."""

    row: str  # paper.PaperRow.row_id
    sweep: str
    label: str = ""
    where: str = ""  # 'FILE:LINE' of the `paper:` key
    paper: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        return asdict(self)


def roles_path(root: str | Path) -> Path:
    return Path(root) / ROLES_FILE


def read_roles(root: str | Path) -> dict[str, list[dict]] | None:
    """run_id → its role entries; {} when there is no roles file; None when the file is unreadable."""
    path = roles_path(root)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, dict):
        return None
    return {str(run_id): [e for e in entries if isinstance(e, dict) and isinstance(e.get("row"), str)]
            for run_id, entries in runs.items() if isinstance(entries, list)}


def record_roles(root: str | Path, planned: Iterable[tuple[str, list[str], list[Role]]]) -> Path | None:
    """Merge the roles of one plan into `root`/roles.json; returns its path, or None when nothing changed.

    `planned` = (run_id, names of the sweeps that asked for it, its roles) for every run of the plan. A
    plan without any role writes no file where there is none (plain sweeps leave no trace).
    """
    planned = list(planned)
    path = roles_path(root)
    if not path.exists() and not any(roles for _, _, roles in planned):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        old = read_roles(root)
        if old is None:
            raise UserError(f"{path} is unreadable; fix or remove it (`cmx sweep` rewrites it for its runs)")
        new = {run_id: list(entries) for run_id, entries in old.items()}
        for run_id, sweeps, roles in planned:
            kept = [e for e in new.get(run_id, []) if e.get("sweep") not in sweeps]
            entries = kept + [r.to_json() for r in roles]
            if entries:
                new[run_id] = entries
            else:
                new.pop(run_id, None)
        if new == old and path.exists():
            return None
        atomic_write_json(path, {"version": VERSION, "runs": dict(sorted(new.items()))})
    return path
