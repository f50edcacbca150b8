"""CUDA acceptance tests: `pytest -m cuda`, run first by `make gpu-check`; skipped with the reason where
torch sees no CUDA device (tests/conftest.py), so CI on CPU stays green.

What they prove on a GPU:
- the augmentation's CUDA path ("mask" dispatch, float64 crop, CUDA generator) gives the CPU path's pixels,
  and the CPU path equals Pillow (tests/test_augment.py, tests/test_randaugment.py), on real images;
- the training loop makes no host synchronisation between its every-SYNC_EVERY reads, and the check
  catches one when it is added;
- bf16 autocast, fp16 + GradScaler, channels_last and NCHW, fused AdamW and torch.compile each train to a
  finite loss and learn; kill/resume on CUDA is bit-identical under deterministic algorithms;
- `cmx sweep --gpus 0 --per-gpu 2` runs two runs at once on one GPU and both finish.

Same draws on both devices: CPU and CUDA generators give different streams, so either the parameters are
drawn once on the CPU and applied on both devices, or the numbers a CUDA generator drew are recorded and
replayed on the CPU (`Draws`).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cmx.augment import pipeline as A
from cmx.augment import randaugment as ra
from cmx.errors import Interrupted
from cmx.run import batches as batches_module, train as train_module
from cmx.config import RunConfig
from cmx.run.data import batches_dir, load_cifar10
from cmx.run.model import build_model
from cmx.store.resultsdir import ResultsDir
from cmx.run import engine as engine_module
from cmx.run.engine import make_optimizer, maybe_compile
from cmx.run.stop import StopRequest
from cmx.run.train import train
from cmx.run.tune import place
from cmx.sweep.local import visible_gpus
from conftest import REPO, SHARED, cmx_subprocess_env
from sync_windows import guard_steps
from tiny_cifar import make_images, make_tiny_cifar

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
N_IMAGES = 256


# ---------------------------------------------------------------------- real images, same draws
def real_data_folder() -> Path | None:
    """$CMX_REAL_DATA (set by gpu-check), ../shared/data/cifar10-mini, or .gpu/data/cifar10-mini."""
    for candidate in (os.environ.get("CMX_REAL_DATA"), SHARED / "data" / "cifar10-mini",
                      REPO / ".gpu" / "data" / "cifar10-mini"):
        if candidate and (batches_dir(candidate) / "test_batch").is_file():
            return Path(candidate)
    return None


def real_images(n: int = N_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 32, 32) uint8 and (n,) labels on the CPU: real CIFAR images where a folder is at hand, else
    the generated tiny-CIFAR images (tests/tiny_cifar.py)."""
    folder = real_data_folder()
    if folder is not None:
        data = load_cifar10(folder, download=False)
        return data.train_x[:n].clone(), data.train_y[:n].clone()
    x, y = make_images(n, np.random.default_rng(0))
    return torch.from_numpy(x).view(n, 3, 32, 32), torch.tensor(y)


def cpu_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same(gpu: torch.Tensor, cpu: torch.Tensor, what: str) -> None:
    gpu = gpu.cpu()
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape, what
    differ = gpu != cpu
    if differ.any():
        images = differ.flatten(1).any(1).nonzero().flatten().tolist()
        pytest.fail(f"{what}: {int(differ.sum())} of {differ.numel()} values differ between CUDA and CPU "
                    f"(images {images[:10]}{' ...' if len(images) > 10 else ''})")


class Draws:
    """Records every random number the augmentation draws (cmx.augment.rng's uniform/normal/integers, as
    imported by pipeline.py and randaugment.py) and replays them in the same order on another device."""

    NAMES = ((A, "uniform"), (A, "normal"), (ra, "uniform"), (ra, "normal"), (ra, "integers"))

    def __init__(self, monkeypatch):
        self.values: list[torch.Tensor] = []
        self.replaying, self.at = False, 0
        for module, name in self.NAMES:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, real):
        def draw(gen, *args):  # uniform/normal(gen, shape, device), integers(gen, high, shape, device)
            if not self.replaying:
                out = real(gen, *args)
                self.values.append(out.cpu())
                return out
            out, self.at = self.values[self.at], self.at + 1
            return out.to(args[-1])
        return draw

    def replay(self) -> None:
        self.replaying, self.at = True, 0

    def all_used(self) -> bool:
        return self.at == len(self.values)


# ---------------------------------------------------------------------- pixels: CUDA == CPU
@pytest.mark.parametrize("name", ra.RAND_INCREASING_OPS)
def test_every_randaugment_op_gives_the_cpu_pixels_on_cuda(name):
    """Each op, per-image magnitudes over [0, 10], both signs, per-image and whole-batch interpolation."""
    x, _ = real_images()
    g = cpu_gen(7)
    level = torch.rand(N_IMAGES, generator=g, dtype=torch.float64) * 10
    sign = torch.where(torch.rand(N_IMAGES, generator=g) < 0.5, -1.0, 1.0).double()
    per_image = torch.rand(N_IMAGES, generator=g) < 0.5
    for bicubic in (per_image, False, True):
        cpu = ra.apply_op(name, x, level, sign, bicubic)
        on_gpu = bicubic.to(CUDA) if torch.is_tensor(bicubic) else bicubic
        gpu = ra.apply_op(name, x.to(CUDA), level.to(CUDA), sign.to(CUDA), on_gpu)
        assert_same(gpu, cpu, f"{name} (bicubic={'per image' if torch.is_tensor(bicubic) else bicubic})")


def test_rand_augment_mask_dispatch_on_cuda_equals_the_cpu_subset_dispatch():
    x, _ = real_images()
    gpu = ra.rand_augment(x.to(CUDA), cpu_gen(1))  # auto: "mask" on CUDA
    cpu = ra.rand_augment(x, cpu_gen(1))  # auto: "subset" on CPU
    assert_same(gpu, cpu, "rand_augment")


@pytest.mark.parametrize("flip_p", [None, 0.5])
def test_random_resized_crop_and_flip_on_cuda_give_the_cpu_pixels(flip_p):
    """CUDA resamples in float64, the CPU in split float32: both must be Pillow's integers."""
    x, _ = real_images()
    gpu = A.random_resized_crop(x.to(CUDA), cpu_gen(2), flip_p=flip_p)
    cpu = A.random_resized_crop(x, cpu_gen(2), flip_p=flip_p)
    assert_same(gpu, cpu, f"random_resized_crop(flip_p={flip_p})")
    assert_same(A.hflip(x.to(CUDA), cpu_gen(4)), A.hflip(x, cpu_gen(4)), "hflip")


def test_random_erasing_on_cuda_equals_the_cpu_for_the_same_draws():
    x, _ = real_images()
    xf = A.normalize(x)
    gpu = A.random_erasing(xf.to(CUDA), cpu_gen(3))  # auto: "mask" on CUDA
    cpu = A.random_erasing(xf, cpu_gen(3), dispatch="mask")  # the same noise draws
    assert_same(gpu, cpu, "random_erasing")
    subset = A.random_erasing(xf, cpu_gen(3), dispatch="subset")  # same boxes, fewer noise numbers drawn
    assert torch.equal(gpu.cpu() != xf, subset != xf), "erased boxes differ"


def test_mixup_and_cutmix_on_cuda_equal_the_cpu_for_the_same_draws():
    x, y = real_images()
    xf = A.normalize(x)
    modes = set()
    for seed in range(16):
        use_cutmix, lam, box = A.sample_mix_params(cpu_gen(seed), 32, 32)
        modes.add(bool(use_cutmix))
        cpu = A.mix_images(xf, use_cutmix, lam, box)  # auto: "subset" on CPU
        gpu = A.mix_images(xf.to(CUDA), use_cutmix.to(CUDA), lam.to(CUDA), tuple(b.to(CUDA) for b in box))
        assert_same(gpu, cpu, f"{'cutmix' if use_cutmix else 'mixup'} (seed {seed})")
        targets = A.smooth_targets(y)
        assert_same(A.mix_targets(targets.to(CUDA), lam.to(CUDA)), A.mix_targets(targets, lam), "mixed targets")
    assert modes == {True, False}, "both mixup and cutmix must be drawn"


@pytest.mark.parametrize("dispatch, erasing", [("mask", True), ("subset", False)])
def test_the_whole_augmentation_with_a_cuda_generator_matches_the_cpu_on_its_draws(monkeypatch, dispatch, erasing):
    """The training pipeline as `cmx train` runs it on a GPU (CUDA generator, mask dispatch), against the
    CPU pipeline fed the numbers the CUDA generator drew. Subset erasing draws fewer noise numbers, so that
    comparison leaves erasing out."""
    x, y = real_images()
    draws = Draws(monkeypatch)
    gen = torch.Generator(device=CUDA).manual_seed(0)
    gpu_x, gpu_t = A.augment_batches(x.to(CUDA), y.to(CUDA), gen, 64, erasing=erasing)
    draws.replay()
    cpu_x, cpu_t = A.augment_batches(x, y, cpu_gen(0), 64, erasing=erasing, dispatch=dispatch)
    assert draws.all_used()
    assert_same(gpu_x, cpu_x, f"augment_batches (CPU {dispatch})")
    assert_same(gpu_t, cpu_t, "soft targets")


# ---------------------------------------------------------------------- no host sync in the loop
def sync_data(tmp_path_factory_or_path) -> Path:
    """1,280 training images: 80 steps of 16, with the loop's reads at steps 50 and 80."""
    return make_tiny_cifar(tmp_path_factory_or_path, n_train_per_batch=256, n_test=64, seed=2)


def guarded_run(monkeypatch, tmp_path, config: RunConfig) -> dict:
    monkeypatch.setattr(batches_module, "AUG_CHUNK_IMAGES", 128)  # a new chunk every 8 steps: inside the windows
    seen = guard_steps(monkeypatch, lambda: torch.cuda.set_sync_debug_mode("error"),
                       lambda: torch.cuda.set_sync_debug_mode("default"))
    try:
        train(config, tmp_path / "results")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return seen


def test_the_training_loop_makes_no_host_sync_between_its_reads(monkeypatch, tmp_path):
    """80 steps (full augmentation, bf16, fused AdamW) with every step from the second on run under
    set_sync_debug_mode("error"): any synchronising CUDA call there raises."""
    assert train_module.SYNC_EVERY == 50
    config = RunConfig(h=16, d=2, p=2, k=3, epochs=1, batch_size=16, device="cuda", data=str(sync_data(tmp_path)))
    seen = guarded_run(monkeypatch, tmp_path, config)
    assert seen["opened"] == 79 and seen["reads"] == 2  # steps 2-80 guarded; reads after steps 50 and 80


def test_the_sync_check_fails_when_a_sync_is_added(monkeypatch, tmp_path):
    real_step = engine_module.optimisation_step

    def step_with_a_read(*args, **kw):
        loss, logits = real_step(*args, **kw)
        loss.item()  # the host read a careless change might add
        return loss, logits

    monkeypatch.setattr(engine_module, "optimisation_step", step_with_a_read)
    config = RunConfig(h=16, d=2, p=2, k=3, epochs=1, batch_size=16, device="cuda", data=str(sync_data(tmp_path)))
    with pytest.raises(RuntimeError, match="synchroniz"):
        guarded_run(monkeypatch, tmp_path, config)


# ---------------------------------------------------------------------- precision, layout, optimizer, compile
SETTINGS = {
    "bf16 autocast": dict(amp="bf16"),
    "fp16 + GradScaler": dict(amp="fp16"),
    "channels_last, fp32": dict(channels_last=True, amp="off"),
    "NCHW (channels_last off)": dict(channels_last=False),
    "fused AdamW, fp32": dict(amp="off"),
    "torch.compile": dict(compile=True),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_each_cuda_setting_trains_to_a_finite_loss_and_learns(tiny_config, tmp_path, setting):
    """Separable tiny data without the augmentation (as test_train's learning test): chance is 10%."""
    config = tiny_config(h=16, d=2, p=2, epochs=5, batch_size=16, mixup=False, randaug=False, erasing=False,
                         scaling=False, lr=0.01, device="cuda", **SETTINGS[setting])
    result = train(config, tmp_path)
    epochs = pd.read_csv(tmp_path / "runs" / result["run_id"] / "epochs.csv")
    assert np.isfinite(epochs["train_loss"]).all() and np.isfinite(epochs["test_loss"].dropna()).all()
    assert result["provenance"]["device"] == "cuda"
    assert result["test_acc"] > 30, f"{setting}: test accuracy {result['test_acc']:.1f}% (chance 10%)"


def test_cuda_uses_fused_adamw_and_compile_really_compiles(tiny_config):
    config = tiny_config(device="cuda", compile=True)
    model = build_model(config).to(CUDA)
    assert make_optimizer(model, config, CUDA).defaults["fused"] is True
    notes: list[str] = []
    compiled = maybe_compile(model, True, notes.append)
    assert notes == [] and hasattr(compiled, "_orig_mod"), notes  # not the eager fallback


# ---------------------------------------------------------------------- kill / resume on CUDA
def final_weights(results: Path) -> tuple[dict, dict]:
    [run_dir] = (Path(results) / "runs").iterdir()
    return json.loads((run_dir / "result.json").read_text()), torch.load(run_dir / "model.pt")


def assert_bit_identical(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (res_a, w_a), (res_b, w_b) = a, b
    assert res_a["run_id"] == res_b["run_id"] and res_a["test_acc"] == res_b["test_acc"]
    different = [name for name in w_a if not torch.equal(w_a[name], w_b[name])]
    assert not different, f"weights differ after resume: {different}"


@pytest.fixture
def deterministic():
    """Bit-identical resumes need deterministic kernels (cuDNN's convolution algorithms above all)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def test_interrupt_mid_chunk_on_cuda_resumes_bit_identically(tiny_config, tmp_path, monkeypatch, deterministic):
    """Full augmentation with the CUDA generator: a stop (as on SIGINT) in epoch 2, in the middle of an augmented chunk,
    then a resume, gives the weights of a run that was never stopped."""
    monkeypatch.setattr(batches_module, "AUG_CHUNK_IMAGES", 128)  # batch 32: chunks of 4 steps
    config = tiny_config(epochs=2, device="cuda")  # 320 images: 10 steps per epoch
    train(config, tmp_path / "straight")
    real_lr_at, calls, stop = train_module.lr_at, {"n": 0}, StopRequest()

    def lr_at_then_stop(*args):
        calls["n"] += 1
        if calls["n"] == 10 + 6:  # during step 5 of epoch 2 (the second chunk): saved at step 6
            stop.request(signal.SIGINT)  # what the CLI's SIGINT handler does
        return real_lr_at(*args)

    monkeypatch.setattr(train_module, "lr_at", lr_at_then_stop)
    with pytest.raises(Interrupted):
        train(config, tmp_path / "stopped", stop=stop)
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    train(config, tmp_path / "stopped")
    assert_bit_identical(final_weights(tmp_path / "stopped"), final_weights(tmp_path / "straight"))


DETERMINISTIC_CMX = ("import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                     "from cmx.cli import run; sys.argv = ['cmx', *sys.argv[1:]]; run()")


def start_cuda_train(data: Path, results: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", DETERMINISTIC_CMX, "train", "--h", "16", "--d", "2", "--p", "2", "--k", "3",
           "--epochs", "4", "--batch-size", "16", "--device", "cuda", "--seed", "3", "--data", str(data),
           "--results", str(results), "--quiet"]
    env = {**cmx_subprocess_env(), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def test_sigkill_on_cuda_then_resume_gives_identical_weights(tmp_path):
    data = make_tiny_cifar(tmp_path / "data", n_train_per_batch=256, n_test=64, seed=1)  # 80 steps per epoch
    straight = start_cuda_train(data, tmp_path / "straight")
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    killed = start_cuda_train(data, tmp_path / "killed")
    for line in killed.stderr:
        if line.startswith("epoch 1/"):  # its checkpoint is on disk; the second epoch has begun
            killed.send_signal(signal.SIGKILL)
            break
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    [run_dir] = (tmp_path / "killed" / "runs").iterdir()
    assert not (run_dir / "result.json").exists(), "the run finished before the kill landed"
    resumed = start_cuda_train(data, tmp_path / "killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming run" in err
    assert_bit_identical(final_weights(tmp_path / "killed"), final_weights(tmp_path / "straight"))


# ---------------------------------------------------------------------- two runs on one GPU
def test_sweep_runs_two_runs_at_once_on_one_gpu_and_both_finish(tiny_data, tmp_path):
    sweep = tmp_path / "two.yaml"
    sweep.write_text("name: two-on-one-gpu\n"
                     f"base: {{h: 16, d: 2, p: 2, k: 3, epochs: 6, batch_size: 16, device: cuda, data: '{tiny_data}'}}\n"
                     "seeds: [0, 1]\n")
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "cmx", "sweep", str(sweep), "--gpus", "0", "--per-gpu", "2",
                           "--results", str(results)], capture_output=True, text=True, cwd=REPO,
                          env=cmx_subprocess_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    events = [line.split("]")[0] + "]" for line in done.stderr.splitlines() if line.startswith("[")]
    assert events[:2] == ["[start]", "[start]"], done.stderr  # both started before either finished
    assert events.count("[done]") == 2, done.stderr
    store = ResultsDir(results)
    run_ids = [p.name for p in (results / "runs").iterdir()]
    assert len(run_ids) == 2 and all(store.state(r) == "done" for r in run_ids)
    for run_id in run_ids:
        assert json.loads((results / "runs" / run_id / "result.json").read_text())["provenance"]["device"] == "cuda"
        first_visible = visible_gpus()[0]  # --gpus 0 counts among the inherited CUDA_VISIBLE_DEVICES, if any
        assert f"CUDA_VISIBLE_DEVICES={first_visible}" in (results / "runs" / run_id / "train.log").read_text()


# ---------------------------------------------------------------------- issue 20: what a CPU cannot show
def test_auto_precision_is_native_bf16_exactly_from_compute_capability_8(tiny_config):
    """bf16 on Ampere and later; fp16 + GradScaler on V100/T4 (bf16 there is emulated, and slow)."""
    major, _ = torch.cuda.get_device_capability(CUDA)
    expected = torch.bfloat16 if major >= 8 else torch.float16
    placement = place(tiny_config(device="cuda"), device=CUDA)
    assert placement.amp_dtype is expected
    engine = engine_module.Engine.build(tiny_config(device="cuda"), placement, say=lambda msg: None)
    assert engine.amp_dtype is expected and engine.scaler.is_enabled() == (expected is torch.float16)


def test_a_cuda_runs_model_pt_loads_where_no_gpu_is_visible(tiny_config, tmp_path):
    result = train(tiny_config(epochs=1, device="cuda"), tmp_path)
    model_pt = tmp_path / "runs" / result["run_id"] / "model.pt"
    code = (f"import torch; w = torch.load({str(model_pt)!r}, weights_only=True); "
            "assert all(t.device.type == 'cpu' for t in w.values()); print(len(w))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**cmx_subprocess_env(), "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert done.returncode == 0 and int(done.stdout) > 0, done.stderr


def test_a_cpu_run_on_a_gpu_host_creates_no_cuda_context_and_saves_no_cuda_rng(tiny_data, tmp_path):
    code = ("import sys, torch; from cmx.config import RunConfig; from cmx.run.train import train; "
            "from cmx.run.stop import StopRequest; "
            f"train(RunConfig(h=8, d=1, p=4, k=3, epochs=1, batch_size=32, device='cpu', data={str(tiny_data)!r}), "
            f"{str(tmp_path)!r}); print(torch.cuda.is_initialized())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=cmx_subprocess_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_a_cuda_profile_counts_kernels_only(tiny_config):
    """pytorch #130730: labelled ranges come back as device events too; the kinds must add up to the kernel
    total (nothing counted twice) and the kernels must leave room for idle time (not the whole span)."""
    from cmx.augment.pipeline import augment_batches
    from cmx.bench.gpu import profile as P
    from cmx.bench.speed import cmx_train_step

    config = tiny_config(h=32, d=2, p=2, k=5, batch_size=32, device="cuda")
    images, labels = (t.to(CUDA) for t in real_images(128))
    gen = torch.Generator(device=CUDA).manual_seed(0)
    x, targets = augment_batches(images[:32], labels[:32], gen, 32)
    step, _ = cmx_train_step(config, place(config, device=CUDA), x, targets)

    def loop():
        with torch.profiler.record_function(P.AUG_RANGE):
            augment_batches(images, labels, gen, 32)
        for _ in range(4):
            step()

    loop()
    torch.cuda.synchronize()
    totals = P.profile_loop(loop, CUDA)
    assert totals[P.AUGMENT] > 0 and totals[P.OPTIMIZER] > 0 and totals[P.DEPTHWISE_FWD] > 0
    assert totals["busy"] <= totals["kernels"] * 1.001 + 1, totals  # no annotation span inside the kinds
    assert totals["busy"] >= totals["kernels"] * 0.5, totals  # and most kernels attributed to an operator
