"""One run, one trainer (cmx/run/claim.py), with real processes and no mocks of the claim: concurrent
`cmx train` and `cmx sweep` launches train each run once, a killed holder frees its run at once on the same
host, a claim from another host is respected while its heartbeat is fresh and taken over once stale."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cmx.cli.app import main
from cmx.errors import Interrupted, RunBusy
from cmx.store import claim
from cmx.run import train as train_module
from cmx.run.stop import StopRequest
from cmx.store.resultsdir import ResultsDir
from cmx.files import atomic_write_json
from cmx.run.train import train
from cmx.sweep.plan import make_plan
from conftest import REPO, cmx_subprocess_env
from tiny_cifar import make_tiny_cifar

PY = sys.executable
TINY = ["--h", "8", "--d", "1", "--p", "4", "--k", "3", "--batch-size", "32", "--device", "cpu", "--no-randaug"]


def _cmx(*args: str) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "cmx", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=cmx_subprocess_env())


def _rows(results: Path) -> list[str]:
    lines = (results / "runs.csv").read_text().splitlines()[1:]
    return [line.split(",")[0] for line in lines]


def _foreign_claim(run_dir: Path, number: int, age_s: float) -> dict:
    """A claim as a trainer on another node would have written it, last heartbeat `age_s` ago."""
    beat = time.time() - age_s
    content = {"host": "other-node", "pid": 4242, "pid_start": "1", "token": "x", "started": "earlier",
               "heartbeat_unix": beat, "epoch": 1, "epochs": 2, "timeout_s": 600.0, "released": None}
    claim.claims_dir(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(claim.claims_dir(run_dir) / f"{number}.json", content)
    return content


@pytest.fixture(scope="module")
def busy_data(tmp_path_factory) -> Path:
    """1,280 images: 40 steps per epoch, so a 20-epoch run trains for several seconds."""
    return make_tiny_cifar(tmp_path_factory.mktemp("claim-data"), n_train_per_batch=256, n_test=64, seed=2)


# ---------------------------------------------------------------------- the primitive, many processes at once
def _race(run_dir, start, attempted, queue):
    start.wait()
    try:
        held = claim.acquire(run_dir, heartbeat_s=0.2)
        queue.put(("won", held.number))
    except RunBusy as err:
        queue.put(("busy", str(err)))
        held = None
    attempted.wait()  # hold the claim until everybody has tried: a dead pid would free it at once
    if held is not None:
        held.release()


def _race_processes(run_dir: Path, n: int = 6) -> list[tuple]:
    ctx = multiprocessing.get_context("fork")
    start, attempted, queue = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(run_dir, start, attempted, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_of_six_processes_claiming_one_run_at_once_exactly_one_wins(tmp_path):
    results = _race_processes(tmp_path / "run")
    assert sorted(r[0] for r in results) == ["busy"] * 5 + ["won"]
    assert [r[1] for r in results if r[0] == "won"] == [1]
    assert all("is being trained by pid" in r[1] for r in results if r[0] == "busy")


def test_of_six_processes_taking_over_one_stale_claim_exactly_one_wins(tmp_path):
    _foreign_claim(tmp_path / "run", 1, age_s=3600)
    results = _race_processes(tmp_path / "run")
    assert sorted(r[0] for r in results) == ["busy"] * 5 + ["won"]
    assert [r[1] for r in results if r[0] == "won"] == [2]  # the stale claim stays below as history
    assert claim.current(tmp_path / "run")[1]["released"]


def test_a_holder_beats_releases_and_notices_when_its_claim_was_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    lost = threading.Event()
    held = claim.acquire(run_dir, epochs=5, heartbeat_s=0.05, on_lost=lost.set)
    first = held.content["heartbeat_unix"]
    time.sleep(0.3)
    assert claim.holder(run_dir)["heartbeat_unix"] > first
    _foreign_claim(run_dir, held.number + 1, age_s=0)  # judged dead elsewhere and taken over
    assert lost.wait(5)
    held.release()
    assert claim.holder(run_dir)["host"] == "other-node"  # the taker's claim is untouched
    assert json.loads(held.path.read_text())["released"]


def test_a_dead_pid_on_this_host_frees_the_claim_at_once(tmp_path):
    proc = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = {"host": socket.gethostname(), "pid": dead, "heartbeat_unix": time.time(), "released": None}
    assert not claim.is_live(stale)
    assert claim.is_live({**stale, "pid": os.getpid(), "pid_start": claim._proc_start(os.getpid())})
    assert not claim.is_live({**stale, "pid": os.getpid(), "pid_start": "not-this-one"})  # pid reused


# ---------------------------------------------------------------------- cmx train
@pytest.mark.slow
def test_two_trains_of_one_run_started_together_one_trains_the_other_exits_busy(busy_data, tmp_path):
    args = ["train", *TINY, "--epochs", "20", "--data", str(busy_data), "--results", str(tmp_path), "--quiet"]
    a, b = _cmx(*args), _cmx(*args)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, RunBusy.exit_code], (err_a, err_b)
    busy_err = err_a if a.returncode else err_b
    assert busy_err.strip().count("\n") == 0 and "is being trained by pid" in busy_err
    assert socket.gethostname() in busy_err and "since" in busy_err and "epoch" in busy_err
    assert (err_a + err_b).count("epoch 1/20") == 1  # one training
    [run_id] = _rows(tmp_path)
    assert run_id in out_a + out_b
    assert sorted(os.listdir(tmp_path / "runs" / run_id / "claims")) == ["1.json"]


@pytest.mark.slow
def test_kill_9_of_the_holder_lets_the_next_start_resume_at_once(busy_data, tmp_path):
    args = ["train", *TINY, "--epochs", "6", "--data", str(busy_data), "--results", str(tmp_path), "--quiet"]
    holder = _cmx(*args)
    for line in holder.stderr:
        if line.startswith("epoch 2/"):
            holder.kill()
            break
    holder.wait(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    [run_dir] = (tmp_path / "runs").iterdir()
    assert not claim.current(run_dir)[1]["released"]  # the claim is still there, its pid is dead
    t0 = time.monotonic()
    again = _cmx(*args)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "resuming run" in err and "epoch 1/6" not in err
    assert time.monotonic() - t0 < claim.TIMEOUT_FLOOR_S / 10  # no heartbeat timeout was waited for
    assert _rows(tmp_path) == [run_dir.name]


def _interrupted_run(tiny_config, results: Path, monkeypatch):
    """A run stopped (SIGINT) during its second epoch: a checkpoint at epoch 1, its claim released."""
    cfg = tiny_config(epochs=2)
    real, calls, stop = train_module.lr_at, {"n": 0}, StopRequest()

    def lr_at_then_stop(*args):
        calls["n"] += 1
        if calls["n"] == 13:
            stop.request(signal.SIGINT)  # what the CLI's SIGINT handler does
        return real(*args)

    monkeypatch.setattr(train_module, "lr_at", lr_at_then_stop)
    with pytest.raises(Interrupted):
        train(cfg, results, stop=stop)
    monkeypatch.setattr(train_module, "lr_at", real)
    [run_dir] = (results / "runs").iterdir()
    return cfg, run_dir


def _train_args(cfg, results: Path) -> list[str]:
    return ["train", "--h", str(cfg.h), "--d", str(cfg.d), "--p", str(cfg.p), "--k", str(cfg.k), "--epochs",
            str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--device", "cpu", "--data", cfg.data,
            "--results", str(results), "--quiet"]


def test_a_fresh_claim_from_another_host_is_respected_and_nothing_is_written(tiny_config, tmp_path, monkeypatch,
                                                                           capsys):
    cfg, run_dir = _interrupted_run(tiny_config, tmp_path, monkeypatch)
    _foreign_claim(run_dir, claim.current(run_dir)[0] + 1, age_s=5)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    capsys.readouterr()
    assert main(_train_args(cfg, tmp_path)) == RunBusy.exit_code == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("cmx: run ") and "\n" not in err
    assert "pid 4242 on other-node since earlier, epoch 1/2, heartbeat 5s ago" in err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # nothing written
    assert ResultsDir(tmp_path).state(run_dir.name) == "running"


def test_a_stale_claim_from_another_host_is_taken_over_and_the_run_resumes(tiny_config, tmp_path, monkeypatch,
                                                                         capsys):
    cfg, run_dir = _interrupted_run(tiny_config, tmp_path, monkeypatch)
    n = claim.current(run_dir)[0] + 1
    _foreign_claim(run_dir, n, age_s=claim.TIMEOUT_FLOOR_S + 60)
    assert ResultsDir(tmp_path).state(run_dir.name) == "interrupted"
    capsys.readouterr()
    assert main(_train_args(cfg, tmp_path)) == 0
    assert "resuming run" in capsys.readouterr().err
    number, mine = claim.current(run_dir)
    assert number == n + 1 and mine["host"] == socket.gethostname() and mine["outcome"] == "done"
    assert _rows(tmp_path) == [run_dir.name]


def test_the_timeout_is_configurable(monkeypatch):
    beat = {"host": "other-node", "pid": 1, "heartbeat_unix": time.time() - 100, "timeout_s": 600}
    assert claim.is_live(beat)
    monkeypatch.setenv("CMX_CLAIM_TIMEOUT", "60")
    assert not claim.is_live(beat)


def test_wait_waits_for_the_holder_then_reports_its_result(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(claim, "WAIT_POLL_S", 0.05)
    real = train_module.lr_at
    monkeypatch.setattr(train_module, "lr_at", lambda *a: (time.sleep(0.05), real(*a))[1])  # ~1 s of training
    cfg = tiny_config(epochs=2)
    run_dir = ResultsDir(tmp_path).run_dir(cfg.run_id(_dataset(cfg)))
    holder = threading.Thread(target=train, args=(cfg, tmp_path))  # another trainer (same pid, another thread)
    holder.start()
    while claim.holder(run_dir) is None:
        time.sleep(0.01)
    code = main(_train_args(cfg, tmp_path) + ["--wait"])
    holder.join()
    err = capsys.readouterr().err
    assert code == 0
    assert f"waiting for run {run_dir.name}: held by pid {os.getpid()}" in err
    assert f"run {run_dir.name} is already done: test acc" in err
    assert len(_rows(tmp_path)) == 1 and claim.current(run_dir)[0] == 1  # trained once, by the holder


def test_wait_takes_over_a_run_whose_holder_stopped_without_finishing(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(claim, "WAIT_POLL_S", 0.05)
    cfg = tiny_config(epochs=2)
    run_dir = ResultsDir(tmp_path).run_dir(cfg.run_id(_dataset(cfg)))
    held = claim.acquire(run_dir)
    threading.Timer(0.5, held.release).start()
    code = main(_train_args(cfg, tmp_path) + ["--wait"])
    captured = capsys.readouterr()
    assert code == 0 and "waiting for run" in captured.err and "epoch 2/2" in captured.err
    assert json.loads(captured.out)["run_id"] == run_dir.name
    assert claim.current(run_dir)[0] == 2 and len(_rows(tmp_path)) == 1


def _dataset(cfg) -> str:
    from cmx.run.data import dataset_fingerprint

    return dataset_fingerprint(cfg.data)


# ---------------------------------------------------------------------- sweeps
def _sweep_file(path: Path, data: Path, epochs: int = 2) -> Path:
    doc = {"name": "s", "base": {"h": 8, "d": 1, "p": 4, "k": 3, "epochs": epochs, "batch_size": 32,
                                 "device": "cpu", "randaug": False, "data": str(data)}, "grid": {"k": [3, 5, 7]}}
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.slow
def test_two_sweeps_of_one_file_together_train_each_run_exactly_once(busy_data, tmp_path):
    sweep = _sweep_file(tmp_path / "s.yaml", busy_data, epochs=6)
    args = ["sweep", str(sweep), "--results", str(tmp_path / "results")]
    a, b = _cmx(*args), _cmx(*args)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert (a.returncode, b.returncode) == (0, 0), (out_a, err_a, out_b, err_b)
    results = tmp_path / "results"
    assert sorted(_rows(results)) == sorted(p.name for p in (results / "runs").iterdir())  # 3 rows, 3 runs
    assert len(_rows(results)) == 3
    logs = "".join((p / "train.log").read_text() for p in (results / "runs").iterdir())
    assert logs.count("epoch 1/6") == 3  # three trainings in all
    trained = [int(line.split("(")[1].split()[0]) for line in (out_a + out_b).splitlines() if "trained now" in line]
    assert sum(trained) == 3
    assert "running elsewhere" in out_a + out_b or "already done" in out_a + out_b  # left the other's runs alone


def test_a_sweep_shows_runs_held_elsewhere_and_does_not_launch_them(tiny_data, tmp_path, capsys):
    sweep = _sweep_file(tmp_path / "s.yaml", tiny_data)
    plan = make_plan(sweep, tmp_path / "results")
    held = [claim.acquire(plan.results.run_dir(run.run_id)) for run in plan.runs]
    try:
        assert main(["sweep", str(sweep), "--results", str(tmp_path / "results"), "--dry-run"]) == 0
        assert "3 runs: 3 running elsewhere" in capsys.readouterr().out
        assert main(["sweep", str(sweep), "--results", str(tmp_path / "results")]) == 0
        captured = capsys.readouterr()
        assert "sweep s: 3 runs: 0 done (0 trained now, 0 already done), 3 running elsewhere" in captured.out
        assert f"held by pid {os.getpid()} on {socket.gethostname()}" in captured.out
        assert not any((plan.results.run_dir(r.run_id) / "train.log").exists() for r in plan.runs)  # not launched
    finally:
        for h in held:
            h.release()


def test_slurm_job_of_a_run_held_elsewhere_skips_it_instead_of_failing(tiny_data, tmp_path):
    from cmx.sweep.slurm import SubmititExecutor

    plan = make_plan(_sweep_file(tmp_path / "s.yaml", tiny_data), tmp_path / "results")
    run = plan.runs[0]
    held = claim.acquire(plan.results.run_dir(run.run_id))  # a local trainer holds it after planning
    try:
        summary = SubmititExecutor(plan.results, "debug").submit([run])
    finally:
        held.release()
    [outcome] = summary.outcomes
    assert outcome.status == "running elsewhere" and "held by pid" in outcome.reason
    assert summary.exit_code == 0
    assert not (plan.results.run_dir(run.run_id) / "status.json").exists()


# ---------------------------------------------------------------------- the index and cmx runs
def test_force_retrain_replaces_its_row_and_rebuild_removes_duplicates(tiny_config, tmp_path, capsys):
    cfg = tiny_config(epochs=1)
    other = tiny_config(epochs=1, seed=1)
    train(cfg, tmp_path)
    train(other, tmp_path)
    train(cfg, tmp_path, force=True)
    rows = _rows(tmp_path)
    assert len(rows) == 2 and len(set(rows)) == 2
    index = tmp_path / "runs.csv"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines + lines[1:]))  # an index from before: duplicated rows
    assert main(["index", "--rebuild", "--results", str(tmp_path)]) == 0
    assert sorted(_rows(tmp_path)) == sorted(rows)


def test_cmx_runs_shows_who_holds_a_running_run(tiny_config, tmp_path, capsys):
    cfg = tiny_config(epochs=3)
    store = ResultsDir(tmp_path)
    run_id = cfg.run_id(_dataset(cfg))
    store.run_dir(run_id).mkdir(parents=True)
    atomic_write_json(store.run_dir(run_id) / "config.json", {**cfg.to_dict(), "run_id": run_id,
                                                               "dataset": _dataset(cfg)})
    held = claim.acquire(store.run_dir(run_id), epochs=3)
    try:
        store.write_status(run_id, "running", epoch=1, epochs=3)
        assert main(["runs", "--results", str(tmp_path), "--format", "json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["state"] == "running"
        assert row["holder"].startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")
        assert main(["runs", "--results", str(tmp_path)]) == 0
        assert "held by" in capsys.readouterr().out
    finally:
        held.release()
    assert store.state(run_id) == "interrupted"  # released without finishing: no longer running
