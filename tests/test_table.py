"""`cmx table` on fabricated results directories: matching, seed statistics, markers, formats, bad input."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import warnings
from pathlib import Path

import pandas as pd
import pytest

from cmx.analysis import collect, table
from cmx import paper
from cmx.analysis.collect import SkippedRun
from cmx.errors import UserError

from fabricate import corrupt, make_run, small_study

GOLDEN = Path(__file__).parent / "golden" / "table_small.md"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    ids = small_study(root)
    return root, ids


def load(root) -> pd.DataFrame:
    """load_runs without the expected warning about the fixture's broken run dir."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedRun)
        return collect.load_runs(root)


def md_rows(text: str) -> list[list[str]]:
    """The stripped cells of every markdown table row in `text` (separator rows excluded)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not line.startswith("|:") and "--:|" not in line]


def row(tab: pd.DataFrame, table_name: str, label: str = "", **config) -> dict:
    hits = tab[(tab["table"] == table_name) & (tab["label"] == label)]
    for key, value in config.items():
        hits = hits[hits[key] == value]
    assert len(hits) == 1, (table_name, label, config, len(hits))
    return hits.iloc[0].to_dict()


# ---------------------------------------------------------------------- the golden markdown
def test_markdown_matches_golden_file(study, cli):
    root, ids = study
    result = cli("table", "--all", "--results", root)
    assert result.exit_code == 0, result.output
    if os.environ.get("CMX_UPDATE_GOLDEN"):
        GOLDEN.write_text(result.stdout)
    assert result.stdout == GOLDEN.read_text()
    assert f"warning: skipping {root / 'runs' / ids['broken'][0]}: result.json is unreadable" in result.stderr


# ---------------------------------------------------------------------- seed statistics
def test_seed_aggregation_matches_hand_computed_numbers(study):
    root, ids = study
    tab = table.tabulate(load(root), "cifar10")
    base = row(tab, "table7", "Baseline")
    # seeds 95.5, 95.9, 96.1: mean 287.5/3, deviations -1/3, 1/15, 4/15 -> var 0.18667/2 = 0.093333
    assert base["n"] == 3
    assert base["mean"] == pytest.approx(95.833333, abs=1e-6)
    assert base["std"] == pytest.approx(0.305505, abs=1e-6)
    half = 4.302653 * 0.305505 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n) = 0.758951
    assert base["ci_low"] == pytest.approx(95.833333 - half, abs=1e-5)
    assert base["ci_high"] == pytest.approx(95.833333 + half, abs=1e-5)
    assert base["delta"] == pytest.approx(95.833333 - 95.88, abs=1e-6)
    assert set(base["run_ids"]) == set(ids["baseline"])
    randaug = row(tab, "table7", "- RandAug")
    assert (randaug["n"], randaug["mean"]) == (2, pytest.approx(93.0))
    assert randaug["std"] == pytest.approx(math.sqrt(0.5), abs=1e-9)
    # the Table 8 k=9 row and Table 7's Baseline are the same configuration: the same three runs
    k9 = row(tab, "table8", section="kernel", k=9)
    assert set(k9["run_ids"]) == set(base["run_ids"])


def test_best_metric_uses_best_test_acc(study):
    root, _ = study
    base = row(table.tabulate(load(root), "cifar10", metric="best"), "table7", "Baseline")
    assert base["mean"] == pytest.approx((95.6 + 96.0 + 96.2) / 3)


def test_reproduced_is_paper_inside_95_percent_t_interval(study):
    root, _ = study
    tab = table.tabulate(load(root), "cifar10")
    assert row(tab, "table7", "Baseline")["reproduced"] is True  # 95.88 in [95.074, 96.592]
    assert row(tab, "table7", "- RandAug")["reproduced"] is True  # 92.86 in 93.0 ± 6.353
    assert row(tab, "table7", "- Random Scaling")["reproduced"] is False  # 86.24 not in 90.1 ± 1.271
    assert row(tab, "table7", "GELU → ReLU")["reproduced"] is None  # n = 1: no interval
    # the interval is closed: a paper value exactly on the bound counts as reproduced
    edge = pd.DataFrame({"mean": [95.0], "paper_acc": [96.0], "n": [2], "ci_low": [94.0], "ci_high": [96.0]})
    assert table.finish(edge)["reproduced"].tolist() == [True]
    assert table.finish(edge.assign(ci_high=95.99))["reproduced"].tolist() == [False]


# ---------------------------------------------------------------------- status and markers
def test_pending_running_and_interrupted_rows(tmp_path):
    make_run(tmp_path, mixup=False, state="running", epoch=37)
    # a 'running' status from this host whose pid is dead: the process was killed -> interrupted
    make_run(tmp_path, erasing=False, state="running", epoch=12, host=socket.gethostname())
    make_run(tmp_path, clip=False, state="failed", epoch=3)
    tab = table.tabulate(collect.load_runs(tmp_path), "cifar10")
    assert row(tab, "table7", "- Mixup and CutMix")["status"] == "running 37/200"
    assert row(tab, "table7", "- Random Erasing")["status"] == "interrupted 12/200"
    assert row(tab, "table7", "- Gradient Norm Clipping")["status"] == "failed 3/200"
    assert row(tab, "table7", "Baseline")["status"] == "pending"
    text = table.render(table.build(collect.load_runs(tmp_path), "cifar10"), which="7")
    assert ["- Mixup and CutMix", "95.92", "running 37/200", "", "", "0", "200"] in md_rows(text)
    assert ["Baseline", "95.88", "pending", "", "", "0", ""] in md_rows(text)


def test_short_budget_is_marked_and_never_mixed(study, cli):
    root, _ = study
    tab = table.tabulate(load(root), "cifar10")
    relu = row(tab, "table7", "GELU → ReLU")  # only a 50-epoch run exists
    assert (relu["epochs"], relu["marks"], relu["mean"]) == (50, "*", 93.0)
    k5 = row(tab, "table8", section="kernel", k=5)  # 200 and 50 epochs: the 200-epoch run only, ‡
    assert (k5["epochs"], k5["n"], k5["mean"], k5["marks"], k5["n_hidden"]) == (200, 1, 95.3, "‡", 1)
    # --epochs 50 tabulates the 50-epoch runs; rows without one are pending at that budget
    at50 = table.tabulate(load(root), "cifar10", epochs=50)
    assert row(at50, "table8", section="kernel", k=5)["mean"] == 92.0
    assert row(at50, "table7", "Baseline")["status"] == "pending"
    result = cli("table", "--table", "8", "--epochs", "50", "--results", root)
    assert ["256", "8", "1", "5", "592", "592", "0", "95.19", "92.00*", "-3.19", "—", "1", "50"] in md_rows(result.stdout)
    assert "\\* trained for a different number of epochs than the paper's 200" in result.stdout


def test_other_learning_rate_is_marked_not_hidden(tmp_path):
    make_run(tmp_path, erasing=False, lr=0.02, batch_size=128, test_acc=94.0)
    tab = table.tabulate(collect.load_runs(tmp_path), "cifar10")
    erasing = row(tab, "table7", "- Random Erasing")
    assert (erasing["mean"], erasing["marks"], erasing["lr"], erasing["batch_size"]) == (94.0, "†", 0.02, 128)
    text = table.render(table.build(collect.load_runs(tmp_path), "cifar10"), which="7")
    assert "94.00†" in text and "- Random Erasing (lr 0.02, batch 128)" in text
    # once a paper-recipe run exists, the row uses it and says another run is left out
    make_run(tmp_path, erasing=False, test_acc=95.2)
    erasing = row(table.tabulate(collect.load_runs(tmp_path), "cifar10"), "table7", "- Random Erasing")
    assert (erasing["mean"], erasing["marks"]) == (95.2, "‡")


def test_runs_are_matched_by_config_not_directory_name(tmp_path):
    run_id = make_run(tmp_path, k=3, test_acc=93.5)
    shutil.move(tmp_path / "runs" / run_id, tmp_path / "runs" / "renamed-by-hand")
    tab = table.tabulate(collect.load_runs(tmp_path), "cifar10")
    assert row(tab, "table8", section="kernel", k=3)["mean"] == 93.5


def test_other_runs_only_with_all(study, cli):
    root, _ = study
    plain = cli("table", "--results", root).stdout
    assert "## Other runs" not in plain and "512/8" not in plain
    listed = cli("table", "--all", "--results", root).stdout
    assert ["512/8 p1 k9", "96.50", "1", "200", "0.01", "64", "no paper row"] in md_rows(listed)
    assert ["256/8 p1 k5 epochs=50", "92.00", "1", "50", "0.01", "64", "not tabulated (epochs or lr/batch size)"] \
        in md_rows(listed)


# ---------------------------------------------------------------------- unreadable run directories
@pytest.mark.parametrize("name, how", [
    ("config.json", "garbage"), ("config.json", "truncate"), ("config.json", "delete"),
    ("result.json", "truncate"), ("result.json", "garbage"),
])
def test_corrupt_finished_run_is_skipped_with_warning(tmp_path, cli, name, how):
    good = make_run(tmp_path, k=3, test_acc=93.5)
    bad = make_run(tmp_path, k=5, test_acc=95.0)
    corrupt(tmp_path, bad, name, how)
    if name == "config.json" and how == "delete":
        corrupt(tmp_path, bad, "result.json", "truncate")  # result.json would otherwise supply the config
    with pytest.warns(SkippedRun, match=bad):
        runs = collect.load_runs(tmp_path)
    assert runs["run_id"].tolist() == [good]
    assert runs.attrs["skipped"][0].startswith(str(tmp_path / "runs" / bad))
    result = cli("table", "--results", tmp_path)
    assert result.exit_code == 0
    assert f"warning: skipping {tmp_path / 'runs' / bad}" in result.stderr
    assert "93.50" in result.stdout


def test_half_written_unfinished_run(tmp_path):
    running = make_run(tmp_path, k=7, state="running", epoch=20)
    corrupt(tmp_path, running, "status.json", "truncate")  # no epoch count to trust: skip it
    other = make_run(tmp_path, k=11, state="running", epoch=30)
    corrupt(tmp_path, other, "epochs.csv", "truncate")  # a cut-off epochs.csv line is not fatal
    missing = make_run(tmp_path, d=9, test_acc=90.0)
    corrupt(tmp_path, missing, "config.json", "delete")  # result.json still carries the config
    with pytest.warns(SkippedRun, match="status.json is unreadable"):
        runs = collect.load_runs(tmp_path)
    assert sorted(runs["run_id"]) == sorted([other, missing])
    assert runs.set_index("run_id").loc[other, "epoch"] == 30
    assert collect.load_curve(tmp_path / "runs" / other)["epoch"].max() <= 30


def test_config_with_missing_or_wrong_fields_is_skipped(tmp_path):
    run_id = make_run(tmp_path, k=3)
    path = tmp_path / "runs" / run_id / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "k": "nine"}))
    with pytest.warns(SkippedRun, match="invalid config"):
        assert collect.load_runs(tmp_path).empty
    del cfg["k"]
    path.write_text(json.dumps(cfg))
    with pytest.warns(SkippedRun, match="lacks k"):
        assert collect.load_runs(tmp_path).empty


# ---------------------------------------------------------------------- datasets, formats, bad input
def test_dataset_choice_and_header(tmp_path, cli):
    make_run(tmp_path, dataset="cifar10-1a2b3c4d", test_acc=80.0)
    make_run(tmp_path, dataset="cifar10-1a2b3c4d", k=5, test_acc=81.0)
    out = cli("table", "--table", "7", "--results", tmp_path).stdout
    assert "Dataset: `cifar10-1a2b3c4d` (2 runs, 2 finished)." in out
    assert ["Baseline", "95.88", "80.00", "-15.88", "—", "1", "200"] in md_rows(out)
    make_run(tmp_path, dataset="cifar10", test_acc=95.0)
    out = cli("table", "--table", "7", "--results", tmp_path).stdout
    assert "Dataset: `cifar10` (1 runs, 1 finished)." in out
    assert "Other datasets present, not shown: `cifar10-1a2b3c4d` (2 runs)" in out
    out = cli("table", "--dataset", "cifar10-1a2b3c4d", "--results", tmp_path).stdout
    assert "Dataset: `cifar10-1a2b3c4d`" in out
    result = cli("table", "--dataset", "imagenet", "--results", tmp_path)
    assert isinstance(result.exception, UserError) and "datasets present" in str(result.exception)


def test_empty_results_dir_is_all_pending(tmp_path, cli):
    result = cli("table", "--results", tmp_path)
    assert result.exit_code == 0
    assert result.stdout.count("pending") == len(paper.ROWS)


def test_csv_and_latex(study, cli):
    root, _ = study
    frame = pd.read_csv(io.StringIO(cli("table", "--format", "csv", "--results", root).stdout))
    assert len(frame) == len(paper.ROWS)
    assert frame["table"].tolist()[:10] == ["table7"] * 10
    base = frame[frame["label"] == "Baseline"].iloc[0]
    assert (base["n"], round(base["mean"], 4), base["epochs"]) == (3, 95.8333, 200)
    latex = cli("table", "--format", "latex", "--table", "8", "--results", root).stdout
    assert latex.count(r"\begin{tabular}") == 1 and r"\multicolumn{13}{l}{\textit{Kernel adjustments}}" in latex
    assert r"95.83 $\pm$ 0.31 & -0.05 & \checkmark & 3 & 200 \\" in latex


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "--format must be one of markdown|csv|latex"),
    (["--table", "9"], "--table must be one of 7|8|all"),
    (["--metric", "mean"], "--metric must be one of final|best"),
    (["--epochs", "0"], "--epochs must be ≥ 1"),
])
def test_bad_options_are_user_errors(study, cli, args, message):
    root, _ = study
    result = cli("table", *args, "--results", root)
    assert isinstance(result.exception, UserError) and message in str(result.exception)


def test_missing_results_dir_is_a_user_error(tmp_path, cli):
    result = cli("table", "--results", tmp_path / "nope")
    assert isinstance(result.exception, UserError) and "does not exist" in str(result.exception)


def test_eq4_matches_the_paper_parameter_column():
    for prow in paper.rows("table8"):
        assert round(table.eq4_params(prow.h, prow.d, prow.p, prow.k) / 1000) == prow.params_k
