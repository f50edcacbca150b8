"""Roles: a sweep file's `paper:` key makes scaled-down runs stand for the paper's rows.

Planning validates and resolves it (one line, exit 2, when it names no row), `cmx sweep` records it in
<results>/roles.json (merged, never on --dry-run), and `cmx table` counts a run with a role for the rows it
stands for instead of its own configuration, marked § with the stand-in's configuration. No training.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmx.analysis import collect, table
from cmx.analysis.collect import SkippedRun
from cmx.cli.app import main
from cmx.errors import UserError
from cmx.roles import read_roles, roles_path
from cmx.sweep.plan import load_yaml, make_plan

from fabricate import make_run

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "sweeps" / "mini"
SCALE = dict(h=64, d=4, epochs=8, batch_size=128)  # the scaled runs' own config (besides p, k, seed)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sweep(*args) -> int:
    return main(["sweep", *(str(a) for a in args)])


def rows_of(plan) -> dict[str, list[str]]:
    """config summary → the paper rows its run stands for."""
    return {r.config.summary(): [role.row for role in r.roles] for r in plan.runs}


# ---------------------------------------------------------------------- planning: `paper:` resolved and validated
def test_file_level_paper_applies_to_every_run_and_a_run_entry_overrides_it_key_by_key(tmp_path):
    f = write(tmp_path / "s.yaml", "base: {h: 64, d: 4, p: 2, k: 9, epochs: 8}\n"
                                   "paper: {h: 256, d: 8, p: 1}\n"
                                   "runs:\n"
                                   "  - {label: base}\n"
                                   "  - {label: ln, norm: layer}\n"
                                   "  - {label: p4, p: 4, paper: {p: 2}}\n")
    p = make_plan(f, tmp_path / "results")
    assert rows_of(p) == {
        "64/4 p2 k9 epochs=8 seed=0": ["table8:kernel:256/8 p1 k9 wd 0", "table7:Baseline"],
        "64/4 p2 k9 norm=layer epochs=8 seed=0": ["table7:BatchNorm → LayerNorm"],  # norm carries over
        "64/4 p4 k9 epochs=8 seed=0": ["table8:patch:256/8 p2 k9 wd 0", "table8:kernel_p2:256/8 p2 k9 wd 0"],
    }
    role = p.runs[2].roles[0]
    assert (role.sweep, role.label, role.where, role.paper) == ("s", "p4", f"{f}:6", {"h": 256, "d": 8, "p": 2})


def test_paper_is_not_part_of_the_config_or_the_run_id(tmp_path):
    with_roles = write(tmp_path / "a.yaml", "base: {h: 64, d: 4, p: 2}\npaper: {h: 256, d: 8, p: 1}\ngrid: {k: [3, 5]}\n")
    without = write(tmp_path / "b.yaml", "base: {h: 64, d: 4, p: 2}\ngrid: {k: [3, 5]}\n")
    a, b = make_plan(with_roles, tmp_path / "r"), make_plan(without, tmp_path / "r")
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    same_sweep_name = [r.config.replace(wandb_group="b") for r in a.runs]  # the W&B group is the sweep's name
    assert same_sweep_name == [r.config for r in b.runs]
    assert all(r.roles for r in a.runs) and not any(r.roles for r in b.runs)


def test_included_files_keep_their_own_paper(tmp_path):
    write(tmp_path / "inner.yaml", "base: {h: 64, d: 4, p: 2, k: 5}\n")
    write(tmp_path / "scaled.yaml", "base: {h: 64, d: 4, p: 2, k: 7}\npaper: {h: 256, d: 8, p: 1}\n")
    outer = write(tmp_path / "outer.yaml", "include: [inner.yaml, scaled.yaml]\npaper: {h: 128}\n")
    assert rows_of(make_plan(outer, tmp_path / "r")) == {
        "64/4 p2 k5 seed=0": [], "64/4 p2 k7 seed=0": ["table8:kernel:256/8 p1 k7 wd 0"]}


def test_the_mini_study_stands_for_the_paper_rows_with_the_run_ids_of_its_files_without_paper(tmp_path):
    study = make_plan(MINI / "study.yaml", tmp_path / "r")
    assert len(study.runs) == 96 and all(r.roles for r in study.runs)  # 32 configurations × 3 seeds
    rows = rows_of(study)
    assert rows["64/4 p2 k9 wd=0.01 epochs=4 batch_size=128 seed=0"] == ["table8:weight_decay:256/8 p1 k9 wd 0.01"]
    assert rows["64/4 p2 k5 epochs=4 batch_size=128 seed=1"] == ["table8:kernel:256/8 p1 k5 wd 0"]
    assert rows["32/2 p2 k8 epochs=4 batch_size=128 seed=0"] == ["table8:width_depth:128/4 p1 k8 wd 0"]
    assert rows["64/4 p16 k9 epochs=4 batch_size=128 seed=2"] == ["table8:patch:256/8 p8 k9 wd 0"]
    assert rows["64/8 p2 k3 epochs=4 batch_size=128 seed=0"] == ["text:ConvMixer-256/10 k3 (params matched to k9)"]
    assert rows["64/4 p2 k9 -randaug epochs=4 batch_size=128 seed=0"] == ["table7:- RandAug"]
    assert rows["64/4 p2 k9 residual=none epochs=4 batch_size=128 seed=2"] == ["table7:- Residual in Eq. 2"]
    assert rows["64/10 p2 k8 epochs=4 batch_size=128 seed=1"] == ["table8:width_depth:256/20 p1 k8 wd 0"]

    def plain(x):  # the loader's line-remembering containers → plain YAML, `paper:` dropped
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items() if k != "paper"}
        return [plain(v) for v in x] if isinstance(x, list) else x

    stripped = tmp_path / "stripped"
    stripped.mkdir()
    for f in MINI.glob("*.yaml"):
        (stripped / f.name).write_text(yaml.safe_dump(plain(load_yaml(f)), allow_unicode=True))
    assert "paper" not in (stripped / "kernel.yaml").read_text()
    bare = make_plan(stripped / "study.yaml", tmp_path / "r")
    assert [r.run_id for r in bare.runs] == [r.run_id for r in study.runs]  # the study trained without it


BAD = {
    "not_mapping": ("base: {h: 64}\npaper: 256\n", ["bad.yaml:2:", "paper must be a mapping"]),
    "unknown_key": ("base: {h: 64}\npaper: {width: 256}\n", ["bad.yaml:2:", "unknown key 'width'", "did you mean 'h'"]),
    "budget_key": ("base: {h: 64}\npaper: {h: 256,\n  epochs: 200}\n", ["bad.yaml:3:", "'epochs' does not pick a paper row"]),
    "bad_value": ("runs:\n  - {h: 64, paper: {d: 0}}\n", ["bad.yaml:2:", "d must be ≥ 1"]),
    "in_base": ("base: {h: 64, paper: {h: 256}}\n", ["bad.yaml:1:", "'paper' goes at the top level"]),
    "no_row": ("base: {h: 64, d: 4, p: 2, k: 4}\npaper: {h: 256, d: 8, p: 1}\n",
               ["bad.yaml:2:", "paper {h: 256, d: 8, p: 1} turns run '64/4 p2 k4' into 256/8 p1 k4",
                "matches no row of the paper"]),
    "no_row_in_a_run": ("base: {h: 64, d: 4, k: 9}\npaper: {h: 256, d: 8}\nruns:\n  - {label: ok, p: 1}\n"
                        "  - {label: odd, p: 2, paper: {p: 3}}\n",
                        ["bad.yaml:5:", "run 'odd' into 256/8 p3 k9", "matches no row of the paper"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_paper_keys_exit_2_with_one_line_naming_file_and_line(case, tmp_path, capsys):
    text, expected = BAD[case]
    f = write(tmp_path / "bad.yaml", text)
    assert sweep(f, "--results", tmp_path / "results") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for piece in expected:
        assert piece in err, err
    assert not (tmp_path / "results").exists()


def test_a_set_that_breaks_the_role_is_named(tmp_path, capsys):
    f = write(tmp_path / "s.yaml", "base: {h: 64, d: 4, p: 2, k: 5}\npaper: {h: 256, d: 8, p: 1}\n")
    assert sweep(f, "--set", "k=4", "--dry-run", "--results", tmp_path / "r") == 2
    assert "(with --set k=4), which matches no row of the paper" in capsys.readouterr().err


# ---------------------------------------------------------------------- roles.json: written, merged, never on dry runs
@pytest.fixture
def scaled(tmp_path):
    """Three sweep files with roles and a results dir where all of their runs are done (fabricated).

    scaled-kernel: 64/4 p2 k5 and k7, seeds 0-1, standing for 256/8 p1 k5 / k7 (8 epochs, batch 128)
    scaled-patch:  64/4 p4 k9 (a run entry overriding the file's p) standing for 256/8 p2 k9
    relabelled:    256/8 p2 k9, whose own config IS a paper row, standing for 256/8 p1 k9 instead
    plus runs without a role: 256/8 p1 k3 (its own row) and 256/8 p1 k7 at 50 epochs (k7's own config)
    """
    data = f"data: {tmp_path / 'nodata'}"  # absent: dataset fingerprint 'cifar10', as make_run writes
    files = {
        "kernel": write(tmp_path / "kernel.yaml", f"name: scaled-kernel\nbase: {{h: 64, d: 4, p: 2, epochs: 8, "
                        f"batch_size: 128, {data}}}\npaper: {{h: 256, d: 8, p: 1}}\nseeds: [0, 1]\ngrid: {{k: [5, 7]}}\n"),
        "patch": write(tmp_path / "patch.yaml", f"name: scaled-patch\nbase: {{h: 64, d: 4, k: 9, epochs: 8, "
                       f"batch_size: 128, {data}}}\npaper: {{h: 256, d: 8, p: 1}}\nruns:\n  - {{p: 4, paper: {{p: 2}}}}\n"),
        "relabelled": write(tmp_path / "relabelled.yaml", f"name: relabelled\nbase: {{p: 2, k: 9, {data}}}\n"
                            "paper: {p: 1}\n"),
    }
    root = tmp_path / "results"
    ids = {
        "k5": [make_run(root, **SCALE, p=2, k=5, seed=s, test_acc=a) for s, a in ((0, 52.0), (1, 53.0))],
        "k7": [make_run(root, **SCALE, p=2, k=7, seed=s, test_acc=a) for s, a in ((0, 54.0), (1, 55.0))],
        "p4": [make_run(root, **SCALE, p=4, k=9, test_acc=49.0)],
        "relabelled": [make_run(root, p=2, k=9, test_acc=95.0)],
        "k3_own": [make_run(root, k=3, test_acc=93.0)],
        "k7_own": [make_run(root, k=7, epochs=50, test_acc=90.0)],
    }
    return files, root, ids


def load(root) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unreadable run, no unreadable roles file
        return collect.load_runs(root)


def row(tab: pd.DataFrame, row_id: str) -> dict:
    hits = [r for r in tab.to_dict("records") if _row_id(r) == row_id]
    assert len(hits) == 1, row_id
    return hits[0]


def _row_id(r: dict) -> str:
    if r["label"]:
        return f"{r['table']}:{r['label']}"
    return f"{r['table']}:{r['section']}:{r['h']}/{r['d']} p{r['p']} k{r['k']} wd {r['wd']:g}"


def test_sweep_of_finished_runs_records_roles_and_dry_run_writes_nothing(scaled, capsys):
    files, root, ids = scaled
    assert sweep(files["kernel"], "--dry-run", "--results", root) == 0
    out = capsys.readouterr().out
    assert "stands for (paper:)" in out and "table8:kernel:256/8 p1 k5 wd 0" in out
    assert not roles_path(root).exists()
    assert sweep(files["kernel"], "--results", root) == 0  # every run done: nothing trains, roles recorded
    assert "0 to launch" in capsys.readouterr().err
    roles = read_roles(root)
    assert sorted(roles) == sorted(ids["k5"] + ids["k7"])
    assert roles[ids["k5"][0]] == [{"row": "table8:kernel:256/8 p1 k5 wd 0", "sweep": "scaled-kernel", "label": "",
                                    "where": f"{files['kernel']}:3", "paper": {"h": 256, "d": 8, "p": 1}}]
    before = roles_path(root).read_text()
    assert sweep(files["kernel"], "--results", root) == 0  # idempotent
    assert roles_path(root).read_text() == before


def test_roles_of_several_sweeps_are_merged(scaled, tmp_path):
    files, root, ids = scaled
    for name in ("kernel", "patch", "relabelled"):
        assert sweep(files[name], "--results", root) == 0
    roles = read_roles(root)
    assert sorted(roles) == sorted(ids["k5"] + ids["k7"] + ids["p4"] + ids["relabelled"])
    assert {e["sweep"] for entries in roles.values() for e in entries} == {"scaled-kernel", "scaled-patch", "relabelled"}
    # a sweep planning a subset (--seeds 0) of runs whose `paper:` was removed: only those runs lose their role
    text = files["kernel"].read_text()
    files["kernel"].write_text(text.replace("paper: {h: 256, d: 8, p: 1}\n", ""))
    assert sweep(files["kernel"], "--seeds", "0", "--results", root) == 0
    roles = read_roles(root)
    assert ids["k5"][0] not in roles and ids["k7"][0] not in roles
    assert ids["k5"][1] in roles and ids["p4"][0] in roles and ids["relabelled"][0] in roles
    # an edited `paper:` replaces that sweep's entry for the run
    files["patch"].write_text(files["patch"].read_text().replace("paper: {p: 2}", "paper: {p: 4}"))
    assert sweep(files["patch"], "--results", root) == 0
    assert [e["row"] for e in read_roles(root)[ids["p4"][0]]] == ["table8:patch:256/8 p4 k9 wd 0"]


def test_a_sweep_without_roles_leaves_no_roles_file(tmp_path):
    root = tmp_path / "results"
    make_run(root, k=5)
    f = write(tmp_path / "plain.yaml", f"base: {{k: 5, data: {tmp_path / 'nodata'}}}\n")
    assert sweep(f, "--results", root) == 0
    assert not roles_path(root).exists()


def test_an_unreadable_roles_file_stops_the_writer_and_is_ignored_by_readers(scaled):
    files, root, _ = scaled
    roles_path(root).write_text("{not json")
    with pytest.raises(UserError, match="roles.json is unreadable"):
        from cmx.sweep.plan import record_roles
        record_roles(make_plan(files["kernel"], root))
    with pytest.warns(SkippedRun, match="roles.json: unreadable"):
        runs = collect.load_runs(root)
    assert not runs["roles"].map(bool).any()


# ---------------------------------------------------------------------- cmx table: stand-ins under the rows they stand for
@pytest.fixture
def tabled(scaled):
    files, root, ids = scaled
    for name in ("kernel", "patch", "relabelled"):
        assert sweep(files[name], "--results", root) == 0
    return root, ids, table.tabulate(load(root), "cifar10")


def test_scaled_runs_count_for_the_row_they_stand_for_marked_with_their_configuration(tabled):
    root, ids, tab = tabled
    k5 = row(tab, "table8:kernel:256/8 p1 k5 wd 0")
    assert (k5["n"], k5["mean"], k5["epochs"], k5["lr"], k5["batch_size"]) == (2, 52.5, 8, 0.01, 128)
    assert k5["std"] == pytest.approx(math.sqrt(0.5))
    assert (k5["marks"], k5["stand_in"], set(k5["run_ids"])) == ("*†§", "64/4 p2 k5", set(ids["k5"]))
    assert k5["delta"] == pytest.approx(52.5 - 95.19)
    p2 = row(tab, "table8:patch:256/8 p2 k9 wd 0")  # not the relabelled 256/8 p2 k9 run, whose own row this is
    assert (p2["mean"], p2["stand_in"], p2["run_ids"]) == (49.0, "64/4 p4 k9", tuple(ids["p4"]))
    assert row(tab, "table8:kernel_p2:256/8 p2 k9 wd 0")["run_ids"] == tuple(ids["p4"])
    base = row(tab, "table7:Baseline")  # the relabelled run: 200 epochs, paper recipe, another config
    assert (base["mean"], base["marks"], base["stand_in"]) == (95.0, "§", "256/8 p2 k9")


def test_a_run_without_role_matches_by_its_own_config_and_wins_over_stand_ins(tabled):
    root, ids, tab = tabled
    k3 = row(tab, "table8:kernel:256/8 p1 k3 wd 0")
    assert (k3["mean"], k3["marks"], k3["stand_in"]) == (93.0, "", "")
    k7 = row(tab, "table8:kernel:256/8 p1 k7 wd 0")  # own config (50 epochs) and two stand-ins: own config
    assert (k7["mean"], k7["n"], k7["marks"], k7["stand_in"], k7["n_hidden"]) == (90.0, 1, "*‡", "", 2)
    assert k7["hidden_scale"] is True
    other = table.other_runs(load(root), "cifar10", "final", tab)
    assert other["note"].tolist() == ["stand-in, not tabulated (epochs, lr/batch size, or the row uses other runs)"]
    assert set(other["run_ids"].iloc[0]) == set(ids["k7"])


def test_markdown_csv_and_latex_show_the_stand_in(tabled, capsys):
    root, ids, _ = tabled
    assert main(["table", "--all", "--results", str(root)]) == 0
    out = capsys.readouterr().out
    cells = {c[3]: c for c in ([x.strip() for x in line.strip()[1:-1].split("|")] for line in out.splitlines()
                                if line.startswith("| 256 | 8 | 1 |"))}  # Kernel adjustments, by k
    assert cells["5"][8:] == ["52.50 ± 0.71*†§", "—", "n/a §", "2", "8", "64/4 p2 k5"]  # no verdict
    assert cells["5"][4:6] == ["592", "26"]  # params: the paper's 256/8 k5, and the 64/4 p2 k5 we trained
    assert cells["3"][8:] == ["93.00", "-0.61", "—", "1", "200", ""]  # its own config: no stand-in
    assert "§ scaled stand-in: our runs are another configuration, in the Stand-in column" in out
    assert "(sweeps: relabelled)." in out  # Table 7's footnote, then Table 8's (rows in paper order)
    assert "(sweeps: scaled-kernel, relabelled, scaled-patch)." in out
    assert "another scale: a row uses runs of its own configuration when it has any" in out  # the k7 row's ‡
    assert "| Ablation | Paper (%) | Ours (%) | Δ | Reproduced | n | epochs | Stand-in" in " ".join(out.split())
    assert main(["table", "--format", "csv", "--results", str(root)]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert frame[frame["k"] == 5].iloc[0][["stand_in", "marks", "epochs"]].tolist() == ["64/4 p2 k5", "*†§", 8]
    assert main(["table", "--format", "latex", "--table", "8", "--results", str(root)]) == 0
    latex = capsys.readouterr().out
    assert r"52.50 $\pm$ 0.71$^*$$^\dagger$\S{} & -- & n/a \S{} & 2 & 8 & 64/4 p2 k5 \\" in latex


def test_roles_for_rows_the_paper_does_not_have_are_ignored_with_a_warning(tmp_path):
    root = tmp_path / "results"
    run_id = make_run(root, **SCALE, p=2, k=5, test_acc=50.0)
    roles_path(root).write_text(json.dumps({"version": 1, "runs": {run_id: [{"row": "table9:nope", "sweep": "x"}]}}))
    with pytest.warns(SkippedRun, match="table9:nope"):
        runs = collect.load_runs(root)
    tab = table.tabulate(runs, "cifar10")
    assert tab["n"].sum() == 0  # 64/4 p2 k5 matches no row by its own config either
