"""Our runs beside the paper's Tables 7 and 8: match runs to rows, aggregate seeds, render the tables.

Runs are matched to a paper row by configuration, never by file name: a row's configuration is the
RunConfig defaults plus PaperRow.config_changes(), compared on MATCH_FIELDS. What is *not* compared is
shown instead of hidden: the epoch budget (a 50-epoch run is tabulated only when no 200-epoch run of
that row exists, and is then marked), and lr/batch size (runs off the paper's 0.01/64 are used only when
no paper-recipe run exists, and are marked). Seeds are aggregated with pandas (mean, sample std, n) and,
with n ≥ 2, the paper's number is checked against the 95% Student-t interval of our mean.

Scaled stand-ins: a run with a role (cmx.roles; a sweep file's `paper:` key, e.g. 64/4 p2 k5 standing
for the paper's 256/8 p1 k5) counts for the rows it stands for *instead of* the rows its own config
matches, and such a row is marked § with the stand-in's configuration beside it. Where a row has both
runs of its own configuration and stand-ins, its own configuration wins (it answers the row directly)
and the stand-ins are counted as left out (‡); among several stand-ins, the one with the most runs.

`tabulate()` returns the numbers (plot.py and report.py use them too); `render()` turns them into
markdown, csv or latex, each table built from one column list.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from .. import paper
from ..paper import MATCH_FIELDS, match_key, paper_config  # noqa: F401 — also this module's names (plot.py)
from ..config import eq4_params
from ..errors import UserError

METRICS = {"final": "test_acc", "best": "best_test_acc"}
# Per-run tuples (seed order) a tabulated row carries beside its mean: tuple column → runs column.
PER_RUN = {"seeds": "seed", "weights": "weights_sha256", "curves": "curve_sha256", "converge": "converge_epochs",
           "params": "params"}
FORMATS = ("markdown", "csv", "latex")
TABLES = ("7", "8", "all")
ACTIVE = ("running", "interrupted", "failed")  # shown as "<state> e/E" on rows without a finished run
MARKS = {
    "*": "trained for a different number of epochs than the paper's 200 (see the epochs column): "
         "not comparable with 200-epoch rows",
    "†": "trained with a learning rate / batch size other than the paper's 0.01 / 64",
    "‡": "more finished runs of this configuration (another epoch budget or lr/batch size) are not "
         "included in this row; `cmx table --all` lists them under Other runs",
    "§": "scaled stand-in: our runs are another configuration, in the Stand-in column, which the sweep "
         "file's `paper:` key makes stand for this row (roles.json); read them at that scale and budget, "
         "as evidence on the paper's comparisons rather than on its absolute accuracy",
}
HIDDEN_SCALE = ("more finished runs for this row are not included (another epoch budget or lr/batch size, or "
                "another scale: a row uses runs of its own configuration when it has any, else the stand-in "
                "with the most runs); `cmx table --all` lists them under Other runs")


# ---------------------------------------------------------------------- matching and aggregation
def row_name(row) -> str:
    """Short label of a tabulated row for footnotes and plots."""
    if row["table"] == "table7":
        return row["label"]
    return f"{row['h']}/{row['d']} p{row['p']} k{row['k']} wd {format_wd(row['wd'])}"


def t_quantile(n: int) -> float:
    """Two-sided 95% Student-t quantile for n samples (n - 1 degrees of freedom)."""
    from scipy import stats  # imported here: scipy is slow to import and only needed with seeds

    return float(stats.t.ppf(0.975, n - 1))


def tabulate(runs: pd.DataFrame, dataset: str, metric: str = "final", epochs: int | None = None) -> pd.DataFrame:
    """One row per paper row, in paper order, with our mean/std/n, CI, Δ and a display status.

    `runs` is collect.load_runs(); only runs of `dataset` count. `epochs` picks the budget for every
    row; by default each row uses its 200-epoch runs, else its largest finished budget (marked).
    """
    if metric not in METRICS:
        raise UserError(f"--metric must be one of {'|'.join(METRICS)}, got '{metric}'")
    runs = _targets(_with_key(runs[runs["dataset"] == dataset]))
    groups = aggregate(runs, METRICS[metric], by=("row", "stand_in"))
    out = []
    for prow in paper.ROWS:
        record = {
            "table": prow.table, "section": prow.section, "label": prow.label,
            "h": prow.h, "d": prow.d, "p": prow.p, "k": prow.k, "wd": prow.wd,
            "params_paper_k": prow.params_k, "params_eq4_k": round(eq4_params(prow.h, prow.d, prow.p, prow.k) / 1000),
            "paper_acc": prow.acc, "mean": math.nan, "std": math.nan, "n": 0, "delta": math.nan,
            "ci_low": math.nan, "ci_high": math.nan, "reproduced": None, "epochs": None,
            "lr": None, "batch_size": None, "status": "pending", "marks": "", "n_hidden": 0, "run_ids": (),
            "stand_in": "", "role_sweeps": (), "hidden_scale": False, "values": (),
            **{name: () for name in PER_RUN},
        }
        mine = groups[groups["row"] == prow.row_id]
        if epochs is not None:
            mine = mine[mine["epochs"] == epochs]
        if len(mine):
            record.update(_choose(mine, epochs))
        else:
            candidates = runs[(runs["row"] == prow.row_id) & runs["state"].isin(ACTIVE)]
            if epochs is not None:
                candidates = candidates[candidates["epochs"] == epochs]
            if len(candidates):
                best = candidates.assign(rank=candidates["state"].map(ACTIVE.index)) \
                    .sort_values(["rank", "epoch"], ascending=[True, False]).iloc[0]
                record.update(status=f"{best['state']} {best['epoch']}/{best['epochs']}",
                              epochs=int(best["epochs"]), stand_in=best["stand_in"])
        out.append(record)
    order = {"table7": 0, "table8": 1, "text": 2}  # Table 7 first, as printed; paper order within
    out.sort(key=lambda r: order[r["table"]])
    tab = pd.DataFrame(out).astype({"epochs": "Int64", "batch_size": "Int64", "params_paper_k": "Int64"})
    return finish(tab)


def _with_key(runs: pd.DataFrame) -> pd.DataFrame:
    keys = [match_key(r) for r in runs[list(MATCH_FIELDS)].to_dict("records")] if len(runs) else []
    return runs.assign(key=pd.Series(keys, index=runs.index, dtype=object))


def _targets(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, paper row it counts for), adding `row` (PaperRow.row_id) and `stand_in`.

    A run with roles counts for exactly the rows it stands for, `stand_in` saying what it is ('64/4 p2
    k5'); any other run counts for every row its own configuration matches (`stand_in` = '').
    """
    by_key = {key: [row.row_id for row in rows] for key, rows in paper.rows_by_key().items()}
    roles = runs["roles"] if "roles" in runs else pd.Series([()] * len(runs), index=runs.index, dtype=object)
    at, rows, stand = [], [], []
    for i, (key, own_roles, values) in enumerate(zip(runs["key"], roles, runs[list(MATCH_FIELDS)].to_dict("records"))):
        for row_id in own_roles or by_key.get(key, []):
            at.append(i)
            rows.append(row_id)
            stand.append(stand_in_text(values, paper.BY_ID[row_id]) if own_roles else "")
    out = runs.iloc[at].reset_index(drop=True)
    if "role_sweeps" not in out:
        out = out.assign(role_sweeps=pd.Series([()] * len(out), dtype=object))
    return out.assign(row=pd.Series(rows, dtype=object), stand_in=pd.Series(stand, dtype=object))


def stand_in_text(values, prow: paper.PaperRow) -> str:
    """What a stand-in is, beside the row it stands for: '64/4 p2 k5', plus any other matched setting
    that differs from the row (e.g. 'wd=0.01'); the row's own label says the rest (e.g. '- RandAug')."""
    cfg = paper_config(prow).to_dict()
    parts = [f"{values['h']}/{values['d']} p{values['p']} k{values['k']}"]
    for name in MATCH_FIELDS[4:]:
        value = values[name]
        if name == "wd":
            if f"{float(value):.6g}" != f"{float(cfg['wd']):.6g}":
                parts.append(f"wd {format_wd(float(value))}")
        elif value != cfg[name]:
            parts.append(("+" if value else "-") + name if isinstance(value, bool) else f"{name}={value}")
    return " ".join(parts)


def aggregate(runs: pd.DataFrame, column: str, by: tuple[str, ...] = ("key",)) -> pd.DataFrame:
    """Finished runs grouped by (`by`, epochs, lr, batch size): mean, sample std and n of `column`.

    `by` is the config key (one group per configuration), or ('row', 'stand_in') from _targets."""
    done = runs[(runs["state"] == "done")].dropna(subset=[column])
    sweeps = "role_sweeps" in runs
    if done.empty:
        return pd.DataFrame(columns=[*by, "epochs", "lr", "batch_size", "mean", "std", "n", "run_ids", "summary"]
                            + (["role_sweeps"] if sweeps else []))
    grouped = done.sort_values("seed").groupby([*by, "epochs", "lr", "batch_size"], as_index=False)
    extra = {"role_sweeps": ("role_sweeps", lambda s: tuple(dict.fromkeys(w for ws in s for w in ws)))} if sweeps else {}
    # per run, in seed order: what cmx findings pairs by seed and checks for identical arms
    extra.update({name: (source, tuple) for name, source in PER_RUN.items() if source in done})
    return grouped.agg(mean=(column, "mean"), std=(column, "std"), n=(column, "count"),
                       run_ids=("run_id", tuple), summary=("summary", "first"), values=(column, tuple), **extra)


def _choose(groups: pd.DataFrame, epochs: int | None) -> dict:
    """Pick the scale, budget and recipe for one paper row from its finished groups; say what was left out."""
    own = groups[groups["stand_in"] == ""]
    if len(own):  # runs of the row's own configuration answer it directly
        pool = own
    else:  # stand-ins only: the configuration with the most runs (ties: by name, so the choice is stable)
        sizes = groups.groupby("stand_in")["n"].sum()
        pool = groups[groups["stand_in"] == min(sizes.index, key=lambda name: (-sizes[name], name))]
    budgets = set(pool["epochs"])
    budget = epochs if epochs is not None else (
        paper.PAPER_EPOCHS if paper.PAPER_EPOCHS in budgets else max(budgets))
    at = pool[pool["epochs"] == budget]
    is_paper = (at["lr"] - paper.PAPER_LR).abs().le(1e-12) & (at["batch_size"] == paper.PAPER_BATCH_SIZE)
    chosen = (at[is_paper] if is_paper.any() else
              at.sort_values(["n", "lr", "batch_size"], ascending=[False, True, True])).iloc[0]
    n = int(chosen["n"])
    mean, std = float(chosen["mean"]), float(chosen["std"])
    marks = ("*" if budget != paper.PAPER_EPOCHS else "") + ("" if is_paper.any() else "†")
    n_hidden = int(groups["n"].sum()) - n
    if n_hidden:
        marks += "‡"
    if chosen["stand_in"]:
        marks += "§"
    record = {"mean": mean, "std": std, "n": n, "epochs": int(budget), "lr": float(chosen["lr"]),
              "batch_size": int(chosen["batch_size"]), "status": "", "marks": marks, "n_hidden": n_hidden,
              "run_ids": tuple(chosen["run_ids"]), "stand_in": chosen["stand_in"],
              "role_sweeps": tuple(chosen.get("role_sweeps", ())), "values": tuple(chosen["values"]),
              **{name: tuple(chosen.get(name, ())) for name in PER_RUN},
              "hidden_scale": bool((groups["stand_in"] != chosen["stand_in"]).any())}
    if n >= 2 and math.isfinite(std):
        half = t_quantile(n) * std / math.sqrt(n)
        record.update(ci_low=mean - half, ci_high=mean + half)
    return record


def finish(tab: pd.DataFrame) -> pd.DataFrame:
    """Add Δ, the trained models' parameter count and the ✓/✗ verdict (paper value inside our CI) to a
    tabulate() frame. A stand-in row gets no verdict: its accuracy is another model's, not the paper's
    number reproduced (cmx findings compares its effects instead)."""
    tab = tab.copy()
    tab["delta"] = tab["mean"] - tab["paper_acc"]
    inside = (tab["ci_low"] <= tab["paper_acc"]) & (tab["paper_acc"] <= tab["ci_high"])
    stand_in = tab["stand_in"].astype(bool) if "stand_in" in tab else pd.Series(False, index=tab.index)
    tab["reproduced"] = [bool(ok) if n >= 2 and math.isfinite(lo) and not scaled else None
                         for ok, n, lo, scaled in zip(inside, tab["n"], tab["ci_low"], stand_in)]
    params = tab["params"] if "params" in tab else pd.Series([()] * len(tab), index=tab.index)
    tab["params_trained_k"] = [round(p[0] / 1000) if p and p[0] == p[0] else None for p in params]
    return tab.astype({"params_trained_k": "Int64"})


def other_runs(runs: pd.DataFrame, dataset: str, metric: str, tab: pd.DataFrame) -> pd.DataFrame:
    """Finished run groups not shown in `tab`: configs matching no paper row, or other budgets/recipes."""
    runs = _with_key(runs[runs["dataset"] == dataset])
    groups = aggregate(runs, METRICS[metric])
    used = {run_id for ids in tab["run_ids"] for run_id in ids}
    stand_ins = set(runs["run_id"][runs["roles"].map(bool)]) if "roles" in runs else set()
    paper_keys = paper.rows_by_key()
    rows = []
    for group in groups.to_dict("records"):
        if set(group["run_ids"]) & used:
            continue
        note = ("stand-in, not tabulated (epochs, lr/batch size, or the row uses other runs)"
                if set(group["run_ids"]) & stand_ins else
                "not tabulated (epochs or lr/batch size)" if group["key"] in paper_keys else "no paper row")
        rows.append({**group, "config": re.sub(r" ?seed=\d+$", "", group["summary"]), "note": note})
    return pd.DataFrame(rows, columns=["config", "mean", "std", "n", "epochs", "lr", "batch_size", "note", "run_ids"])


# ---------------------------------------------------------------------- formatting helpers
def format_wd(wd: float) -> str:
    """0, 1e-1, 5e-2: the paper's way of printing weight decay."""
    if wd == 0:
        return "0"
    mantissa, exponent = f"{wd:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def format_ours(row) -> str:
    if not row["n"]:
        return row["status"]
    text = f"{row['mean']:.2f}"
    if row["n"] >= 2 and math.isfinite(row["std"]):
        text += f" ± {row['std']:.2f}"
    return text + row.get("marks", "")


def _num(value, spec: str = ".2f") -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def _int(value) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def _verdict(row) -> str:
    if row["n"] and row.get("stand_in"):
        return "n/a §"  # another model's accuracy: nothing of the paper's to reproduce
    return {True: "✓", False: "✗"}.get(row["reproduced"], "—" if row["n"] else "")


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict], str]
    align: str = "r"  # l | r


TABLE7_COLUMNS = (
    Column("Ablation", lambda r: r["label"], "l"),
    Column("Paper (%)", lambda r: f"{r['paper_acc']:.2f}"),
    Column("Ours (%)", format_ours),
    Column("Δ", lambda r: "—" if r["n"] and r.get("stand_in") else _num(r["delta"], "+.2f")),  # § : another model
    Column("Reproduced", _verdict),
    Column("n", lambda r: str(r["n"])),
    Column("epochs", lambda r: _int(r["epochs"])),
)
TABLE8_COLUMNS = (
    Column("h", lambda r: str(r["h"])),
    Column("d", lambda r: str(r["d"])),
    Column("p", lambda r: str(r["p"])),
    Column("k", lambda r: str(r["k"])),
    Column("Params (×10³) paper", lambda r: _int(r["params_paper_k"])),
    Column("ours (trained)", lambda r: _int(r.get("params_trained_k"))),
    Column("Weight decay", lambda r: format_wd(r["wd"])),
) + TABLE7_COLUMNS[1:]
OTHER_COLUMNS = (
    Column("Configuration", lambda r: r["config"], "l"),
    Column("Ours (%)", format_ours),
    Column("n", lambda r: str(r["n"])),
    Column("epochs", lambda r: str(r["epochs"])),
    Column("lr", lambda r: f"{r['lr']:g}"),
    Column("batch", lambda r: str(r["batch_size"])),
    Column("Note", lambda r: r["note"], "l"),
)
STAND_IN_COLUMN = Column("Stand-in", lambda r: r.get("stand_in") or "", "l")  # only in blocks that have one
CSV_COLUMNS = ("table", "section", "label", "h", "d", "p", "k", "wd", "params_paper_k", "params_eq4_k", "params_trained_k",
               "paper_acc", "mean", "std", "n", "delta", "ci_low", "ci_high", "reproduced", "epochs",
               "lr", "batch_size", "status", "marks", "stand_in")


# ---------------------------------------------------------------------- rendering
@dataclass
class Tables:
    """Everything `cmx table` prints: the tabulated rows plus what the header needs to say."""

    tab: pd.DataFrame
    other: pd.DataFrame | None
    dataset: str
    metric: str
    n_runs: int  # runs of this dataset (any state)
    n_done: int
    other_datasets: dict[str, int]


def build(runs: pd.DataFrame, dataset: str, metric: str = "final", epochs: int | None = None,
          include_other: bool = False) -> Tables:
    tab = tabulate(runs, dataset, metric, epochs)
    counts = runs["dataset"].value_counts()
    return Tables(
        tab=tab, other=other_runs(runs, dataset, metric, tab) if include_other else None,
        dataset=dataset, metric=metric, n_runs=int(counts.get(dataset, 0)),
        n_done=int(((runs["dataset"] == dataset) & (runs["state"] == "done")).sum()),
        other_datasets={name: int(n) for name, n in counts.items() if name != dataset},
    )


def check_choices(fmt: str, which: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {'|'.join(FORMATS)}, got '{fmt}'")
    if which not in TABLES:
        raise UserError(f"--table must be one of {'|'.join(TABLES)}, got '{which}'")


def render(tables: Tables, fmt: str = "markdown", which: str = "all", heading_level: int = 1) -> str:
    """The tables as text: markdown (default), csv (one tidy row per paper row) or latex (booktabs)."""
    check_choices(fmt, which)
    keep = {"7": ("table7",), "8": ("table8", "text"), "all": ("table7", "table8", "text")}[which]
    tab = tables.tab[tables.tab["table"].isin(keep)]
    if fmt == "csv":
        buf = io.StringIO()
        tab[list(CSV_COLUMNS)].to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()
    renderer = _markdown if fmt == "markdown" else _latex
    return renderer(tables, tab, heading_level)


def _blocks(tab: pd.DataFrame):
    """(title, columns, [(section title, rows)]) for Table 7 then Table 8 (+ the text rows)."""
    t7 = tab[tab["table"] == "table7"]
    t8 = tab[tab["table"] != "table7"]

    def scaled(columns, frame):  # the Stand-in column only where a row has one (unscaled tables unchanged)
        return columns + (STAND_IN_COLUMN,) if frame["stand_in"].astype(bool).any() else columns

    if len(t7):
        yield ("Table 7: " + paper.SECTION_TITLES["ablation"], scaled(TABLE7_COLUMNS, t7),
               [(None, t7.to_dict("records"))])
    if len(t8):
        sections = [(paper.SECTION_TITLES[s], t8[t8["section"] == s].to_dict("records"))
                    for s in dict.fromkeys(t8["section"])]
        yield "Table 8: ConvMixer-h/d with patch size p and kernel size k", scaled(TABLE8_COLUMNS, t8), sections


def _footnotes(rows: list[dict]) -> list[str]:
    notes = []
    for mark, text in MARKS.items():
        hit = [r for r in rows if mark in r["marks"]]
        if not hit:
            continue
        if mark == "†":
            recipes = {(r["lr"], _int(r["batch_size"])) for r in hit}
            if len(hit) > 1 and len(recipes) == 1 and len(hit) == sum(r["n"] > 0 for r in rows):
                text += ": every row with runs (lr {:g}, batch {})".format(*recipes.pop())  # a scaled study
            else:
                text += ": " + "; ".join(f"{row_name(r)} (lr {r['lr']:g}, batch {_int(r['batch_size'])})" for r in hit)
        if mark == "‡" and any(r.get("hidden_scale") for r in hit):
            text = HIDDEN_SCALE
        if mark == "§":
            sweeps = dict.fromkeys(w for r in hit for w in r.get("role_sweeps") or ())
            text += f" (sweeps: {', '.join(sweeps)})" if sweeps else ""
        notes.append(f"{mark} {text}.")
    return notes


def _header_lines(tables: Tables) -> list[str]:
    metric = "final" if tables.metric == "final" else "best (over epochs)"
    lines = [f"Dataset: `{tables.dataset}` ({tables.n_runs} runs, {tables.n_done} finished). "
             f"Ours: {metric} test accuracy, mean ± sample std over n seeds; Δ = ours − paper; "
             f"Reproduced: ✓ when the paper's value lies inside the 95% Student-t interval of our mean (n ≥ 2); "
             f"for a scaled stand-in (§), whose accuracy is another model's, neither Δ nor a verdict. Params: the paper's, and "
             f"those of the models we trained."]
    if tables.dataset != "cifar10":
        lines.append(f"Note: `{tables.dataset}` is not the official CIFAR-10 training set (a subset or a "
                     "different copy), so these numbers are not directly comparable with the paper's.")
    if tables.other_datasets:
        others = ", ".join(f"`{name}` ({n} runs)" for name, n in sorted(tables.other_datasets.items()))
        lines.append(f"Other datasets present, not shown: {others}; choose one with `--dataset`.")
    return lines


def _markdown(tables: Tables, tab: pd.DataFrame, level: int) -> str:
    h = "#" * level
    out = [f"{h} ConvMixer on CIFAR-10: paper (Appendix C) vs. ours", ""] + _header_lines(tables) + [""]
    for title, columns, sections in _blocks(tab):
        out += [f"{h}# {title}", ""]
        for section, rows in sections:
            if section and len(sections) > 1:
                out += [f"{h}## {section}", ""]
            out += md_table(columns, rows) + [""]
        for note in _footnotes([r for _, rows in sections for r in rows]):
            out += ["\\" + note if note.startswith("*") else note, ""]  # a leading '*' starts a list
    if tables.other is not None:
        out += [f"{h}# Other runs", ""]
        out += (md_table(OTHER_COLUMNS, tables.other.to_dict("records")) if len(tables.other)
                else ["None: every finished run is in the tables above."]) + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def md_table(columns, rows: list[dict]) -> list[str]:
    cells = [[c.header for c in columns]] + [[c.cell(r) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

    def line(values):
        return "| " + " | ".join(v.ljust(w) if c.align == "l" else v.rjust(w)
                                 for v, w, c in zip(values, widths, columns)) + " |"

    rule = "|" + "|".join(":" + "-" * (w + 1) if c.align == "l" else "-" * (w + 1) + ":"
                          for w, c in zip(widths, columns)) + "|"
    return [line(cells[0]), rule] + [line(r) for r in cells[1:]]


_LATEX = {"%": r"\%", "&": r"\&", "_": r"\_", "#": r"\#", "±": r"$\pm$", "Δ": r"$\Delta$", "✓": r"\checkmark",
          "✗": r"$\times$", "→": r"$\rightarrow$", "×10³": r"$\times 10^3$", "−": "$-$", "≥": r"$\geq$", "—": "--",
          "*": r"$^*$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}", "`": ""}


def _tex(text: str) -> str:
    return re.sub("|".join(re.escape(k) for k in sorted(_LATEX, key=len, reverse=True)),
                  lambda m: _LATEX[m.group(0)], str(text))


def _latex(tables: Tables, tab: pd.DataFrame, level: int) -> str:
    out = [f"% {_tex(line)}" for line in _header_lines(tables)]
    for title, columns, sections in _blocks(tab):
        spec = "".join(c.align for c in columns)
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(title)}}}", rf"\begin{{tabular}}{{{spec}}}",
                r"\toprule", " & ".join(_tex(c.header) for c in columns) + r" \\", r"\midrule"]
        for section, rows in sections:
            if section and len(sections) > 1:
                out.append(rf"\multicolumn{{{len(columns)}}}{{l}}{{\textit{{{_tex(section)}}}}} \\")
            out += [" & ".join(_tex(c.cell(r)) for c in columns) + r" \\" for r in rows]
        out += [r"\bottomrule", r"\end{tabular}"]
        notes = _footnotes([r for _, rows in sections for r in rows])
        out += [r"\par\footnotesize " + _tex(note) for note in notes]
        out += [r"\end{table}", ""]
    return "\n".join(out)
