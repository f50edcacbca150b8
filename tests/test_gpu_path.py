"""The CUDA path's logic that runs on a CPU (issue 20): precision chosen for pre-Ampere GPUs, resuming under
another precision, checkpoints without the global CUDA RNG, weights saved device-free, and --compile falling
back to eager when the compiler fails at the first real step. What needs a GPU is in tests/test_cuda.py."""
import signal
from pathlib import Path

import pytest
import torch

from cmx.errors import Interrupted
from cmx.store import checkpoint
from cmx.run import engine as engine_module
from cmx.run import train as train_module
from cmx.run.engine import Engine
from cmx.run.placement import resolve_precision
from cmx.run.tune import place
from cmx.run.stop import StopRequest
from cmx.run.train import train

CUDA = torch.device("cuda")


# ---------------------------------------------------------------------- item 4: fp16 on pre-Ampere GPUs
def test_auto_precision_is_fp16_where_bf16_is_only_emulated(monkeypatch):
    """V100/T4: torch counts emulated bf16 as supported by default; cmx asks for native bf16 only."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", CUDA) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("bf16", CUDA) == "bf16"  # an explicit flag is obeyed
    assert resolve_precision("auto", torch.device("cpu")) == "off"


@pytest.mark.parametrize("capability,precision", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_without_the_keyword_the_compute_capability_decides(monkeypatch, capability, precision):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # an older torch: emulation counted
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", CUDA) == precision


# ---------------------------------------------------------------------- item 5: another precision on resume
def stop_in_epoch_2(monkeypatch, at: int = 3) -> StopRequest:
    real, calls, stop = train_module.lr_at, {"n": 0}, StopRequest()

    def lr_at_then_stop(*args):
        calls["n"] += 1
        if calls["n"] == 10 + at:
            stop.request(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(train_module, "lr_at", lr_at_then_stop)
    return stop


@pytest.mark.parametrize("first,then", [("off", "fp16"), ("fp16", "off")])
def test_a_run_resumes_under_another_precision(tiny_config, tmp_path, monkeypatch, first, then):
    """amp is not in the run id, so `--amp off` interrupted and run again with `--amp fp16` is the same run:
    the enabled GradScaler must accept the disabled one's empty state (and the reverse)."""
    stop = stop_in_epoch_2(monkeypatch)
    with pytest.raises(Interrupted):
        train(tiny_config(epochs=2, amp=first), tmp_path, stop=stop)
    [run_dir] = (tmp_path / "runs").iterdir()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert (saved["engine"]["amp"], bool(saved["scaler"])) == (first, first == "fp16")
    monkeypatch.undo()
    result = train(tiny_config(epochs=2, amp=then), tmp_path)
    assert result["run_id"] == run_dir.name and result["epochs"] == 2
    assert result["config"]["amp"] == then


# ---------------------------------------------------------------------- item 6: no global CUDA RNG state
@pytest.fixture
def cuda_rng_forbidden(monkeypatch):
    """A GPU host as cmx sees it, where any use of the global CUDA RNG fails the test (it would create a
    CUDA context on every GPU, and restore by index)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def forbidden(*args, **kw):
        raise AssertionError("the global CUDA RNG was touched")

    for name in ("get_rng_state_all", "set_rng_state_all", "get_rng_state", "set_rng_state", "init"):
        monkeypatch.setattr(torch.cuda, name, forbidden)


def test_checkpoints_neither_save_nor_restore_the_global_cuda_rng(cuda_rng_forbidden):
    gens = {"shuffle": torch.Generator().manual_seed(1)}
    state = checkpoint.rng_state(gens)
    assert "cuda" not in state
    four_gpus = {**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 4}  # a checkpoint made before 0.2
    checkpoint.set_rng_state(four_gpus, gens)  # on a host with fewer GPUs: no IndexError, nothing touched


def test_an_old_checkpoint_holding_cuda_states_resumes_bit_identically(tiny_config, tmp_path, monkeypatch):
    config = tiny_config(epochs=2)
    train(config, tmp_path / "straight")
    straight = torch.load(next((tmp_path / "straight" / "runs").iterdir()) / "model.pt")
    with pytest.raises(Interrupted):
        train(config, tmp_path / "stopped", stop=stop_in_epoch_2(monkeypatch))
    monkeypatch.undo()
    [run_dir] = (tmp_path / "stopped" / "runs").iterdir()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    saved["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # as 0.1 saved it on a 4-GPU box
    checkpoint.save(run_dir / "checkpoint.pt", saved)
    real_restore = checkpoint.set_rng_state

    def restore_on_a_one_gpu_host(state, generators):  # 0.1 restored the four states by index there
        with monkeypatch.context() as m:
            m.setattr(torch.cuda, "is_available", lambda: True)
            m.setattr(torch.cuda, "set_rng_state_all", lambda states: [None][len(states) - 1])  # IndexError
            real_restore(state, generators)

    monkeypatch.setattr(checkpoint, "set_rng_state", restore_on_a_one_gpu_host)
    train(config, tmp_path / "stopped")
    resumed = torch.load(run_dir / "model.pt")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


# ---------------------------------------------------------------------- item 8: model.pt without a device
def test_model_pt_holds_plain_cpu_tensors_loadable_without_map_location(tiny_config, tmp_path, monkeypatch):
    """Every tensor is moved to the CPU before saving (on a GPU they would be CUDA tensors; tests/test_cuda.py
    loads a CUDA run's model.pt in a process that sees no GPU)."""
    moved = []
    real_cpu = torch.Tensor.cpu

    def cpu(self, *args, **kw):
        moved.append(self.shape)
        return real_cpu(self, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    result = train(tiny_config(epochs=1), tmp_path)
    monkeypatch.undo()
    weights = torch.load(tmp_path / "runs" / result["run_id"] / "model.pt", weights_only=True)
    assert weights and all(t.device.type == "cpu" and not t.requires_grad for t in weights.values())
    assert len(moved) >= len(weights)  # each one went through .cpu()


# ---------------------------------------------------------------------- item 2: compile fails at the first step
class CompiledButBroken(torch.nn.Module):
    """What torch.compile returns where the probe passes but the model's own graph cannot be built (e.g.
    Triton missing): the first call raises."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self._orig_mod = model

    def forward(self, x):
        raise RuntimeError("backend compiler failed: no working Triton for this GPU")


@pytest.fixture
def broken_compile(monkeypatch):
    real = torch.compile

    def fake(fn, *args, **kw):
        return CompiledButBroken(fn) if isinstance(fn, torch.nn.Module) else fn  # the probe passes

    monkeypatch.setattr(torch, "compile", fake)
    yield
    monkeypatch.setattr(torch, "compile", real)


def test_compile_failing_at_the_first_step_falls_back_to_eager_with_a_note(tiny_config, broken_compile):
    notes: list[str] = []
    config = tiny_config(compile=True)
    engine = Engine.build(config, place(config), say=notes.append)
    assert isinstance(engine.run_model, CompiledButBroken)
    eager = Engine.build(config.replace(compile=False), place(config), say=notes.append)
    x, targets = torch.randn(32, 3, 32, 32), torch.softmax(torch.randn(32, 10), 1)
    loss, _ = engine.step(x, targets)
    eager_loss, _ = eager.step(x, targets)
    assert engine.run_model is engine.model and len(notes) == 1
    assert "--compile failed at the first train call (RuntimeError" in notes[0] and "running eagerly" in notes[0]
    assert torch.equal(loss, eager_loss)
    assert all(torch.equal(a, b) for a, b in zip(engine.model.parameters(), eager.model.parameters()))
    assert torch.equal(engine.forward_eval(torch.zeros(4, 3, 32, 32, dtype=torch.uint8)),
                       eager.forward_eval(torch.zeros(4, 3, 32, 32, dtype=torch.uint8)))


def test_a_compile_failing_in_evaluation_only_falls_back_there(tiny_config, monkeypatch):
    notes: list[str] = []
    engine = Engine.build(tiny_config(), place(tiny_config()), say=notes.append)
    broken = CompiledButBroken(engine.model)
    engine.run_model, engine.unproven = broken, {"eval"}  # the train graph built, the eval graph not
    logits = engine.forward_eval(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    assert logits.shape == (4, 10) and engine.run_model is engine.model and engine.model.training
    assert "first eval call" in notes[0]


def test_a_whole_run_with_a_broken_compiler_trains_as_the_eager_run(tiny_config, tmp_path, broken_compile):
    compiled = train(tiny_config(compile=True), tmp_path / "compiled")
    eager = train(tiny_config(compile=False), tmp_path / "eager")
    assert compiled["test_acc"] == eager["test_acc"]
    a = torch.load(Path(tmp_path / "compiled" / "runs" / compiled["run_id"] / "model.pt"))
    b = torch.load(Path(tmp_path / "eager" / "runs" / eager["run_id"] / "model.pt"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_the_compile_probe_runs_on_the_models_device(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, *a, **kw: (lambda x: seen.append(x.device)) if not
                        isinstance(fn, torch.nn.Module) else fn)
    model = torch.nn.Linear(2, 2)
    engine_module.maybe_compile(model, True, print, torch.device("meta"))
    assert seen == [torch.device("meta")]
