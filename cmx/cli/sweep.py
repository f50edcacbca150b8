"""`cmx sweep FILE`: plan a YAML sweep, show what is done, and train the rest locally or on SLURM.

A thin wrapper: planning is cmx.sweep.plan, the projection cmx.sweep.estimate, running cmx.sweep.local /
cmx.sweep.slurm. Nothing here imports cmx.run.train (a dry run must work without the training stack; the
estimate's probe builds models in a child process).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import CmxError, UserError
from ..store.resultsdir import STATES
from ..run.tracking import require as require_tracker
from ..sweep import probe
from ..sweep.eta import record_queue
from ..sweep.estimate import ASSUMPTION, DEFAULT_TFLOPS, SweepEstimate, project
from ..sweep.executors import ELSEWHERE, SlotLayout, SweepSummary, select_runs
from ..sweep.local import LocalFlags
from ..sweep.slurm import SlurmFlags
from ..sweep.plan import Plan, PlannedRun, make_plan, parse_seeds, record_roles

Opt = typer.Option
STATE_STYLE = {"done": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "pending": ""}
# A sweep trains only runs nobody holds: a running run belongs to another process (cmx/store/claim.py).
STATE_LABEL = {"running": ELSEWHERE}
EXECUTORS = ("local", "slurm", "local-submitit", "debug")


def sweep(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="sweep YAML, e.g. sweeps/paper.yaml", show_default=False)],
    results: Annotated[Optional[Path], Opt("--results", metavar="DIR", help="results directory [default: $CMX_RESULTS or results/]")] = None,
    set_: Annotated[Optional[list[str]], Opt("--set", metavar="KEY=VALUE", help="KEY=VALUE for every run (YAML scalar), e.g. --set epochs=10; repeatable")] = None,
    seeds: Annotated[Optional[str], Opt("--seeds", metavar="0,1,2", help="comma-separated seeds, replacing the files' seeds, e.g. 0,1,2")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="show every run, its status, its projected time on this device and the sweep's wall-clock; launch nothing")] = False,
    tflops: Annotated[float, Opt("--tflops", help="assumed sustained TFLOP/s, only for a device with no measured run and no probe")] = DEFAULT_TFLOPS,
    probe_: Annotated[bool, Opt("--probe/--no-probe", help="time a few steps of shapes with no finished run near enough here, and of kernel variants of measured shapes (cached; CMX_ESTIMATE_PROBE=off also skips it)")] = True,
    executor: Annotated[str, Opt("--executor", help="local | slurm | local-submitit | debug (the last two: submitit's local/in-process runners, for tests)")] = "local",
    rerun_failed: Annotated[bool, Opt("--rerun-failed", help="also launch runs that failed before (they resume from their checkpoint)")] = False,
    gpus: Annotated[Optional[str], Opt("--gpus", metavar="0,1,...", help="local: GPUs to use, e.g. 0,1,2,3, counted among the visible ones (an inherited CUDA_VISIBLE_DEVICES is remapped); slots round-robin over them")] = None,
    per_gpu: Annotated[Optional[int], Opt("--per-gpu", help="local: runs sharing one GPU [default: 1]")] = None,
    workers: Annotated[Optional[int], Opt("--workers", help="local without --gpus: parallel CPU runs, splitting the cores [default: 1]")] = None,
    partition: Annotated[Optional[str], Opt("--partition", help="slurm: partition")] = None,
    time: Annotated[Optional[float], Opt("--time", help="slurm: time limit per job in minutes; longer runs are requeued from their checkpoint [default: 480]")] = None,
    gpus_per_run: Annotated[Optional[int], Opt("--gpus-per-run", help="slurm: GPUs per run, 0 for CPU [default: 1]")] = None,
    cpus_per_run: Annotated[Optional[int], Opt("--cpus-per-run", help="slurm: CPUs per run [default: 4]")] = None,
    mem: Annotated[Optional[float], Opt("--mem", help="slurm: memory per run in GB [default: the cluster's]")] = None,
    account: Annotated[Optional[str], Opt("--account", help="slurm: account to charge")] = None,
    max_parallel: Annotated[Optional[int], Opt("--max-parallel", help="slurm: at most N runs of the job array at a time")] = None,
    slurm_extra: Annotated[Optional[list[str]], Opt("--slurm-extra", metavar="KEY=VALUE", help="slurm: extra sbatch KEY=VALUE (e.g. qos=high, constraint=a100); repeatable")] = None,
    wait: Annotated[bool, Opt("--wait", help="slurm: block until every job has finished, then print the summary")] = False,
    tracker: Annotated[Optional[str], Opt("--tracker", help="none | tensorboard | wandb: watch every run there (same as --set tracker=...)")] = None,
    wandb_project: Annotated[Optional[str], Opt("--wandb-project", help="W&B project of every run (same as --set wandb_project=...)")] = None,
):
    """Plan a sweep (YAML), show what is done, and train the rest: locally in slots, or as a SLURM job array.

    Done runs are skipped, interrupted ones resume from their checkpoint, failed ones are skipped unless
    --rerun-failed. Identical configs (same run_id) across files are trained once.
    """
    local = LocalFlags(gpus, per_gpu, workers)
    slurm = SlurmFlags(partition, time, gpus_per_run, cpus_per_run, mem, account, max_parallel, slurm_extra, wait)
    _check_flags(executor, tflops, tracker, local, slurm)
    layout = local.layout() if executor == "local" else slurm.layout(executor)  # checks the values: before planning
    typed = {key: (value, f"--{key.replace('_', '-')}") for key, value in
             (("tracker", tracker), ("wandb_project", wandb_project)) if value is not None}
    plan = make_plan(file, results, overrides=set_, seeds=parse_seeds(seeds), typed=typed)
    probing = probe_ and probe.enabled()
    if dry_run:
        todo, _ = select_runs(plan, rerun_failed)
        print_plan(plan, sweep_estimate(plan, todo, layout, tflops, probing), tflops)
        return
    record_roles(plan)  # before launching: a re-run of a finished study still records its roles
    todo, skipped = select_runs(plan, rerun_failed)
    for name in sorted({r.config.tracker for r in todo}):
        require_tracker(name)  # a missing package: exit 2 now, not once per run
    console = Console(stderr=True, highlight=False)
    cost = sweep_estimate(plan, todo, layout, tflops, probing)
    runner, where = _executor(executor, plan, local, slurm, console)
    console.print(f"sweep {plan.name}: {len(plan.runs)} runs — {_counts(plan)}; {len(todo)} to launch "
                  f"({where}; {launch_cost(cost, tflops)})", soft_wrap=True)
    if todo:  # what `cmx runs --watch` projects
        record_queue(plan.results, plan.name, todo, slots=layout.slots, share_of=layout.share_of,
                     cluster=layout.cluster, tflops=tflops)
    summary = runner.submit(todo)
    summary.outcomes = skipped + summary.outcomes
    print_summary(plan, summary)
    if summary.exit_code:
        raise SweepIncomplete(summary)


def _check_flags(executor: str, tflops: float, tracker: str | None, local: LocalFlags, slurm: SlurmFlags) -> None:
    """Every flag checked before anything is planned: one line and exit 2 for the first wrong one."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if not tflops > 0:
        raise UserError(f"--tflops must be > 0, got {tflops}")
    if tracker is not None:
        require_tracker(tracker)  # a wrong name or a missing package: exit 2 before planning
    wrong = slurm.given() if executor == "local" else local.given()
    if wrong:
        raise UserError(f"{', '.join(wrong)} cannot be used with --executor {executor}")
    if executor == "local":
        local.check()


def _executor(executor: str, plan: Plan, local: LocalFlags, slurm: SlurmFlags, console: Console):
    """(the executor that trains the plan, the words saying where)."""
    if executor == "local":
        from ..sweep.local import LocalExecutor, describe

        slots = local.slots()
        return LocalExecutor(plan.results, slots, console=console), describe(slots)
    from ..sweep.slurm import SubmititExecutor, check_slurm

    if executor == "slurm":
        check_slurm()
    runner = SubmititExecutor(plan.results, executor, slurm.options(f"cmx-{plan.name}"), wait=slurm.wait,
                              echo=typer.echo)
    return runner, f"--executor {executor}"


class SweepIncomplete(CmxError):
    """Not every run ended done: exit 1, or 128 + signal when the user stopped the sweep.

    A CmxError rather than typer.Exit: cmx.cli.app.main() maps CmxError to its exit code (one stderr line).
    """

    def __init__(self, summary: SweepSummary):
        self.exit_code = summary.exit_code
        if summary.signal is not None:
            message = "sweep stopped; every run is resumable: run the same command again"
        else:
            bad = sum(not o.settled for o in summary.outcomes)
            message = f"{bad} of {len(summary.outcomes)} runs are not done (listed above)"
        super().__init__(message)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


# ---------------------------------------------------------------------- output
def sweep_estimate(plan: Plan, todo: list[PlannedRun], layout: SlotLayout, tflops: float,
                   probing: bool) -> SweepEstimate:
    """Every planned run's projection (the runs of `todo` still to train, from the epochs they have). On
    SLURM (`layout.cluster` "gpu" or "cpu") the device is the one most finished runs of that kind trained on."""
    launch = {r.run_id for r in todo}
    runs = [(r.config, _epochs_done(plan, r), r.run_id in launch) for r in plan.runs]
    return project(runs, plan.results, tflops=tflops, slots=layout.slots, share_of=layout.share_of,
                   probing=probing, gpu=layout.gpu, cluster=layout.cluster,
                   say=lambda text: typer.echo(text, err=True))


def _epochs_done(plan: Plan, run: PlannedRun) -> int:
    """Done: all; interrupted, running or failed: the epochs its status records (it resumes after them)."""
    if run.state == "done":
        return run.config.epochs
    if run.state == "pending":
        return 0
    return min(int((plan.results.status(run.run_id) or {}).get("epoch") or 0), run.config.epochs)


def launch_cost(cost: SweepEstimate, tflops: float) -> str:
    """The launch line's cost: '≈1.2 CPU-h, ≈1h 10m wall-clock; basis: 3 same shape, 2 k9 by FLOPs, from …'."""
    bases = sorted({p.basis for p, todo in zip(cost.runs, cost.left) if todo})
    assumed = f" at an assumed {tflops:g} TFLOP/s" if "assumed" in bases else ""
    return (f"≈{_hours(cost.hours())} {cost.unit}{assumed}, ≈{duration(cost.wall_s)} wall-clock; "
            f"{cost.sources()}")


def print_plan(plan: Plan, cost: SweepEstimate, tflops: float, console: Console | None = None) -> None:
    """The dry run: a table of runs with status and projected time, the cost lines, notes."""
    console = console or Console(width=None if Console().is_terminal else 200, highlight=False)
    table = Table(title=f"sweep {plan.name} ({plan.path})", title_justify="left", header_style="bold")
    for col, kw in (("#", {"justify": "right"}), ("sweep", {}), ("label", {}), ("config", {}), ("run_id", {}),
                    ("status", {}), (cost.unit.replace("-h", " time"), {"justify": "right"}), ("basis", {})):
        table.add_column(col, **kw)
    roles = any(run.roles for run in plan.runs)  # a study of scaled stand-ins: which paper row each is
    if roles:
        table.add_column("stands for (paper:)")
    for i, (run, projection, todo) in enumerate(zip(plan.runs, cost.runs, cost.left), 1):
        state = STATE_LABEL.get(run.state, run.state)
        if run.state in ("failed", "running", "interrupted"):
            status = plan.results.status(run.run_id) or {}
            if status.get("epoch") is not None and run.state != "failed":
                state += f" {status.get('epoch')}/{status.get('epochs', run.config.epochs)}"
        basis = (f"{projection.basis} ×{projection.n_runs}" if projection.n_runs else projection.basis)
        table.add_row(str(i), Text(", ".join(run.sweeps)), Text(run.label), Text(run.config.summary()), run.run_id,
                      Text(state, style=STATE_STYLE.get(run.state, "")),
                      duration(projection.seconds) if todo else "",
                      Text(basis if todo else "", style="" if todo else "dim"),
                      *([Text("; ".join(dict.fromkeys(r.row for r in run.roles)))] if roles else []))
    console.print(table)
    shared = plan.n_variants - len(plan.runs)
    dedupe = f" ({plan.n_variants} configs; {shared} shared by several sweep entries, trained once)" if shared else ""
    console.print(f"{len(plan.runs)} runs: {_counts(plan)}{dedupe}", soft_wrap=True)
    n_left = sum(cost.left)
    assumed = f", {cost.whole_assumed} of them assumed at {tflops:g} TFLOP/s" if cost.whole_assumed else ""
    console.print(f"estimated {cost.unit.replace('-h', '-hours')}: {_hours(cost.hours())} for the {n_left} runs to "
                  f"launch ({_hours(cost.hours(left_only=False))} if all {len(plan.runs)} were trained from the "
                  f"start{assumed}) on {cost.device}; {cost.sources()}", soft_wrap=True)
    if n_left:
        console.print(f"estimated wall-clock: {duration(cost.wall_s)} for the {n_left} runs to launch, "
                      f"{cost.slots_text()}", soft_wrap=True)
    bases = {p.basis for p, todo in zip(cost.runs, cost.left) if todo}
    if "probe" in bases:
        console.print(f"probe: a few timed optimisation steps, an augmentation chunk and an evaluation pass per "
                      f"shape on this device (data loading and startup not timed); cached in {probe.cache_path()}",
                      soft_wrap=True)
    if "assumed" in bases or cost.whole_assumed:
        console.print(f"assumed (not measured): {ASSUMPTION.format(tflops=tflops)}", soft_wrap=True)
    for data in sorted({r.config.data for r in plan.runs}):
        if not _has_data(data):
            console.print(f"note: no CIFAR-10 under '{data}' yet: training downloads it there "
                          f"(run ids assume the full official dataset; use --set data=DIR to point elsewhere)",
                          soft_wrap=True)


def print_summary(plan: Plan, summary: SweepSummary) -> None:
    """What this invocation did: counts, then one line per failed/interrupted/skipped-failed run."""
    if not summary.waited and summary.signal is None:
        typer.echo(f"sweep {plan.name}: {summary.count('submitted')} submitted, {summary.count('skipped')} skipped "
                   f"(done, running, failed or already queued)")
        return
    done_now = sum(o.status == "done" for o in summary.outcomes)
    already = sum(o.status == "skipped" and o.run.state == "done" for o in summary.outcomes)
    parts = [f"{done_now + already} done ({done_now} trained now, {already} already done)"]
    for status in ("failed", "interrupted", ELSEWHERE, "skipped", "submitted"):
        n = summary.count(status) - (already if status == "skipped" else 0)
        if n:
            parts.append(f"{n} {status}")
    typer.echo(f"sweep {plan.name}: {len(summary.outcomes)} runs: {', '.join(parts)}")
    for outcome in summary.outcomes:
        if (outcome.status in ("failed", "interrupted", ELSEWHERE)
                or (outcome.status == "skipped" and outcome.run.state != "done")):
            run = outcome.run
            label = f"{run.label} ({run.config.summary()})" if run.label else run.config.summary()
            typer.echo(f"  {outcome.status:<11} {run.run_id}  {label}: {outcome.reason}")
    if summary.signal is not None:
        typer.echo("stopped by the user; run the same command to resume")


def _hours(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.2g}"


def _counts(plan: Plan) -> str:
    counts = plan.counts()
    return ", ".join(f"{counts[s]} {STATE_LABEL.get(s, s)}" for s in STATES if counts[s]) or "nothing to run"


def duration(seconds: float) -> str:
    """75 → '1m 15s', 7300 → '2h 01m' (as `cmx runs --watch` writes it)."""
    from ..analysis.watch import duration as watch_duration

    return watch_duration(seconds)


# ---------------------------------------------------------------------- option parsing
def _has_data(data: str) -> bool:
    from ..cifar import TEST_FILE, batches_dir

    return (batches_dir(data) / TEST_FILE).is_file()
