"""The local executor: a slot scheduler that runs each planned run as its own `cmx train` subprocess.

Why one subprocess per run: a crash, an out-of-memory error or a divergence ends that run only, never the
sweep; each run sees exactly the GPU its slot owns (CUDA_VISIBLE_DEVICES), writes its own log
(DIR/runs/<id>/train.log) and resumes by itself (`cmx train` continues from the run's checkpoint).

GPU slots: `--gpus 0,1` counts among the GPUs this process sees. Where CUDA_VISIBLE_DEVICES is inherited (a
SLURM allocation, a machine lent with GPU 3 only, MIG instances named by UUID), index i is the i-th entry of
that list, so a slot never escapes the allocation. Slots go round-robin over the GPUs (0,1,0,1), so fewer
runs than slots still spread over every GPU. A run with `device: auto` in a GPU slot trains with
`--device cuda`: a child that cannot see its GPU fails loudly instead of training on the CPU.

Signals: children start in their own session, so a terminal's Ctrl-C reaches only the sweep, which
forwards it exactly once (a second SIGINT makes `cmx train` exit at once, without saving). Each child then
saves a checkpoint and exits 130; the sweep waits for them and exits 130, leaving every run resumable. If
the sweep itself is killed (SIGKILL), the kernel sends each child SIGTERM (PR_SET_PDEATHSIG) and they
checkpoint the same way instead of training on as orphans.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..errors import RunBusy, UserError
from ..store.resultsdir import ResultsDir
from ..files import now_iso
from ..machine import CPU_SHARE_ENV, available_cpus
from .executors import (ELSEWHERE, SlotLayout, positive, Outcome, SweepSummary, busy_outcome, failure_reason, held_elsewhere,
                        trained_by, write_run_config)
from .plan import PlannedRun

POLL_S = 0.2  # how often finished children are noticed
INTERRUPTED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)
EXIT_MEANING = {2: "user error", 3: "diverged"}  # 4 (busy) and 130/143 (stopped) are handled apart

try:  # Linux: ask the kernel to SIGTERM a child when the sweep dies (resolved before any fork)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec: no Python-level locks
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass
class Slot:
    index: int
    gpu: str | None  # CUDA_VISIBLE_DEVICES value, or None on CPU
    run: PlannedRun | None = None
    proc: subprocess.Popen | None = None
    started: float = 0.0


def visible_gpus(environ=os.environ) -> list[str]:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES entries: the inherited list when there is one
    (indices or GPU-/MIG- UUIDs), else "0".."n-1" from torch."""
    inherited = environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        return [entry.strip() for entry in inherited.split(",") if entry.strip()]
    # counted in a throwaway process: CUDA started here would put driver threads in the process that forks
    # the children (start() uses a preexec_fn)
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                          capture_output=True, text=True, timeout=120)
    count = int(done.stdout.strip() or 0) if done.returncode == 0 else 0
    return [str(i) for i in range(count)]


def map_gpus(requested: list[str], visible: list[str]) -> list[str]:
    """`--gpus` entries → CUDA_VISIBLE_DEVICES values: an index i is the i-th visible GPU; a UUID is kept
    (and must be in an inherited list of UUIDs). One-line UserError for a GPU that is not there."""
    where = (f"{len(visible)} GPU(s) visible here" + (f" (CUDA_VISIBLE_DEVICES={','.join(visible)})"
                                                       if "CUDA_VISIBLE_DEVICES" in os.environ else ""))
    mapped = []
    for gpu in requested:
        if gpu.isdigit():
            if int(gpu) >= len(visible):
                raise UserError(f"--gpus {','.join(requested)}: there is no GPU {gpu}; {where}, numbered from 0")
            mapped.append(visible[int(gpu)])
        elif any(not v.isdigit() for v in visible) and gpu not in visible:
            raise UserError(f"--gpus {','.join(requested)}: {gpu} is not among the {where}")
        else:
            mapped.append(gpu)
    return mapped


@dataclass(frozen=True)
class LocalFlags:
    """The local executor's flags as given (None: not given), checked here, where they act."""

    gpus: str | None = None  # --gpus 0,1,...
    per_gpu: int | None = None
    workers: int | None = None

    def given(self) -> list[str]:
        return [flag for flag, value in (("--gpus", self.gpus), ("--per-gpu", self.per_gpu),
                                         ("--workers", self.workers)) if value is not None]

    def check(self) -> None:
        """Flags that do not go together (their values are checked by `layout()`)."""
        if self.per_gpu is not None and self.gpus is None:
            raise UserError("--per-gpu needs --gpus (on CPU use --workers)")
        if self.workers is not None and self.gpus is not None:
            raise UserError("--workers is for CPU runs; with --gpus use --per-gpu to run several runs per GPU")

    def gpu_list(self) -> list[str] | None:
        if self.gpus is None:
            return None
        gpus = [g.strip() for g in self.gpus.split(",")]
        if not all(g.isdigit() or (g and g.replace("-", "").isalnum()) for g in gpus):
            raise UserError(f"--gpus {self.gpus!r}: expected comma-separated GPU indices, e.g. --gpus 0,1,2,3")
        return gpus

    def layout(self) -> SlotLayout:
        listed = self.gpu_list()
        if listed:
            share = positive(self.per_gpu, 1, "--per-gpu")
            return SlotLayout(len(listed) * share, share, None, listed[0])
        n = positive(self.workers, 1, "--workers")
        return SlotLayout(n, n)

    def slots(self) -> list[Slot]:
        return make_slots(self.gpu_list(), positive(self.per_gpu, 1, "--per-gpu"),
                          positive(self.workers, 1, "--workers"))


def make_slots(gpus: list[str] | None, per_gpu: int = 1, workers: int = 1,
               visible: list[str] | None = None) -> list[Slot]:
    """`per_gpu` slots per listed GPU, round-robin over the GPUs (0,1,0,1: the first runs land on different
    GPUs), else `workers` CPU slots. `visible`: the GPUs to count in (default: visible_gpus())."""
    if gpus:
        mapped = map_gpus(gpus, visible_gpus() if visible is None else visible)
        return [Slot(i, gpu) for i, gpu in enumerate(g for _ in range(per_gpu) for g in mapped)]
    return [Slot(i, None) for i in range(workers)]


class LocalExecutor:
    """Runs planned runs on this machine, `len(slots)` at a time. `submit(runs) -> SweepSummary`."""

    def __init__(self, results: ResultsDir, slots: list[Slot], python: str = sys.executable,
                 live: bool | None = None, console: Console | None = None):
        self.results = ResultsDir(Path(results.root).resolve())  # absolute paths in the logged commands
        self.slots = slots
        self.python = python
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.signal: int | None = None

    # ------------------------------------------------------------------ one child
    def child_env(self, slot: Slot) -> dict[str, str]:
        """The environment of a run: its GPU, and a fair share of the CPU threads when slots share cores."""
        env = dict(os.environ)
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        if len(self.slots) > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = str(max(1, available_cpus() // len(self.slots)))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)  # torch reads these at start
            if slot.gpu is None:  # the run's provenance records it: its share of the cores, even once alone
                env[CPU_SHARE_ENV] = str(len(self.slots))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, slot: Slot, run: PlannedRun) -> None:
        config_file = write_run_config(self.results, run)
        log_path = self.results.run(run.run_id).train_log
        cmd = [self.python, "-m", "cmx", "train", "--config", str(config_file),
               "--results", str(self.results.root), "--quiet"]
        if slot.gpu is not None and run.config.device == "auto":
            cmd += ["--device", "cuda"]  # never a silent CPU run in a GPU slot (device is not in the run id)
        with open(log_path, "a") as log:
            gpu = f", CUDA_VISIBLE_DEVICES={slot.gpu}" if slot.gpu is not None else ""
            log.write(f"=== cmx sweep {now_iso()}: slot {slot.index}{gpu}: {' '.join(cmd)}\n")
            log.flush()
            slot.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.child_env(slot), start_new_session=True,
                                         preexec_fn=_die_with_parent)
        slot.run, slot.started = run, time.monotonic()
        self.say(f"[start] slot {slot.index}{gpu}: {run.title} ({run.run_id})")

    def finish(self, slot: Slot, code: int) -> Outcome:
        run, log_path = slot.run, self.results.run(slot.run.run_id).train_log
        state = self.results.state(run.run_id)
        if code == 0 and state == "done" and not trained_by(self.results, run, slot.proc.pid):
            outcome = Outcome(run, "skipped", "trained by another process meanwhile")
        elif code == 0 and state == "done":
            outcome = Outcome(run, "done", trained=True)
        elif code == RunBusy.exit_code:  # claimed by another process between planning and launch
            outcome = busy_outcome(self.results, run, failure_reason(self.results, run.run_id, log_path))
        elif code in INTERRUPTED_CODES or (self.signal is not None and code < 0):
            outcome = Outcome(run, "interrupted", f"stopped by {signal.Signals(abs(code) % 128 or 2).name}; "
                                                  f"resumes from its checkpoint next time", trained=True)
        else:
            meaning = EXIT_MEANING.get(code, f"signal {-code}" if code < 0 else "crashed")
            reason = failure_reason(self.results, run.run_id, log_path, pid=slot.proc.pid)
            outcome = Outcome(run, "failed", f"exit {code} ({meaning}): {reason}", trained=True)
        run.state = self.results.state(run.run_id)
        took = time.monotonic() - slot.started
        self.say(f"[{outcome.status}] slot {slot.index}: {run.title} ({run.run_id}) after {took:.0f}s"
                 + (f": {outcome.reason}" if outcome.status in ("failed", ELSEWHERE) else ""))
        slot.run, slot.proc = None, None
        return outcome

    # ------------------------------------------------------------------ the loop
    def submit(self, runs: list[PlannedRun]) -> SweepSummary:
        queue, outcomes = list(runs), []
        self.total = len(runs)
        self.t0 = time.monotonic()
        if not runs:
            return SweepSummary(outcomes)
        self.results.ensure_writable()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        live = Live(self.render(outcomes, queue), console=self.console, refresh_per_second=2,
                    transient=True) if self.live else None
        try:
            if live:
                live.start()
            announced = False
            while queue or any(s.proc for s in self.slots):
                if self.signal is not None and not announced:
                    announced = True
                    self.say(f"[stop] {signal.Signals(self.signal).name}: running trainings save a checkpoint "
                             f"and stop; press Ctrl-C again to stop them at once")
                for slot in self.slots:
                    if slot.proc is not None and (code := slot.proc.poll()) is not None:
                        outcomes.append(self.finish(slot, code))
                    if slot.proc is None and queue and self.signal is None:
                        run = queue.pop(0)
                        if (elsewhere := held_elsewhere(self.results, run)) is not None:  # not launched
                            outcomes.append(elsewhere)
                            self.say(f"[{ELSEWHERE}] {run.title} ({run.run_id}): {elsewhere.reason}")
                        else:
                            self.start(slot, run)
                if live:
                    live.update(self.render(outcomes, queue))
                time.sleep(POLL_S)
        finally:
            if live:
                live.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for run in queue:  # never started because the user stopped the sweep
            outcomes.append(Outcome(run, "skipped", "not started: the sweep was stopped"))
        return SweepSummary(outcomes, signal=self.signal)

    def _on_signal(self, signum, frame) -> None:
        """First signal: stop launching and forward it once; another: forward again (children exit at once).

        Only flags and os.kill here: printing from a signal handler can re-enter the stream being written.
        """
        if self.signal is None:
            self.signal = signum
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                try:
                    slot.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------------ display
    def say(self, text: str) -> None:
        """Event lines: above the live table on a terminal, plain lines otherwise."""
        if self.live:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            print(text, file=self.console.file, flush=True)

    def render(self, outcomes: list[Outcome], queue: list[PlannedRun]) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("slot", "device", "run", "run_id", "epoch", "elapsed"):
            table.add_column(col)
        for slot in self.slots:
            if slot.run is None:
                table.add_row(str(slot.index), slot.gpu or "cpu", Text("idle", style="dim"), "", "", "")
                continue
            status = self.results.status(slot.run.run_id) or {}
            epoch = f"{status.get('epoch', 0)}/{status.get('epochs', slot.run.config.epochs)}"
            elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - slot.started))
            table.add_row(str(slot.index), f"gpu {slot.gpu}" if slot.gpu else "cpu", Text(slot.run.title),
                          slot.run.run_id, epoch, elapsed)
        n = {s: sum(o.status == s for o in outcomes) for s in ("done", "failed", "interrupted")}
        running = sum(s.run is not None for s in self.slots)
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.t0))
        line = Text(f"{n['done'] + n['failed'] + n['interrupted']}/{self.total} finished: {n['done']} done, "
                    f"{n['failed']} failed, {running} running, {len(queue)} queued — {elapsed}")
        return Group(table, line)


def describe(slots: list[Slot]) -> str:
    gpus = sorted({s.gpu for s in slots if s.gpu is not None})
    if gpus:
        return f"{len(slots)} slot(s) on GPU(s) {','.join(gpus)}"
    return f"{len(slots)} CPU worker(s)"

