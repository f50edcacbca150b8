"""The executor interface: what every executor takes (planned runs) and gives back (a SweepSummary).

Executors (local.py: subprocess slots on this machine; slurm.py: submitit job arrays) share one
method, `submit(runs) -> SweepSummary`, plus the helpers here, so skipping, failure reasons and exit codes
mean the same whichever one ran the sweep. Each executor checks its own flags (local.LocalFlags,
slurm.SlurmFlags) with the shared checks here, and says how it lays runs out (`SlotLayout`) for the estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import UserError
from ..store import claim
from ..store.resultsdir import ResultsDir
from .plan import Plan, PlannedRun


ELSEWHERE = "running elsewhere"  # the outcome of a run another process holds (cmx/store/claim.py)


class Executor(Protocol):
    def submit(self, runs: list[PlannedRun]) -> "SweepSummary":
        """Train (or submit) `runs`; return what happened to each."""


@dataclass
class Outcome:
    """What happened to one run in this invocation: done | failed | interrupted | skipped | submitted |
    running elsewhere (another process holds the run's claim: it trains the run, this sweep does not)."""

    run: PlannedRun
    status: str
    reason: str = ""  # one line: why it failed / was skipped
    trained: bool = False  # did this invocation train (part of) it?

    @property
    def settled(self) -> bool:
        """Nothing left for this sweep to do: done now, done before, or being trained by another process."""
        return self.status in ("done", ELSEWHERE) or (self.status == "skipped" and self.run.state == "done")


@dataclass
class SweepSummary:
    outcomes: list[Outcome]
    signal: int | None = None  # set when the user stopped the sweep (SIGINT → exit 130)
    jobs: list[str] = field(default_factory=list)  # submitted job ids (SLURM)
    waited: bool = True  # False: jobs were submitted and are still running

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C (128 + signal), 0 if every run is done, running elsewhere (its holder reports
        on it) or was submitted, else 1."""
        if self.signal is not None:
            return 128 + self.signal
        if not self.waited:
            return 0
        return 0 if all(o.settled for o in self.outcomes) else 1


def select_runs(plan: Plan, rerun_failed: bool = False) -> tuple[list[PlannedRun], list[Outcome]]:
    """Split the plan into runs to launch (pending, interrupted, failed if asked) and skipped outcomes."""
    todo, skipped = [], []
    for run in plan.refresh().runs:
        if run.state == "done":
            skipped.append(Outcome(run, "skipped", "already done"))
        elif run.state == "running":
            skipped.append(held_elsewhere(plan.results, run) or Outcome(run, ELSEWHERE, "held by another process"))
        elif run.state == "failed" and not rerun_failed:
            error = (plan.results.status(run.run_id) or {}).get("error") or "failed"
            skipped.append(Outcome(run, "skipped", f"failed earlier ({error}); use --rerun-failed"))
        else:
            todo.append(run)
    return todo, skipped


def held_elsewhere(results: ResultsDir, run: PlannedRun) -> Outcome | None:
    """A 'running elsewhere' outcome when a live process (not this sweep) holds the run's claim, else None.

    Executors ask just before launching a run; the claim that train() takes is what really decides (a run
    claimed after this check makes the launched training exit with RunBusy, see busy_outcome)."""
    held = claim.holder(results.run_dir(run.run_id))
    if held is None:
        return None
    run.state = "running"
    return Outcome(run, ELSEWHERE, f"held by {claim.describe(held)}")


def busy_outcome(results: ResultsDir, run: PlannedRun, message: str) -> Outcome:
    """The launched training found the run claimed by another process (exit 4): not a failure."""
    run.state = results.state(run.run_id)
    if run.state == "done":
        return Outcome(run, "skipped", "trained by another process meanwhile")
    held = claim.holder(results.run_dir(run.run_id))
    return Outcome(run, ELSEWHERE, f"held by {claim.describe(held)}" if held else message)


def trained_by(results: ResultsDir, run: PlannedRun, pid: int) -> bool:
    """Did process `pid` (a child this sweep launched) train the run? Its last claim says: a child that found
    the run already done (another sweep finished it first) took no claim, or one that reached no epoch."""
    _, last = claim.current(results.run_dir(run.run_id))
    return last is None or (last.get("pid") == pid and bool(last.get("epoch")))


def failure_reason(results: ResultsDir, run_id: str, log: Path | None = None, pid: int | None = None) -> str:
    """One line: the run's status.json error (if this process wrote it), else the log's last line."""
    status = results.status(run_id) or {}
    if status.get("status") == "failed" and status.get("error") and (pid is None or status.get("pid") == pid):
        return str(status["error"]).splitlines()[0]
    if log is not None:
        try:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        if lines:
            return lines[-1][:300]
    return str(status.get("error") or "unknown error (no status, no log)")


def write_run_config(results: ResultsDir, run: PlannedRun) -> Path:
    """Write the run's config.json before launching it: the child reads its settings from this file (the
    run's one file of truth), and a queued run is visible to `cmx runs`/`cmx table`."""
    return results.write_config(run.run_id, run.config, run.dataset)


# ---------------------------------------------------------------------- flag checks shared by the executors
def positive(value, default, name: str):
    """`value` (or `default` when not given), which must be > 0; a one-line error names the flag."""
    value = default if value is None else value
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value}")
    return value


def non_negative(value, default, name: str):
    value = default if value is None else value
    if value < 0:
        raise UserError(f"{name} must be ≥ 0, got {value}")
    return value


@dataclass(frozen=True)
class SlotLayout:
    """How a launch trains its runs, as the estimate and the watch's ETA need it: `slots` at once, of which
    `share_of` share one device; `cluster` "gpu"/"cpu" for SLURM's nodes (None: this machine); `gpu`: this
    machine's first GPU of --gpus."""

    slots: int = 1
    share_of: int = 1
    cluster: str | None = None
    gpu: str | None = None

