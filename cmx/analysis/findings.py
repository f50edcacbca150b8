"""Do the paper's conclusions hold in our runs? Each claim of claims.py, tested on `tabulate()`'s rows.

The choices, and why:
- **Effect** = mean(a) − mean(b) of the chosen metric (final or best test accuracy, percentage points),
  each mean over the seeds `table.tabulate()` put on that paper row. Rows are matched to runs exactly as
  `cmx table` matches them (and through their stand-in runs where a scaled-down study stands for a paper
  row), so the two commands never disagree about which runs a number comes from.
- **Interval**: 95% Welch t interval for the difference of two means with unequal variances:
  se = √(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite degrees of freedom, effect ± t(0.975, df)·se. Seeds
  of one row are independent runs, the two rows are different runs, and nothing says their variances
  match, hence Welch and not the pooled t. With n = 1 on either side there is no variance to estimate:
  the point effect is shown and the verdict is "needs ≥2 seeds".
- **Verdicts** of one comparison (MARGIN is claims.MARGIN = 0.5 points):
    greater a > b by `by`   holds: low > by            contradicted: high < by
    at_least (a not worse)  holds: low > −MARGIN        contradicted: high < −MARGIN
    marginal |a − b| small  holds: −MARGIN < low and high < MARGIN   contradicted: low > MARGIN or high < −MARGIN
  otherwise inconclusive (the interval straddles the line). The inequalities are strict: an interval
  that touches the line decides nothing. "marginal" is an equivalence test read off the same 95%
  interval (stricter than the usual two one-sided tests at 90%, so "holds" errs on the side of caution).
- **Not run**: a row has no finished run (its tabulate status — pending, running e/E — is named).
- **Budget rule**: the two rows are compared only when their runs share the budget: epochs, learning
  rate and batch size (the dataset is already one, tabulate() takes one). tabulate() chooses a budget
  per row (200 epochs if present, else the largest), so two rows can end up at different budgets: the
  comparison is then "not comparable" and says which budgets differ; `--epochs N` re-tabulates every row
  at one budget. Two rows whose runs are the very same runs (one stand-in run for two paper rows) are
  not comparable either. Every finding prints its budget.
- **Claims with several comparisons** (a chain p1 > p2 > p4 > p8, or width at d 4, 8, 12): contradicted
  if any comparison is contradicted, holds when every one holds, otherwise the first of not run, not
  comparable, needs ≥2 seeds, inconclusive that occurs (the reason it is not decided yet).
No correction for testing ~20 claims at once: each verdict is read on its own, as the paper states them.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from . import claims as claims_mod
from . import table
from .claims import MARGIN, Claim, Comparison

LEVEL = 0.95
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
NEEDS_SEEDS, NOT_RUN, NOT_COMPARABLE = "needs ≥2 seeds", "not run", "not comparable"
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NEEDS_SEEDS, NOT_RUN, NOT_COMPARABLE)
UNDECIDED = (NOT_RUN, NOT_COMPARABLE, NEEDS_SEEDS, INCONCLUSIVE)  # precedence when combining parts
FORMATS = ("table", "md", "csv", "json")


# ---------------------------------------------------------------------- statistics
def welch_interval(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
                   level: float = LEVEL) -> tuple[float, float, float, float]:
    """(effect, low, high, df) for mean_a − mean_b; needs n ≥ 2 on both sides (sample stds)."""
    from scipy import stats  # slow to import; only needed here

    effect = mean_a - mean_b
    va, vb = std_a ** 2 / n_a, std_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:  # identical seeds on both sides: no spread, the interval is the point
        return effect, effect, effect, math.nan
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return effect, effect - half, effect + half, df


def decide(kind: str, low: float, high: float, by: float = 0.0) -> str:
    """The verdict of one interval [low, high] on a − b for a claim of `kind` (see the module doc)."""
    if kind == "greater":
        return HOLDS if low > by else CONTRADICTED if high < by else INCONCLUSIVE
    if kind == "at_least":
        return HOLDS if low > -MARGIN else CONTRADICTED if high < -MARGIN else INCONCLUSIVE
    if kind == "marginal":
        if -MARGIN < low and high < MARGIN:
            return HOLDS
        return CONTRADICTED if low > MARGIN or high < -MARGIN else INCONCLUSIVE
    raise ValueError(kind)


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim from those of its comparisons (all must hold; one contradiction decides)."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return next(v for v in UNDECIDED if v in verdicts)


# ---------------------------------------------------------------------- one comparison
@dataclass(frozen=True)
class Side:
    """One tabulated paper row: what a comparison needs of it."""

    name: str
    mean: float
    std: float
    n: int
    epochs: int | None
    lr: float | None
    batch_size: int | None
    status: str
    stand_in: str
    run_ids: tuple

    @classmethod
    def from_row(cls, row: dict) -> Side:
        def known(value):
            return None if value is None or pd.isna(value) else value

        stand_in = known(row.get("stand_in"))
        return cls(name=table.row_name(row), mean=float(row["mean"]), std=float(row["std"]), n=int(row["n"]),
                   epochs=None if known(row["epochs"]) is None else int(row["epochs"]),
                   lr=known(row["lr"]), batch_size=None if known(row["batch_size"]) is None else int(row["batch_size"]),
                   status=str(row["status"] or ""), stand_in=str(stand_in) if stand_in else "",
                   run_ids=tuple(row["run_ids"]))

    def budget(self) -> str:
        """'8 ep · lr 0.01 · batch 128' ('' when the row has no finished run)."""
        if not self.n or self.epochs is None:
            return ""
        return f"{self.epochs} ep · lr {self.lr:g} · batch {self.batch_size}"


@dataclass(frozen=True)
class PartFinding:
    comparison: Comparison
    a: Side
    b: Side
    verdict: str
    effect: float = math.nan  # a − b; NaN when not run or not comparable
    low: float = math.nan
    high: float = math.nan
    df: float = math.nan
    budget: str = ""  # the shared budget, or what differs
    why: str = ""  # for not run / not comparable: what is missing or different


def compare(comparison: Comparison, a: Side, b: Side) -> PartFinding:
    """Test one comparison on two tabulated rows: budget rule, seeds rule, then the interval."""
    missing = [f"{s.name}: {s.status or 'pending'}" for s in (a, b) if s.n == 0]
    if missing:
        return PartFinding(comparison, a, b, NOT_RUN, why="; ".join(missing))
    differ = [f"{what} {fmt(x)} vs {fmt(y)}" for what, x, y, fmt in (
        ("epochs", a.epochs, b.epochs, str), ("lr", a.lr, b.lr, lambda v: f"{v:g}"),
        ("batch", a.batch_size, b.batch_size, str)) if not _same(x, y)]
    if differ:
        return PartFinding(comparison, a, b, NOT_COMPARABLE, budget="; ".join(differ), why="budgets differ")
    if set(a.run_ids) & set(b.run_ids):
        return PartFinding(comparison, a, b, NOT_COMPARABLE, budget=a.budget(), why="the same runs stand for both rows")
    if min(a.n, b.n) < 2:
        return PartFinding(comparison, a, b, NEEDS_SEEDS, effect=a.mean - b.mean, budget=a.budget())
    effect, low, high, df = welch_interval(a.mean, a.std, a.n, b.mean, b.std, b.n)
    return PartFinding(comparison, a, b, decide(comparison.kind, low, high, comparison.by),
                       effect=effect, low=low, high=high, df=df, budget=a.budget())


def _same(x, y) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9)
    return x == y


# ---------------------------------------------------------------------- all claims
@dataclass(frozen=True)
class Finding:
    claim: Claim
    parts: tuple[PartFinding, ...]

    @property
    def verdict(self) -> str:
        return combine([p.verdict for p in self.parts])


@dataclass
class Findings:
    """Everything `cmx findings` prints: one Finding per claim, plus what the header needs to say."""

    findings: list[Finding]
    dataset: str
    metric: str
    counts: dict = field(default_factory=dict)  # verdict -> number of claims

    def __post_init__(self):
        self.counts = {v: sum(f.verdict == v for f in self.findings) for v in VERDICTS}


def evaluate(tab: pd.DataFrame, claims: tuple[Claim, ...] = claims_mod.CLAIMS) -> list[Finding]:
    """Test every claim on a tabulate() frame (one row per paper row)."""
    rows = {_key(r["section"], r["label"], r["h"], r["d"], r["p"], r["k"], r["wd"]): r for r in tab.to_dict("records")}

    def side(ref) -> Side:
        prow = ref.resolve()
        return Side.from_row(rows[_key(prow.section, prow.label, prow.h, prow.d, prow.p, prow.k, prow.wd)])

    return [Finding(c, tuple(compare(part, side(part.a), side(part.b)) for part in c.parts)) for c in claims]


def _key(section, label, h, d, p, k, wd) -> tuple:
    return (section, label, int(h), int(d), int(p), int(k), f"{float(wd):.6g}")


def build(tables: table.Tables) -> Findings:
    return Findings(evaluate(tables.tab), tables.dataset, tables.metric)


# ---------------------------------------------------------------------- rendering
def signed(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def ours_cell(part: PartFinding) -> str:
    if part.verdict in (NOT_RUN, NOT_COMPARABLE):
        return "—"
    if not math.isfinite(part.low):
        return signed(part.effect)
    return f"{signed(part.effect)} [{signed(part.low)}, {signed(part.high)}]"


def verdict_cell(part_or_finding) -> str:
    verdict = part_or_finding.verdict
    why = getattr(part_or_finding, "why", "")
    return f"{verdict} ({why})" if why else verdict


def _claim_line(finding: Finding) -> dict:
    """The row printed for a claim: its numbers when it has one comparison, only its verdict otherwise."""
    if len(finding.parts) == 1:
        return _part_line(finding.parts[0], finding.claim.text, finding.claim.id)
    budgets = {p.budget for p in finding.parts}
    return {"id": finding.claim.id, "claim": finding.claim.text, "paper": "", "ours": "", "n": "",
            "budget": budgets.pop() if len(budgets) == 1 else "", "verdict": finding.verdict, "stand_ins": ""}


def _part_line(part: PartFinding, text: str, claim_id: str = "") -> dict:
    stand_ins = f"{part.a.stand_in} vs {part.b.stand_in}" if part.a.stand_in or part.b.stand_in else ""
    return {"id": claim_id, "claim": text, "paper": signed(part.comparison.paper_effect),
            "ours": ours_cell(part), "n": f"{part.a.n} / {part.b.n}", "budget": part.budget,
            "verdict": verdict_cell(part), "stand_ins": stand_ins}


def lines(result: Findings) -> list[dict]:
    """The table rows, in claim order: a claim, then its comparisons (↳) when it has several."""
    out = []
    for finding in result.findings:
        out.append(_claim_line(finding))
        if len(finding.parts) > 1:
            out += [_part_line(p, f"↳ {p.comparison.name}") for p in finding.parts]
    return out


COLUMNS = (
    table.Column("Claim", lambda r: r["id"], "l"),
    table.Column("Conclusion (a vs b)", lambda r: r["claim"], "l"),
    table.Column("Paper a − b", lambda r: r["paper"]),
    table.Column("Ours a − b [95% CI]", lambda r: r["ours"]),
    table.Column("n (a / b)", lambda r: r["n"]),
    table.Column("Budget", lambda r: r["budget"], "l"),
    table.Column("Verdict", lambda r: r["verdict"], "l"),
)
STAND_IN_COLUMN = table.Column("Stand-in runs (a vs b)", lambda r: r["stand_ins"], "l")


def columns_for(rows: list[dict]) -> tuple:
    return COLUMNS[:-1] + ((STAND_IN_COLUMN,) if any(r["stand_ins"] for r in rows) else ()) + COLUMNS[-1:]


def header_lines(result: Findings) -> list[str]:
    metric = "final" if result.metric == "final" else "best (over epochs)"
    tally = ", ".join(f"{n} {v}" for v, n in result.counts.items() if n)
    return [
        f"Dataset: `{result.dataset}`. For each conclusion of the paper's Appendix C: the paper's effect "
        f"(from its Tables 7 and 8) and ours, a − b in points of {metric} test accuracy, mean over seeds "
        f"with a {LEVEL:.0%} Welch t interval.",
        f"Verdicts: **holds** — the interval lies on the claimed side (a > b: above 0, or above the stated "
        f"size; a ≥ b: above −{MARGIN:g}; marginal: inside ±{MARGIN:g}); **contradicted** — it lies entirely "
        f"on the other side; **inconclusive** — it straddles the line; **needs ≥2 seeds** — a row has one "
        f"run (point effect shown); **not run**; **not comparable** — the two rows' runs differ in budget "
        f"(epochs, lr, batch size). A claim with several comparisons (↳) holds when each does.",
        f"Claims: {len(result.findings)} ({tally}).",
    ]


def render(result: Findings, fmt: str = "md", heading_level: int = 1) -> str:
    """md (a heading, the table, the sources), csv (one row per comparison) or json (claims with parts)."""
    if fmt == "csv":
        buf = io.StringIO()
        pd.DataFrame(records(result)).to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()
    if fmt == "json":
        return json.dumps(as_json(result), indent=2, ensure_ascii=False) + "\n"
    h = "#" * heading_level
    rows = lines(result)
    out = [f"{h} Findings: do the paper's conclusions hold in our runs?", ""]
    out += header_lines(result) + [""]
    out += table.md_table(columns_for(rows), rows) + [""]
    out += [f"{h}# Where each claim comes from", ""]
    for finding in result.findings:
        claim = finding.claim
        out.append(f"- **{claim.id}**: {claim.source}." + (f" Note: {claim.note}." if claim.note else ""))
    return "\n".join(out) + "\n"


def _num(value):
    return None if value is None or not math.isfinite(value) else round(value, 4)


def _part_record(part: PartFinding) -> dict:
    c = part.comparison
    shared = bool(part.budget) and part.budget == part.a.budget()  # one budget for both rows
    return {
        "comparison": c.name, "kind": c.kind, "by": c.by, "margin": MARGIN if c.kind != "greater" else None,
        "a": part.a.name, "b": part.b.name, "paper_effect": c.paper_effect,
        "effect": _num(part.effect), "ci_low": _num(part.low), "ci_high": _num(part.high), "df": _num(part.df),
        "mean_a": _num(part.a.mean), "std_a": _num(part.a.std), "n_a": part.a.n,
        "mean_b": _num(part.b.mean), "std_b": _num(part.b.std), "n_b": part.b.n,
        **{name: getattr(part.a, name) if shared else None for name in ("epochs", "lr", "batch_size")},
        "budget": part.budget, "stand_in_a": part.a.stand_in, "stand_in_b": part.b.stand_in,
        "verdict": part.verdict, "why": part.why,
    }


def records(result: Findings) -> list[dict]:
    """One tidy record per comparison, with its claim's id, text and verdict (the csv rows)."""
    return [{"claim": f.claim.id, "claim_text": f.claim.text, "claim_verdict": f.verdict, "dataset": result.dataset,
             "metric": result.metric, **_part_record(p), "source": f.claim.source}
            for f in result.findings for p in f.parts]


def as_json(result: Findings) -> dict:
    return {"dataset": result.dataset, "metric": result.metric, "level": LEVEL, "margin": MARGIN,
            "counts": result.counts,
            "claims": [{"id": f.claim.id, "text": f.claim.text, "verdict": f.verdict, "source": f.claim.source,
                        "note": f.claim.note, "comparisons": [_part_record(p) for p in f.parts]}
                       for f in result.findings]}
