"""The GPU check's CPU-reachable parts: the no-CUDA exit, the report files, the tests section (on CPU every
cuda test skips), the time caps, the profiler's kinds on a CPU trace, the speed timer, the short training and
the packing sweep file, and where the no-sync windows fall in the training loop."""
import json
import subprocess
import sys

import pytest
import torch

from cmx.augment.pipeline import augment_batches
from cmx.bench import gpu_check, gpu_profile as P
from cmx.bench.gpu_report import Report, render_markdown
from cmx.bench.gpu_runs import packing_sweep, short_training
from cmx.bench.gpu_speed import measure_step, time_per_call
from cmx.bench.speed import cmx_train_step
from cmx.cli.app import main
from cmx.run import train as train_module
from cmx.run.config import RunConfig
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
    done = subprocess.run([sys.executable, "-m", "cmx.bench.gpu_check", "--out", str(tmp_path / "out")],
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
    step, _ = cmx_train_step(config, device, x, targets)

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
    from cmx.bench.gpu_speed import VARIANTS, amp_off_label

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
