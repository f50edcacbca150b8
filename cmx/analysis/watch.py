"""`cmx runs --watch`: a live table of a sweep (epoch, accuracy, img/s, ETA, state), refreshed from the run
directories.

It only reads the files every run keeps up to date (status.json, epochs.csv, result.json), so it shows a
local sweep and a SLURM array alike, from any machine that sees the results directory, and cannot disturb
a run. `render` draws one frame (tests call it without a terminal); `watch` redraws it until Ctrl-C.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Callable

import pandas as pd
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..cifar import TRAIN_SIZE, split_sizes
from ..store.resultsdir import ResultsDir
from ..files import parse_iso
from . import collect

STATE_ORDER = ("running", "interrupted", "pending", "failed", "done")  # what needs an eye first
STYLE = {"running": "cyan", "interrupted": "yellow", "pending": "dim", "failed": "red", "done": "green"}
RECENT = 5  # epochs whose median duration predicts the rest


def rows(results: str | Path | None, status=None, where=None, dataset=None, now: float | None = None) -> list[dict]:
    """One dict per run (filtered as `cmx runs` filters), sorted by state, with its live numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run dir being written is read again at the next refresh
        runs = collect.load_runs(results)
    runs = collect.filter_runs(runs, status, where, dataset)
    store, now = ResultsDir(results), time.time() if now is None else now
    out = []
    for run in runs.to_dict("records"):
        run.update(live_numbers(store, run, now))
        out.append(run)
    out.sort(key=lambda r: (STATE_ORDER.index(r["state"]), r["summary"], r["run_id"]))
    return out


def live_numbers(store: ResultsDir, run: dict, now: float) -> dict:
    """Last train loss and test accuracy, best accuracy, img/s and ETA of one run.

    img/s of an unfinished run: the last epoch's training images over its duration (evaluation included,
    so a little below the trainer's own figure). ETA: the epochs left times the median of the recent
    epochs' durations, less the time since the last epoch ended.
    """
    numbers = {"loss": None, "last_acc": run["test_acc"], "best_acc": run["best_test_acc"],
               "img_s": run["img_per_s"], "eta_s": None, "age_s": None}
    status = store.status(run["run_id"]) or {}
    updated = parse_iso(status.get("updated"))
    if updated is not None:
        numbers["age_s"] = max(0.0, now - updated)
    if run["state"] == "done":
        return numbers
    curve = collect.load_curve(store.run_dir(run["run_id"]), quiet=True)
    if curve is None or curve.empty:
        return numbers
    tested = curve["test_acc"].dropna()
    numbers["loss"] = _number(curve["train_loss"].iloc[-1])
    numbers["last_acc"] = _number(tested.iloc[-1]) if len(tested) else None
    numbers["best_acc"] = _number(tested.max()) if len(tested) else None
    seconds = curve["seconds"].dropna().tail(RECENT)
    per_epoch = float(seconds.median()) if len(seconds) else None
    n_train = _train_images((store.config(run["run_id"]) or {}).get("data"), run["dataset"])
    if per_epoch and n_train:
        numbers["img_s"] = (n_train // run["batch_size"]) * run["batch_size"] / per_epoch
    if per_epoch and run["state"] == "running":
        since = numbers["age_s"] or 0.0
        numbers["eta_s"] = max(0.0, (run["epochs"] - int(run["epoch"])) * per_epoch - since)
    return numbers


@functools.lru_cache(maxsize=64)
def _train_images(data: str | None, dataset: str) -> int | None:
    """Training images of a run's data: the official 50,000, else counted from its batch files when they are
    visible from here (a subset on another node's path is unknown)."""
    if dataset == "cifar10":
        return TRAIN_SIZE
    sizes = split_sizes(data) if data else None
    return sizes[0] if sizes else None


def render(results: str | Path | None, *, status=None, where=None, dataset=None, interval: float | None = None,
           now: float | None = None, sweep_eta: Callable[[list[dict]], list[str]] | None = None) -> Group:
    """One frame: the table, a line of counts, and the sweeps' ETA lines.

    `sweep_eta(rows) -> lines`: when the launched sweeps end. The CLI passes cmx.sweep.eta's projection
    (this layer reads run directories and may not import `sweep`)."""
    now = time.time() if now is None else now
    runs = rows(results, status, where, dataset, now)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("run id", "config", "state", "epoch", "loss", "test %", "best %", "img/s", "ETA", "updated"):
        table.add_column(name, justify="left" if name in ("run id", "config", "state") else "right")
    for r in runs:
        table.add_row(r["run_id"], Text(r["summary"]), Text(r["state"], style=STYLE[r["state"]]),
                      f"{int(r['epoch'])}/{r['epochs']}", _fmt(r["loss"], "{:.3f}"), _fmt(r["last_acc"], "{:.2f}"),
                      _fmt(r["best_acc"], "{:.2f}"), _fmt(r["img_s"], "{:,.0f}"), duration(r["eta_s"]),
                      duration(r["age_s"]) + (" ago" if r["age_s"] is not None else ""))
    counts = ", ".join(f"{n} {s}" for s in STATE_ORDER if (n := sum(r["state"] == s for r in runs)))
    every = f", every {interval:g}s; Ctrl-C to quit" if interval else ""
    line = Text(f"{len(runs)} runs in {ResultsDir(results).root}: {counts or 'none yet'} — "
                f"{datetime.fromtimestamp(now).strftime('%H:%M:%S')}{every}", style="dim")
    etas = [Text(text) for text in (sweep_eta(runs) if sweep_eta else [])]
    return Group(table, line, *etas)


def watch(results: str | Path | None, interval: float = 2.0, console: Console | None = None,
          sweep_eta: Callable[[list[dict]], list[str]] | None = None, **filters) -> None:
    """Redraw the table every `interval` seconds until Ctrl-C, then return (the command exits 0)."""
    console = console or Console()
    if not console.is_terminal:  # piped or captured: one frame at the end, at a readable width
        console = Console(file=console.file, width=max(console.width, 160))
    try:
        frame = functools.partial(render, results, interval=interval, sweep_eta=sweep_eta, **filters)
        with Live(frame(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _fmt(value, spec: str) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else spec.format(value)


def duration(seconds: float | None) -> str:
    """75 → '1m 15s', 7300 → '2h 01m'."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"
