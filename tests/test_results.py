"""The results directory never loses or garbles a finished run, even with many writers at once."""
import multiprocessing as mp
import re
from pathlib import Path

import pandas as pd
import pytest

from cmx.errors import UserError
from cmx.store.resultsdir import INDEX_COLUMNS, ResultsDir, index_row
from cmx.files import atomic_write_json, read_json


def _fake_result(i: int) -> dict:
    return {"run_id": f"run{i:04d}", "dataset": "cifar10", "finished": f"2026-01-01T00:00:{i:02d}",
            "test_acc": 50.0 + i, "best_test_acc": 60.0 + i, "best_epoch": 3, "params": 1000 + i,
            "wall_s": 1.5, "img_per_s": 100.0, "provenance": {"device_name": "cpu", "git_commit": "abc"},
            "config": {"h": 8, "d": 1, "p": 4, "k": 3, "norm": "batch", "act": "gelu", "residual": "eq2",
                       "scaling": True, "flip": True, "randaug": True, "mixup": True, "erasing": True,
                       "clip": True, "lr": 0.01, "wd": 0.0, "epochs": 2, "batch_size": 32, "seed": i}}


def _append(root, i, barrier):
    barrier.wait()  # everyone writes at the same moment
    ResultsDir(root).append_index_row(index_row(_fake_result(i)))


def test_sixteen_concurrent_appends_give_sixteen_intact_rows(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(16)
    procs = [ctx.Process(target=_append, args=(tmp_path, i, barrier)) for i in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    df = pd.read_csv(tmp_path / "runs.csv")
    assert list(df.columns) == list(INDEX_COLUMNS)
    assert len(df) == 16
    assert sorted(df["run_id"]) == [f"run{i:04d}" for i in range(16)]
    assert sorted(df["test_acc"]) == [50.0 + i for i in range(16)]  # no garbled numbers
    assert df.notna().all().all()


def test_index_is_rebuilt_from_run_dirs_and_skips_corrupt_ones(tmp_path):
    store = ResultsDir(tmp_path)
    for i in range(3):
        store.run_dir(f"run{i:04d}").mkdir(parents=True)
        atomic_write_json(store.run_dir(f"run{i:04d}") / "result.json", _fake_result(i))
    store.run_dir("broken").mkdir()
    (store.run_dir("broken") / "result.json").write_text('{"run_id": "broken", "test_')  # half-written
    store.run_dir("unfinished").mkdir()
    store.index_csv.write_text("garbage\n")
    with pytest.warns(UserWarning, match="broken"):
        assert store.rebuild_index() == 3
    df = pd.read_csv(store.index_csv)
    assert list(df["run_id"]) == ["run0000", "run0001", "run0002"]


def test_atomic_write_leaves_old_content_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})
    import cmx.files as results

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_json(target, {"v": 2})
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no tmp litter


def test_unwritable_results_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="not writable"):
        ResultsDir(blocker / "results").ensure_writable()


def test_state_of_a_dead_running_process_is_interrupted(tmp_path):
    store = ResultsDir(tmp_path)
    store.run_dir("r1").mkdir(parents=True)
    store.write_status("r1", "running", epoch=1, epochs=3)
    assert store.state("r1") == "running"  # this process is alive
    record = read_json(store.run_dir("r1") / "status.json")
    record["pid"] = 2 ** 22 + 12345  # no such process
    atomic_write_json(store.run_dir("r1") / "status.json", record)
    assert store.state("r1") == "interrupted"
    assert store.state("never") == "pending"


def test_a_running_status_from_another_host_goes_stale(tmp_path):
    """A job killed hard on another node must not read 'running' forever (it would never be resubmitted)."""
    import cmx.store.rundir as rundir

    store = ResultsDir(tmp_path)
    store.run_dir("r2").mkdir(parents=True)
    record = store.write_status("r2", "running", epoch=3, epochs=200)
    record["host"] = "some-other-node"
    atomic_write_json(store.run_dir("r2") / "status.json", record)
    assert store.state("r2") == "running"  # fresh: trust the other node
    record["updated"] = "2020-01-01T00:00:00+0000"
    atomic_write_json(store.run_dir("r2") / "status.json", record)
    assert store.state("r2") == "interrupted"
    assert rundir.STALE_AFTER_S >= 3600


# ---------------------------------------------------------------------- one run directory
def test_a_run_dir_start_keeps_an_old_result_and_restart_drops_the_progress(tmp_path):
    """RunDir.start: a killed writer's tmp files go, a finished result is kept aside (a --force retrain
    never deletes one), `restart` drops checkpoint and epochs.csv, then config.json and a running status."""
    run = ResultsDir(tmp_path).run("r3")
    run.path.mkdir(parents=True)
    for name in ("result.json", "checkpoint.pt", "epochs.csv", ".checkpoint.pt.abc.tmp"):
        (run.path / name).write_text("old")
    run.start({"epochs": 4, "h": 8}, "cifar10", restart=True)
    config, kept, status = sorted(p.name for p in run.path.iterdir())
    assert (config, status) == ("config.json", "status.json") and re.fullmatch(r"result\.\d{8}-\d{6}\.json", kept)
    assert (run.path / kept).read_text() == "old"
    assert run.config() == {"epochs": 4, "h": 8, "run_id": "r3", "dataset": "cifar10"}
    assert run.status()["status"] == "running" and run.status()["epoch"] == 0 and run.state() == "running"


def test_a_finished_run_dir_is_done_before_its_index_row_and_loses_its_checkpoint(tmp_path):
    store = ResultsDir(tmp_path)
    run = store.run("run0007")
    run.path.mkdir(parents=True)
    run.save_checkpoint({"epoch": 2})
    history = [{"epoch": e, "lr": 0.01, "train_loss": 1.0, "train_acc": 50.0, "test_loss": None, "test_acc": None,
                "seconds": 1.25} for e in (1, 2)]
    run.end_epoch({"epoch": 2}, history, epochs=2)
    assert run.load_checkpoint() == {"epoch": 2} and run.status()["epoch"] == 2
    assert run.epochs_csv.read_text().splitlines()[1] == "1,0.01,1,50,,,1.25"
    seen = []
    original = store.append_index_row
    store.append_index_row = lambda row: (seen.append(run.state()), original(row))  # what a reader sees then
    store.run("run0007").finish({}, {**_fake_result(7), "epochs": 2})  # a fresh RunDir: the index is the store's
    assert seen == ["done"]  # result.json came first: from then on the run is done
    assert not run.checkpoint_pt.exists() and run.model_pt.exists()
    assert run.status()["status"] == "done" and run.result()["test_acc"] == 57.0
    assert list(pd.read_csv(store.index_csv)["run_id"]) == ["run0007"]
