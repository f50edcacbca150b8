"""The GPU check's CPU-reachable parts: the no-CUDA exit, the report files, the tests section (on CPU every
cuda test skips), the time caps, the profiler's kinds on a CPU trace, the speed timer, the short training and
the packing sweep file, and where the no-sync windows fall in the training loop."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cmx.augment.pipeline import augment_batches
from cmx.bench.gpu import check as gpu_check, profile as P
from cmx.bench.gpu.budget import Budget
from cmx.bench.gpu.report import Report, render_markdown
from cmx.bench.gpu.runs import packing_sweep, short_training
from cmx.bench.gpu.speed import measure_step, time_per_call
from cmx.bench.speed import cmx_train_step
from cmx.run.tune import place
from cmx.cli.app import main
from cmx.run import train as train_module
from cmx.config import RunConfig
from cmx.run.train import train
from conftest import REPO, cmx_subprocess_env
from sync_windows import guard_steps
from tiny_cifar import make_tiny_cifar

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what the GPU check does without CUDA")


@cpu_only
def test_without_cuda_gpu_check_is_one_line_and_exit_2(capsys):
    assert main(["gpu-check", "--out", "unused"]) == 2
    captured = capsys.readouterr()
    assert captured.err == gpu_check.NO_CUDA + "\n" and captured.out == ""


@cpu_only
def test_the_module_entry_point_says_the_same(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cmx.bench.gpu", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, env=cmx_subprocess_env(), timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (2, "gpu-check needs a CUDA device; found none\n", "")
    assert not (tmp_path / "out").exists()  # nothing written


def test_report_writes_json_and_one_markdown_table_after_every_verdict(tmp_path):
    printed = []
    report = Report(tmp_path, fresh=True, echo=printed.append)
    report.update(environment={"gpu": "Fake GPU", "driver": "1.2", "cuda": "13.0", "torch": "2.11.0"}, budget_s=460)
    report.add("speed", "train step", "info", "5,000 img/s | peak 900 MiB", train_img_per_s=5000.0, peak_mem_mib=900)
    assert "in progress, or cut short" in (tmp_path / "gpu_check.md").read_text()  # readable mid-check
    report.add("tests", "test_x", "FAIL", "1 of 3 failed: boom")
    report.update(wall_s=401.5, outcome="1 check(s) failed or ran out of time")
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["figures"]["speed"]["train step"] == {"train_img_per_s": 5000.0, "peak_mem_mib": 900}
    assert [row["verdict"] for row in data["checks"]] == ["info", "FAIL"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert md == render_markdown(data)
    assert "# cmx GPU check — Fake GPU" in md and "driver 1.2, cuda 13.0, torch 2.11.0" in md
    assert "| check | verdict | figure |" in md and "| speed: train step | info | 5,000 img/s \\| peak 900 MiB |" in md
    assert "Whole check: 402 s wall (budget 460 s)" in md
    assert printed == ["[info] speed: train step — 5,000 img/s | peak 900 MiB", "[FAIL] tests: test_x — 1 of 3 failed: boom"]
    with pytest.raises(ValueError):
        report.add("speed", "x", "great")


@cpu_only
def test_tests_section_on_cpu_reports_every_cuda_test_skipped(tmp_path):
    report = Report(tmp_path, fresh=True, echo=lambda line: None)
    gpu_check.tests_section(report, None, timeout=300)
    rows = report.load()["checks"]
    assert rows[-1]["check"] == "pytest -m cuda" and rows[-1]["verdict"] == "skip", rows[-1]
    assert len(rows) > 5 and all(row["verdict"] == "skip" for row in rows)
    assert "needs a CUDA device" in rows[0]["figure"]


def test_a_section_past_its_cap_is_killed_with_exit_124():
    assert gpu_check.run_capped([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1) == 124
    assert gpu_check.run_capped([sys.executable, "-c", "raise SystemExit(3)"], timeout=60) == 3


def pid_gone(pid: int, wait_s: float = 5.0) -> bool:
    """True once `pid` has exited (a zombie counts as gone: it runs nothing)."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_capped_command_is_killed_with_everything_it_started(tmp_path):
    """As the packing section's `cmx sweep`, which starts each `cmx train` in a session of its own: when
    the cap kills the sweep, no training may run on as an orphan."""
    pids = tmp_path / "pids"
    grandchild = "import time; time.sleep(120)"
    child = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], "
             f"start_new_session=True); open({str(pids)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    t0 = time.monotonic()
    assert gpu_check.run_capped([sys.executable, "-c", child], timeout=3) == 124
    assert time.monotonic() - t0 < 30
    assert pids.is_file(), "the child never started its own child"
    assert pid_gone(int(pids.read_text())), "the grandchild outlived the cap"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_check_stopped_from_outside_stops_its_capped_command(tmp_path, sig):
    """A `timeout` (SIGTERM) or Ctrl-C (SIGINT, which never reaches a child in a session of its own)."""
    pids = tmp_path / "pids"
    child = f"import os, time; open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    driver = subprocess.Popen([sys.executable, "-c", "import sys; from cmx.bench.gpu.budget import exit_on_sigterm, "
                               f"run_capped; exit_on_sigterm(); run_capped([sys.executable, '-c', {child!r}], 120)"],
                              cwd=REPO, env=cmx_subprocess_env(), stderr=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while not pids.is_file() and time.monotonic() < end:
        time.sleep(0.1)
    driver.send_signal(sig)
    driver.wait(timeout=120)  # generous: a loaded CI machine can starve the driver's exit
    assert pids.is_file() and pid_gone(int(pids.read_text())), "the capped command outlived the check"


def test_a_budget_says_skipped_with_what_a_piece_needed_and_what_was_left(tmp_path):
    now = [100.0]
    budget = Budget.seconds(30, clock=lambda: now[0])
    report = Report(tmp_path, fresh=True, echo=lambda line: None)
    assert budget.fits(report, "speed", "a", 30) and budget.left() == 30
    now[0] += 25
    assert not budget.fits(report, "speed", "torch.compile", 90)
    [row] = report.load()["checks"]
    assert (row["verdict"], row["figure"]) == ("skip", "skipped: budget (needs ~90 s, 5 s left)")
    wall = Budget.until_wall(time.time() + 50)  # a child's deadline from the driver's absolute time
    assert 49 < wall.left() <= 50


# ---------------------------------------------------------------------- the tests section: streamed, capped
FAKE_CUDA_TESTS = """
import time
import pytest

pytestmark = pytest.mark.cuda

def test_passes():
    pass

def test_fails():
    assert 1 == 2, "pixels differ"

@pytest.mark.parametrize("n", [1, 2])
def test_param_passes(n):
    pass

def test_skips():
    pytest.skip("no bf16 here")

def test_hangs():
    time.sleep(120)

def test_never_reached():
    pass
"""


def fake_tests_section(tmp_path, timeout: float, test_cost: float):
    """The tests section run over FAKE_CUDA_TESTS: (exit code, its report)."""
    test_file = tmp_path / "test_fake_cuda.py"
    test_file.write_text(FAKE_CUDA_TESTS)
    report = Report(tmp_path / "out", fresh=True, echo=lambda line: None)
    return gpu_check.tests_section(report, None, timeout=timeout, test_file=test_file, test_cost=test_cost), report


def test_a_killed_tests_section_keeps_every_result_it_had(tmp_path):
    """pytest's junit XML is written only at the end; the plugin's lines are written as each test ends."""
    code, report = fake_tests_section(tmp_path, timeout=15, test_cost=0)
    assert code == 124
    rows = {row["check"]: row for row in report.load()["checks"]}
    assert rows["test_passes"]["verdict"] == "pass" and rows["test_param_passes"]["figure"] == "2 of 2 passed"
    assert rows["test_fails"]["verdict"] == "FAIL" and "pixels differ" in rows["test_fails"]["figure"]
    assert rows["test_skips"]["verdict"] == "skip" and rows["test_skips"]["figure"] == "no bf16 here"
    assert "test_hangs" not in rows and "test_never_reached" not in rows
    assert rows["pytest -m cuda"]["verdict"] == "FAIL"  # a test failed: a defect, killed or not


def test_tests_that_do_not_fit_are_skipped_for_budget_not_killed(tmp_path):
    code, report = fake_tests_section(tmp_path, timeout=60, test_cost=1000)
    assert code == 0
    rows = report.load()["checks"]
    assert all(row["verdict"] == "skip" for row in rows)
    assert all(row["figure"].startswith("skipped: budget") for row in rows[:-1])
    assert rows[-1]["figure"].startswith("0 of 7 tests passed, 7 skipped (7 for budget)")


# ---------------------------------------------------------------------- the whole check, dry, on CPU
class Killed(Exception):
    """The driver's kill at a section's cap, as the fake clock sees it."""


class FakeClock:
    """Seconds that pass only when fake GPU work spends them; spending past `kill_at` is the kill."""

    def __init__(self):
        self.now, self.kill_at = 0.0, float("inf")

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        if self.now + seconds > self.kill_at:
            self.now = self.kill_at
            raise Killed
        self.now += seconds


# seconds each piece takes in the dry run: plausible on a GPU, with two overruns to exercise the caps
DRY_COSTS = {"tests": 95, "bandwidth": 3, "augmentation": 4, "base": 10, "profile": 12, "variant": 5,
             "batch 512": 8, "cmx bench": 35, "torch.compile": 60, "training overrun": 120,
             "per-gpu 1": 45, "per-gpu 4": 20}


def fake_gpu_work(monkeypatch, clock: FakeClock) -> None:
    """Every piece of GPU work replaced by the fake clock spending its DRY_COSTS; figures are placeholders."""
    from cmx.bench.gpu import runs as gpu_runs, speed as gpu_speed

    figures = dict(train_img_per_s=1.0, eval_img_per_s=1.0, peak_mem_mib=1.0, step_ms=1.0)
    monkeypatch.setattr(gpu_speed, "inputs", lambda device, images, labels: gpu_speed.Inputs(images, labels, None, None, None))
    monkeypatch.setattr(gpu_speed, "copy_bandwidth_gb_s", lambda device: clock.spend(DRY_COSTS["bandwidth"]) or 1.0)
    monkeypatch.setattr(gpu_speed, "cmx_aug_step", lambda *a: (None, 1024))
    monkeypatch.setattr(gpu_speed, "time_per_call", lambda *a, **kw: clock.spend(DRY_COSTS["augmentation"]) or 1.0)

    def measure_step(config, *a, **kw):
        key = ("torch.compile" if config.compile else "batch 512" if config.batch_size == 512 else
               "base" if config == gpu_speed.RunConfig(**gpu_speed.BASE, device="cuda", data="unused") else "variant")
        clock.spend(DRY_COSTS[key])
        return dict(figures)

    monkeypatch.setattr(gpu_speed, "measure_step", measure_step)
    monkeypatch.setattr(gpu_speed, "profile_step", lambda report, *a: clock.spend(DRY_COSTS["profile"]))
    monkeypatch.setattr(gpu_speed, "cmx_bench_cli", lambda report, device, budget: clock.spend(DRY_COSTS["cmx bench"])
                        or report.add("speed", "cmx bench --device cuda --json", "pass", "dry run"))

    def short_training(report, data, seconds, device="cuda"):
        report.add("training", "probe (2 epochs)", "info", "dry run")
        clock.spend(seconds + DRY_COSTS["training overrun"])  # a training that hangs past its own time

    monkeypatch.setattr(gpu_runs, "short_training", short_training)
    monkeypatch.setattr(gpu_check, "sweep_subprocess",
                        lambda sweep, results, per_gpu, left: clock.spend(DRY_COSTS[f"per-gpu {per_gpu}"]) or 0)


def test_a_dry_run_of_the_whole_check_keeps_to_its_budget_and_reports_skips_not_failures(
        tiny_data, tmp_path, monkeypatch, capsys):
    """The driver, its caps and the sections' budget checks and report writing, run on CPU with a fake
    clock, every piece of GPU work absent (DRY_COSTS): it is what the first GPU will run, minus the GPU."""
    clock, timeline = FakeClock(), []
    fake_gpu_work(monkeypatch, clock)

    def run_dry(name, report, data, out, cap):  # what run_in_child does, in this process
        start, clock.kill_at = clock(), clock() + cap
        try:
            if name == "tests":
                clock.spend(DRY_COSTS["tests"])
                gpu_check.report_tests(report, {"test_x": {"passed": ["", ""]}}, 0, cap)
            else:
                gpu_check.run_section(name, data, out, Budget(clock() + cap - gpu_check.GRACE_S, clock),
                                      device=torch.device("cuda"))
            code = 0
        except Killed:
            code = 124
        finally:
            clock.kill_at = float("inf")
        timeline.append(f"{name:8s} {start:5.0f}–{clock():5.0f} s: cap {cap:5.1f} s, used {clock() - start:5.1f} s"
                        + (" (killed at its cap)" if code == 124 else ""))
        return code

    code = gpu_check.check(tiny_data, tmp_path / "out", clock=clock, run=run_dry)
    with capsys.disabled():
        print("\n[gpu-check dry run] " + "\n[gpu-check dry run] ".join(gpu_check.budget_plan() + timeline)
              + f"\n[gpu-check dry run] whole check: {clock():.0f} s of {gpu_check.BUDGET_S} s")
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = data["checks"]
    assert code == 0, rows  # pieces skipped and a section killed for time are not defects
    assert clock() <= gpu_check.BUDGET_S
    sections = [row["section"] for row in rows]
    assert sections == sorted(sections, key=["tests", "speed", "training", "packing"].index)  # in order
    by = {(row["section"], row["check"]): row for row in rows}
    assert by[("speed", "torch.compile")]["figure"].startswith("skipped: budget (needs ~90 s")
    assert by[("speed", "cmx bench --device cuda --json")]["verdict"] == "pass"  # before compile: it fit
    assert by[("training", "probe (2 epochs)")]["verdict"] == "info"  # kept though the section was killed
    assert by[("training", "section")]["figure"].startswith("skipped: budget: stopped at its")
    assert by[("packing", "4 runs, --per-gpu 1")]["verdict"] == "info"
    assert by[("packing", "4 runs, --per-gpu 4")]["verdict"] == "info"
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "Whole check:" in md and "no defect found" in md and "skipped for budget" in md


def test_a_failed_check_or_a_crashed_section_is_exit_1(tiny_data, tmp_path):
    def run(name, report, data, out, cap):
        if name == "tests":
            report.add("tests", "test_x", "FAIL", "1 of 1 failed")
        return 0

    assert gpu_check.check(tiny_data, tmp_path / "a", budget=300, run=run) == 1
    assert gpu_check.check(tiny_data, tmp_path / "b", budget=300, run=lambda name, *a: 1 if name == "speed" else 0) == 1
    assert [r["verdict"] for r in json.loads((tmp_path / "b" / "gpu_check.json").read_text())["checks"]] == ["error"]
    assert gpu_check.check(tiny_data, tmp_path / "c", budget=300, run=lambda *a: 124) == 0
    rows = json.loads((tmp_path / "c" / "gpu_check.json").read_text())["checks"]
    assert {r["verdict"] for r in rows} == {"skip"}  # every section stopped at its cap, or left no time


def test_the_data_folder_defaults_as_cmx_trains_does(tmp_path, monkeypatch):
    """No --data: $CMX_DATA, else data/ (RunConfig's rule), never a folder outside the repository."""
    seen = []
    monkeypatch.setattr(gpu_check, "cuda_available", lambda: True)
    monkeypatch.setattr(gpu_check, "check", lambda data, out, budget, sections: seen.append(data) or 0)
    monkeypatch.setenv("CMX_DATA", str(tmp_path / "cifar"))
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    monkeypatch.delenv("CMX_DATA")
    assert main(["gpu-check", "--out", str(tmp_path / "out")]) == 0
    assert seen == [tmp_path / "cifar", Path("data")]


def test_a_missing_data_folder_fails_setup_and_runs_only_the_tests(tmp_path):
    ran = []
    code = gpu_check.check(tmp_path / "no-such-data", tmp_path / "out", budget=300,
                           run=lambda name, *a: ran.append(name) or 0)
    rows = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["checks"]
    assert code == 1 and ran == ["tests"]
    assert rows[0]["verdict"] == "FAIL" and "no CIFAR-10 folder at" in rows[0]["figure"]


def test_the_plan_prints_without_a_gpu():
    done = subprocess.run([sys.executable, "-m", "cmx.bench.gpu", "--plan"], capture_output=True, text=True,
                          cwd=REPO, env=cmx_subprocess_env(), timeout=120)
    assert done.returncode == 0 and "budget 460 s" in done.stdout and "torch.compile 90" in done.stdout


# ---------------------------------------------------------------------- profiler kinds
def test_conv_kind_reads_the_weight_shape():
    assert P.conv_kind("aten::convolution", [[64, 256, 32, 32], [256, 1, 9, 9], [256]]) == P.DEPTHWISE_FWD
    assert P.conv_kind("aten::convolution_backward", [[64, 256, 32, 32], [64, 256, 32, 32], [256, 1, 9, 9]]) == P.DEPTHWISE_BWD
    assert P.conv_kind("aten::convolution", [[64, 256, 32, 32], [256, 256, 1, 1], [256]]) == P.POINTWISE
    assert P.conv_kind("aten::convolution", [[64, 3, 32, 32], [256, 3, 2, 2], [256]]) == P.PATCH
    assert P.conv_kind("aten::add", [[1], [1]]) is None


def test_a_cpu_profile_of_a_train_loop_chunk_finds_every_kind():
    config = RunConfig(h=16, d=2, p=2, k=5, batch_size=8, device="cpu", data="unused")
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (16,), generator=gen)
    x, targets = augment_batches(images[:8], labels[:8], gen, 8)
    step, _ = cmx_train_step(config, place(config, device=device), x, targets)

    def loop():
        with torch.profiler.record_function(P.AUG_RANGE):
            augment_batches(images, labels, gen, 8)
        step()
        step()

    step()
    totals = P.profile_loop(loop, device)
    for kind in (P.DEPTHWISE_FWD, P.DEPTHWISE_BWD, P.POINTWISE, P.PATCH, P.NORM_ACT, P.OPTIMIZER, P.AUGMENT):
        assert totals[kind] > 0, kind
    assert totals["busy"] == pytest.approx(sum(totals[k] for k in P.KINDS))
    assert torch.nn.utils.clip_grad_norm_.__name__ == "clip_grad_norm_"  # the label is removed afterwards
    traffic = P.depthwise_bytes(64, 256, 8, 1, 2)
    assert traffic == {"fwd": 2 * 8 * 64 * 256 * 1024 * 2, "bwd": 3 * 8 * 64 * 256 * 1024 * 2}


def test_profile_step_on_cpu_reports_the_step_by_kind_and_the_depthwise_share(tmp_path):
    from cmx.bench.gpu import speed as gpu_speed

    config = RunConfig(h=16, d=2, p=2, k=5, batch_size=8, device="cpu", data="unused")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (16,), generator=gen)
    report = Report(tmp_path)
    gpu_speed.profile_step(report, config, torch.device("cpu"), gpu_speed.inputs(torch.device("cpu"), images, labels, 8))
    figures = report.load()["figures"]["speed"]
    assert figures["profile of one step (ms per step by kind)"]["ms_per_step"][P.DEPTHWISE_FWD] > 0
    assert figures["depthwise conv (k9) share and bandwidth"]["share_of_kernel_time"] > 0


def test_packing_times_both_sweeps_and_reports_the_gain(tmp_path):
    from cmx.bench.gpu.runs import MODEL, Packing, packing

    clock, calls = FakeClock(), []

    def run_sweep(sweep, results, per_gpu, left):
        calls.append((json.loads(Path(sweep).read_text())["seeds"], per_gpu))
        clock.spend(40 if per_gpu == 1 else 20)
        return 0

    plan = Packing(n_train=1000, runs=2, epochs=1)
    assert plan.images == 2 * 1 * (1000 // MODEL["batch_size"]) * MODEL["batch_size"]
    report = Report(tmp_path)
    packing(report, tmp_path / "data", Budget(200, clock), run_sweep, plan)
    assert calls == [([0, 1], 1), ([0, 1], 2)]
    figures = report.load()["figures"]["packing"]
    assert figures["2 runs, --per-gpu 1"]["total_img_per_s"] == pytest.approx(plan.images / 40, abs=0.1)
    assert figures["--per-gpu 2 vs 1"]["gain"] == pytest.approx(2.0)


def fake_event(name, device_type, us=0.0, kernels=(), parent=None, annotation=False, shapes=None):
    """A FunctionEvent as the profiler hands it over, with only the fields the breakdown reads."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import Kernel

    return SimpleNamespace(name=name, device_type=getattr(DeviceType, device_type), is_user_annotation=annotation,
                           kernels=[Kernel(n, 0, d) for n, d in kernels], cpu_parent=parent,
                           input_shapes=shapes or [], time_range=SimpleNamespace(elapsed_us=lambda: us))


def test_the_kernel_total_and_the_kinds_leave_user_annotations_out():
    """pytorch #130730: a record_function range comes back as a CUDA event spanning its kernels and gaps,
    and is attached to the range's CPU event as a kernel. A 1,000 µs augmentation range holding 100 µs of
    kernels and a 3,000 µs Optimizer.step range holding 200 µs must count 100 and 200, and the kernel
    total 100 + 200 + 400 (the depthwise conv), leaving 2,700+ µs of idle time visible."""
    aug = fake_event("cmx::augment", "CPU", kernels=[("cmx::augment", 1000.0)])
    add = fake_event("aten::add", "CPU", kernels=[("elementwise_kernel", 100.0)], parent=aug)
    opt = fake_event("Optimizer.step#AdamW.step", "CPU", kernels=[("Optimizer.step#AdamW.step", 3000.0)])
    adam = fake_event("aten::_fused_adamw_", "CPU", kernels=[("fused_adamw_kernel", 200.0)], parent=opt)
    conv = fake_event("aten::convolution", "CPU", kernels=[("implicit_gemm", 400.0)],
                      shapes=[[64, 256, 32, 32], [256, 1, 9, 9], [256]])
    device_events = [fake_event("cmx::augment", "CUDA", 1000.0, annotation=True),
                     fake_event("Optimizer.step#AdamW.step", "CUDA", 3000.0, annotation=True),
                     fake_event("elementwise_kernel", "CUDA", 100.0), fake_event("fused_adamw_kernel", "CUDA", 200.0),
                     fake_event("implicit_gemm", "CUDA", 400.0),
                     fake_event("cmx::clip", "CUDA", 50.0)]  # a torch that does not flag it: its name tells
    events = [aug, add, opt, adam, conv, *device_events]
    assert P.kernel_us(events) == 700.0
    totals = P.breakdown(events, device=True)
    assert (totals[P.AUGMENT], totals[P.OPTIMIZER], totals[P.DEPTHWISE_FWD]) == (100.0, 200.0, 400.0)
    assert sum(totals.values()) == 700.0


# ---------------------------------------------------------------------- speed, training, packing pieces
def test_speed_figures_of_a_tiny_step_on_cpu():
    calls = []
    assert time_per_call(lambda: calls.append(1), torch.device("cpu"), steps=4, warmup=2) >= 0 and len(calls) == 6
    config = RunConfig(h=8, d=1, p=4, k=3, batch_size=8, device="cpu", data="unused")
    x = torch.randn(8, 3, 32, 32)
    targets = torch.softmax(torch.randn(8, 10), 1)
    figures = measure_step(config, torch.device("cpu"), x, targets, torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8))
    assert figures["train_img_per_s"] > 0 and figures["eval_img_per_s"] > 0 and figures["step_ms"] > 0


def test_short_training_fits_its_epochs_to_the_time_and_labels_the_projection(tiny_data, tmp_path):
    report = Report(tmp_path, fresh=True, echo=lambda line: None)
    figures = short_training(report, tiny_data, seconds=6, device="cpu",
                             model=dict(h=8, d=1, p=4, k=3, batch_size=32), progress="none")
    assert 1 <= figures["epochs"] <= 200 and figures["train_images"] == 320
    assert figures["projected_200_epoch_full_cifar_hours"] > 0 and "projection" in figures["projection_method"]
    rows = report.load()["checks"]
    assert [r["check"] for r in rows] == ["probe (2 epochs)", "8/1 p4 k3 on real images"]
    assert "(projection)" in rows[-1]["figure"]


def test_the_packing_sweep_file_plans_four_runs(tmp_path):
    from cmx.sweep.plan import make_plan

    path = packing_sweep(tmp_path, tmp_path / "data", device="cuda")
    plan = make_plan(path, results=tmp_path / "results")
    assert sorted(run.config.seed for run in plan.runs) == [0, 1, 2, 3]
    assert {(r.config.h, r.config.d, r.config.p, r.config.k, r.config.device) for r in plan.runs} == {(256, 8, 1, 9, "cuda")}


# ---------------------------------------------------------------------- the cuda sync test's windows
def test_no_sync_windows_cover_every_step_and_close_at_each_read(tmp_path, monkeypatch):
    """What tests/test_cuda.py guards with set_sync_debug_mode("error"), recorded on CPU: 80 steps, a
    window opened at each step from the second, closed at the reads after steps 50 and 80."""
    data = make_tiny_cifar(tmp_path / "data", n_train_per_batch=256, n_test=16, seed=2)
    events = []
    seen = guard_steps(monkeypatch, lambda: events.append("open"), lambda: events.append("read"))
    train(RunConfig(h=8, d=1, p=4, k=3, epochs=1, batch_size=16, device="cpu", data=str(data)), tmp_path / "r")
    assert seen == {"steps": 80, "opened": 79, "reads": 2}
    assert train_module.SYNC_EVERY == 50
    assert events.index("read") == 49 and events[-1] == "read" and events.count("open") == 79


def test_the_amp_off_variant_says_it_runs_convolutions_in_tf32_where_torch_does(monkeypatch):
    from cmx.bench.gpu.speed import VARIANTS, amp_off_label

    assert VARIANTS[0] == (amp_off_label(), {"amp": "off"})
    matmul = torch.backends.cuda.matmul.allow_tf32  # a property-like module attribute: set and restore by hand
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert "convs TF32, matmul fp32" in amp_off_label()
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        torch.backends.cuda.matmul.allow_tf32 = True
        assert "convs fp32, matmul TF32" in amp_off_label()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
