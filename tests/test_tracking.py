"""Watching runs: TensorBoard event files and W&B offline runs written by real tiny trainings and read back
with each tool's own format, a resume that continues the same curve, a tracker that breaks without failing
its run, a missing package refused before training, and one frame of `cmx runs --watch`."""
from __future__ import annotations

import io
import json
import signal
import struct
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from cmx.analysis import watch
from cmx.cli.app import main
from cmx.run import tracking
from cmx.store.rundir import RunDir
from cmx.config import RunConfig
from cmx.store.resultsdir import ResultsDir
from cmx.run.train import train
from conftest import REPO, cmx_subprocess_env
from fabricate import make_run
from tiny_cifar import make_tiny_cifar

ALL_SCALARS = set(tracking.SCALARS.values())


def need(package: str):
    return pytest.importorskip(package, reason=f'needs pip install "cmx[{package}]" (part of the dev extra)')


# ---------------------------------------------------------------------- readers (each tool's own format)
def tensorboard_events(log_dir: Path):
    need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


def scalars(events, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def hparams_record(events, kind: str):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")[f"_hparams_/{kind}"]
    return getattr(plugin_data_pb2.HParamsPluginData.FromString(content), kind)


def wandb_records(run_file: Path) -> list:
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header (':W&B', magic, version), then
    LevelDB-log blocks of 32 KiB, each record split into chunks with a 7-byte header (crc32, length,
    type: 1 full, 2 first, 3 middle, 4 last); each record is a wandb_internal_pb2.Record."""
    need("wandb")
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, out = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(chunks))
            chunks = b""
    return out


def wandb_run(folder: Path, run_id: str | None = None) -> list:
    """The records of the one offline run under `folder`, once W&B has written its exit record: finish()
    can return before W&B's writer process has flushed the file (measured: up to ~0.25 s)."""
    deadline = time.monotonic() + 30
    while True:
        [run_file] = folder.glob(f"offline-run-*-{run_id or '*'}/run-*.wandb")
        records = wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def wandb_history(records) -> dict[int, dict]:
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history[items["_step"]] = items
    return history


def epochs_csv(results: Path, run_id: str) -> pd.DataFrame:
    return pd.read_csv(results / "runs" / run_id / "epochs.csv")


# ---------------------------------------------------------------------- TensorBoard
def test_tensorboard_has_every_epoch_scalar_and_the_runs_hparams(tiny_config, tmp_path):
    need("tensorboard")
    result = train(tiny_config(epochs=2, eval_every=2, tracker="tensorboard"), tmp_path)
    run_id = result["run_id"]
    events = tensorboard_events(tmp_path / "runs" / run_id / "tb")

    assert set(events.Tags()["scalars"]) == ALL_SCALARS | {"hparams/test_acc", "hparams/best_test_acc"}
    curve = epochs_csv(tmp_path, run_id)
    expected = [(e, pytest.approx(v, rel=1e-5)) for e, v in zip(curve.epoch, curve.train_loss)]
    assert scalars(events, "train/loss") == expected
    assert scalars(events, "test/acc") == [(2, pytest.approx(result["test_acc"], rel=1e-5))]  # evaluated at 2 only
    assert [s for s, _ in scalars(events, "train/img_per_s")] == [1, 2]
    assert scalars(events, "hparams/best_test_acc") == [(2, pytest.approx(result["best_test_acc"], rel=1e-5))]

    start = hparams_record(events, "session_start_info").hparams
    assert start["h"].number_value == 8 and start["norm"].string_value == "batch"
    assert start["mixup"].bool_value is True and start["run_id"].string_value == run_id
    experiment = hparams_record(events, "experiment")
    assert {m.name.tag for m in experiment.metric_infos} >= {"hparams/test_acc", "test/acc"}
    assert hparams_record(events, "session_end_info").status == 1  # STATUS_SUCCESS


def test_tensorboard_resume_drops_what_an_earlier_attempt_logged_past_the_checkpoint(tmp_path):
    """Attempt 1 logged epochs 1-2 but its checkpoint holds epoch 1; attempt 2 resumes from 1 and logs 2-3:
    the reader shows each epoch once, epoch 2 from the attempt that counts."""
    need("tensorboard")
    config = RunConfig(h=8, data="-", tracker="tensorboard")
    first = tracking.TensorBoardTracker(RunDir(tmp_path))
    first.start("r1", config, 0)
    first.log_epoch(1, {"train_loss": 2.0})
    first.log_epoch(2, {"train_loss": 9.0})
    first.fail(RuntimeError("killed"))
    second = tracking.TensorBoardTracker(RunDir(tmp_path))
    second.start("r1", config, 1)
    second.log_epoch(2, {"train_loss": 1.5})
    second.log_epoch(3, {"train_loss": 1.0})
    assert scalars(tensorboard_events(tmp_path / "tb"), "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.0)]


@pytest.mark.slow
def test_tensorboard_curve_continues_after_sigkill_and_resume(tmp_path):
    need("tensorboard")
    data = make_tiny_cifar(tmp_path / "data", n_train_per_batch=256, n_test=64, seed=1)  # 80 steps an epoch
    cmd = [sys.executable, "-m", "cmx", "train", "--h", "16", "--d", "2", "--p", "2", "--k", "3", "--epochs", "3",
           "--batch-size", "16", "--device", "cpu", "--data", str(data), "--results", str(tmp_path / "res"),
           "--tracker", "tensorboard", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO, env=cmx_subprocess_env())
    for line in proc.stderr:
        if line.startswith("epoch 1/"):
            time.sleep(float(line.split()[-3].rstrip("s")) * 0.4)  # about half-way through epoch 2
            proc.kill()
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    [run_dir] = (tmp_path / "res" / "runs").iterdir()
    assert [s for s, _ in scalars(tensorboard_events(run_dir / "tb"), "train/loss")] == [1]  # flushed per epoch

    resumed = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=cmx_subprocess_env(), timeout=180)
    assert resumed.returncode == 0 and "resuming run" in resumed.stderr, resumed.stderr
    events = tensorboard_events(run_dir / "tb")
    curve = epochs_csv(tmp_path / "res", run_dir.name)
    for tag, column in (("train/loss", "train_loss"), ("test/acc", "test_acc"), ("train/lr", "lr")):
        assert scalars(events, tag) == [(e, pytest.approx(v, rel=1e-5)) for e, v in zip(curve.epoch, curve[column])]
    assert hparams_record(events, "session_end_info").status == 1


# ---------------------------------------------------------------------- Weights & Biases
def test_wandb_offline_run_holds_config_group_tags_and_history(tiny_config, tmp_path, monkeypatch, capsys):
    need("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    cfg = tiny_config(epochs=2, tracker="wandb", wandb_project="convmixer", wandb_group="kernel",
                      wandb_tags="Baseline,k=3")
    result = train(cfg, tmp_path / "res")
    run_id = result["run_id"]
    records = wandb_run(tmp_path / "wb" / "wandb", run_id)

    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.project, run.run_group) == (run_id, "convmixer", "kernel")
    assert list(run.tags) == ["Baseline", "k=3"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["h"] == 8 and config["run_id"] == run_id and config["tracker"] == "wandb"
    history = wandb_history(records)
    curve = epochs_csv(tmp_path / "res", run_id)
    assert sorted(history) == [1, 2]
    for epoch, row in zip(curve.epoch, curve.to_dict("records")):
        assert history[epoch]["train/loss"] == pytest.approx(row["train_loss"], rel=1e-5)
        assert history[epoch]["test/acc"] == pytest.approx(row["test_acc"], rel=1e-5)
        assert history[epoch]["train/img_per_s"] > 0
    summary = {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
               for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert summary["test_acc"] == result["test_acc"] and summary["best_test_acc"] == result["best_test_acc"]
    err = capsys.readouterr().err
    assert err.count("W&B offline") == 1 and "wandb sync" in err


def test_wandb_is_offline_without_an_api_key_and_says_why(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)
    mode, why = tracking.wandb_mode()
    assert mode == "offline" and "API key" in why


# ---------------------------------------------------------------------- a tracker never fails a run
@pytest.mark.parametrize("method", ["start", "log_epoch", "finish"])
def test_a_tracker_that_raises_leaves_the_run_done_with_one_warning_line(method, tiny_config, tmp_path,
                                                                         monkeypatch, capsys):
    need("tensorboard")
    calls = []

    def broken(self, *args):
        calls.append(method)
        raise OSError("disk quota exceeded\nsecond line of a long error")

    monkeypatch.setattr(tracking.TensorBoardTracker, method, broken)
    result = train(tiny_config(epochs=2, tracker="tensorboard"), tmp_path)
    assert ResultsDir(tmp_path).state(result["run_id"]) == "done" and result["test_acc"] is not None
    assert calls == [method]  # turned off after the first error: log_epoch is not tried again at epoch 2
    warning = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(warning) == 1 and "warning: tensorboard tracker turned off" in warning[0]
    assert f"in {method}: OSError: disk quota exceeded" in warning[0]


# ---------------------------------------------------------------------- missing packages
@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_tracker_package_is_exit_2_in_one_line_before_training(package, tiny_data, tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if it were not installed
    code = main(["train", "--h", "8", "--d", "1", "--p", "4", "--k", "3", "--epochs", "1", "--device", "cpu",
                 "--data", str(tiny_data), "--results", str(tmp_path / "res"), "--tracker", package, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f'cmx: error: --tracker {package} needs the {package} package: '
                                 f'pip install "cmx[{package}]"']
    assert not list((tmp_path / "res" / "runs").glob("*"))  # nothing written, nothing trained

    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({"base": {"h": 8, "d": 1, "epochs": 1, "data": str(tiny_data)}}))
    assert main(["sweep", str(sweep), "--results", str(tmp_path / "res"), "--tracker", package]) == 2
    assert f'pip install "cmx[{package}]"' in capsys.readouterr().err
    assert not list((tmp_path / "res" / "runs").glob("*"))


def test_tracker_settings_do_not_change_the_run_id_and_are_validated(tmp_path, capsys):
    plain = RunConfig(data="-")
    assert plain.replace(tracker="wandb", wandb_group="g", wandb_tags="a").run_id("x") == plain.run_id("x")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({"base": {"epochs": 1}}))
    assert main(["sweep", str(sweep), "--dry-run", "--tracker", "tb"]) == 2
    assert "tracker must be one of none|tensorboard|wandb, got 'tb'" in capsys.readouterr().err


# ---------------------------------------------------------------------- a whole sweep into W&B
@pytest.mark.slow
def test_sweep_tracker_gives_one_wandb_run_per_run_grouped_by_sweep_and_tagged_by_label(tiny_data, tmp_path,
                                                                                         monkeypatch, capsys):
    need("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sweep = tmp_path / "kernel.yaml"
    base = {"h": 8, "d": 1, "p": 4, "k": 3, "epochs": 1, "batch_size": 64, "randaug": False, "device": "cpu",
            "data": str(tiny_data)}
    sweep.write_text(json.dumps({"base": base, "runs": [{"label": "k3"}, {"label": "k5", "k": 5}]}))
    results = tmp_path / "res"
    assert main(["sweep", str(sweep), "--results", str(results), "--workers", "2", "--tracker", "wandb",
                 "--wandb-project", "convmixer"]) == 0
    seen = {}
    for offline in (tmp_path / "wb" / "wandb").glob("offline-run-*"):
        run_id = offline.name.rsplit("-", 1)[1]
        [run] = [r.run for r in wandb_run(offline.parent, run_id) if r.WhichOneof("record_type") == "run"]
        seen[run.run_id] = (run.project, run.run_group, list(run.tags))
    store = ResultsDir(results)
    labels = {store.config(run_id)["k"]: run_id for run_id in store.run_ids()}
    assert seen == {labels[3]: ("convmixer", "kernel", ["k3"]), labels[5]: ("convmixer", "kernel", ["k5"])}


# ---------------------------------------------------------------------- cmx runs --watch
def test_watch_frame_lists_running_runs_first_with_epoch_accuracy_speed_and_eta(tmp_path):
    done = make_run(tmp_path, test_acc=95.2, k=9)
    running = make_run(tmp_path, state="running", epoch=37, test_acc=80.0, k=5, host="gpu-node-3")
    updated = json.loads((tmp_path / "runs" / running / "status.json").read_text())["updated"]
    now = datetime.strptime(updated, "%Y-%m-%dT%H:%M:%S%z").timestamp()  # the moment its epoch 37 ended
    pending_cfg = RunConfig(data="data", k=3)
    pending = pending_cfg.run_id("cifar10")
    (tmp_path / "runs" / pending).mkdir()
    config = {**pending_cfg.to_dict(), "dataset": "cifar10"}
    (tmp_path / "runs" / pending / "config.json").write_text(json.dumps(config))

    out = io.StringIO()
    Console(file=out, width=200).print(watch.render(tmp_path, interval=2, now=now))
    lines = out.getvalue().splitlines()
    order = [next(i for i, ln in enumerate(lines) if run_id in ln) for run_id in (running, pending, done)]
    assert order == sorted(order)  # running, then pending, then done
    row = lines[order[0]].split()
    assert "running" in row and "37/200" in row
    # fabricate's epochs take 10 s on the full 50,000 images (batch 64): 49,984 / 10 img/s; 163 epochs left
    assert "4,998" in row and "27m 10s" in " ".join(row)
    assert "95.20" in lines[order[2]] and "5,000" in lines[order[2]]
    assert "3 runs" in lines[-1] and "1 running, 1 pending, 1 done" in lines[-1] and "Ctrl-C" in lines[-1]


def test_runs_watch_redraws_until_ctrl_c_and_exits_0(tmp_path, monkeypatch, capsys):
    make_run(tmp_path, state="running", epoch=3, k=5)
    frames = []
    real_render = watch.render

    def counting(*args, **kwargs):
        frames.append(1)
        return real_render(*args, **kwargs)

    def sleep(seconds):
        if len(frames) >= 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(watch, "render", counting)
    monkeypatch.setattr(watch.time, "sleep", sleep)
    assert main(["runs", "--watch", "--interval", "0.5", "--results", str(tmp_path)]) == 0
    assert len(frames) == 3 and "3/200" in capsys.readouterr().out
    assert main(["runs", "--watch", "--format", "csv", "--results", str(tmp_path)]) == 2
