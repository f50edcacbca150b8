"""PNG figures of the study: the paper's numbers (dashed) against ours (solid, ±1 std over seeds).

Summary plots are drawn from the same `table.Tables` that `cmx table` prints, so a figure never
disagrees with the table (same dataset, metric, epoch budget, same markers). Rows we have not run are
simply absent from "ours"; points from a budget other than the paper's 200 epochs are hollow.
When our runs are scaled stand-ins for the paper's rows (a `paper:` key in the sweep file), their
absolute accuracy says nothing about the paper's: each figure then plots *effects* against the block's
reference row (Table 7: the baseline; kernels: k = 9; width and depth: 256/8), ours beside the paper's,
with our models at the parameter counts we trained, and titles and legends name the trained configurations.
Figures are built with `matplotlib.figure.Figure` (Agg canvas) rather than pyplot, so nothing depends on
a display or on pyplot's global state.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .. import paper
from .collect import SkippedRun, load_curve
from ..errors import UserError
from ..store.resultsdir import ResultsDir
from .table import Tables, match_key, paper_config, row_name

KERNEL_SERIES = (("kernel", "p = 1"), ("kernel_p2", "p = 2"), ("kernel_p2_wd", "p = 2, wd 1e-2"))
SUMMARY_FILES = {"kernel": "accuracy_vs_kernel.png", "params": "accuracy_vs_params.png",
                 "ablation": "table7_delta.png"}
DPI = 120


def plots_dir(root: str | Path | None) -> Path:
    return ResultsDir(root).root / "plots"


def summary_plots(tables: Tables, out_dir: str | Path) -> list[Path]:
    """Write the three summary figures into `out_dir`; returns their paths (always all three)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tab = tables.tab
    subtitle = f"dataset {tables.dataset}, {tables.metric} test accuracy{_budgets(tab)}"
    return [
        _save(kernel_figure(tab, subtitle), out_dir / SUMMARY_FILES["kernel"]),
        _save(params_figure(tab, subtitle), out_dir / SUMMARY_FILES["params"]),
        _save(ablation_figure(tab, subtitle), out_dir / SUMMARY_FILES["ablation"]),
    ]


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version string: same runs, same bytes
    return path


def _budgets(tab: pd.DataFrame) -> str:
    """', 4 epochs, batch 128' for the budgets of the rows with runs ('' when none ran)."""
    ran = tab[tab["n"] > 0]
    if ran.empty:
        return ""
    epochs = "/".join(str(int(e)) for e in sorted(set(ran["epochs"].dropna())))
    batches = "/".join(str(int(b)) for b in sorted(set(ran["batch_size"].dropna())))
    return f", ours {epochs} epochs at batch {batches}"


def _stand_ins(rows: pd.DataFrame) -> str:
    """The trained configurations of stand-in rows without the setting that varies along the plot
    ('64/4 p2' for the kernel rows), or '' when no row is a stand-in."""
    names = [re.sub(r" k\d+$", "", s) for s in rows["stand_in"] if s]
    return ", ".join(dict.fromkeys(names))


def _relative(rows: pd.DataFrame, reference: pd.Series | None) -> pd.DataFrame:
    """Rows with `mean`, `paper_acc` and `std` as effects against the reference row (std of the difference,
    as if unpaired); rows are dropped from ours when the reference has no runs."""
    rows = rows.copy()
    if reference is None:
        return rows.assign(n=0)
    rows["paper_acc"] = rows["paper_acc"] - reference["paper_acc"]
    if reference["n"]:
        rows["std"] = (rows["std"].fillna(0.0) ** 2 + (reference["std"] if reference["n"] >= 2 else 0.0) ** 2) ** 0.5
        rows["mean"] = rows["mean"] - reference["mean"]
    else:
        rows["n"] = 0
    return rows


def _ours(ax, rows: pd.DataFrame, x: str, color: str, label: str) -> bool:
    """Our means with ±1 std error bars; hollow markers for other epoch budgets. True if any point."""
    mine = rows[(rows["n"] > 0) & rows[x].notna()].sort_values(x)
    if mine.empty:
        return False
    std = mine["std"].fillna(0.0)
    xs = mine[x].astype(float)
    ax.errorbar(xs, mine["mean"], yerr=std, color=color, linestyle="-", marker="none", capsize=3, label=label)
    full = mine["epochs"] == paper.PAPER_EPOCHS
    ax.plot(xs[full], mine["mean"][full], "o", color=color)
    ax.plot(xs[~full], mine["mean"][~full], "o", color=color, markerfacecolor="white")
    return not full.all()


def _finish(ax, fig: Figure, title: str, subtitle: str, short_budget: bool) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if short_budget:
        handles.append(Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="none"))
        labels.append("ours, not 200 epochs")
    ax.legend(handles, labels, fontsize="small")
    ax.set_title(f"{title}\n{subtitle}", fontsize="medium")
    ax.grid(alpha=0.3)
    fig.tight_layout()


def kernel_figure(tab: pd.DataFrame, subtitle: str) -> Figure:
    """Accuracy vs. depthwise kernel size for p = 1, p = 2 and p = 2 with weight decay (Table 8); for
    stand-ins, the change in accuracy against each series' k = 9 row."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    blocks = tab[tab["section"].isin([s for s, _ in KERNEL_SERIES])]
    scaled = bool(_stand_ins(blocks))
    short = False
    for i, (section, name) in enumerate(KERNEL_SERIES):
        rows = tab[tab["section"] == section]
        if scaled:
            k9 = rows[rows["k"] == 9]
            rows = _relative(rows, k9.iloc[0] if len(k9) else None)
        color = f"C{i}"
        ax.plot(rows["k"], rows["paper_acc"], "s--", color=color, alpha=0.6, label=f"{name}, paper")
        trained = _stand_ins(rows)
        short |= _ours(ax, rows, "k", color, f"ours: {trained} (for {name})" if trained else f"{name}, ours")
    ax.set_xticks(sorted(set(blocks["k"])))
    ax.set_xlabel("depthwise kernel size k")
    if scaled:
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("accuracy − the series' k = 9 row (points)")
        title = f"Kernel size, relative to k = 9: paper ConvMixer-256/8, ours {_stand_ins(blocks)}"
    else:
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        title = "ConvMixer-256/8: accuracy vs. kernel size"
    _finish(ax, fig, title, subtitle, short)
    return fig


def params_figure(tab: pd.DataFrame, subtitle: str) -> Figure:
    """Accuracy vs. parameter count for the width/depth rows of Table 8, one line per width h: the paper
    at its models' counts, ours at the counts of the models we trained; for stand-ins, accuracy relative
    to the 256/8 row (a log axis: our models are ~20× smaller)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    rows = tab[tab["section"] == "width_depth"]
    scaled = bool(_stand_ins(rows))
    if scaled:
        base = rows[(rows["h"] == 256) & (rows["d"] == 8)]
        rows = _relative(rows, base.iloc[0] if len(base) else None)
    short = False
    for i, (h, group) in enumerate(rows.groupby("h")):
        color = f"C{i}"
        ax.plot(group["params_paper_k"].astype(float), group["paper_acc"], "s--", color=color, alpha=0.6,
                label=f"h = {h}, paper")
        for _, r in group.iterrows():
            ax.annotate(f"d={r['d']}", (float(r["params_paper_k"]), r["paper_acc"]), textcoords="offset points",
                        xytext=(4, -11), fontsize="x-small", color=color)
        trained = _stand_ins(group)
        short |= _ours(ax, group, "params_trained_k", color,
                       f"ours: {re.sub(r'/[0-9]+ ', '/d ', trained.split(',')[0])} (for h = {h})" if trained else f"h = {h}, ours")
    ax.margins(x=0.08)  # room for the d= labels
    ax.set_xlabel("parameters (×10³): the paper's models, and the models we trained")
    if scaled:
        ax.set_xscale("log")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("accuracy − the 256/8 row (points)")
        title = "Width and depth, relative to 256/8: paper h/d p1 k8, ours their stand-ins"
    else:
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        title = "ConvMixer-h/d (p = 1, k = 8): accuracy vs. parameters"
    _finish(ax, fig, title, subtitle, short)
    return fig


def ablation_figure(tab: pd.DataFrame, subtitle: str) -> Figure:
    """Table 7 as horizontal bars: Δ = ours − paper (±1 std) for the paper's own configuration; for
    stand-ins, each ablation's effect against the baseline, ours beside the paper's. Pending rows are
    labelled, not drawn."""
    rows = tab[tab["table"] == "table7"].reset_index(drop=True)
    if _stand_ins(rows):
        return _ablation_effects(rows, subtitle)
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1.6))
    ax = fig.add_subplot()
    colors = {True: "tab:green", False: "tab:red", None: "tab:grey"}
    y = list(range(len(rows)))[::-1]  # paper order from the top
    for yi, r in zip(y, rows.to_dict("records")):
        if r["n"]:
            std = r["std"] if r["n"] >= 2 and math.isfinite(r["std"]) else None
            ax.barh(yi, r["delta"], xerr=std, color=colors[r["reproduced"]], capsize=3, height=0.6)
        else:
            ax.text(0, yi, f"  {r['status']}", va="center", fontsize="small", color="grey")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.set_yticks(y, [f"{r['label']} {r['marks']}".strip() for r in rows.to_dict("records")])
    marks = "".join(rows["marks"])
    legend = {"*": "* not 200 epochs", "†": "† not lr 0.01 / batch 64", "‡": "‡ other runs not included"}
    notes = "   ".join(text for mark, text in legend.items() if mark in marks)
    ax.set_xlabel("Δ accuracy, ours − paper (percentage points)" + (f"\n{notes}" if notes else ""))
    handles = [Line2D([], [], color=c, linewidth=8) for c in colors.values()]
    ax.legend(handles, ["paper inside our 95% CI", "paper outside our 95% CI", "n < 2 seeds (no interval)"],
              fontsize="small", loc="best")
    ax.set_title(f"Table 7 ablations of ConvMixer-256/8: ours − paper (error bars ±1 std)\n{subtitle}",
                 fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _ablation_effects(rows: pd.DataFrame, subtitle: str) -> Figure:
    """Each ablation − the baseline: the paper's bar and ours (±1 std of the difference) side by side."""
    base = rows[rows["label"] == "Baseline"]
    effects = _relative(rows[rows["label"] != "Baseline"].reset_index(drop=True), base.iloc[0] if len(base) else None)
    fig = Figure(figsize=(8, 0.55 * len(effects) + 1.8))
    ax = fig.add_subplot()
    y = list(range(len(effects)))[::-1]
    for yi, r in zip(y, effects.to_dict("records")):
        ax.barh(yi + 0.2, r["paper_acc"], color="tab:grey", height=0.38)
        if r["n"]:
            std = r["std"] if r["n"] >= 2 and math.isfinite(r["std"]) else None
            ax.barh(yi - 0.2, r["mean"], xerr=std, color="tab:blue", capsize=3, height=0.38)
        else:
            ax.text(0, yi - 0.2, f"  {r['status'] or 'pending'}", va="center", fontsize="small", color="grey")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_ylim(-0.8, len(effects) - 0.2)
    ax.set_yticks(y, [f"{r['label']} {r['marks']}".strip() for r in effects.to_dict("records")])
    ax.set_xlabel("ablation − baseline (points); ours ±1 std of the difference")
    trained = _stand_ins(rows)
    ax.legend([Line2D([], [], color=c, linewidth=8) for c in ("tab:grey", "tab:blue")],
              ["paper: ConvMixer-256/8 p1 k9, 200 epochs", f"ours: {trained}"], fontsize="small", loc="best")
    ax.set_title(f"Table 7: ablation − baseline, ours ({trained}) beside the paper's\n{subtitle}",
                 fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def curves_plot(runs: pd.DataFrame, root: str | Path | None, run_ids: list[str], out: str | Path) -> Path:
    """Test accuracy per epoch of the given runs; a dotted line at the paper's value when a row matches."""
    rd = ResultsDir(root)
    by_id = runs.set_index("run_id")
    paper_acc = {match_key(paper_config(r).to_dict()): r for r in paper.ROWS}
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    drawn, shown = 0, set()
    for i, run_id in enumerate(run_ids):
        curve = load_curve(rd.run_dir(run_id))
        points = curve.dropna(subset=["test_acc"]) if curve is not None else None
        if points is None or points.empty:
            warnings.warn(f"run {run_id} has no test accuracies in epochs.csv yet; not plotted", SkippedRun)
            continue
        run = by_id.loc[run_id]
        color = f"C{i % 10}"
        ax.plot(points["epoch"], points["test_acc"], "-", marker="o" if len(points) <= 30 else None, markersize=3,
                color=color,
                label=f"{run_id[:8]} {run['summary']} ({run['state']})")
        match = paper_acc.get(match_key(run))
        if match is not None and match not in shown:  # one dotted line per paper row, named in the legend
            shown.add(match)
            ax.axhline(match.acc, color=color, linestyle=":", linewidth=1.2,
                       label=f"paper, {row_name(match.__dict__)}: {match.acc:.2f}")
        drawn += 1
    if not drawn:
        raise UserError("none of the runs has test accuracies to plot yet")
    ax.set_xlabel("epoch")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Test accuracy per epoch" + (" (dotted: the paper's final accuracy for the run's row)" if shown else ""),
                 fontsize="medium")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, out)


def curves_filename(run_ids: list[str]) -> str:
    short = [run_id[:8] for run_id in run_ids]
    return "curves-" + ("-".join(short) if len(short) <= 3 else f"{short[0]}-and-{len(short) - 1}-more") + ".png"
