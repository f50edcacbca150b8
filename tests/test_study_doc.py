"""The committed study can be re-checked: docs/mini-study.md regenerates from the committed results/mini.

docs/mini-study.md is the mini study's outcome; its evidence (every run's config.json, status.json,
epochs.csv and result.json, plus roles.json and runs.csv — no weights or checkpoints, .gitignore says
which) is committed under results/mini. On a fresh clone, `cmx report --results results/mini --out ...`
must give the committed file byte for byte, so anyone can recompute every verdict. The check reads only
what git tracks (a copy of the tracked files), so runs lying untracked in a checkout cannot make it pass.
The mechanism is tested on a fabricated study in a throwaway repository with this project's .gitignore.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cmx.cli.app import main
from fabricate import mini_study

REPO = Path(__file__).resolve().parents[1]
DOC = Path("docs") / "mini-study.md"
RESULTS = Path("results") / "mini"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=test@cmx", "-c", "user.name=test", *args],
                          capture_output=True, text=True, check=True).stdout


def check_regenerates(repo: Path, scratch: Path) -> None:
    """Regenerate `repo`'s docs/mini-study.md from the results/mini files git tracks; AssertionError if
    the committed evidence is missing or the text differs."""
    tracked = [line for line in git(repo, "ls-files", "--", str(RESULTS)).splitlines() if line]
    assert any(name.endswith("/result.json") for name in tracked), (
        f"{repo / DOC} is committed but its evidence is missing: no results/mini/runs/*/result.json is tracked "
        f"by git (commit the study's run directories, or remove the stale document)")
    for name in tracked:  # a fresh clone's view: only what was committed
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / name, scratch / name)
    out = scratch / DOC
    assert main(["report", "--results", str(scratch / RESULTS), "--out", str(out)]) == 0
    assert out.read_text() == (repo / DOC).read_text(), f"{DOC} does not regenerate from {RESULTS}: run " \
        f"`cmx report --results {RESULTS} --out {DOC}` and commit the result"


def test_the_committed_study_regenerates_docs_mini_study_md(tmp_path):
    if not (REPO / DOC).exists():
        pytest.skip(f"no {DOC} committed")
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout (the check reads what git tracks)")
    check_regenerates(REPO, tmp_path)


@pytest.fixture(scope="module")
def fabricated_repo(tmp_path_factory) -> Path:
    """A repository with this project's .gitignore, a fabricated mini study (2 seeds) trained into
    results/mini — with the weights, checkpoints and logs training leaves — and its report committed."""
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q")
    shutil.copyfile(REPO / ".gitignore", repo / ".gitignore")
    results = repo / RESULTS
    for run_id in mini_study(results, seeds=(0, 1)):
        for name in ("model.pt", "checkpoint.pt", "train.log"):
            (results / "runs" / run_id / name).write_bytes(b"not evidence")
    assert main(["report", "--results", str(results), "--out", str(repo / DOC)]) == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "study")
    return repo


def test_a_fresh_clone_regenerates_the_report_from_the_committed_runs(fabricated_repo, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(fabricated_repo), str(clone)], check=True)
    shipped = {p.name for p in (clone / RESULTS / "runs").glob("*/*")}
    assert shipped == {"config.json", "status.json", "epochs.csv", "result.json"}  # no weights, logs, claims
    assert (clone / RESULTS / "roles.json").is_file() and not list(clone.rglob("*.pt"))
    check_regenerates(clone, tmp_path / "scratch")


def test_the_check_fails_when_the_results_are_not_committed(fabricated_repo, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(fabricated_repo), str(clone)], check=True)
    git(clone, "rm", "-rq", "--", str(RESULTS))
    git(clone, "commit", "-q", "-m", "drop the evidence")
    with pytest.raises(AssertionError, match="its evidence is missing"):
        check_regenerates(clone, tmp_path / "scratch")


def test_the_check_fails_when_the_document_does_not_match(fabricated_repo, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(fabricated_repo), str(clone)], check=True)
    result = next((clone / RESULTS / "runs").glob("*/result.json"))
    result.write_text(result.read_text().replace('"test_acc": ', '"test_acc": 1', 1))  # a different accuracy
    with pytest.raises(AssertionError, match="does not regenerate"):
        check_regenerates(clone, tmp_path / "scratch")
