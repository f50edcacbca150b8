"""When will a launched sweep end: its queue, recorded at launch, projected with the estimate's rates.

Why a record: the results directory alone cannot say which runs a sweep has still to start (a local sweep
writes a run's directory only when it starts it) nor on how many slots. So `cmx sweep` writes
<results>/sweeps/<name>.json when it launches — the runs in launch order and the slot layout — and
`cmx runs --watch` reads it back: a running run ends after its own ETA (its recent epochs, as the watch
table shows), the runs not started yet follow on the first slot to come free, each projected as
`cmx sweep --dry-run` projects it (estimate.project). Done and failed runs cost nothing more (a sweep does
not retry a run that failed during it).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import RunConfig
from ..store.resultsdir import ResultsDir
from ..files import atomic_write_json, now_iso, parse_iso
from .estimate import DEFAULT_TFLOPS, project, schedule
from .plan import PlannedRun

QUEUE_DIR = "sweeps"


def record_queue(results: ResultsDir, name: str, todo: list[PlannedRun], *, slots: int = 1, share_of: int = 1,
                 cluster: str | None = None, tflops: float = DEFAULT_TFLOPS) -> Path:
    """<results>/sweeps/<name>.json: what this launch will train, in order, and on how many slots."""
    path = results.root / QUEUE_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"name": name, "launched": now_iso(), "slots": slots, "share_of": share_of,
                             "cluster": cluster, "tflops": tflops,
                             "runs": [{"run_id": r.run_id, "config": r.config.to_dict()} for r in todo]})
    return path


def queues(results: ResultsDir) -> list[dict]:
    """Every recorded launch, newest first (unreadable records skipped)."""
    found = []
    for path in sorted((results.root / QUEUE_DIR).glob("*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda q: parse_iso(q.get("launched")) or 0.0, reverse=True)


def sweep_eta(results: ResultsDir, queue: dict, running_eta: dict[str, float | None],
              device: str | None = None) -> tuple[float, str, int] | None:
    """(seconds until the recorded sweep ends, the basis text, runs left), or None when none of its runs is
    training (it ended, or was stopped: what is left waits for the next launch).

    `running_eta`: run id → seconds left of each running run (from its own epochs), None if unknown yet."""
    runs, live, training = [], [], False
    for entry in queue.get("runs", []):
        run_id = entry["run_id"]
        state = results.state(run_id)
        training |= state == "running"
        if state in ("done", "failed"):
            continue
        if state == "running" and running_eta.get(run_id) is not None:
            live.append(running_eta[run_id])
            continue
        config = RunConfig.from_dict({k: v for k, v in entry["config"].items()})
        epoch = int((results.status(run_id) or {}).get("epoch") or 0)
        runs.append((config, min(epoch, config.epochs), True))
    if not training:
        return None
    slots = max(1, int(queue.get("slots") or 1))
    estimate = project(runs, results, tflops=queue.get("tflops") or DEFAULT_TFLOPS, device=device, slots=slots,
                       share_of=queue.get("share_of"), probing=False, cluster=queue.get("cluster")) if runs else None
    queued = [p.seconds * estimate.share for p in estimate.runs] if estimate else []
    # the running runs hold their slots first; the queue follows in launch order
    wall = schedule(sorted(live) + queued, slots) if len(live) <= slots else schedule(live + queued, len(live))
    basis = ", ".join(filter(None, [f"{len(live)} running from their own epochs" if live else "",
                                    estimate.sources() if estimate else ""]))
    return wall, basis, len(live) + len(runs)
