"""The read-side commands `cmx table`, `cmx findings`, `cmx plot`, `cmx report` and `cmx runs`.

Thin wrappers over collect/table/plot/report so everything here is importable and testable without the
CLI. `register(app)` adds them to the main Typer app. Bad input raises UserError (the main entry point
prints it as one line, exit 2); run directories that cannot be read become `warning: ...` lines on stderr.
"""
from __future__ import annotations

import functools

import contextlib
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..errors import UserError

# pandas and matplotlib (≈0.5 s to import) load inside the commands, so `cmx --help` and `cmx train` stay fast.
if TYPE_CHECKING:
    import pandas as pd

    from ..analysis import table

ResultsOpt = Annotated[Optional[Path], typer.Option("--results", help="results directory (default: $CMX_RESULTS or results/)")]
DatasetOpt = Annotated[Optional[str], typer.Option(
    help="dataset fingerprint to tabulate, e.g. cifar10 (the official set) or cifar10-<hash> (a subset) (default: cifar10 if present, else the one with most runs)")]
MetricOpt = Annotated[str, typer.Option(help="final: accuracy after the last epoch; best: best test accuracy over epochs")]
EpochsOpt = Annotated[Optional[int], typer.Option(
    help="tabulate runs with this epoch budget (default: per row, 200-epoch runs, else the largest budget present, marked)")]


@contextlib.contextmanager
def warnings_to_stderr():
    """Show library warnings (skipped run dirs) as plain `warning: ...` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                typer.echo(f"warning: {w.message}", err=True)


def load_tables(results: Path | None, dataset: str | None, metric: str, epochs: int | None,
                include_other: bool = False) -> tuple[pd.DataFrame, table.Tables]:
    from ..analysis import collect, table

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be ≥ 1, got {epochs}")
    if metric not in table.METRICS:
        raise UserError(f"--metric must be one of {'|'.join(table.METRICS)}, got '{metric}'")
    runs = collect.load_runs(results)
    chosen = collect.choose_dataset(runs, dataset)
    return runs, table.build(runs, chosen, metric, epochs, include_other)


# ---------------------------------------------------------------------- commands
def table_cmd(
    results: ResultsOpt = None,
    which: Annotated[str, typer.Option("--table", help="which paper table: 7, 8 or all (8 includes the two rows from the text)")] = "all",
    fmt: Annotated[str, typer.Option("--format", help="markdown, csv or latex")] = "markdown",
    metric: MetricOpt = "final",
    epochs: EpochsOpt = None,
    dataset: DatasetOpt = None,
    show_all: Annotated[bool, typer.Option("--all", help="also list finished runs not in the tables (no paper row, other budget or lr/batch size)")] = False,
) -> None:
    """Print Tables 7 and 8 of the paper beside our runs (mean ± std over seeds)."""
    from ..analysis import table

    table.check_choices(fmt, which)  # fail before reading any run
    with warnings_to_stderr():
        _, tables = load_tables(results, dataset, metric, epochs, include_other=show_all)
    typer.echo(table.render(tables, fmt, which), nl=False)


def findings_cmd(
    results: ResultsOpt = None,
    dataset: DatasetOpt = None,
    metric: MetricOpt = "final",
    epochs: EpochsOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table (on the terminal), md, csv or json")] = "table",
) -> None:
    """Do the paper's conclusions (Appendix C) hold in our runs? Effect ± 95% Welch interval and a verdict per claim."""
    from ..analysis import findings

    if fmt not in findings.FORMATS:
        raise UserError(f"--format must be one of {'|'.join(findings.FORMATS)}, got '{fmt}'")
    with warnings_to_stderr():
        _, tables = load_tables(results, dataset, metric, epochs)
    result = findings.build(tables)
    if fmt == "table":
        _rich_findings(result)
    else:
        typer.echo(findings.render(result, fmt), nl=False)


def _rich_findings(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..analysis import findings

    colors = {findings.HOLDS: "green", findings.CONTRADICTED: "red", findings.INCONCLUSIVE: "yellow"}
    rows = findings.lines(result)
    grid = Table(title="Findings: do the paper's conclusions hold in our runs?", title_justify="left",
                 caption="\n".join(findings.header_lines(result)), caption_justify="left")
    columns = findings.columns_for(rows)
    for column in columns:
        grid.add_column(column.header, justify="left" if column.align == "l" else "right",
                        no_wrap=column.header in ("Claim", "Paper a − b", "n (a / b)"))
    for row in rows:
        verdict = row["verdict"].split(" (")[0]
        cells = [column.cell(row) for column in columns]
        cells[-1] = f"[{colors[verdict]}]{cells[-1]}[/]" if verdict in colors else cells[-1]
        grid.add_row(*cells, style="bold" if row["id"] else None)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 200))
    console.print(grid)


def plot_cmd(
    mode: Annotated[str, typer.Argument(help="summary (default): the summary plots; curves: test accuracy per epoch of RUN_IDS")] = "summary",
    run_ids: Annotated[Optional[list[str]], typer.Argument(help="run ids or unique prefixes (for curves)", show_default=False)] = None,
    results: ResultsOpt = None,
    dataset: DatasetOpt = None,
    metric: MetricOpt = "final",
    epochs: EpochsOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="output PNG for curves (default: <results>/plots/curves-<ids>.png)")] = None,
) -> None:
    """Write PNG plots into <results>/plots/: `cmx plot` (summary) or `cmx plot curves RUN_ID...`."""
    from ..analysis import collect, plot

    if mode not in ("summary", "curves"):
        raise UserError(f"unknown plot '{mode}': use `cmx plot` (summary) or `cmx plot curves RUN_ID...`")
    if mode == "curves" and not run_ids:
        raise UserError("cmx plot curves needs at least one run id (see `cmx runs`)")
    if mode == "summary" and (run_ids or out):
        raise UserError("run ids and --out are only for `cmx plot curves RUN_ID...`")
    with warnings_to_stderr():
        if mode == "curves":
            runs = collect.load_runs(results)
            ids = collect.resolve_run_ids(runs, run_ids)
            path = out or plot.plots_dir(results) / plot.curves_filename(ids)
            paths = [plot.curves_plot(runs, results, ids, path)]
        else:
            _, tables = load_tables(results, dataset, metric, epochs)
            paths = plot.summary_plots(tables, plot.plots_dir(results))
    for path in paths:
        typer.echo(f"wrote {path}")


def report_cmd(
    results: ResultsOpt = None,
    dataset: DatasetOpt = None,
    metric: MetricOpt = "final",
    epochs: EpochsOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write the report here instead (e.g. docs/mini-study.md), plots in <name>-plots/ beside it")] = None,
) -> None:
    """Write <results>/REPORT.md: tables, findings, plots, run counts, compute hours and provenance."""
    from ..analysis import report

    with warnings_to_stderr():
        runs, tables = load_tables(results, dataset, metric, epochs)
        path = report.write_report(results, runs, tables, out)
    typer.echo(f"wrote {path}")


def sweep_eta_lines(results: Path | None, rows: list[dict]) -> list[str]:
    """`cmx runs --watch`'s last lines: when each launched sweep with runs left ends (cmx.sweep.eta)."""
    from ..analysis.watch import duration
    from ..store.resultsdir import ResultsDir
    from ..sweep.estimate import ALL_AT_ONCE
    from ..sweep.eta import queues, sweep_eta

    store = ResultsDir(results)
    running = {r["run_id"]: r["eta_s"] for r in rows if r["state"] == "running"}
    lines = []
    for queue in queues(store):
        found = sweep_eta(store, queue, running)
        if found is not None:
            seconds, basis, left = found
            slots = queue.get("slots") or 1
            where = "as SLURM runs them, all at once" if slots >= ALL_AT_ONCE else f"on {slots} slot(s)"
            lines.append(f"sweep {queue['name']}: ETA ≈{duration(seconds)} for its {left} runs left {where}; {basis}")
    return lines


def runs_cmd(
    results: ResultsOpt = None,
    status: Annotated[Optional[list[str]], typer.Option(help="only runs in this state (pending, running, done, failed, interrupted); repeatable")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="only runs with key=value, e.g. k=9 or mixup=false; repeatable (all must hold)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="only runs of this dataset fingerprint")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    watch: Annotated[bool, typer.Option("--watch", help="a live table (epoch, accuracy, img/s, ETA, state) redrawn from the run directories until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option("--interval", help="--watch: seconds between redraws")] = 2.0,
) -> None:
    """List runs: id, configuration, dataset, status, epochs done/total, final/best accuracy, wall time, and
    who trains each running run (host, pid, since, epoch: its claim)."""
    from ..analysis import collect

    if fmt not in ("table", "csv", "json"):
        raise UserError(f"--format must be one of table|csv|json, got '{fmt}'")
    if watch:
        from ..analysis.watch import watch as watch_runs

        if fmt != "table" or not interval > 0:
            raise UserError("--watch draws a table (no --format) and needs --interval > 0")
        watch_runs(results, interval, status=status, where=where, dataset=dataset,
                   sweep_eta=functools.partial(sweep_eta_lines, results))
        return
    with warnings_to_stderr():
        runs = collect.load_runs(results)
    runs = collect.filter_runs(runs, status, where, dataset)
    runs = runs.sort_values(["dataset", "h", "d", "p", "k", "summary", "seed"])
    if fmt == "csv":
        typer.echo(runs[list(collect.COLUMNS)].to_csv(index=False, lineterminator="\n"), nl=False)
    elif fmt == "json":
        records = json.loads(runs[list(collect.COLUMNS)].to_json(orient="records"))
        typer.echo(json.dumps(records, indent=2))
    else:
        _rich_runs(runs)


def _rich_runs(runs: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=f"{len(runs)} runs", title_justify="left")
    for name, kw in (("run id", {"no_wrap": True}), ("config", {}), ("dataset", {}), ("status", {"no_wrap": True}),
                     ("epochs", {"justify": "right", "no_wrap": True}), ("final %", {"justify": "right"}),
                     ("best %", {"justify": "right"}), ("wall", {"justify": "right", "no_wrap": True}),
                     ("held by", {})):
        grid.add_column(name, **kw)
    colors = {"done": "green", "running": "cyan", "failed": "red", "interrupted": "yellow", "pending": "dim"}
    for r in runs.to_dict("records"):
        grid.add_row(r["run_id"], r["summary"], r["dataset"], f"[{colors[r['state']]}]{r['state']}[/]",
                     f"{r['epoch']}/{r['epochs']}", _pct(r["test_acc"]), _pct(r["best_test_acc"]),
                     format_seconds(r["wall_s"]),
                     r["holder"] if isinstance(r["holder"], str) else "")
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 160))
    console.print(grid)


def _pct(value) -> str:
    import pandas as pd

    return "" if value is None or pd.isna(value) else f"{value:.2f}"


def format_seconds(seconds) -> str:
    """3725 -> '1h 02m'; 750 -> '12m 30s'; missing -> ''."""
    import pandas as pd

    from ..analysis.watch import duration

    if seconds is None or pd.isna(seconds) or not math.isfinite(seconds):
        return ""
    return duration(seconds)


def register(app: typer.Typer) -> None:
    """Add `table`, `findings`, `plot`, `report` and `runs` to the main cmx app."""
    app.command("table")(table_cmd)
    app.command("findings")(findings_cmd)
    app.command("plot")(plot_cmd)
    app.command("report")(report_cmd)
    app.command("runs")(runs_cmd)
