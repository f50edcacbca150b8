"""Do the paper's conclusions hold in our runs? Each claim of claims.py, tested on `tabulate()`'s rows.

The choices, and why:
- **Effect** = the contrast of row means a − b (or (a − b) − (c − d) for an interaction) of the chosen
  metric (final or best test accuracy, percentage points; or epochs to 90% of the final accuracy for a
  convergence claim), over the seeds `table.tabulate()` put on each paper row. Rows are matched to runs
  exactly as `cmx table` matches them (and through their stand-in runs where a scaled-down study stands
  for a paper row), so the two commands never disagree about which runs a number comes from.
- **Method follows the design** (stats.py): runs with the same seed share initial weights, data order and
  augmentation stream, so when every row has runs of the same seeds the comparison is *paired by seed*
  (a t test on the per-seed contrasts); otherwise *Welch* (unequal variances). Each effect prints its
  method. With n = 1 on a side there is no variance: the point effect is shown, "needs ≥2 seeds".
- **Verdicts** (stats.decide) from the 95% interval: greater — holds above `by`, contradicted below;
  marginal — two one-sided tests: holds when the interval lies inside ±MARGIN, contradicted when it lies
  outside; two_sided (rows only) — holds when it excludes 0 on the paper's side, contradicted on the
  other. Otherwise inconclusive, with the seeds per row that would decide it at the measured effect and
  spread. **Not testable**: the two arms are the same model (identical final weights, or identical epoch
  curves, for every seed): an ablation that changed nothing cannot be compared, only reported.
- **Family-wise view**: ~40 comparisons at 95% each would produce false verdicts by chance. Holm's
  step-down correction over every tested comparison's decision p says which verdicts survive; and a
  pooled seed variance (one σ for all configurations, with Levene's test of that assumption) gives the
  verdicts the other common analysis would give. Both are shown beside the per-comparison verdict.
- **Ours beside the paper's**: the paper's effect from its rows, and a note when ours differs from it in
  size by more than FACTOR or in sign (a scaled study is expected to differ in size; the note says where).
- **Not run**: a row has no finished run. **Budget rule**: rows are compared only when their runs share
  epochs, lr and batch size; otherwise "not comparable" (`--epochs N` re-tabulates at one budget); the
  same runs standing for both rows are not comparable either. Every finding prints its budget.
- **Claims with several comparisons**: contradicted if any comparison is, holds when every one holds,
  otherwise the first of not run, not comparable, not testable, needs ≥2 seeds, inconclusive.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from . import claims as claims_mod
from . import stats
from . import table
from .claims import MARGIN, Claim, Comparison

LEVEL = 1 - 2 * stats.ALPHA
FACTOR = 3.0  # ours vs the paper's effect: a note when they differ in size by more than this factor
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
NEEDS_SEEDS, NOT_RUN, NOT_COMPARABLE, NOT_TESTABLE = "needs ≥2 seeds", "not run", "not comparable", "not testable"
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE, NEEDS_SEEDS, NOT_RUN, NOT_COMPARABLE)
UNDECIDED = (NOT_RUN, NOT_COMPARABLE, NOT_TESTABLE, NEEDS_SEEDS, INCONCLUSIVE)  # precedence when combining
FORMATS = ("table", "md", "csv", "json")


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim from those of its comparisons (all must hold; one contradiction decides)."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return next(v for v in UNDECIDED if v in verdicts)


# ---------------------------------------------------------------------- one row, one comparison
@dataclass(frozen=True)
class Side:
    """One tabulated paper row: what a comparison needs of it (per-run tuples in seed order)."""

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
    values: tuple = ()
    seeds: tuple = ()
    weights: tuple = ()
    curves: tuple = ()
    converge: tuple = ()

    @classmethod
    def from_row(cls, row: dict) -> Side:
        def known(value):
            return None if value is None or (not isinstance(value, tuple) and pd.isna(value)) else value

        stand_in = known(row.get("stand_in"))
        return cls(name=table.row_name(row), mean=float(row["mean"]), std=float(row["std"]), n=int(row["n"]),
                   epochs=None if known(row["epochs"]) is None else int(row["epochs"]),
                   lr=known(row["lr"]), batch_size=None if known(row["batch_size"]) is None else int(row["batch_size"]),
                   status=str(row["status"] or ""), stand_in=str(stand_in) if stand_in else "",
                   run_ids=tuple(row["run_ids"]),
                   **{name: tuple(row.get(name) or ()) for name in ("values", "seeds", "weights", "curves", "converge")})

    def budget(self) -> str:
        """'8 ep · lr 0.01 · batch 128' ('' when the row has no finished run)."""
        if not self.n or self.epochs is None:
            return ""
        return f"{self.epochs} ep · lr {self.lr:g} · batch {self.batch_size}"

    def arm(self, weight: float, metric: str) -> stats.Arm | None:
        """This row's runs as one arm of a contrast; None when a run lacks the metric (no epoch curve)."""
        values = self.values if metric == "acc" else self.converge
        if len(values) != self.n or any(v is None or not math.isfinite(v) for v in values):
            return None
        seeds = self.seeds if len(self.seeds) == self.n else tuple(range(-self.n, 0))  # unknown: never paired
        return stats.Arm(weight, tuple(float(v) for v in values), tuple(seeds))


@dataclass(frozen=True)
class PartFinding:
    comparison: Comparison
    sides: tuple[Side, ...]  # a, b (and c, d for an interaction)
    verdict: str
    effect: float = math.nan  # the contrast; NaN when not run or not comparable
    low: float = math.nan
    high: float = math.nan
    df: float = math.nan
    method: str = ""  # paired | Welch ('' when not tested)
    budget: str = ""  # the shared budget, or what differs
    why: str = ""  # for not run / not comparable / not testable: what is missing, different or identical
    p: float = math.nan  # one-sided p of the decision (or of the nearer one when inconclusive)
    holm: bool | None = None  # a decided verdict survives Holm over the family (None: undecided or not tested)
    pooled: str = ""  # the verdict with one pooled seed σ for every configuration
    seeds_needed: int | None = None  # inconclusive: seeds per row that would decide at this effect and spread

    @property
    def a(self) -> Side:
        return self.sides[0]

    @property
    def b(self) -> Side:
        return self.sides[1]


def compare(comparison: Comparison, *sides: Side) -> PartFinding:
    """Test one comparison on its tabulated rows: run, budget, identity and seed rules, then the test."""
    c = comparison
    missing = [f"{s.name}: {s.status or 'pending'}" for s in sides if s.n == 0]
    if missing:
        return PartFinding(c, sides, NOT_RUN, why="; ".join(dict.fromkeys(missing)))
    first = sides[0]
    differ = [f"{what} {fmt(x)} vs {fmt(y)}" for s in sides[1:] for what, x, y, fmt in (
        ("epochs", first.epochs, s.epochs, str), ("lr", first.lr, s.lr, lambda v: f"{v:g}"),
        ("batch", first.batch_size, s.batch_size, str)) if not _same(x, y)]
    if differ:
        return PartFinding(c, sides, NOT_COMPARABLE, budget="; ".join(dict.fromkeys(differ)), why="budgets differ")
    budget = first.budget()
    if any(set(x.run_ids) & set(y.run_ids) for x, y in ((sides[0], sides[1]), (sides[-2], sides[-1]))):
        return PartFinding(c, sides, NOT_COMPARABLE, budget=budget, why="the same runs stand for both rows")
    same = identical(sides[0], sides[1]) if len(sides) == 2 else ""
    if same:
        return PartFinding(c, sides, NOT_TESTABLE, effect=sides[0].mean - sides[1].mean, budget=budget, why=same)
    arms = [s.arm(w, c.metric) for s, w in zip(sides, c.weights)]
    if any(arm is None for arm in arms):
        return PartFinding(c, sides, NOT_RUN, budget=budget, why="no epoch curve (epochs.csv) for some runs")
    effect = sum(a.weight * sum(a.values) / len(a.values) for a in arms)
    if min(len(a.values) for a in arms) < 2:
        return PartFinding(c, sides, NEEDS_SEEDS, effect=effect, budget=budget)
    test = stats.test_contrast(arms, LEVEL)
    sign = 1.0 if (c.paper_effect or 0) >= 0 else -1.0
    verdict = stats.decide(c.kind, test.low, test.high, c.by, MARGIN, sign)
    needed = stats.seeds_to_decide(c.kind, test, c.weights, c.by, MARGIN) if verdict == INCONCLUSIVE else None
    return PartFinding(c, sides, verdict, effect=test.effect, low=test.low, high=test.high, df=test.df,
                       method=test.method, budget=budget, seeds_needed=needed,
                       p=stats.decision_p(c.kind, test, verdict, c.by, MARGIN, sign))


def identical(a: Side, b: Side) -> str:
    """Why two rows are one model ('identical final weights, 3 seeds'), or '' when they are not (or
    cannot be told: no hashes recorded, or not the same seeds)."""
    if a.n < 1 or a.seeds != b.seeds or len(a.seeds) != a.n:
        return ""
    for what, x, y in (("final weights", a.weights, b.weights), ("epoch curves", a.curves, b.curves)):
        if len(x) == len(y) == a.n and all(x) and x == y:
            return f"identical {what}, {a.n} seed{'s' if a.n > 1 else ''}"
    return ""


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

    @property
    def holm(self) -> bool | None:
        """Does the claim's verdict survive Holm? holds: every part does; contradicted: a contradicted
        part does. None when the claim is not decided."""
        if self.verdict == HOLDS:
            return all(p.holm for p in self.parts)
        if self.verdict == CONTRADICTED:
            return any(p.holm for p in self.parts if p.verdict == CONTRADICTED)
        return None


@dataclass
class Findings:
    """Everything `cmx findings` prints: one Finding per claim, plus what the header needs to say."""

    findings: list[Finding]
    dataset: str
    metric: str
    pooled: tuple[float, float, int] | None = None  # Levene p, pooled σ, its df (accuracy, all configurations)
    counts: dict = field(default_factory=dict)  # verdict -> number of claims

    def __post_init__(self):
        self.counts = {v: sum(f.verdict == v for f in self.findings) for v in VERDICTS}


def evaluate(tab: pd.DataFrame, claims: tuple[Claim, ...] = claims_mod.CLAIMS,
             pooled: tuple[float, float, int] | None = None) -> list[Finding]:
    """Test every claim on a tabulate() frame (one row per paper row), then the family-wise views."""
    rows = {_key(r): r for r in tab.to_dict("records")}

    def side(ref) -> Side:
        prow = ref.resolve()
        return Side.from_row(rows[_key(dataclasses.asdict(prow))])

    found = [Finding(c, tuple(compare(part, *(side(r) for r in part.refs)) for part in c.parts)) for c in claims]
    tested = [p for f in found for p in f.parts if math.isfinite(p.p)]
    survive = dict(zip(map(id, tested), stats.holm([p.p for p in tested])))

    def finish(part: PartFinding) -> PartFinding:
        if id(part) not in survive:
            return part
        decided = part.verdict in (HOLDS, CONTRADICTED)
        return dataclasses.replace(part, holm=survive[id(part)] if decided else None,
                                   pooled=_pooled_verdict(part, pooled))

    return [Finding(f.claim, tuple(finish(p) for p in f.parts)) for f in found]


def _pooled_verdict(part: PartFinding, pooled: tuple[float, float, int] | None) -> str:
    """The verdict with the pooled seed σ for every row (accuracy only: σ is pooled over accuracies)."""
    c = part.comparison
    if pooled is None or c.metric != "acc":
        return ""
    low, high = stats.pooled_interval(part.effect, c.weights, [s.n for s in part.sides], *pooled[1:])
    return stats.decide(c.kind, low, high, c.by, MARGIN, 1.0 if (c.paper_effect or 0) >= 0 else -1.0)


def pooled_variance(tab: pd.DataFrame) -> tuple[float, float, int] | None:
    """Levene's p, the pooled σ and its df over every tabulated configuration with ≥ 2 seeds (a set of
    runs standing for two paper rows counts once)."""
    groups = {tuple(r["run_ids"]): tuple(r.get("values") or ()) for r in tab.to_dict("records") if r["n"] >= 2}
    return stats.homogeneity([v for v in groups.values() if len(v) >= 2])


def _key(row) -> tuple:
    """What matches a tabulated row to its paper row: section, label, h, d, p, k and weight decay."""
    return (row["section"], row["label"], int(row["h"]), int(row["d"]), int(row["p"]), int(row["k"]),
            f"{float(row['wd']):.6g}")


def build(tables: table.Tables) -> Findings:
    pooled = pooled_variance(tables.tab)
    return Findings(evaluate(tables.tab, pooled=pooled), tables.dataset, tables.metric, pooled)


# ---------------------------------------------------------------------- rendering
def signed(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def ours_cell(part: PartFinding) -> str:
    if part.verdict in (NOT_RUN, NOT_COMPARABLE):
        return "—"
    unit = " ep" if part.comparison.metric == "converge" else ""
    if not math.isfinite(part.low):
        return signed(part.effect) + unit
    return f"{signed(part.effect)} [{signed(part.low)}, {signed(part.high)}]{unit}"


def versus_paper(part: PartFinding) -> str:
    """'' when ours is within FACTOR of the paper's effect; else '×5.1' or '×0.2', or 'opposite sign'."""
    paper_effect = part.comparison.paper_effect
    if paper_effect is None or not math.isfinite(part.effect) or part.verdict == NOT_TESTABLE:
        return ""
    if round(part.effect, 2) == 0 or paper_effect == 0:
        return "" if round(part.effect, 2) == paper_effect else "paper ≈ 0" if paper_effect == 0 else "ours ≈ 0"
    ratio = part.effect / paper_effect
    if ratio < 0:
        return "opposite sign"
    return f"×{ratio:.1f}" if ratio > FACTOR or ratio < 1 / FACTOR else ""


def verdict_cell(part_or_finding) -> str:
    verdict = part_or_finding.verdict
    why = getattr(part_or_finding, "why", "")
    if verdict == INCONCLUSIVE and isinstance(part_or_finding, PartFinding):
        n = part_or_finding.seeds_needed
        why = f"~{n} seeds per row would decide" if n else f"no seed count up to {stats.MAX_SEEDS} decides"
    return f"{verdict} ({why})" if why else verdict


def holm_cell(holm: bool | None) -> str:
    return {True: "survives", False: "does not survive", None: ""}[holm]


def _claim_line(finding: Finding) -> dict:
    """The row printed for a claim: its numbers when it has one comparison, only its verdict otherwise."""
    if len(finding.parts) == 1:
        return {**_part_line(finding.parts[0], finding.claim.text, finding.claim.id), "holm": holm_cell(finding.holm)}
    budgets = {p.budget for p in finding.parts}
    return {"id": finding.claim.id, "claim": finding.claim.text, "paper": "", "ours": "", "vs": "", "method": "",
            "n": "", "budget": budgets.pop() if len(budgets) == 1 else "", "verdict": finding.verdict,
            "holm": holm_cell(finding.holm), "pooled": "", "stand_ins": ""}


def _part_line(part: PartFinding, text: str, claim_id: str = "") -> dict:
    stand_ins = " vs ".join(s.stand_in or "—" for s in part.sides) if any(s.stand_in for s in part.sides) else ""
    method = part.method + (" TOST" if part.method and part.comparison.kind == "marginal" else "")
    return {"id": claim_id, "claim": text, "paper": signed(part.comparison.paper_effect) or "text only",
            "ours": ours_cell(part), "vs": versus_paper(part), "method": method,
            "n": " / ".join(str(s.n) for s in part.sides), "budget": part.budget, "verdict": verdict_cell(part),
            "holm": holm_cell(part.holm), "pooled": part.pooled, "stand_ins": stand_ins}


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
    table.Column("Ours/paper", lambda r: r["vs"]),
    table.Column("Test", lambda r: r["method"], "l"),
    table.Column("n", lambda r: r["n"]),
    table.Column("Budget", lambda r: r["budget"], "l"),
    table.Column("Holm", lambda r: r["holm"], "l"),
    table.Column("Pooled σ", lambda r: r["pooled"], "l"),
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
        f"(from its Tables 7 and 8; convergence claims have only a sentence) and ours, a − b in points of "
        f"{metric} test accuracy (or in epochs to reach {0.9:.0%} of the final accuracy), with a {LEVEL:.0%} "
        f"interval. **Test**: paired by seed when both rows have runs of the same seeds (they share initial "
        f"weights, data order and augmentation), else Welch; TOST for equivalence claims.",
        f"Verdicts: **holds** — the interval lies on the claimed side (a > b: above 0, or above the stated "
        f"size; equivalence: inside ±{MARGIN:g}, i.e. two one-sided tests at {stats.ALPHA:.1%}; rows only: "
        f"excludes 0 on the side of the paper's rows); **contradicted** — it lies entirely on the other side; "
        f"**inconclusive** — it straddles a line (with the seeds per row that would decide it if the effect "
        f"and spread stayed as measured); **not testable** — both arms are the same model (identical final "
        f"weights or epoch curves); **needs ≥2 seeds**; **not run**; **not comparable** — the rows' runs "
        f"differ in budget (epochs, lr, batch size). A claim with several comparisons (↳) holds when each does.",
        f"**Ours/paper**: the ratio of the effects when they differ by more than ×{FACTOR:g} (either way) or in "
        f"sign — expected at a reduced scale, and said so rather than hidden.",
        *family_lines(result),
        f"Claims: {len(result.findings)} ({tally}).",
    ]


def family_lines(result: Findings) -> list[str]:
    """What the family-wise views say: Holm over every tested comparison, and the pooled-σ analysis."""
    parts = [p for f in result.findings for p in f.parts]
    tested = [p for p in parts if math.isfinite(p.p)]
    decided = [p for p in tested if p.verdict in (HOLDS, CONTRADICTED)]
    survive = sum(bool(p.holm) for p in decided)
    out = [f"**Family-wise** ({len(tested)} tested comparisons, {len(decided)} decided): **Holm** — "
           f"{survive} of the {len(decided)} decided verdicts survive Holm's correction over all "
           f"{len(tested)} (family-wise error ≤ {stats.ALPHA:.1%} per side); the others may be chance."]
    if result.pooled is not None:
        p, sigma, df = result.pooled
        acc = [x for x in tested if x.pooled]
        agree = sum(x.pooled == x.verdict for x in acc)
        homogeneous = ("not rejected" if p >= 0.05 else "rejected: the pooled analysis is not trustworthy here")
        out.append(f"**Pooled σ** — one seed σ = {sigma:.2f} points for every configuration ({df} df; equal "
                   f"variances {homogeneous}, Levene/Brown–Forsythe p = {p:.2f}): its verdicts agree with the "
                   f"per-comparison ones on {agree} of {len(acc)} accuracy comparisons.")
    return out


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
    out += [f"{h}# Where each claim comes from, and whether it may change at full scale", ""]
    for finding in result.findings:
        claim = finding.claim
        out.append(f"- **{claim.id}**: {claim.source}." + (f" Note: {claim.note}." if claim.note else "")
                   + f" *At full scale:* {claim.full_scale}.")
    return "\n".join(out) + "\n"


def _num(value):
    return None if value is None or not math.isfinite(value) else round(value, 4)


def _part_record(part: PartFinding) -> dict:
    c = part.comparison
    shared = bool(part.budget) and part.budget == part.a.budget()  # one budget for every row
    return {
        "comparison": c.name, "kind": c.kind, "metric": c.metric, "by": c.by,
        "margin": MARGIN if c.kind == "marginal" else None,
        "a": part.a.name, "b": part.b.name, "c": part.sides[2].name if len(part.sides) > 2 else None,
        "d": part.sides[3].name if len(part.sides) > 3 else None, "paper_effect": c.paper_effect,
        "method": part.method or None, "effect": _num(part.effect), "ci_low": _num(part.low),
        "ci_high": _num(part.high), "df": _num(part.df), "p": _num(part.p),
        "mean_a": _num(part.a.mean), "std_a": _num(part.a.std), "n_a": part.a.n,
        "mean_b": _num(part.b.mean), "std_b": _num(part.b.std), "n_b": part.b.n,
        **{name: getattr(part.a, name) if shared else None for name in ("epochs", "lr", "batch_size")},
        "budget": part.budget, "stand_in_a": part.a.stand_in, "stand_in_b": part.b.stand_in,
        "verdict": part.verdict, "why": part.why, "holm": part.holm, "pooled_verdict": part.pooled or None,
        "seeds_needed": part.seeds_needed, "versus_paper": versus_paper(part) or None,
    }


def records(result: Findings) -> list[dict]:
    """One tidy record per comparison, with its claim's id, text and verdict (the csv rows)."""
    return [{"claim": f.claim.id, "claim_text": f.claim.text, "claim_verdict": f.verdict, "claim_holm": f.holm,
             "dataset": result.dataset, "metric": result.metric, **_part_record(p), "source": f.claim.source,
             "full_scale": f.claim.full_scale}
            for f in result.findings for p in f.parts]


def as_json(result: Findings) -> dict:
    pooled = None if result.pooled is None else dict(zip(("levene_p", "sigma", "df"), result.pooled))
    return {"dataset": result.dataset, "metric": result.metric, "level": LEVEL, "margin": MARGIN,
            "factor": FACTOR, "pooled": pooled, "counts": result.counts,
            "claims": [{"id": f.claim.id, "text": f.claim.text, "verdict": f.verdict, "holm": f.holm,
                        "source": f.claim.source, "full_scale": f.claim.full_scale, "note": f.claim.note,
                        "comparisons": [_part_record(p) for p in f.parts]}
                       for f in result.findings]}
