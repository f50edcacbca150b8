"""`cmx findings`: the claims resolve to the paper's rows, each verdict and method on hand-computed numbers.

The fabricated study (fabricate.findings_study) puts three seeds on most rows with offsets whose per-seed
differences have sd √0.12, so a paired comparison (both rows at seeds 0, 1, 2) is effect ± PAIRED (df 2);
rows at seeds 3, 4, 5 are compared by Welch: effect ± WELCH (df 4); and the four-row interaction by Welch
with df 8.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest

from cmx import paper
from cmx.analysis import claims, collect, findings, stats, table
from cmx.cli.app import main
from cmx.errors import UserError

from fabricate import findings_study, make_run

GOLDEN = Path(__file__).parent / "golden" / "findings_small.md"
# Paired by hand: per-seed differences e + (−0.2, −0.2, 0.4): sd = √((0.04 + 0.04 + 0.16) / 2) = √0.12,
# se = √0.12 / √3 = 0.2, t(0.975, 2) = 4.302653 (t table).
PAIRED = 4.302653 * 0.2  # 0.860531
# Welch by hand for two rows of n = 3 with s = 0.2 each: v = s²/n = 0.04/3 per side,
# df = (2v)² / (2·v²/(n−1)) = 4 exactly, se = √(2v) = 0.1632993, t(0.975, 4) = 2.776445 (t table).
WELCH = 2.776445 * math.sqrt(2 * 0.04 / 3)  # 0.453391
# Four rows of n = 3, s = 0.2: se = √(4·0.04/3) = 0.2309401, df = (4v)² / (4v²/2) = 8, t(0.975, 8) = 2.306004.
INTERACTION = 2.306004 * math.sqrt(4 * 0.04 / 3)  # 0.532546
BUDGET = "200 ep · lr 0.01 · batch 64"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    findings_study(root)
    return root


@pytest.fixture(scope="module")
def result(study) -> findings.Findings:
    return findings.build(table.build(collect.load_runs(study), "cifar10"))


def claim(result: findings.Findings, claim_id: str) -> findings.Finding:
    (hit,) = [f for f in result.findings if f.claim.id == claim_id]
    return hit


def assert_interval(part: findings.PartFinding, effect: float, verdict: str, method: str = "paired") -> None:
    half, df = {"paired": (PAIRED, 2.0), "Welch": (WELCH, 4.0)}[method]
    assert part.verdict == verdict, (part.comparison.name, part.verdict)
    assert part.method == method
    assert part.effect == pytest.approx(effect, abs=1e-9)
    assert part.low == pytest.approx(effect - half, abs=1e-5)
    assert part.high == pytest.approx(effect + half, abs=1e-5)
    assert part.df == pytest.approx(df)
    assert (part.a.n, part.b.n) == (3, 3)
    assert part.budget == BUDGET


# ---------------------------------------------------------------------- the claims as data
def test_every_claim_resolves_and_paper_effects_come_from_the_rows():
    by_id = {c.id: c for c in claims.CLAIMS}
    assert len(by_id) == len(claims.CLAIMS) == 25  # ids are unique
    for c in claims.CLAIMS:
        assert c.source and c.parts and c.full_scale
        for part in c.parts:
            rows = [r.resolve() for r in part.refs]
            if part.metric == "converge":
                assert part.paper_effect is None  # the paper has a sentence, no numbers
            else:
                assert part.paper_effect == pytest.approx(sum(w * r.acc for w, r in zip(part.weights, rows)), abs=0.005)
    # the sizes the issue quotes, recomputed from cmx.paper
    effects = {c.id: [p.paper_effect for p in c.parts] for c in claims.CLAIMS}
    assert effects["kernel-5-3"] == [1.58] and effects["kernel-p2-5-3"] == [1.13] and effects["kernel-7-5"] == [0.61]
    assert effects["kernel-vs-depth-10"] == [1.59] and effects["kernel-vs-depth-24"] == [0.72]
    assert effects["batchnorm"] == [1.44] and effects["clipping"] == [9.55] and effects["erasing"] == [0.64]
    assert effects["mixup"] == [0.04] and effects["weight-decay"] == [0.15] and effects["gelu"] == [0.37]
    assert effects["patch-monotone"] == [0.88, 2.39, 7.04]
    assert effects["randaug"] == [3.02] and effects["scaling"] == [9.64]
    assert effects["residual-eq3"] == [1.10] and effects["residual-none"] == [0.31]
    assert effects["kernel-patch"] == [0.45]  # (95.19 − 93.61) − (95.21 − 94.08)
    assert effects["depth-256"] == [0.35, 0.79, 2.23, -0.07]  # 256/20 is in, as "no better than 256/16"


def test_claims_say_what_the_paper_says():
    kinds = {c.id: [p.kind for p in c.parts] for c in claims.CLAIMS}
    assert kinds["gelu"] == ["marginal"]  # "the choice of ReLU vs. GELU was not important": equivalence
    assert kinds["kernel-7-5"] == ["greater"]  # "further to 7 an additional 0.61%": a gain
    assert kinds["mixup"] == kinds["erasing"] == kinds["clipping"] == ["two_sided"]  # rows only
    assert kinds["residual-none"] == ["marginal"] and kinds["residual-eq3"] == ["greater"]
    sources = {c.id: c.source for c in claims.CLAIMS}
    assert "was not important on CIFAR-10" in sources["gelu"] and "0.61%" in sources["kernel-7-5"]
    assert sources["mixup"].startswith("rows only") and "around 1%" in sources["batchnorm"]
    assert "around 1%" in {c.id: c.note for c in claims.CLAIMS}["batchnorm"]
    assert "only a 0.31% decrease" in sources["residual-none"] and "slower" in sources["converge-layernorm"]
    metrics = {c.id: {p.metric for p in c.parts} for c in claims.CLAIMS}
    assert {i for i, m in metrics.items() if m == {"converge"}} == {"converge-depth", "converge-width",
                                                                    "converge-layernorm"}


def test_the_papers_own_rows_satisfy_every_accuracy_claim():
    """Fed the paper's numbers as exact 'runs' (std 0), every claim on accuracy holds: directions and margins are right."""
    import pandas as pd

    tab = pd.DataFrame([{"table": r.table, "section": r.section, "label": r.label, "h": r.h, "d": r.d, "p": r.p,
                         "k": r.k, "wd": r.wd, "mean": r.acc, "std": 0.0, "n": 2, "epochs": 200, "lr": 0.01,
                         "batch_size": 64, "status": "", "run_ids": (f"{i}a", f"{i}b"), "values": (r.acc, r.acc),
                         "seeds": (0, 1)}
                        for i, r in enumerate(paper.ROWS)])
    # the Table 7 baseline and Table 8's 256/8 k9 row are one configuration: one set of runs
    base = tab.index[tab["label"] == "Baseline"][0]
    for i in tab.index[(tab["section"] == "kernel") & (tab["k"] == 9)]:
        tab.at[i, "run_ids"] = tab.at[base, "run_ids"]
    accuracy = tuple(c for c in claims.CLAIMS if all(p.metric == "acc" for p in c.parts))
    verdicts = {f.claim.id: f.verdict for f in findings.evaluate(tab, accuracy)}
    assert len(verdicts) == 22 and set(verdicts.values()) == {findings.HOLDS}, verdicts


def test_a_reference_to_no_row_fails_at_definition():
    with pytest.raises(ValueError, match="matches 0 paper rows"):
        claims.Comparison("k4", claims.Ref("kernel", k=4), claims.Ref("kernel", k=3), "greater")
    with pytest.raises(ValueError, match="matches 7 paper rows"):
        claims.Ref("kernel").resolve()
    with pytest.raises(ValueError, match="needs both c and d"):
        claims.Comparison("x", claims.Ref("kernel", k=5), claims.Ref("kernel", k=3), "greater", c=claims.Ref("kernel", k=7))


# ---------------------------------------------------------------------- the statistics
def arms(a, b, seeds_a=(0, 1, 2), seeds_b=(0, 1, 2)):
    return [stats.Arm(1.0, tuple(a), tuple(seeds_a)), stats.Arm(-1.0, tuple(b), tuple(seeds_b))]


def test_welch_against_a_hand_computation():
    # a: 95.5, 95.9, 96.1 (mean 95.83333, s 0.305505); b: 92.5, 93.5 (mean 93.0, s 0.707107)
    va, vb = 0.305505 ** 2 / 3, 0.707107 ** 2 / 2  # 0.0311111, 0.25
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)  # 1.25466: Welch–Satterthwaite by hand
    assert df == pytest.approx(1.25466, abs=1e-4)
    test = stats.test_contrast(arms((95.5, 95.9, 96.1), (92.5, 93.5), seeds_b=(0, 1)))
    assert test.method == "Welch" and test.df == pytest.approx(df, rel=1e-5)
    from scipy import stats as st

    half = st.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (test.effect, test.low, test.high) == pytest.approx((2.833333, 2.833333 - half, 2.833333 + half), abs=1e-5)
    # equal n and s, different seeds: df = 2(n − 1) and the textbook quantile
    test = stats.test_contrast(arms((0.8, 1.0, 1.2), (-0.2, 0.0, 0.2), seeds_b=(3, 4, 5)))
    assert (test.effect, test.low, test.high, test.df) == pytest.approx((1.0, 1 - WELCH, 1 + WELCH, 4.0), abs=1e-6)


def test_paired_by_seed_against_a_hand_computation():
    """Same seeds on both rows: the per-seed differences are tested, and pairing changes the interval."""
    a, b = (95.6, 95.8, 96.0), (94.5, 94.7, 94.3)  # differences 1.1, 1.1, 1.7: mean 1.3, sd √0.12
    test = stats.test_contrast(arms(a, b))
    assert test.method == "paired" and test.df == 2 and test.se == pytest.approx(0.2)
    assert (test.low, test.high) == pytest.approx((1.3 - PAIRED, 1.3 + PAIRED), abs=1e-5)
    from scipy import stats as st

    assert st.ttest_rel(a, b).confidence_interval(0.95).low == pytest.approx(test.low)  # = scipy's paired t
    # rows that move together by seed: pairing removes the shared seed noise that Welch counts
    together = stats.test_contrast(arms((95.0, 96.0, 97.0), (94.0, 95.1, 95.9)))
    apart = stats.test_contrast(arms((95.0, 96.0, 97.0), (94.0, 95.1, 95.9), seeds_b=(3, 4, 5)))
    assert together.high - together.low < 0.25 * (apart.high - apart.low)


def test_interaction_by_hand():
    four = [stats.Arm(w, tuple(m + o for o in (-0.2, 0.0, 0.2)), seeds)
            for w, m, seeds in ((1, 95.5, (3, 4, 5)), (-1, 93.5, (0, 1, 2)), (-1, 95.0, (0, 1, 2)), (1, 94.0, (0, 1, 2)))]
    test = stats.test_contrast(four)
    assert test.method == "Welch" and test.df == pytest.approx(8.0)
    assert (test.effect, test.low, test.high) == pytest.approx((1.0, 1 - INTERACTION, 1 + INTERACTION), abs=1e-5)


@pytest.mark.parametrize("kind, low, high, by, sign, verdict", [
    ("greater", 0.01, 2.0, 0.0, 1, "holds"), ("greater", -0.01, 2.0, 0.0, 1, "inconclusive"),
    ("greater", 0.0, 2.0, 0.0, 1, "inconclusive"),  # touching the line decides nothing
    ("greater", -2.0, -0.01, 0.0, 1, "contradicted"), ("greater", 3.1, 4.0, 3.0, 1, "holds"),
    ("greater", 2.0, 2.9, 3.0, 1, "contradicted"), ("greater", 2.9, 3.1, 3.0, 1, "inconclusive"),
    ("two_sided", 0.1, 0.3, 0.0, 1, "holds"), ("two_sided", 0.1, 0.3, 0.0, -1, "contradicted"),
    ("two_sided", -0.3, -0.1, 0.0, -1, "holds"), ("two_sided", -0.1, 0.3, 0.0, 1, "inconclusive"),
    ("marginal", -0.49, 0.49, 0.0, 1, "holds"), ("marginal", -0.2, 0.6, 0.0, 1, "inconclusive"),
    ("marginal", 0.51, 1.0, 0.0, 1, "contradicted"), ("marginal", -1.0, -0.51, 0.0, 1, "contradicted"),
])
def test_decide(kind, low, high, by, sign, verdict):
    assert stats.decide(kind, low, high, by, 0.5, sign) == verdict


def test_decision_p_agrees_with_the_interval_and_holm_steps_down():
    test = stats.test_contrast(arms((95.6, 95.8, 96.0), (94.5, 94.7, 94.3)))  # 1.3 [0.44, 2.16]
    p = stats.decision_p("greater", test, "holds")
    assert p < stats.ALPHA and stats.decision_p("greater", test, "holds", by=0.44) == pytest.approx(0.025, abs=2e-3)
    assert stats.decision_p("marginal", test, "contradicted") > stats.ALPHA  # low 0.44 < 0.5: not outside
    # Holm: sorted p against α/m, α/(m−1), ...: 0.001 < 0.025/4; 0.007 < 0.025/3; 0.02 > 0.025/2 stops
    assert stats.holm([0.02, 0.001, 0.5, 0.007]) == [False, True, False, True]


def test_seeds_to_decide_by_hand():
    # Welch, s = 0.2 per row, effect 0.2 against ±0.5 (distance 0.3): n = 4 gives t(6)·0.2·√(2/4) = 0.3461,
    # n = 5 gives t(8)·0.2·√(2/5) = 0.2917 < 0.3
    test = stats.test_contrast(arms((95.6, 95.8, 96.0), (95.4, 95.6, 95.8), seeds_b=(3, 4, 5)))
    assert stats.seeds_to_decide("marginal", test, (1.0, -1.0)) == 5
    # paired, sd √0.12, effect 0.2 against ±0.5: n = 7 gives t(6)·√0.12/√7 = 0.3204, n = 8 gives 0.2896
    test = stats.test_contrast(arms((95.4, 95.6, 95.8), (95.6, 95.2, 95.4)))  # differences −0.2, 0.4, 0.4
    assert test.method == "paired" and stats.seeds_to_decide("marginal", test, (1.0, -1.0)) == 8
    test = stats.test_contrast(arms((1.0, 2.0, 3.0), (2.0, 1.0, 3.0)))  # effect 0: on the line
    assert stats.seeds_to_decide("greater", test, (1.0, -1.0)) is None


def test_combine():
    H, C, I, S, R, N, T = (findings.HOLDS, findings.CONTRADICTED, findings.INCONCLUSIVE, findings.NEEDS_SEEDS,
                           findings.NOT_RUN, findings.NOT_COMPARABLE, findings.NOT_TESTABLE)
    assert findings.combine([H, H, H]) == H
    assert findings.combine([H, R, C]) == C  # one contradiction decides
    assert findings.combine([H, I, S]) == S and findings.combine([I, N, R]) == R and findings.combine([H, I]) == I
    assert findings.combine([H, T, I]) == T


# ---------------------------------------------------------------------- each verdict, hand-computed
def test_holds(result):
    (part,) = claim(result, "batchnorm").parts
    assert_interval(part, 95.8 - 94.5, "holds")  # 1.3 [0.439, 2.161] > 0, paired
    (part,) = claim(result, "scaling").parts
    assert_interval(part, 95.8 - 90.0, "holds")  # 5.8 [4.94, 6.66] > 3
    (part,) = claim(result, "kernel-5-3").parts
    assert_interval(part, 95.5 - 93.5, "holds", "Welch")  # k5 at seeds 3-5: 2.0 [1.547, 2.453]
    assert claim(result, "batchnorm").verdict == "holds"


def test_contradicted(result):
    (part,) = claim(result, "erasing").parts  # rows only: two-sided, the rows say a loss of 0.64
    assert_interval(part, 95.8 - 97.0, "contradicted")  # −1.2 [−2.061, −0.339] excludes 0 on the other side
    assert findings.versus_paper(part) == "opposite sign"
    d12_d8, d8_d4 = claim(result, "depth-128").parts
    assert_interval(d12_d8, -1.0, "contradicted")
    assert_interval(d8_d4, 2.0, "holds")
    assert claim(result, "depth-128").verdict == "contradicted"  # one contradicted pair decides


def test_inconclusive_says_how_many_seeds_would_decide(result):
    (part,) = claim(result, "randaug").parts
    assert_interval(part, 95.8 - 92.9, "inconclusive")  # 2.9 [2.039, 3.761] straddles 3
    (part,) = claim(result, "gelu").parts  # equivalence, Welch (ReLU at seeds 3-5)
    assert_interval(part, 0.2, "inconclusive", "Welch")  # [−0.253, 0.653] pokes out of ±0.5
    assert part.seeds_needed == 5 and "~5 seeds per row would decide" in findings.verdict_cell(part)
    (part,) = claim(result, "residual-none").parts
    assert_interval(part, 0.2, "inconclusive") and part.seeds_needed == 8
    (part,) = claim(result, "mixup").parts  # rows only, two-sided: 0.0 ± 0.453 sits on the line
    assert_interval(part, 0.0, "inconclusive", "Welch")
    assert part.seeds_needed is None and "no seed count" in findings.verdict_cell(part)


def test_marginal(result):
    k7, k9, k11 = claim(result, "kernel-p2-beyond-5").parts
    assert_interval(k7, 95.1 - 95.0, "inconclusive")  # 0.1 ± 0.861 pokes out of ±0.5
    assert_interval(k9, 94.8 - 95.0, "inconclusive")
    assert_interval(k11, 1.5, "contradicted")  # [0.639, 2.361] entirely above 0.5
    assert claim(result, "kernel-p2-beyond-5").verdict == "contradicted"


def test_interaction(result):
    (part,) = claim(result, "kernel-patch").parts  # (95.5 − 93.5) − (95.0 − 94.0)
    assert (part.verdict, part.method, len(part.sides)) == ("holds", "Welch", 4)
    assert (part.effect, part.low, part.high) == pytest.approx((1.0, 1 - INTERACTION, 1 + INTERACTION), abs=1e-5)


def test_identical_arms_are_not_testable(result):
    (part,) = claim(result, "clipping").parts
    assert (part.verdict, part.why) == ("not testable", "identical final weights, 3 seeds")
    assert math.isnan(part.low) and findings.verdict_cell(part) == "not testable (identical final weights, 3 seeds)"


def test_identical_epoch_curves_are_not_testable_without_weight_hashes():
    side = findings.Side("x", 95.0, 0.2, 2, 8, 0.01, 128, "", "", ("r1", "r2"), (95.0, 95.2), (0, 1),
                         (None, None), ("c0", "c1"))
    other = dataclasses.replace(side, run_ids=("r3", "r4"))
    part = findings.compare(claims.CLAIMS[0].parts[0], side, other)
    assert (part.verdict, part.why) == ("not testable", "identical epoch curves, 2 seeds")
    different = dataclasses.replace(other, curves=("c0", "c9"))
    assert findings.compare(claims.CLAIMS[0].parts[0], side, different).verdict != "not testable"


def test_needs_two_seeds_shows_the_point_effect(result):
    (part,) = claim(result, "residual-eq3").parts
    assert (part.verdict, part.a.n, part.b.n) == ("needs ≥2 seeds", 3, 1)
    assert part.effect == pytest.approx(95.8 - 94.0) and math.isnan(part.low)
    (part,) = claim(result, "kernel-7-5").parts  # one seed against three
    assert (part.verdict, part.effect) == ("needs ≥2 seeds", pytest.approx(95.6 - 95.5))


def test_not_run_names_the_missing_row(result):
    (part,) = claim(result, "weight-decay").parts
    assert part.verdict == "not run" and part.why == "256/8 p1 k9 wd 1e-2: running 3/200"
    (part,) = claim(result, "kernel-vs-depth-24").parts
    assert part.verdict == "not run" and part.why == "256/24 p1 k3 wd 0: pending"
    assert claim(result, "kernel-beyond-7").verdict == "not run"
    assert claim(result, "depth-256").parts[-1].why == "256/20 p1 k8 wd 0: pending"


def test_other_budget_is_not_comparable(result):
    (part,) = claim(result, "kernel-vs-depth-10").parts
    assert (part.verdict, part.budget) == ("not comparable", "epochs 200 vs 50")
    assert math.isnan(part.effect)


def test_same_runs_on_both_sides_are_not_comparable():
    side = findings.Side("x", 95.0, 0.2, 3, 8, 0.01, 128, "", "64/4 p2 k9", ("r1", "r2", "r3"))
    part = findings.compare(claims.CLAIMS[0].parts[0], side, side)
    assert (part.verdict, part.why) == ("not comparable", "the same runs stand for both rows")


def test_monotone_chains(result):
    patch = claim(result, "patch-monotone")
    for part, effect in zip(patch.parts, (95.8 - 94.8, 94.8 - 93.0, 93.0 - 86.0)):
        assert_interval(part, effect, "holds")
    assert patch.verdict == "holds"
    parts = claim(result, "depth-256").parts
    assert [p.verdict for p in parts] == ["inconclusive", "holds", "holds", "not run"]  # d20 not run
    assert claim(result, "depth-256").verdict == "not run"
    assert claim(result, "width").verdict == "holds"
    assert sum(result.counts.values()) == len(claims.CLAIMS)


def test_family_wise_views(result):
    """Holm over every tested comparison; the pooled σ over every configuration with its Levene check."""
    tested = [p for f in result.findings for p in f.parts if math.isfinite(p.p)]
    rejected = stats.holm([p.p for p in tested])
    assert [p.holm for p in tested] == [r if p.verdict in ("holds", "contradicted") else None
                                        for r, p in zip(rejected, tested)]
    assert claim(result, "batchnorm").parts[0].holm is False  # p ≈ 0.012 for 1.3 ± 0.2 (t, df 2): chance at m = 29
    assert claim(result, "kernel-5-3").holm is True  # Welch 2.0 ± 0.163 (df 4): p ≈ 1e-4
    levene_p, sigma, df = result.pooled
    assert sigma == pytest.approx(0.2) and levene_p > 0.05  # every row's seeds have sd 0.2 exactly
    assert claim(result, "gelu").parts[0].pooled == "inconclusive"
    text = "\n".join(findings.family_lines(result))
    assert "survive Holm's correction" in text and "Levene" in text


def test_convergence_from_epoch_curves():
    import pandas as pd

    curve = pd.DataFrame({"epoch": [1, 2, 3, 4], "test_acc": [40.0, 50.0, 55.0, 60.0]})
    # 90% of 60 = 54: reached between epoch 2 (50) and 3 (55), at 2 + 4/5
    assert collect.epochs_to_fraction(curve, 60.0, 0.9) == pytest.approx(2.8)
    # reached within the first epoch: linear from chance (10%) at epoch 0
    assert collect.epochs_to_fraction(curve.assign(test_acc=[58.0, 59.0, 59.5, 60.0]), 60.0, 0.9) == pytest.approx(44 / 48)


# ---------------------------------------------------------------------- formats and the CLI
def test_markdown_matches_golden_file(study, cli):
    out = cli("findings", "--results", study, "--format", "md")
    assert out.exit_code == 0, out.output
    if os.environ.get("CMX_UPDATE_GOLDEN"):
        GOLDEN.write_text(out.stdout)
    assert out.stdout == GOLDEN.read_text()


def test_csv_and_json(study, cli):
    import io

    import pandas as pd

    out = cli("findings", "--results", study, "--format", "csv")
    assert out.exit_code == 0, out.output
    frame = pd.read_csv(io.StringIO(out.stdout))
    assert len(frame) == sum(len(c.parts) for c in claims.CLAIMS)
    bn = frame[frame["claim"] == "batchnorm"].iloc[0]
    assert (bn["verdict"], bn["method"], bn["epochs"], bn["lr"], bn["batch_size"]) == ("holds", "paired", 200, 0.01, 64)
    assert bn["ci_low"] == pytest.approx(1.3 - PAIRED, abs=1e-4)
    out = cli("findings", "--results", study, "--format", "json")
    data = json.loads(out.stdout)
    assert data["margin"] == 0.5 and data["counts"]["not testable"] == 1 and data["pooled"]["sigma"] == pytest.approx(0.2)
    (gelu,) = [c for c in data["claims"] if c["id"] == "gelu"]
    assert gelu["verdict"] == "inconclusive" and gelu["comparisons"][0]["effect"] == pytest.approx(0.2)
    assert gelu["comparisons"][0]["seeds_needed"] == 5 and gelu["comparisons"][0]["method"] == "Welch"


def test_terminal_table(study, cli):
    out = cli("findings", "--results", study)
    assert out.exit_code == 0, out.output
    assert "Findings: do the paper's conclusions hold" in out.stdout
    for word in ("holds", "contradicted", "inconclusive", "needs ≥2 seeds", "not run", "not comparable", "not testable"):
        assert word in out.stdout


def test_fixed_epochs_retabulates_every_row(study, cli):
    data = json.loads(cli("findings", "--results", study, "--epochs", "50", "--format", "json").stdout)
    (kvd,) = [c for c in data["claims"] if c["id"] == "kernel-vs-depth-10"]
    assert kvd["verdict"] == "not run" and kvd["comparisons"][0]["why"] == "256/8 p1 k9 wd 0: pending"


def test_report_has_the_findings(study, cli):
    assert cli("report", "--results", study).exit_code == 0
    text = (study / "REPORT.md").read_text()
    assert "## Findings: do the paper's conclusions hold in our runs?" in text
    body = GOLDEN.read_text().split("\n", 1)[1].split("## Where each claim comes from")[0]
    assert body in text  # the same header and table as `cmx findings`, one heading level down
    assert "### Where each claim comes from, and whether it may change at full scale" in text


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "--format must be one of table|md|csv|json"),
    (["--metric", "mean"], "--metric must be one of final|best"),
    (["--epochs", "0"], "--epochs must be ≥ 1"),
])
def test_bad_options_are_user_errors(study, cli, args, message):
    out = cli("findings", *args, "--results", study)
    assert isinstance(out.exception, UserError) and message in str(out.exception)


def test_exit_code_2_on_bad_format_and_missing_results(tmp_path, capsys):
    make_run(tmp_path, test_acc=95.0)
    assert main(["findings", "--results", str(tmp_path), "--format", "xml"]) == 2
    assert "cmx: error: --format must be one of table|md|csv|json" in capsys.readouterr().err
    assert main(["findings", "--results", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_stand_in_runs_are_named_when_tabulate_has_them(study):
    """A scaled-down study's runs stand for paper rows (tabulate's `stand_in` column): say which ran."""
    tab = table.tabulate(collect.load_runs(study), "cifar10")
    tab["stand_in"] = ["" if n == 0 else f"{h // 4}/{d // 2} p{2 * p} k{k}"
                       for n, h, d, p, k in zip(tab["n"], tab["h"], tab["d"], tab["p"], tab["k"])]
    result = findings.Findings(findings.evaluate(tab), "cifar10", "final")
    text = findings.render(result, "md")
    assert "Stand-in runs (a vs b)" in text
    (bn,) = [r for r in findings.lines(result) if r["id"] == "batchnorm"]
    assert bn["stand_ins"] == "64/4 p2 k9 vs 64/4 p2 k9" and bn["verdict"] == "holds"
    assert findings.records(result)[0]["stand_in_a"] == "64/4 p2 k5"
