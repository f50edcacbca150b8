"""Sweep files → plans: the shipped YAML reproduces the paper's rows, bad YAML fails in one line, dry runs.

No training here (fast); executors are covered in test_executors.py.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cmx.cli.app import main
from cmx.config import RunConfig
from cmx.errors import UserError
from cmx.sweep.estimate import forward_flops, gpu_hours, project, run_flops
from cmx.paper import ABLATIONS
from cmx.sweep.plan import make_plan, parse_overrides, parse_seeds
from fabricate import make_run

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"
PAPER_CSV = Path(__file__).parents[2] / "shared" / "reference" / "paper_cifar10.csv"
PAPER = dict(epochs=200, batch_size=64, lr=0.01)
FILES = {  # sweep file → (paper section, runs)
    "table7": ("ablation", 10), "width_depth": ("width_depth", 8), "kernel": ("kernel", 7), "patch": ("patch", 3),
    "weight_decay": ("weight_decay", 5), "kernel_p2": ("kernel_p2", 5), "kernel_p2_wd": ("kernel_p2_wd", 5),
    "kernel_vs_depth": ("kernel_vs_depth", 2),
}


def paper_rows(section: str | None = None) -> list[dict]:
    if not PAPER_CSV.exists():
        pytest.skip(f"{PAPER_CSV} is absent (the shared reference data lives beside the repo)")
    with open(PAPER_CSV, newline="") as fh:
        return [r for r in csv.DictReader(fh) if section is None or r["section"] == section]


def paper_identity(row: dict) -> dict:
    """The identity (everything that changes learning) of the run that reproduces one CSV row."""
    changes = dict(h=int(row["h"]), d=int(row["d"]), p=int(row["p"]), k=int(row["k"]), wd=float(row["weight_decay"]))
    return RunConfig(**changes, **ABLATIONS.get(row["label"], {}), **PAPER, seed=0).identity("cifar10")


def plan(name: str, tmp_path: Path, **kw):
    return make_plan(SWEEPS / f"{name}.yaml", tmp_path / "results", **kw)


# ---------------------------------------------------------------------- the shipped sweep files
def test_the_mini_study_trains_seeds_0_and_1_of_everything_before_seed_2(tmp_path):
    """Plan order is training order: a half-trained study has two seeds of every row, and seed 2's time
    can be projected from them. The study includes the rows its claims rest on (residuals, 256/20)."""
    runs = make_plan(SWEEPS / "mini" / "study.yaml", tmp_path / "results").runs
    seeds = [r.config.seed for r in runs]
    assert len(runs) == 96 and seeds == sorted(seeds, key=lambda s: s == 2)  # 32 configurations × 3 seeds
    assert seeds.count(2) == 32 and all(r.config.epochs == 4 and r.config.batch_size == 128 for r in runs)
    rows = {role.row for r in runs for role in r.roles}
    assert {"table7:- Residual in Eq. 2", "table7:+ Residual in Eq. 3",
            "table8:width_depth:256/20 p1 k8 wd 0"} <= rows
    assert all(r.roles for r in runs)  # every run stands for a paper row


@pytest.mark.parametrize("name", list(FILES))
def test_each_sweep_file_reproduces_its_paper_rows_in_order(name, tmp_path):
    section, n = FILES[name]
    rows = paper_rows(section)
    runs = plan(name, tmp_path).runs
    assert len(runs) == n == len(rows)
    assert [r.config.identity("cifar10") for r in runs] == [paper_identity(row) for row in rows]
    if section in ("ablation", "kernel_vs_depth"):  # the rows the paper names carry its labels
        assert [r.label for r in runs] == [row["label"] for row in rows]
    assert all(r.state == "pending" and r.sweeps == [name] for r in runs)


def test_paper_yaml_covers_all_43_distinct_rows_and_trains_shared_ones_once(tmp_path):
    rows = paper_rows()
    assert len(rows) == 45
    p = plan("paper", tmp_path)
    assert p.n_variants == 45 and len(p.runs) == 43
    assert len({r.run_id for r in p.runs}) == 43
    want = {tuple(sorted(paper_identity(r).items())) for r in rows}
    got = {tuple(sorted(r.config.identity("cifar10").items())) for r in p.runs}
    assert got == want and len(want) == 43
    shared = {r.config.summary(): r.sweeps for r in p.runs if len(r.sweeps) > 1}
    assert shared == {"256/8 p1 k9 seed=0": ["table7", "kernel"], "256/8 p2 k9 seed=0": ["patch", "kernel_p2"]}
    baseline = next(r for r in p.runs if r.sweeps == ["table7", "kernel"])
    assert baseline.label == "Baseline"


def test_set_and_seeds_override_every_run(tmp_path):
    data = tmp_path / "mini"
    p = plan("table7", tmp_path, overrides=["epochs=10", f"data={data}", "batch-size=128", "wd=1e-2"], seeds=[0, 1, 2])
    assert len(p.runs) == 30
    assert {r.config.epochs for r in p.runs} == {10}
    assert {r.config.batch_size for r in p.runs} == {128}
    assert {r.config.wd for r in p.runs} == {0.01}
    assert {r.config.data for r in p.runs} == {str(data)}
    assert sorted(r.config.seed for r in p.runs) == [0] * 10 + [1] * 10 + [2] * 10
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    assert parse_overrides(["mixup=false", "lr=1e-3", "data=../shared/data/cifar10-mini"]) == {
        "mixup": (False, "--set mixup=false"), "lr": (0.001, "--set lr=1e-3"),
        "data": ("../shared/data/cifar10-mini", "--set data=../shared/data/cifar10-mini")}


def test_grid_runs_and_seeds_multiply_and_duplicates_share_a_run(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: mine\nbase: {h: 8, d: 1, epochs: 1}\nseeds: [3, 4]\n"
                 "runs:\n  - {label: a}\n  - {label: b, k: 5}\ngrid:\n  p: [2, 4]\n  k: [5, 7]\n")
    p = make_plan(f, tmp_path / "results")
    assert p.name == "mine" and p.n_variants == 2 * 4 * 2
    assert len(p.runs) == 8  # run b sets k=5, but the grid's k wins: b's points equal a's
    assert all(r.labels == ["a", "b"] for r in p.runs)
    assert {(r.config.p, r.config.k, r.config.seed) for r in p.runs} == {
        (p_, k, s) for p_ in (2, 4) for k in (5, 7) for s in (3, 4)}


def test_an_including_files_base_and_seeds_apply_to_the_included_runs(tmp_path):
    (tmp_path / "quick.yaml").write_text(f"include: [{SWEEPS / 'table7.yaml'}, {SWEEPS / 'kernel.yaml'}]\n"
                                         "base: {epochs: 10, batch-size: 128}\nseeds: [1, 2]\n")
    p = make_plan(tmp_path / "quick.yaml", tmp_path / "results")
    assert p.n_variants == 2 * (10 + 7) and len(p.runs) == 2 * 16  # no run of its own; baseline = k9 still
    assert {(r.config.epochs, r.config.batch_size) for r in p.runs} == {(10, 128)}
    assert {r.config.seed for r in p.runs} == {1, 2}
    assert {r.config.k for r in p.runs if r.sweeps == ["kernel"]} == {3, 5, 7, 11, 13, 15}


# ---------------------------------------------------------------------- bad sweep files: one line, exit 2
BAD = {
    "unknown_key": ("base:\n  epochs: 1\nruns:\n  - {k: 3}\n  - {kernal: 5}\n",
                    ["bad.yaml:5:", "unknown key 'kernal'", "did you mean 'k'"]),
    "bad_value": ("base:\n  epochs: 1\n  lr: -1\n", ["bad.yaml:3:", "lr must be a positive number"]),
    "bad_choice": ("base: {epochs: 1}\nruns:\n  - label: x\n    norm: group\n", ["bad.yaml:4:", "norm must be one of"]),
    "bad_grid_type": ("base: {epochs: 1}\ngrid:\n  k: 7\n", ["bad.yaml:3:", "grid 'k' must be a list"]),
    "grid_not_mapping": ("base: {epochs: 1}\ngrid: [3, 5]\n", ["bad.yaml:2:", "grid must be a mapping"]),
    "bad_grid_value": ("grid:\n  k: [3, five]\n", ["bad.yaml:2:", "k must be an integer"]),
    "malformed": ("base: {epochs: 1\nruns:\n  - {k: 3}\n", ["bad.yaml:", "not valid YAML"]),
    "top_level_setting": ("epochs: 10\nbase: {k: 3}\n",
                          ["bad.yaml:1:", "unknown top-level key 'epochs'", "under 'base'"]),
    "duplicate_key": ("base:\n  k: 3\n  k: 5\n", ["bad.yaml:3:", "duplicate key 'k'"]),
    "bad_seeds": ("base: {k: 3}\nseeds: [0, -1]\n", ["bad.yaml:2:", "seeds must be a list of integers"]),
    "runs_not_list": ("runs: {k: 3}\n", ["bad.yaml:1:", "runs must be a non-empty list"]),
    "missing_include": ("include: [nope.yaml]\n", ["bad.yaml:1:", "nope.yaml does not exist"]),
    "empty": ("", ["bad.yaml", "empty"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_files_exit_2_with_one_line_naming_file_line_and_key(case, tmp_path, capsys):
    text, expected = BAD[case]
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    code = main(["sweep", str(f), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    for piece in expected:
        assert piece in err, err
    assert not (tmp_path / "results").exists()  # nothing launched, nothing written


@pytest.mark.parametrize("args, expected", [
    (["--set", "kernal=5"], "--set kernal=5: unknown key 'kernal'"),
    (["--set", "epochs=ten"], "--set epochs=ten: epochs must be an integer"),
    (["--set", "epochs"], "expected KEY=VALUE"),
    (["--seeds", "0,x"], "--seeds '0,x'"),
    (["--executor", "kubernetes"], "--executor must be one of"),
    (["--max-parallel", "4"], "--max-parallel cannot be used with --executor local"),
    (["--executor", "slurm", "--gpus", "0,1"], "--gpus cannot be used with --executor slurm"),
])
def test_bad_options_exit_2_with_one_line(args, expected, tmp_path, capsys):
    code = main(["sweep", str(SWEEPS / "kernel.yaml"), "--results", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_include_cycle_is_reported(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    assert main(["sweep", str(tmp_path / "a.yaml"), "--dry-run"]) == 2
    assert "include cycle" in capsys.readouterr().err


def test_plan_rejects_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_plan(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------- dry run
def test_dry_run_shows_status_of_every_run_and_launches_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    make_run(results, state="done")  # the Table 7 baseline, finished
    make_run(results, state="failed", residual="none")
    make_run(results, state="running", mixup=False, epoch=37)  # on another host: trusted
    make_run(results, state="interrupted", act="relu", epoch=12)
    args = ["sweep", str(SWEEPS / "table7.yaml"), "--results", str(results), "--dry-run",
            "--set", f"data={tmp_path / 'nodata'}", "--set", "device=cpu"]  # device: not in the run id
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "10 runs: 1 done, 1 running elsewhere, 1 interrupted, 1 failed, 6 pending" in out
    for label in ("Baseline", "- Residual in Eq. 2", "GELU → ReLU", "- Gradient Norm Clipping"):
        assert label in out
    assert "running elsewhere 37/200" in out and "interrupted 12/200" in out
    # the runs are A100 runs, this device is a CPU never measured (and the suite does not probe): assumed.
    # Launched: 6 pending + the interrupted one's 188 epochs left, 0.3144 h each at 40 TFLOP/s
    assert ("estimated CPU-hours: 2.2 for the 7 runs to launch (3.1 if all 10 were trained from the start, "
            "10 of them assumed at 40 TFLOP/s)") in out
    assert "basis: 7 assumed (no finished run on this device" in out
    assert "assumed (not measured)" in out and "40 TFLOP/s" in out
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted(  # nothing new was written
        p.name for p in (results / "runs").iterdir() if (p / "status.json").exists())


def test_dry_run_of_paper_yaml_lists_43_runs_and_the_projection(tmp_path, capsys):
    assert main(["sweep", str(SWEEPS / "paper.yaml"), "--dry-run", "--results", str(tmp_path / "r"),
                 "--tflops", "80", "--set", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "43 runs: 43 pending (45 configs; 2 shared by several sweep entries, trained once)" in out
    assert "estimated CPU-hours: 5.5 for the 43 runs to launch" in out and "80 TFLOP/s" in out


# ---------------------------------------------------------------------- the FLOPs projection
def test_flops_of_the_256_8_baseline_match_the_hand_count(tmp_path):
    fwd = forward_flops(256, 8, 1, 9)
    assert fwd == 2 * (1024 * (3 * 256 + 8 * (81 * 256 + 256 * 256)) + 2560)
    assert fwd / 1e9 == pytest.approx(1.415, abs=0.001)  # ≈1.4 GFLOP forward per image
    assert 3 * fwd / 1e9 == pytest.approx(4.245, abs=0.001)  # ≈4.2 GFLOP per trained image
    assert forward_flops(256, 8, 2, 9) < fwd / 3.9  # p=2: a quarter of the positions
    cfg = RunConfig(data="nowhere")
    assert run_flops(cfg) == pytest.approx(fwd * (3 * 49984 * 200 + 10000 * 200))  # 781 full batches of 64
    est = project([(cfg, 0, True)], tmp_path, tflops=40, device="NVIDIA A100-SXM4-40GB", probing=False)
    assert est.runs[0].basis == "assumed"  # a GPU never measured here
    assert est.hours() == pytest.approx(run_flops(cfg) / 40e12 / 3600)
    assert 0.30 < est.hours() < 0.33 and est.unit == "GPU-h"
    assert gpu_hours(3.6e15, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        gpu_hours(1.0, 0)
