"""Executors for real, on tiny generated CIFAR: local slots, Ctrl-C/kill and resume, failures, submitit
(debug and local executors, including a preemption → requeue → resume), and a real one-node SLURM.

Every training here is ConvMixer-8/1 p4 k3 on 260 train / 64 test images without RandAugment (a few
seconds each, most of it starting Python and torch).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cmx.sweep.slurm
from cmx.cli.app import main
from cmx.sweep.slurm import SlurmOptions, SubmititExecutor
from cmx.sweep.executors import select_runs
from cmx.store.resultsdir import ResultsDir
from cmx.sweep.plan import make_plan
from conftest import cmx_subprocess_env
from tiny_cifar import make_tiny_cifar

REPO = Path(__file__).resolve().parents[1]
START_SLURM = REPO / ".ci" / "start-slurm.sh"
TINY = dict(h=8, d=1, p=4, k=3, epochs=1, batch_size=64, randaug=False, device="cpu")


@pytest.fixture(autouse=True)
def one_thread_per_training(monkeypatch):
    """One torch thread per training: on a loaded 2-core machine, two spinning OpenMP threads per tiny run
    make an epoch ~40x slower (measured 4 s vs 0.1 s). Children inherit the variable; in-process runs
    (debug executor) get torch.set_num_threads(1) for the test."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_cifar(tmp_path_factory.mktemp("tiny-cifar"), n_train_per_batch=52, n_test=64, seed=0)


def write_sweep(path: Path, data: Path, runs: list[dict] | None = None, grid: dict | None = None, **base) -> Path:
    doc = {"name": path.stem, "base": {**TINY, "data": str(data), **base}}
    if runs is not None:
        doc["runs"] = runs
    if grid is not None:
        doc["grid"] = grid
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def states(results: Path) -> dict[str, str]:
    store = ResultsDir(results)
    return {run_id: store.state(run_id) for run_id in store.run_ids()}


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def epoch_of(results: Path) -> int:
    status = [ResultsDir(results).status(r) or {} for r in ResultsDir(results).run_ids()]
    return max((s.get("epoch") or 0 for s in status), default=0)


# ---------------------------------------------------------------------- local executor
def test_gpu_slots_get_their_own_device_and_cpu_slots_share_the_cores(tmp_path, monkeypatch):
    from cmx.sweep.local import LocalExecutor, available_cpus, make_slots

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = make_slots(["0", "1"], per_gpu=2, visible=["0", "1"])
    assert [s.gpu for s in slots] == ["0", "1", "0", "1"]  # round-robin: two runs land on two GPUs
    executor = LocalExecutor(ResultsDir(tmp_path), slots, live=False)
    envs = [executor.child_env(s) for s in slots]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {str(max(1, available_cpus() // 4))}
    cpu = make_slots(None, workers=3)
    assert [s.gpu for s in cpu] == [None] * 3
    cpu_env = LocalExecutor(ResultsDir(tmp_path), cpu, live=False).child_env(cpu[0])
    assert cpu_env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # left as it was
    assert cpu_env["CMX_CPU_SHARE"] == "3"  # each CPU run had a third of the cores (its provenance says so)
    assert all("CMX_CPU_SHARE" not in e for e in envs)  # GPU runs: their own device
    single = make_slots(None, workers=1)
    single_env = LocalExecutor(ResultsDir(tmp_path), single, live=False).child_env(single[0])
    assert "OMP_NUM_THREADS" not in single_env and "CMX_CPU_SHARE" not in single_env


@pytest.mark.parametrize("inherited,requested,expected", [
    ("3", ["0"], ["3"]),  # a lent machine exposing its GPU 3 only
    ("4,5,6,7", ["1", "3"], ["5", "7"]),  # a SLURM allocation
    ("MIG-aaaa-1111,MIG-bbbb-2222", ["1", "0"], ["MIG-bbbb-2222", "MIG-aaaa-1111"]),  # MIG instances by UUID
    ("GPU-1234-abcd,GPU-5678-ef01", ["GPU-5678-ef01"], ["GPU-5678-ef01"]),  # a UUID named directly
])
def test_gpu_indices_count_among_the_inherited_visible_devices(monkeypatch, inherited, requested, expected):
    from cmx.sweep.local import make_slots, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)
    assert [s.gpu for s in make_slots(requested, per_gpu=1)] == expected
    assert visible_gpus() == inherited.split(",")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="counts the GPUs of a machine without one")
def test_without_an_inherited_list_the_visible_gpus_are_counted_by_torch(monkeypatch):
    from cmx.sweep.local import visible_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == []


@pytest.mark.parametrize("inherited,requested,message", [
    ("3", "1", "there is no GPU 1; 1 GPU(s) visible here (CUDA_VISIBLE_DEVICES=3), numbered from 0"),
    ("", "0", "there is no GPU 0; 0 GPU(s) visible here"),
    ("MIG-aaaa-1111", "MIG-cccc-3333", "MIG-cccc-3333 is not among the 1 GPU(s) visible here"),
])
def test_a_gpu_that_is_not_visible_is_a_one_line_error_exit_2(tmp_path, monkeypatch, capsys, inherited, requested,
                                                              message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nbase: {{h: 8, d: 1, p: 4, k: 3, epochs: 1, data: '{tmp_path}'}}\nseeds: [0]\n")
    assert main(["sweep", str(sweep), "--gpus", requested, "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


class FakeProc:
    pid = 12345


def plan_runs(tmp_path: Path, *devices: str) -> list:
    """One planned run per `device: X` line (tiny settings; nothing is trained)."""
    runs = []
    for i, device in enumerate(devices):
        sweep = tmp_path / f"s{i}.yaml"
        sweep.write_text(f"name: s{i}\nbase: {{h: 8, d: 1, p: 4, k: 3, epochs: 1, {device}, data: '{tmp_path}'}}\n"
                         f"seeds: [{i}]\n")
        runs += make_plan(sweep, results=tmp_path / "r").runs
    return runs


def test_a_run_with_device_auto_in_a_gpu_slot_is_told_to_use_cuda(tmp_path, monkeypatch):
    """Without it, a child that cannot see its GPU would train on the CPU with `device: auto`, silently."""
    from cmx.sweep import local
    from cmx.sweep.local import LocalExecutor, make_slots

    started = []
    monkeypatch.setattr(local.subprocess, "Popen", lambda cmd, **kw: started.append((cmd, kw["env"])) or FakeProc())
    runs = plan_runs(tmp_path, "device: auto", "device: cpu")
    executor = LocalExecutor(ResultsDir(tmp_path / "r"), make_slots(["0"], visible=["2"]), live=False)
    for run in runs:
        executor.start(executor.slots[0], run)
    (auto_cmd, auto_env), (cpu_cmd, _) = started
    assert auto_cmd[-2:] == ["--device", "cuda"] and auto_env["CUDA_VISIBLE_DEVICES"] == "2"
    assert "--device" not in cpu_cmd  # an explicit device is the user's


def test_a_child_told_cuda_without_a_visible_gpu_fails_loudly(tiny_data, tmp_path):
    """What the slot's child does when its GPU is not there: exit 2 with one line, not a CPU run."""
    done = subprocess.run([sys.executable, "-m", "cmx", "train", "--h", "8", "--d", "1", "--p", "4", "--k", "3",
                           "--epochs", "1", "--data", str(tiny_data), "--results", str(tmp_path), "--device", "cuda"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**cmx_subprocess_env(), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and "no CUDA device is available" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/result.json"))


@pytest.mark.slow
def test_local_sweep_with_two_workers_completes_and_a_second_invocation_trains_nothing(data, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "two.yaml", data, grid={"k": [3, 5]})
    results = tmp_path / "results"
    assert main(["sweep", str(sweep), "--results", str(results), "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    assert list(states(results).values()) == ["done", "done"]
    assert "2 runs: 2 done (2 trained now, 0 already done)" in out
    assert err.count("[start]") == 2 and err.count("[done]") == 2
    # the launch line's cost: a device never measured, and the suite does not probe → the labelled assumption
    assert re.search(r"2 to launch \(2 CPU worker\(s\); ≈[0-9.e-]+ CPU-h at an assumed 40 TFLOP/s, ≈\S+ "
                     r"wall-clock; basis: 2 assumed", " ".join(err.split()))
    queue = json.loads(next((results / "sweeps").glob("*.json")).read_text())  # for `cmx runs --watch`
    assert queue["slots"] == 2 and sorted(r["run_id"] for r in queue["runs"]) == sorted(states(results))
    logs = {p: p.read_text() for p in results.glob("runs/*/train.log")}
    assert len(logs) == 2 and all("epoch 1/1" in text for text in logs.values())

    assert main(["sweep", str(sweep), "--results", str(results), "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    assert "2 runs: 2 done (0 trained now, 2 already done)" in out
    assert "0 to launch" in err and "[start]" not in err
    assert {p: p.read_text() for p in results.glob("runs/*/train.log")} == logs  # nothing ran again


@pytest.mark.slow
def test_failing_runs_do_not_stop_the_others_and_are_listed(data, tmp_path, capsys):
    broken = tmp_path / "broken-data" / "cifar-10-batches-py"
    broken.mkdir(parents=True)
    (broken / "test_batch").write_bytes(b"")  # a data dir without training batches
    sweep = write_sweep(tmp_path / "mixed.yaml", data, runs=[
        {"label": "good"}, {"label": "diverges", "lr": 1e30}, {"label": "no data", "data": str(broken.parent)}])
    results = tmp_path / "results"
    assert main(["sweep", str(sweep), "--results", str(results), "--workers", "2"]) == 1
    out, err = capsys.readouterr()
    assert "3 runs: 1 done (1 trained now, 0 already done), 2 failed" in out
    lines = out.splitlines()
    assert any("diverges" in ln and "exit 3 (diverged): loss became non-finite" in ln for ln in lines), out
    assert any("no data" in ln and "exit 2 (user error)" in ln and "is incomplete" in ln for ln in lines), out
    assert sorted(states(results).values()) == ["done", "failed", "pending"]  # a user error never started
    assert "cmx: 2 of 3 runs are not done" in err

    # again: the diverged run is not retried (it would diverge again) but reported; the good one is done
    assert main(["sweep", str(sweep), "--results", str(results), "--workers", "2"]) == 1
    out, _ = capsys.readouterr()
    assert any("skipped" in ln and "diverges" in ln and "use --rerun-failed" in ln for ln in out.splitlines()), out


@pytest.mark.slow
def test_interrupted_and_killed_sweeps_resume_from_checkpoints(data, tmp_path):
    sweep = write_sweep(tmp_path / "long.yaml", data, epochs=60)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "cmx", "sweep", str(sweep), "--results", str(results)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    # Ctrl-C: forwarded once, the run saves a checkpoint, the sweep exits 130
    sweep_proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: epoch_of(results) >= 1, 90, "epoch 1")
    sweep_proc.send_signal(signal.SIGINT)
    out, err = sweep_proc.communicate(timeout=60)
    assert sweep_proc.returncode == 130, err
    assert "interrupted" in out and "stopped by SIGINT" in out and "cmx: sweep stopped" in err
    (run_id,) = states(results)
    assert states(results)[run_id] == "interrupted"
    first_stop = epoch_of(results)

    # SIGKILL of the sweep itself: the kernel sends the training SIGTERM (PDEATHSIG); it checkpoints too
    sweep_proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: epoch_of(results) > first_stop, 90, "progress after resuming")
    sweep_proc.kill()
    sweep_proc.wait(timeout=10)
    status = wait_for(lambda: (s := ResultsDir(results).status(run_id)) and s["status"] == "interrupted" and s,
                      60, "the orphaned training to checkpoint and stop")
    assert status["error"].startswith("SIGTERM")

    assert main(["sweep", str(sweep), "--results", str(results)]) == 0
    log = (results / "runs" / run_id / "train.log").read_text()
    assert log.count("resuming run") == 2
    epochs = (results / "runs" / run_id / "epochs.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in epochs] == list(range(1, 61))


# ---------------------------------------------------------------------- submitit (same code path as SLURM)
@pytest.mark.slow
def test_debug_executor_runs_the_slurm_job_code_in_process(data, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "dbg.yaml", data, runs=[{"label": "good"}, {"label": "diverges", "lr": 1e30}])
    results = tmp_path / "results"
    assert main(["sweep", str(sweep), "--results", str(results), "--executor", "debug"]) == 1
    out = capsys.readouterr().out
    assert "2 runs: 1 done (1 trained now, 0 already done), 1 failed" in out
    assert any("diverges" in ln and "loss became non-finite" in ln for ln in out.splitlines()), out


@pytest.mark.slow
def test_submitit_local_executor_requeues_a_preempted_run_which_resumes(data, tmp_path, monkeypatch):
    """SLURM's preemption signal (USR2) → checkpoint mid-epoch → submitit requeues → train() resumes."""
    monkeypatch.setattr(cmx.sweep.slurm, "POLL_S", 0.5)
    sweep = write_sweep(tmp_path / "pre.yaml", data, epochs=12)
    results = tmp_path / "results"
    plan = make_plan(sweep, results)
    todo, skipped = select_runs(plan)
    assert len(todo) == 1 and not skipped
    executor = SubmititExecutor(plan.results, "local-submitit", SlurmOptions(time_min=60, gpus_per_run=0),
                                wait=True, echo=lambda text: None)
    summaries = []
    waiter = threading.Thread(target=lambda: summaries.append(executor.submit(todo)))
    waiter.start()
    run_id = todo[0].run_id
    status = wait_for(lambda: (s := ResultsDir(results).status(run_id)) and (s.get("epoch") or 0) >= 1 and s,
                      90, "epoch 1 in the submitit job")
    os.kill(status["pid"], signal.SIGUSR2)  # what SLURM sends before preempting or at the time limit
    waiter.join(timeout=120)
    assert not waiter.is_alive()
    (summary,) = summaries
    assert [o.status for o in summary.outcomes] == ["done"] and summary.exit_code == 0
    logs = "".join(p.read_text() for p in (results / "slurm").glob("*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    assert "resuming run" in logs
    epochs = (results / "runs" / run_id / "epochs.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in epochs] == list(range(1, 13))


# ---------------------------------------------------------------------- a real one-node SLURM
def _node_ready() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.split()
    return any(state in ("idle", "mixed", "allocated", "completing") for state in out)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running SLURM: already up (e.g. CI ran .ci/start-slurm.sh), or started here and stopped after."""
    if _node_ready():
        yield
        return
    if os.geteuid() != 0 or not START_SLURM.exists():
        pytest.skip("no SLURM running (sinfo missing or node not idle); starting one needs root and "
                    ".ci/start-slurm.sh")
    proc = subprocess.run([str(START_SLURM)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not _node_ready():
        reason = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["unknown"]
        pytest.skip(f"SLURM cannot be started here: {reason[0]}")
    yield
    subprocess.run([str(START_SLURM), "--stop"], capture_output=True, timeout=60)


@pytest.mark.slow
@pytest.mark.slurm
def test_real_slurm_runs_a_two_run_sweep_as_a_job_array(slurm_cluster, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cmx.sweep.slurm, "POLL_S", 1.0)
    sweep = write_sweep(tmp_path / "slurm.yaml", data, grid={"k": [3, 5]})
    results = tmp_path / "results"
    args = ["sweep", str(sweep), "--results", str(results), "--executor", "slurm", "--wait", "--partition", "debug",
            "--time", "10", "--gpus-per-run", "0", "--cpus-per-run", "1", "--max-parallel", "2",
            "--slurm-extra", "comment=cmx-test"]
    assert main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "submitted 2 run(s) to slurm as job array" in out and "squeue -j" in out
    assert "2 runs: 2 done (2 trained now, 0 already done)" in out
    assert list(states(results).values()) == ["done", "done"]
    scripts = sorted((results / "slurm").glob("[0-9]*_submission.sh"))
    assert len(scripts) == 1  # one sbatch script: one job array
    script = scripts[0].read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --comment=cmx-test" in script
    assert "#SBATCH --partition=debug" in script and "#SBATCH --cpus-per-task=1" in script
    # nothing left to submit the second time
    assert main(args) == 0
    assert "0 to launch" in capsys.readouterr().err


@pytest.mark.slurm
def test_a_run_still_queued_in_slurm_is_not_submitted_twice(slurm_cluster, data, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "held.yaml", data)
    results = tmp_path / "results"
    args = ["sweep", str(sweep), "--results", str(results), "--executor", "slurm", "--time", "5",
            "--gpus-per-run", "0", "--cpus-per-run", "1", "--slurm-extra", "begin=now+3600"]  # held in the queue
    assert main(args) == 0
    out = capsys.readouterr().out
    (run_id,) = states(results)
    job_id = json.loads((results / "runs" / run_id / "submitted.json").read_text())["job_id"]
    try:
        assert f"  {job_id}  {run_id}" in out and "1 submitted" in out
        assert main(args) == 0
        out = capsys.readouterr().out
        assert f"already submitted: SLURM job {job_id} is queued or running" not in out  # (not listed: pending)
        assert "0 submitted, 1 skipped" in out
        assert len(list((results / "slurm").glob("[0-9]*_submission.sh"))) == 1
    finally:
        subprocess.run(["scancel", job_id.split("_")[0]], timeout=30)
    assert states(results) == {run_id: "pending"}


def test_slurm_executor_without_slurm_fails_in_one_line_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    results = tmp_path / "results"
    code = main(["sweep", str(REPO / "sweeps" / "kernel.yaml"), "--results", str(results), "--executor", "slurm"])
    err = capsys.readouterr().err
    assert code == 2 and "sbatch/srun not found" in err and len(err.strip().splitlines()) == 1
    assert not results.exists()
