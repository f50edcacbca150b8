"""The SLURM executor: one submitit job array for the runs left to do, surviving preemption and time limits.

Why submitit: it writes the sbatch script, pickles the call and its result, throttles the array
(`--max-parallel` → `%N`), and requeues a job whose callable has a `checkpoint()` method when SLURM sends
the time-limit/preemption signal (USR2). The same code runs on submitit's local and debug executors, which
the tests use (`--executor local-submitit|debug`).

Each array task calls `cmx.run.train.train(config, results)` in-process; the run directory holds all progress.
On USR2, TrainJob sets the run's stop request exactly as Ctrl-C would (a checkpoint at the next step, the
run marked interrupted), then hands over to submitit's handler, which calls `checkpoint()`
→ `DelayedSubmission(self, config, results)`, requeues the job and exits. The requeued task calls train()
again, which resumes from the run's checkpoint. A run killed some other way stays `interrupted` and is
submitted again by the next `cmx sweep`.
"""
from __future__ import annotations

import getpass
import math
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .estimate import ALL_AT_ONCE
from .executors import (Outcome, SlotLayout, SweepSummary, busy_outcome, failure_reason,
                        non_negative, positive, write_run_config)
from ..store.resultsdir import ResultsDir
from ..files import atomic_write_json, now_iso, read_json
from ..run.stop import StopRequest
from .plan import PlannedRun

CLUSTERS = ("slurm", "local-submitit", "debug")
MAX_REQUEUES = 20  # time-limit requeues per run; each one resumes from the last checkpoint
POLL_S = 5.0  # submitit rate-limits its own squeue/sacct calls; no need to ask more often


@dataclass
class SlurmOptions:
    """Resources of each array task (generic names, mapped to sbatch flags by submitit)."""

    partition: str | None = None
    time_min: float = 480  # per job; a run that needs longer is requeued from its checkpoint
    gpus_per_run: int = 1
    cpus_per_run: int = 4
    mem_gb: float | None = None
    account: str | None = None
    max_parallel: int | None = None  # array throttle; default: all at once
    extra: dict[str, Any] = field(default_factory=dict)  # passed to sbatch as --key=value
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to finish a step and save
    name: str = "cmx"


@dataclass(frozen=True)
class SlurmFlags:
    """The SLURM executor's flags as given (None: not given), checked and turned into SlurmOptions here."""

    partition: str | None = None
    time: float | None = None  # minutes
    gpus_per_run: int | None = None
    cpus_per_run: int | None = None
    mem: float | None = None  # GB
    account: str | None = None
    max_parallel: int | None = None
    slurm_extra: list[str] | None = None  # KEY=VALUE
    wait: bool = False

    def given(self) -> list[str]:
        return [f"--{name.replace('_', '-')}" for name, value in vars(self).items() if value not in (None, False)]

    def options(self, name: str) -> SlurmOptions:
        return SlurmOptions(
            partition=self.partition, time_min=positive(self.time, 480, "--time"),
            gpus_per_run=non_negative(self.gpus_per_run, 1, "--gpus-per-run"),
            cpus_per_run=positive(self.cpus_per_run, 4, "--cpus-per-run"),
            mem_gb=None if self.mem is None else positive(self.mem, 0, "--mem"), account=self.account,
            max_parallel=None if self.max_parallel is None else positive(self.max_parallel, 0, "--max-parallel"),
            extra=parse_extra(self.slurm_extra), name=name)

    def layout(self, executor: str) -> SlotLayout:
        """SLURM: every run on its own node's device, max_parallel at a time (the queue's wait not counted);
        submitit's local and in-process runners: one run at a time on this machine."""
        if executor != "slurm":
            return SlotLayout()
        gpu = self.gpus_per_run is None or self.gpus_per_run > 0
        return SlotLayout(self.max_parallel or ALL_AT_ONCE, 1, "gpu" if gpu else "cpu")


def parse_extra(items: list[str] | None) -> dict:
    """--slurm-extra qos=high → {'qos': 'high'}; a bare flag (--slurm-extra exclusive) → True."""
    extra = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UserError(f"--slurm-extra {item!r}: expected KEY=VALUE, e.g. --slurm-extra qos=high")
        extra[key] = value if sep else True
    return extra


class JobFailed(Exception):
    """A training error, in a form that survives submitit's pickling (cmx errors take other arguments)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message, exit_code)
        self.message, self.exit_code = message, exit_code

    def __str__(self) -> str:
        return self.message


class TrainJob:
    """What each array task runs: `TrainJob()(config_dict, results_dir)`. Stateless between attempts.

    The job owns the run's StopRequest: SIGINT/SIGTERM and SLURM's pre-emption/time-limit signal (USR2) set
    it, train() checkpoints at its next step and raises Interrupted; after a USR2 the job then hands over to
    submitit's own handler, which requeues it. A USR2 outside training (before train() starts) goes straight
    to submitit: there is nothing to save.
    """

    def __init__(self):
        self._preempted: tuple | None = None
        self._submitit_handler = None  # submitit's USR2 handler (checkpoint + requeue)
        self._stop: StopRequest | None = None  # set while train() runs

    def __call__(self, config: dict, results: str) -> dict:
        from ..errors import CmxError, Interrupted, RunBusy
        from ..config import RunConfig
        from ..run.stop import stop_on_signals
        from ..run.train import train

        cfg = RunConfig.from_dict(config)
        in_main = threading.current_thread() is threading.main_thread()
        usr = _usr_signal()
        if in_main:
            self._submitit_handler = signal.signal(usr, self._on_preempt)
        try:
            with stop_on_signals() as stop:
                self._stop = stop
                result = train(cfg, results, progress="lines", stop=stop)
            return {k: result.get(k) for k in ("run_id", "test_acc", "best_test_acc", "wall_s")}
        except RunBusy as err:  # another trainer (a local sweep, another array) holds the run: skip, not fail
            return {"busy": str(err)}
        except Interrupted as err:
            if self._preempted is not None and callable(self._submitit_handler):
                self._submitit_handler(*self._preempted)  # submitit: checkpoint() → requeue → exit
            raise JobFailed(str(err), err.exit_code) from None
        except CmxError as err:
            raise JobFailed(str(err), err.exit_code) from None
        finally:
            self._stop = None
            if in_main:
                signal.signal(usr, self._submitit_handler)

    def _on_preempt(self, signum, frame) -> None:
        self._preempted = (signum, frame)
        if self._stop is not None:
            self._stop.request(signal.SIGTERM)  # → checkpoint at the next step, Interrupted (as scancel would)
        elif callable(self._submitit_handler):
            self._submitit_handler(signum, frame)  # not training: nothing to save, requeue now

    def checkpoint(self, config: dict, results: str):
        """Called by submitit on preemption/time-out: run the same call again; train() resumes by itself."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, config, results)

    def __getstate__(self) -> dict:
        return {}  # signal handlers and frames are per process; the run dir holds all progress

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _usr_signal() -> int:
    import submitit

    try:
        return submitit.JobEnvironment._usr_sig()
    except RuntimeError:
        return signal.SIGUSR2


def check_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise UserError("--executor slurm: sbatch/srun not found; run on a SLURM login node (or use --executor local)")


def make_submitit_executor(cluster: str, folder: Path, opts: SlurmOptions):
    """submitit's Slurm/Local/Debug executor with our options mapped onto its parameters."""
    import submitit

    if cluster == "debug":
        return submitit.DebugExecutor(folder)
    if cluster == "local-submitit":
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_run,
                                   signal_delay_s=opts.signal_delay_s)
        return executor
    if cluster != "slurm":
        raise UserError(f"--executor must be one of local, {', '.join(CLUSTERS)}; got {cluster!r}")
    check_slurm()
    try:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_REQUEUES)
    except RuntimeError as err:
        raise UserError(f"--executor slurm: {err} (is this a SLURM login node?)") from None
    minutes = max(1, math.ceil(opts.time_min))
    params = dict(job_name=opts.name, time=minutes, cpus_per_task=opts.cpus_per_run,
                  signal_delay_s=min(opts.signal_delay_s, 15 * minutes),  # short limits: signal at 3/4 of it
                  partition=opts.partition, account=opts.account,
                  mem=f"{opts.mem_gb:g}GB" if opts.mem_gb else None,
                  gpus_per_node=opts.gpus_per_run or None,
                  array_parallelism=opts.max_parallel,
                  additional_parameters=dict(opts.extra) or None)
    try:
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    except (ValueError, TypeError) as err:
        raise UserError(f"--executor slurm: bad parameters: {str(err).splitlines()[0]}") from None
    return executor


class SubmititExecutor:
    """Submits runs as one job array; `submit(runs) -> SweepSummary` (waits only when asked)."""

    def __init__(self, results: ResultsDir, cluster: str = "slurm", options: SlurmOptions | None = None,
                 wait: bool = False, echo=print):
        self.results = ResultsDir(Path(results.root).resolve())
        self.cluster = cluster
        self.options = options or SlurmOptions()
        self.wait = wait or cluster == "debug"  # debug jobs run in this process when their result is asked
        self.echo = echo
        self.folder = self.results.root / "slurm"

    def submit(self, runs: list[PlannedRun]) -> SweepSummary:
        queued = self._still_queued(runs)
        skipped = [Outcome(r, "skipped", f"already submitted: SLURM job {queued[r.run_id]} is queued or running")
                   for r in runs if r.run_id in queued]
        runs = [r for r in runs if r.run_id not in queued]
        if not runs:
            return SweepSummary(skipped, waited=False)
        summary = self._submit(runs)
        summary.outcomes = skipped + summary.outcomes
        return summary

    def _submit(self, runs: list[PlannedRun]) -> SweepSummary:
        if self.cluster == "slurm":
            check_slurm()  # fail before writing anything
        self.results.ensure_writable()
        self.folder.mkdir(parents=True, exist_ok=True)
        executor = make_submitit_executor(self.cluster, self.folder, self.options)
        configs, roots = [], []
        for run in runs:
            write_run_config(self.results, run)
            data = str(Path(run.config.data).resolve())  # jobs may start in another directory
            configs.append(run.config.replace(data=data).to_dict())
            roots.append(str(self.results.root))
        try:
            jobs = executor.map_array(TrainJob(), configs, roots)
        except Exception as err:  # sbatch refusals surface as submitit/subprocess errors
            last = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            raise UserError(f"--executor {self.cluster}: submission failed: {last}") from None
        ids = [job.job_id for job in jobs]
        for run, job_id in zip(runs, ids):  # lets the next `cmx sweep` see that the run is already queued
            atomic_write_json(self.results.run(run.run_id).submitted_json,
                              {"job_id": job_id, "cluster": self.cluster, "submitted": now_iso()})
        self._announce(runs, ids)
        if not self.wait:
            return SweepSummary([Outcome(run, "submitted", f"job {job_id}") for run, job_id in zip(runs, ids)],
                                jobs=ids, waited=False)
        return self._wait(runs, jobs)

    def _still_queued(self, runs: list[PlannedRun]) -> dict[str, str]:
        """run_id → job id, for pending runs an earlier `cmx sweep` submitted whose job SLURM still lists.

        A pending run has not started training, so nothing in the run dir says it is taken; without this a
        re-launch while the first array waits in the queue would submit the same runs twice.
        """
        if self.cluster != "slurm":
            return {}
        marks = {}
        for run in runs:
            mark = read_json(self.results.run(run.run_id).submitted_json)
            if run.state == "pending" and mark and mark.get("cluster") == "slurm" and mark.get("job_id"):
                marks[run.run_id] = str(mark["job_id"])
        if not marks:
            return {}
        try:  # -r: one line per array task; only this user's jobs
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return {}  # cannot tell: submit again rather than lose runs
        listed = set(out.split())
        return {run_id: job for run_id, job in marks.items() if job in listed}

    def _announce(self, runs: list[PlannedRun], ids: list[str]) -> None:
        array = ids[0].split("_")[0]
        throttle = f", at most {self.options.max_parallel} at a time" if self.options.max_parallel else ""
        self.echo(f"submitted {len(runs)} run(s) to {self.cluster} as job array {array}{throttle}:")
        for run, job_id in zip(runs, ids):
            self.echo(f"  {job_id}  {run.run_id}  {run.title}")
        if self.cluster == "slurm":
            self.echo(f"watch: squeue -j {array}   |   logs: {self.folder}/{array}_<task>_0_log.err"
                      f"   |   status: cmx sweep FILE --dry-run --results {self.results.root}"
                      f"   |   cancel: scancel {array}")
        else:
            self.echo(f"logs: {self.folder}/")

    def _wait(self, runs: list[PlannedRun], jobs: list) -> SweepSummary:
        if self.cluster == "debug":  # runs each job here, now (asking a failed debug job again reruns it)
            errors = [job.exception() for job in jobs]
        else:
            try:
                self._poll(runs, jobs)
            except KeyboardInterrupt:
                array = jobs[0].job_id.split("_")[0]
                self.echo(f"stopped waiting; the jobs keep running (cancel: scancel {array})")
                return SweepSummary([Outcome(r, "submitted", f"job {j.job_id}") for r, j in zip(runs, jobs)],
                                    signal=int(signal.SIGINT), jobs=[j.job_id for j in jobs], waited=False)
            errors = [_exception(job) for job in jobs]
        outcomes = []
        for run, job, error in zip(runs, jobs, errors):
            run.state = self.results.state(run.run_id)
            if run.state == "done":
                outcomes.append(Outcome(run, "done", trained=True))
                continue
            if error is None:  # train() returned without finishing the run: it was held by another process
                outcomes.append(busy_outcome(self.results, run, f"job {job.job_id}: run held by another process"))
                continue
            status = self.results.status(run.run_id) or {}
            if status.get("status") == "failed" and status.get("error"):
                reason = str(status["error"]).splitlines()[0]
            elif error is not None:
                reason = _error_line(error)
            else:
                reason = failure_reason(self.results, run.run_id, _job_log(job))
            state = "interrupted" if run.state == "interrupted" else "failed"
            outcomes.append(Outcome(run, state, f"job {job.job_id}: {reason}", trained=True))
        return SweepSummary(outcomes, jobs=[job.job_id for job in jobs])

    def _poll(self, runs: list[PlannedRun], jobs: list) -> None:
        """Block until every job has finished, printing a line whenever the run states change."""
        last = None
        while True:
            states = [self.results.state(r.run_id) for r in runs]
            line = ", ".join(f"{states.count(s)} {s}" for s in ("done", "running", "failed", "interrupted",
                                                                 "pending") if states.count(s))
            if line != last:
                self.echo(f"[{self.cluster}] {line}")
                last = line
            if all(job.done() for job in jobs):
                return
            time.sleep(POLL_S if self.cluster == "slurm" else 0.5)


def _error_line(error: BaseException) -> str:
    """One line from a job's exception; submitit wraps remote ones with the whole traceback and log paths."""
    found = re.findall(r"^(?:[\w.]+\.)?(\w*(?:Error|Failed|Exception|Exit)): (.+)$", str(error), re.M)
    if found:
        kind, message = found[-1]
        return (message if kind == "JobFailed" else f"{kind}: {message}")[:300]
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def _exception(job) -> BaseException | None:
    try:
        return job.exception()
    except Exception as err:  # no result file (job killed, cancelled): that is the reason
        return err


def _job_log(job) -> Path | None:
    try:
        return Path(job.paths.stderr)
    except Exception:  # debug jobs have no log files
        return None
