"""`cmx findings`: the claims resolve to the paper's rows, each verdict on hand-computed numbers, formats.

The fabricated study (fabricate.findings_study) puts three seeds at mean ± 0.2 on most rows, so every
comparison between two of them has the same hand-computed Welch interval: effect ± HALF (df = 4).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from cmx import paper
from cmx.analysis import claims, collect, findings, table
from cmx.cli.app import main
from cmx.errors import UserError

from fabricate import findings_study, make_run

GOLDEN = Path(__file__).parent / "golden" / "findings_small.md"
# Welch by hand for two rows of n = 3 with s = 0.2 each: v = s²/n = 0.04/3 per side,
# df = (2v)² / (2·v²/(n−1)) = 4 exactly, se = √(2v) = 0.1632993, t(0.975, 4) = 2.776445 (t table).
SE = math.sqrt(2 * 0.04 / 3)
HALF = 2.776445 * SE  # 0.453391


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


def assert_interval(part: findings.PartFinding, effect: float, verdict: str) -> None:
    assert part.verdict == verdict, (part.comparison.name, part.verdict)
    assert part.effect == pytest.approx(effect, abs=1e-9)
    assert part.low == pytest.approx(effect - HALF, abs=1e-5)
    assert part.high == pytest.approx(effect + HALF, abs=1e-5)
    assert part.df == pytest.approx(4.0)
    assert (part.a.n, part.b.n) == (3, 3)
    assert part.budget == "200 ep · lr 0.01 · batch 64"


# ---------------------------------------------------------------------- the claims as data
def test_every_claim_resolves_and_paper_effects_come_from_the_rows():
    by_id = {c.id: c for c in claims.CLAIMS}
    assert len(by_id) == len(claims.CLAIMS) >= 19  # ids are unique
    for c in claims.CLAIMS:
        assert c.source and c.parts
        for part in c.parts:
            a, b = part.a.resolve(), part.b.resolve()
            assert part.paper_effect == pytest.approx(a.acc - b.acc, abs=0.005)
    # the sizes the issue quotes, recomputed from cmx.paper
    effects = {c.id: [p.paper_effect for p in c.parts] for c in claims.CLAIMS}
    assert effects["kernel-5-3"] == [1.58] and effects["kernel-p2-5-3"] == [1.13]
    assert effects["kernel-vs-depth-10"] == [1.59] and effects["kernel-vs-depth-24"] == [0.72]
    assert effects["batchnorm"] == [1.44] and effects["clipping"] == [9.55] and effects["erasing"] == [0.64]
    assert effects["mixup"] == [0.04] and effects["weight-decay"] == [0.15]
    assert effects["patch-monotone"] == [0.88, 2.39, 7.04]
    assert effects["randaug"] == [3.02] and effects["scaling"] == [9.64]


def test_the_papers_own_rows_satisfy_every_claim():
    """Fed the paper's numbers as exact 'runs' (std 0), every claim holds: directions and margins are right."""
    import pandas as pd

    tab = pd.DataFrame([{"table": r.table, "section": r.section, "label": r.label, "h": r.h, "d": r.d, "p": r.p,
                         "k": r.k, "wd": r.wd, "mean": r.acc, "std": 0.0, "n": 2, "epochs": 200, "lr": 0.01,
                         "batch_size": 64, "status": "", "run_ids": (f"{i}a", f"{i}b")}
                        for i, r in enumerate(paper.ROWS)])
    # the Table 7 baseline and Table 8's 256/8 k9 row are one configuration: one set of runs
    base = tab.index[tab["label"] == "Baseline"][0]
    for i in tab.index[(tab["section"] == "kernel") & (tab["k"] == 9)]:
        tab.at[i, "run_ids"] = tab.at[base, "run_ids"]
    verdicts = {f.claim.id: f.verdict for f in findings.evaluate(tab)}
    assert set(verdicts.values()) == {findings.HOLDS}, verdicts


def test_a_reference_to_no_row_fails_at_definition():
    with pytest.raises(ValueError, match="matches 0 paper rows"):
        claims.Comparison("k4", claims.Ref("kernel", k=4), claims.Ref("kernel", k=3), "greater")
    with pytest.raises(ValueError, match="matches 7 paper rows"):
        claims.Ref("kernel").resolve()


# ---------------------------------------------------------------------- the statistics
def test_welch_interval_against_a_hand_computation():
    # a: 95.5, 95.9, 96.1 (mean 95.83333, s 0.305505); b: 92.5, 93.5 (mean 93.0, s 0.707107)
    va, vb = 0.305505 ** 2 / 3, 0.707107 ** 2 / 2  # 0.0311111, 0.25
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)  # 1.25466: Welch–Satterthwaite by hand
    assert df == pytest.approx(1.25466, abs=1e-4)
    effect, low, high, got_df = findings.welch_interval(95.833333, 0.305505, 3, 93.0, 0.707107, 2)
    assert got_df == pytest.approx(df, rel=1e-6)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (effect, low, high) == pytest.approx((2.833333, 2.833333 - half, 2.833333 + half), abs=1e-5)
    # equal n and s: df = 2(n − 1) and the textbook quantile
    assert findings.welch_interval(1.0, 0.2, 3, 0.0, 0.2, 3) == pytest.approx((1.0, 1 - HALF, 1 + HALF, 4.0), abs=1e-6)


@pytest.mark.parametrize("kind, low, high, by, verdict", [
    ("greater", 0.01, 2.0, 0.0, "holds"), ("greater", -0.01, 2.0, 0.0, "inconclusive"),
    ("greater", 0.0, 2.0, 0.0, "inconclusive"),  # touching the line decides nothing
    ("greater", -2.0, -0.01, 0.0, "contradicted"), ("greater", 3.1, 4.0, 3.0, "holds"),
    ("greater", 2.0, 2.9, 3.0, "contradicted"), ("greater", 2.9, 3.1, 3.0, "inconclusive"),
    ("at_least", -0.49, 0.3, 0.0, "holds"), ("at_least", -0.51, 0.3, 0.0, "inconclusive"),
    ("at_least", -1.0, -0.51, 0.0, "contradicted"),
    ("marginal", -0.49, 0.49, 0.0, "holds"), ("marginal", -0.2, 0.6, 0.0, "inconclusive"),
    ("marginal", 0.51, 1.0, 0.0, "contradicted"), ("marginal", -1.0, -0.51, 0.0, "contradicted"),
])
def test_decide(kind, low, high, by, verdict):
    assert findings.decide(kind, low, high, by) == verdict


def test_combine():
    H, C, I, S, R, N = (findings.HOLDS, findings.CONTRADICTED, findings.INCONCLUSIVE, findings.NEEDS_SEEDS,
                        findings.NOT_RUN, findings.NOT_COMPARABLE)
    assert findings.combine([H, H, H]) == H
    assert findings.combine([H, R, C]) == C  # one contradiction decides
    assert findings.combine([H, I, S]) == S and findings.combine([I, N, R]) == R and findings.combine([H, I]) == I


# ---------------------------------------------------------------------- each verdict, hand-computed
def test_holds(result):
    (part,) = claim(result, "batchnorm").parts
    assert_interval(part, 95.8 - 94.5, "holds")  # 1.3 [0.847, 1.753] > 0
    (part,) = claim(result, "scaling").parts
    assert_interval(part, 95.8 - 90.0, "holds")  # 5.8 [5.347, 6.253] > 3
    (part,) = claim(result, "mixup").parts
    assert_interval(part, 0.0, "holds")  # − mixup ≥ Baseline: low −0.453 > −0.5
    assert claim(result, "batchnorm").verdict == "holds"


def test_contradicted(result):
    (part,) = claim(result, "erasing").parts
    assert_interval(part, 95.8 - 96.5, "contradicted")  # −0.7 [−1.153, −0.247] < 0
    (part,) = claim(result, "gelu").parts
    assert_interval(part, 95.8 - 96.9, "contradicted")  # −1.1 [−1.553, −0.647] < −0.5
    assert claim(result, "gelu").verdict == "contradicted"


def test_inconclusive(result):
    (part,) = claim(result, "randaug").parts
    assert_interval(part, 95.8 - 92.9, "inconclusive")  # 2.9 [2.447, 3.353] straddles 3
    assert claim(result, "randaug").verdict == "inconclusive"


def test_marginal(result):
    k7, k9, k11 = claim(result, "kernel-p2-beyond-5").parts
    assert_interval(k7, 95.1 - 95.0, "inconclusive")  # 0.1 [−0.353, 0.553]: pokes out of ±0.5
    assert_interval(k9, 0.0, "holds")  # [−0.453, 0.453] inside ±0.5
    assert_interval(k11, 1.0, "contradicted")  # [0.547, 1.453] entirely above 0.5
    assert claim(result, "kernel-p2-beyond-5").verdict == "contradicted"


def test_needs_two_seeds_shows_the_point_effect(result):
    (part,) = claim(result, "clipping").parts
    assert (part.verdict, part.a.n, part.b.n) == ("needs ≥2 seeds", 3, 1)
    assert part.effect == pytest.approx(95.8 - 88.0) and math.isnan(part.low)
    (part,) = claim(result, "kernel-7-5").parts  # one seed on each side
    assert (part.verdict, part.effect) == ("needs ≥2 seeds", pytest.approx(0.4))


def test_not_run_names_the_missing_row(result):
    (part,) = claim(result, "weight-decay").parts
    assert part.verdict == "not run" and part.why == "256/8 p1 k9 wd 1e-2: running 3/200"
    (part,) = claim(result, "kernel-vs-depth-24").parts
    assert part.verdict == "not run" and part.why == "256/24 p1 k3 wd 0: pending"
    assert claim(result, "kernel-beyond-7").verdict == "not run"


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
    for part, effect in zip(patch.parts, (95.8 - 95.0, 95.0 - 93.0, 93.0 - 86.0)):
        assert_interval(part, effect, "holds")
    assert patch.verdict == "holds"
    d12_d8, d8_d4 = claim(result, "depth-128").parts
    assert_interval(d12_d8, -1.0, "contradicted")
    assert_interval(d8_d4, 2.0, "holds")
    assert claim(result, "depth-128").verdict == "contradicted"  # one contradicted pair decides
    parts = claim(result, "depth-256").parts
    assert [p.verdict for p in parts] == ["inconclusive", "holds", "holds"]  # d16 − d12 = 0.1 ± 0.453
    assert claim(result, "depth-256").verdict == "inconclusive"
    assert claim(result, "width").verdict == "holds"
    assert result.counts["holds"] == 6 and sum(result.counts.values()) == len(claims.CLAIMS)


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
    assert (bn["verdict"], bn["epochs"], bn["lr"], bn["batch_size"]) == ("holds", 200, 0.01, 64)
    assert bn["ci_low"] == pytest.approx(1.3 - HALF, abs=1e-4)
    out = cli("findings", "--results", study, "--format", "json")
    data = json.loads(out.stdout)
    assert data["margin"] == 0.5 and data["counts"]["contradicted"] == 4
    (gelu,) = [c for c in data["claims"] if c["id"] == "gelu"]
    assert gelu["verdict"] == "contradicted" and gelu["comparisons"][0]["effect"] == pytest.approx(-1.1)


def test_terminal_table(study, cli):
    out = cli("findings", "--results", study)
    assert out.exit_code == 0, out.output
    assert "Findings: do the paper's conclusions hold" in out.stdout
    for word in ("holds", "contradicted", "inconclusive", "needs ≥2 seeds", "not run", "not comparable"):
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
    assert "### Where each claim comes from" in text


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
