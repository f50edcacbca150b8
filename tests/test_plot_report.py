"""`cmx plot`, `cmx report` and `cmx runs` on fabricated results directories."""
from __future__ import annotations

import json
import warnings

import pytest

from cmx.analysis import collect, plot, table
from cmx.cli.analysis import format_seconds
from cmx.analysis.collect import SkippedRun
from cmx.errors import UserError

from fabricate import make_run, mini_study, small_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, small_study(root)


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 5000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE


# ---------------------------------------------------------------------- plots
def test_summary_plots_written(study, cli):
    root, _ = study
    result = cli("plot", "--results", root)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (root / "plots").glob("*.png"))
    assert names == sorted(plot.SUMMARY_FILES.values())
    for name in names:
        assert_png(root / "plots" / name)
        assert f"wrote {root / 'plots' / name}" in result.stdout


def test_summary_plots_with_no_runs_at_all(tmp_path):
    (tmp_path / "runs").mkdir()
    tables = table.build(collect.load_runs(tmp_path), "cifar10")
    for path in plot.summary_plots(tables, tmp_path / "plots"):
        assert_png(path)


def test_curves_by_id_prefix(study, cli):
    root, ids = study
    chosen = [ids["baseline"][0], ids["mixup"][0]]  # one finished, one still running
    result = cli("plot", "curves", chosen[0][:6], chosen[1], "--results", root)
    assert result.exit_code == 0, result.output
    assert_png(root / "plots" / plot.curves_filename(chosen))
    out = root / "elsewhere" / "c.png"
    assert cli("plot", "curves", chosen[0], "--out", out, "--results", root).exit_code == 0
    assert_png(out)


@pytest.mark.parametrize("args, message", [
    (["curves"], "needs at least one run id"),
    (["curves", "zzzz"], "run id 'zzzz' matches no run"),
    (["scatter"], "unknown plot 'scatter'"),
    (["summary", "abc"], "run ids and --out are only for"),
])
def test_plot_bad_input(study, cli, args, message):
    root, _ = study
    result = cli("plot", *args, "--results", root)
    assert isinstance(result.exception, UserError) and message in str(result.exception)


# ---------------------------------------------------------------------- report
def test_report_content(study, cli):
    root, ids = study
    result = cli("report", "--results", root)
    assert result.exit_code == 0, result.output
    text = (root / "REPORT.md").read_text()
    # 11 finished GPU runs of 3600 s + one CPU run of 7200 s; the running run is not counted
    assert "| cifar10 |   13 |   12 |       1 |           0 |      0 |       0 |     11.00 |      2.00 |" in text
    assert "### Table 7: Ablation of ConvMixer-256/8" in text and "### Table 8:" in text
    assert "| Baseline                 |     95.88 |   95.83 ± 0.31 | -0.05 |          ✓ | 3 |    200 |" in text
    for name in plot.SUMMARY_FILES.values():
        assert f"](plots/{name})" in text
        assert_png(root / "plots" / name)
    assert "- git commits: `abc1234` (11 runs), `abc1234 (dirty)` (1 run)" in text
    assert "- tree state at training (uncommitted changes to cmx): 11 clean, 1 dirty of 12 runs" in text
    assert "- cmx source hashes (sha256 of the package's .py files): `5ca1ab1e5ca1` (12 runs)" in text
    assert "- devices: `NVIDIA A100-SXM4-40GB` (11 runs), `cpu: AMD EPYC 7763 64-Core Processor` (1 run)" in text
    assert "- torch versions: `2.4.0` (12 runs)" in text
    assert "1 run directory was unreadable and skipped" in text and ids["broken"][0] in text


def test_report_counts_runs_without_a_commit_as_unknown(tmp_path, cli):
    """A run trained outside a git checkout has no commit and no tree state: neither is "clean"."""
    make_run(tmp_path, seed=0)
    make_run(tmp_path, seed=1, git_commit=None, git_dirty=None, source_sha256=None)
    assert cli("report", "--results", tmp_path).exit_code == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "- git commits: `abc1234` (1 run), `unknown` (1 run)" in text
    assert "- tree state at training (uncommitted changes to cmx): 1 clean, 1 unknown of 2 runs" in text
    assert "- cmx source hashes (sha256 of the package's .py files): `5ca1ab1e5ca1` (1 run), `unknown` (1 run)" in text


def test_report_out_writes_elsewhere_with_its_plots_beside_it(study, cli, tmp_path):
    """`cmx report --out docs/x.md`: how a study's outcome is committed (docs/mini-study.md)."""
    root, _ = study
    out = tmp_path / "docs" / "x.md"
    result = cli("report", "--results", root, "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "### Table 7: Ablation of ConvMixer-256/8" in text and "## Findings" in text
    for name in plot.SUMMARY_FILES.values():
        assert f"](x-plots/{name})" in text
        assert_png(tmp_path / "docs" / "x-plots" / name)


def test_report_with_no_finished_runs(tmp_path, cli):
    make_run(tmp_path, state="running", epoch=5)
    assert cli("report", "--results", tmp_path).exit_code == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "No finished runs yet." in text and "running 5/200" in text


# ---------------------------------------------------------------------- runs
def test_runs_table_lists_every_readable_run(study, cli):
    root, ids = study
    result = cli("runs", "--results", root)
    assert result.exit_code == 0, result.output
    for role, run_ids in ids.items():
        for run_id in run_ids:
            assert (run_id in result.stdout) == (role != "broken")
    assert "warning: skipping" in result.stderr
    assert "37/200" in result.stdout and "2h 00m" in result.stdout


def runs_json(cli, root, *args) -> list[dict]:
    result = cli("runs", "--format", "json", "--results", root, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_runs_filters(study, cli):
    root, ids = study
    assert [r["run_id"] for r in runs_json(cli, root, "--status", "running")] == ids["mixup"]
    assert sorted(r["run_id"] for r in runs_json(cli, root, "--where", "k=5")) == sorted(ids["k5"])
    both = runs_json(cli, root, "--where", "k=5", "--where", "epochs=50")
    assert [r["run_id"] for r in both] == [ids["k5"][1]]
    assert [r["run_id"] for r in runs_json(cli, root, "--where", "scaling=false")] == sorted(ids["scaling"])
    assert [r["run_id"] for r in runs_json(cli, root, "--where", "lr=2e-2")] == ids["erasing"]
    assert len(runs_json(cli, root, "--status", "done", "--status", "running")) == 12 + 1
    assert runs_json(cli, root, "--dataset", "custom-x") == []
    record = runs_json(cli, root, "--where", "h=512")[0]
    assert (record["state"], record["test_acc"], record["wall_s"], record["device"]) == ("done", 96.5, 7200.0, "cpu")


def test_runs_csv(study, cli):
    root, _ = study
    lines = cli("runs", "--format", "csv", "--status", "done", "--results", root).stdout.splitlines()
    assert lines[0].split(",")[:3] == ["run_id", "dataset", "state"] and len(lines) == 1 + 12


@pytest.mark.parametrize("args, message", [
    (["--where", "colour=red"], "--where expects key=value"),
    (["--where", "k"], "--where expects key=value"),
    (["--where", "k=nine"], "expects a number"),
    (["--where", "mixup=maybe"], "expects true or false"),
    (["--status", "finished"], "--status must be one of"),
    (["--format", "yaml"], "--format must be one of table|csv|json"),
])
def test_runs_bad_input(study, cli, args, message):
    root, _ = study
    result = cli("runs", *args, "--results", root)
    assert isinstance(result.exception, UserError) and message in str(result.exception)


def test_format_seconds():
    assert [format_seconds(s) for s in (5, 750, 3725, float("nan"), None)] == ["5s", "12m 30s", "1h 02m", "", ""]


def test_device_type():
    assert collect.device_type("auto", {"device": "cuda", "device_name": "whatever"}) == "gpu"
    assert collect.device_type("auto", {"device": "cpu", "device_name": "cpu: Intel Xeon"}) == "cpu"
    assert collect.device_type("auto", {"device_name": "NVIDIA H100 80GB HBM3"}) == "gpu"
    assert collect.device_type("auto", {"device_name": "Tesla V100-SXM2-16GB"}) == "gpu"
    assert collect.device_type("auto", {"device_name": "cpu"}) == "cpu"
    assert collect.device_type("auto", {"device_name": "AMD EPYC 7763 64-Core Processor"}) == "cpu"
    assert collect.device_type("cuda", {}) == "gpu"


def test_load_runs_warns_once_per_broken_dir(study):
    root, ids = study
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = collect.load_runs(root)
    skipped = [w for w in caught if issubclass(w.category, SkippedRun)]
    assert len(skipped) == 1 and ids["broken"][0] in str(skipped[0].message)
    assert len(runs) == 13


# ---------------------------------------------------------------------- a scaled study: stand-ins said as such
@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    mini_study(root)
    runs = collect.load_runs(root)
    return root, runs, table.build(runs, "cifar10")


def test_stand_in_plots_show_effects_and_name_the_trained_models(scaled):
    _, _, tables = scaled
    fig = plot.kernel_figure(tables.tab, "sub")
    ax = fig.axes[0]
    assert "ours 64/4 p2, 64/4 p4" in ax.get_title() and "relative to k = 9" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert "ours: 64/4 p2 (for p = 1)" in labels and "ours: 64/4 p4 (for p = 2)" in labels
    assert ax.get_ylabel() == "accuracy − the series' k = 9 row (points)"
    fig = plot.params_figure(tables.tab, "sub")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "ours: 64/d p2 (for h = 256)" in ax.get_legend_handles_labels()[1]
    k9 = tables.tab[(tables.tab["section"] == "width_depth") & (tables.tab["h"] == 256)]
    xs = {round(x) for line in ax.get_lines() for x in line.get_xdata()}
    assert set(k9["params_trained_k"].astype(int)) <= xs  # ours at the parameters we trained (19k-87k)
    fig = plot.ablation_figure(tables.tab, "sub")
    ax = fig.axes[0]
    assert "ablation − baseline, ours (64/4 p2) beside the paper's" in ax.get_title()
    assert len(ax.get_yticklabels()) == 9  # every ablation, the baseline is the zero line


def test_report_says_what_was_trained_and_is_deterministic(scaled, tmp_path):
    root, runs, tables = scaled
    from cmx.analysis import report

    first = report.write_report(root, runs, tables, tmp_path / "a" / "r.md").read_text()
    again = report.write_report(root, collect.load_runs(root), tables, tmp_path / "b" / "r.md").read_text()
    assert first == again and "Generated" in first and ":" not in first.split("\n")[2][:40]  # no date or time
    acc = runs["test_acc"].median() / 100
    se = 100 * (acc * (1 - acc) / 2000) ** 0.5  # binomial error of one model on 2,000 test images
    assert f"10,000 training and 2,000 test images" in first and f"standard error of {se:.2f} points" in first
    assert "**width ×1/4, depth ×1/2, patch ×2** (33 rows); width ×1/4, depth ×4/5, patch ×2 for 256/10 p1 k3 wd 0" in first
    assert "the models trained have 7k–89k parameters" in first
    assert "| Baseline                 |     95.88 |" in first and "n/a §" in first and "✗" not in first
