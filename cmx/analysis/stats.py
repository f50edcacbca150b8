"""The statistics behind `cmx findings`: one contrast of table rows, tested the way the runs were made.

A contrast is Σ wᵢ·meanᵢ over a few rows: a − b (weights +1, −1), or the interaction (a − b) − (c − d).
Runs that share a seed share their initial weights, data order and augmentation stream, so when every
row has runs of the same seeds the rows are *paired by seed*: the contrast is computed per seed and
tested with a one-sample t test on those per-seed values (scipy's ttest_1samp; for two rows that is the
paired t test, ttest_rel). Otherwise the rows are independent samples: Welch's unequal-variance t
(scipy's ttest_ind(equal_var=False) for two rows; for four, the same Welch–Satterthwaite formula).

Every verdict is read off the 95% interval, so a one-sided p below ALPHA = 0.025 is the same decision:
  greater  (a − b > by)       holds when low > by;                contradicted when high < by
  two_sided (rows only)       holds when the interval excludes 0 on the paper's side; contradicted on the other
  marginal (|a − b| < margin) holds when the interval lies inside ±margin (two one-sided tests, TOST, at
                              2.5% each); contradicted when it lies entirely outside
Each comparison also gets the p of the decision it reached (or is nearest to), so the family of all
comparisons can be corrected together (Holm), and, when undecided, the seeds per row that would decide
it if the measured effect and spread stayed as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.025  # per side: the 95% two-sided interval
KINDS = ("greater", "two_sided", "marginal")
MAX_SEEDS = 1000  # seeds_to_decide gives up beyond this


@dataclass(frozen=True)
class Arm:
    """One row in a contrast: its weight and its runs' values and seeds (both in seed order)."""

    weight: float
    values: tuple[float, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Test:
    method: str  # "paired" (by seed) or "Welch"
    effect: float
    se: float
    df: float
    low: float
    high: float
    spread: tuple[float, ...]  # paired: (sd of the per-seed contrasts,); Welch: each arm's sd
    n: int  # pairs (paired) or the smallest arm (Welch)


def is_paired(arms: list[Arm]) -> bool:
    """The same seeds (≥ 2) on every row, so per-seed contrasts exist."""
    seeds = arms[0].seeds
    return len(seeds) >= 2 and len(set(seeds)) == len(seeds) and all(a.seeds == seeds for a in arms)


def test_contrast(arms: list[Arm], level: float = 1 - 2 * ALPHA) -> Test:
    """The contrast's estimate, standard error, df and interval; needs ≥ 2 runs on every row."""
    from scipy import stats  # slow to import; only needed here

    if is_paired(arms):
        per_seed = [sum(a.weight * a.values[i] for a in arms) for i in range(len(arms[0].values))]
        n = len(per_seed)
        effect = sum(per_seed) / n
        sd = math.sqrt(sum((x - effect) ** 2 for x in per_seed) / (n - 1))
        if sd == 0:  # every seed gives the same contrast: the interval is the point
            return Test("paired", effect, 0.0, n - 1, effect, effect, (0.0,), n)
        ci = stats.ttest_1samp(per_seed, 0.0).confidence_interval(level)
        return Test("paired", effect, sd / math.sqrt(n), n - 1, float(ci.low), float(ci.high), (sd,), n)

    sds = tuple(_sd(a.values) for a in arms)
    effect = sum(a.weight * sum(a.values) / len(a.values) for a in arms)
    parts = [a.weight ** 2 * s ** 2 / len(a.values) for a, s in zip(arms, sds)]
    se = math.sqrt(sum(parts))
    n = min(len(a.values) for a in arms)
    if se == 0:
        return Test("Welch", effect, 0.0, math.nan, effect, effect, sds, n)
    if len(arms) == 2 and arms[0].weight == 1 and arms[1].weight == -1:
        res = stats.ttest_ind(arms[0].values, arms[1].values, equal_var=False)
        ci = res.confidence_interval(level)
        return Test("Welch", effect, se, float(res.df), float(ci.low), float(ci.high), sds, n)
    df = sum(parts) ** 2 / sum(v ** 2 / (len(a.values) - 1) for v, a in zip(parts, arms) if v > 0)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return Test("Welch", effect, se, df, effect - half, effect + half, sds, n)


def _sd(values) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# ---------------------------------------------------------------------- verdicts and p-values
def lines(kind: str, by: float, margin: float) -> tuple[float, ...]:
    """The values of the contrast at which a verdict changes."""
    return {"greater": (by,), "two_sided": (0.0,), "marginal": (-margin, margin)}[kind]


def decide(kind: str, low: float, high: float, by: float = 0.0, margin: float = 0.5, sign: float = 1.0) -> str:
    """holds / contradicted / inconclusive from the interval (strict: touching a line decides nothing).
    `sign`: for two_sided, the side the paper's rows are on (+1 or −1)."""
    if kind == "greater":
        return "holds" if low > by else "contradicted" if high < by else "inconclusive"
    if kind == "two_sided":
        if low > 0 or high < 0:
            return "holds" if (low > 0) == (sign > 0) else "contradicted"
        return "inconclusive"
    if kind == "marginal":
        if -margin < low and high < margin:
            return "holds"
        return "contradicted" if low > margin or high < -margin else "inconclusive"
    raise ValueError(kind)


def _p_above(test: Test, line: float) -> float:
    """One-sided p for 'contrast > line'."""
    from scipy import stats

    if test.se == 0:
        return 0.0 if test.effect > line else 1.0
    return float(stats.t.sf((test.effect - line) / test.se, test.df))


def decision_p(kind: str, test: Test, verdict: str, by: float = 0.0, margin: float = 0.5, sign: float = 1.0) -> float:
    """The one-sided p of the decision reached (holds or contradicted), or, when inconclusive, of the
    nearer one: below ALPHA exactly when the interval decides. What Holm corrects."""
    above, below = (lambda x: _p_above(test, x)), (lambda x: 1 - _p_above(test, x))
    if kind == "greater":
        hold, contra = above(by), below(by)
    elif kind == "two_sided":
        hold, contra = (above(0), below(0)) if sign > 0 else (below(0), above(0))
    else:  # marginal: TOST for holding; outside the margin on either side for contradicting
        hold, contra = max(above(-margin), below(margin)), min(above(margin), below(-margin))
    return {"holds": hold, "contradicted": contra}.get(verdict, min(hold, contra))


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which of the p-values are rejected with the family-wise error ≤ alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        rejected[i] = True
    return rejected


def seeds_to_decide(kind: str, test: Test, weights: tuple[float, ...], by: float = 0.0, margin: float = 0.5) -> int | None:
    """Seeds per row at which the interval would clear every verdict line, if the effect and the spread
    stayed as measured (same method: paired or Welch). None when it never would (the estimate sits on a
    line) or only beyond MAX_SEEDS."""
    from scipy import stats

    distance = min(abs(test.effect - x) for x in lines(kind, by, margin))
    if kind == "marginal" and abs(test.effect) < margin:  # holding needs both ends inside
        distance = margin - abs(test.effect)
    if distance == 0:
        return None
    for n in range(max(test.n, 2), MAX_SEEDS + 1):
        if test.method == "paired":
            se, df = test.spread[0] / math.sqrt(n), n - 1
        else:
            parts = [w ** 2 * s ** 2 / n for w, s in zip(weights, test.spread)]
            se = math.sqrt(sum(parts))
            df = sum(parts) ** 2 / sum(v ** 2 / (n - 1) for v in parts) if se else math.inf
        if float(stats.t.ppf(1 - ALPHA, df)) * se < distance:
            return n
    return None


def homogeneity(groups: list[tuple[float, ...]]) -> tuple[float, float, int] | None:
    """Levene's test (median-centred: Brown–Forsythe) that every configuration has the same seed variance,
    and the pooled sd with its degrees of freedom: (p, pooled sd, df). None with fewer than 2 groups."""
    from scipy import stats

    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return None
    df = sum(len(g) - 1 for g in groups)
    pooled = math.sqrt(sum(_sd(g) ** 2 * (len(g) - 1) for g in groups) / df)
    spread = [v for g in groups for v in g]
    p = float(stats.levene(*groups, center="median").pvalue) if max(spread) > min(spread) else 1.0
    return p, pooled, df


def pooled_interval(effect: float, weights: tuple[float, ...], ns: list[int], sigma: float, df: int) -> tuple[float, float]:
    """The 95% interval of a contrast if every row had the pooled seed σ (with the pooled df)."""
    from scipy import stats

    half = float(stats.t.ppf(1 - ALPHA, df)) * sigma * math.sqrt(sum(w * w / n for w, n in zip(weights, ns)))
    return effect - half, effect + half
