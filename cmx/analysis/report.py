"""REPORT.md: the whole study on one page, regenerated from the run directories.

It holds both tables (the same text `cmx table` prints), the findings (`cmx findings --format md`: do
the paper's conclusions hold in these runs?), the summary plots (relative links, so the
results directory can be copied or committed as a unit), how much compute the finished runs took per
device type, and where the numbers came from (commits, dirty trees, devices, torch versions), because a
table mixing code versions or hardware should say so.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import findings, plot, table
from ..run.results import STATES, ResultsDir, atomic_write_bytes


def write_report(root: str | Path | None, runs: pd.DataFrame, tables: table.Tables,
                 out: str | Path | None = None) -> Path:
    """Write <root>/REPORT.md (and the summary plots under <root>/plots/); returns the report's path.

    `out`: write the report there instead (e.g. docs/mini-study.md, to commit a study's outcome), with its
    plots in `<out's folder>/<out's name>-plots/`, linked relatively."""
    rd = ResultsDir(root)
    path = Path(out) if out is not None else rd.root / "REPORT.md"
    plots_dir = path.parent / f"{path.stem}-plots" if out is not None else plot.plots_dir(rd.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    pngs = plot.summary_plots(tables, plots_dir)
    text = report_text(runs, tables, [p.relative_to(path.parent) for p in pngs])
    atomic_write_bytes(path, text.encode())
    return path


def report_text(runs: pd.DataFrame, tables: table.Tables, plots: list[Path]) -> str:
    out = ["# ConvMixer CIFAR-10 reproduction report", "",
           f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `cmx report` from the run directories.", "",
           "## Runs and compute", ""]
    out += _md(runs_summary(runs)) + [""]
    out += ["Hours are the sum of `wall_s` of finished runs (unfinished runs are not counted), by the "
            "device type each run trained on.", ""]
    skipped = runs.attrs.get("skipped", [])
    if skipped:
        out += [f"{len(skipped)} run director{'ies were' if len(skipped) > 1 else 'y was'} unreadable and skipped:", ""]
        out += [f"- `{line}`" for line in skipped] + [""]
    out += [table.render(tables, "markdown", "all", heading_level=2).rstrip("\n"), ""]
    out += [findings.render(findings.build(tables), "md", heading_level=2).rstrip("\n"), ""]
    out += ["## Plots", ""]
    for png in plots:
        out += [f"![{png.stem.replace('_', ' ')}]({png.as_posix()})", ""]
    out += ["## Provenance", ""] + provenance_lines(runs)
    return "\n".join(out) + "\n"


def runs_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: run counts by state and GPU/CPU hours of the finished runs, plus a total row."""
    states = list(STATES)
    rows = []
    for dataset, group in list(runs.groupby("dataset")) + [("all", runs)]:
        done = group[group["state"] == "done"]
        hours = done.groupby("device")["wall_s"].sum() / 3600
        rows.append({"dataset": dataset, "runs": len(group),
                     **{s: int((group["state"] == s).sum()) for s in states},
                     "GPU hours": f"{hours.get('gpu', 0.0):.2f}", "CPU hours": f"{hours.get('cpu', 0.0):.2f}"})
    if runs.empty:
        rows = [{"dataset": "all", "runs": 0, **{s: 0 for s in states}, "GPU hours": "0.00", "CPU hours": "0.00"}]
    return pd.DataFrame(rows)


def provenance_lines(runs: pd.DataFrame) -> list[str]:
    """One bullet per provenance field of the finished runs: each distinct value with its run count."""
    done = runs[runs["state"] == "done"]
    if done.empty:
        return ["No finished runs yet."]
    # A run without a recorded commit (not trained from a git checkout, or before commits were recorded)
    # is "unknown", never counted as clean: only a known commit has a known tree state.
    dirty = done["git_dirty"].map({True: "dirty", False: "clean"}).where(done["git_commit"].notna(), "unknown")
    commits = done["git_commit"].fillna("unknown").astype(str).str[:10] + dirty.map({"dirty": " (dirty)"}).fillna("")
    states = ", ".join(f"{(dirty == s).sum()} {s}" for s in ("clean", "dirty", "unknown") if (dirty == s).any())
    lines = [f"- git commits: {_counts(commits)}",
             f"- tree state at training (uncommitted changes to cmx): {states} of {len(done)} runs",
             f"- cmx source hashes (sha256 of the package's .py files): "
             f"{_counts(done['source_sha256'].dropna().astype(str).str[:12].reindex(done.index))}",
             f"- devices: {_counts(done['device_name'])}",
             f"- torch versions: {_counts(done['torch'])}",
             f"- hosts: {_counts(done['host'])}"]
    return lines


def _counts(values: pd.Series) -> str:
    counts = values.fillna("unknown").astype(str).value_counts()
    return ", ".join(f"`{value}` ({n} run{'s' if n != 1 else ''})" for value, n in sorted(counts.items()))


def _md(frame: pd.DataFrame) -> list[str]:
    columns = [table.Column(str(c), lambda r, c=c: str(r[c]), "l" if c == "dataset" else "r") for c in frame.columns]
    return table.md_table(columns, frame.to_dict("records"))
