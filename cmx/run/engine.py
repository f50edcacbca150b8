"""The training engine: where and how one ConvMixer trains — device, precision, memory format, optimizer, the
optimisation step and evaluation. The train loop and `cmx bench` both use it, so the step that `cmx bench`
times is the step that training runs, and each rule below is written once.

The paper's recipe (recipe.md): AdamW (eps 1e-3, no weight decay on 1-D params), gradient clipping at 1.0,
soft-target cross-entropy (mixup/cutmix targets with label smoothing). Nothing here reads a value back to
the host during a step; the loop decides when to synchronise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..augment.pipeline import normalize, soft_target_cross_entropy
from ..errors import UserError
from ..config import RunConfig
from .depthwise import set_path
from .model import build_model

EVAL_BATCH = 500
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # --amp value → autocast dtype


def amp_name(dtype: torch.dtype | None) -> str:
    """The --amp value of an autocast dtype (None → "off")."""
    return next(name for name, d in AMP_DTYPES.items() if d == dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively (Ampere, compute capability 8.0, and later). Plain
    `torch.cuda.is_bf16_supported()` also counts emulated bf16, which V100/T4 run far slower than fp16."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the keyword
        return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA GPUs that compute in it natively, else fp16 (with a GradScaler); off on CPU (unless
    tuned, tune.py)."""
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return AMP_DTYPES[name]


def resolve_memory_format(channels_last: bool | None) -> torch.memory_format:
    """The one memory-format rule: channels_last unless switched off (unset = on; tune.py may decide on CPU)."""
    return torch.contiguous_format if channels_last is False else torch.channels_last


def make_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with timm's split: weight decay on conv/linear weights only, not on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.wd}, {"params": no_decay, "weight_decay": 0.0}]
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.lr, eps=1e-3, **fast)


def maybe_compile(model: torch.nn.Module, wanted: bool, say: Callable[[str], None],
                  device: torch.device | None = None) -> torch.nn.Module:
    """torch.compile when asked and the toolchain works for `device` (the probe compiles a tiny function
    there: a CPU probe says nothing about Triton on a GPU); otherwise eager, with a note. A compile that
    passes the probe can still fail on the model itself: Engine.step and forward_eval fall back then."""
    if not wanted:
        return model
    device = device if device is not None else next(model.parameters()).device
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2, device=device))  # fails fast without a working backend
        return torch.compile(model)
    except Exception as err:  # backend/toolchain problems surface as many exception types
        say(f"note: --compile unavailable here ({type(err).__name__}); running eagerly")
        return model


def optimisation_step(run_model, model, optimizer, scaler, autocast, x, targets, clip: bool):
    """One step of the recipe: forward under autocast, soft-target cross-entropy, backward (scaled for fp16),
    gradient clipping at 1.0, AdamW. Returns the detached loss and logits; reads nothing back to the host."""
    with autocast:
        logits = run_model(x)
        loss = soft_target_cross_entropy(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


@dataclass
class Engine:
    """A model with everything needed to train and evaluate it on one device.

    `model` is the module whose state is saved; `run_model` is what is called (the compiled module with
    --compile, else the same object). Build with `Engine.build(config)`.
    """

    config: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    model: torch.nn.Module
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    run_model: torch.nn.Module
    chosen_by: str = "flags"  # how the settings were chosen: "flags", "default", "probe" or "cached probe"
    conv_path: str = "stock"  # how the depthwise convolutions are computed on CPU (run/depthwise.py)
    unproven: set[str] = field(default_factory=set)  # compiled calls not yet run once: "train", "eval"
    say: Callable[[str], None] = print

    @classmethod
    def build(cls, config: RunConfig, device: torch.device | None = None, say: Callable[[str], None] = print,
              compile_now: bool = True) -> "Engine":
        """Device, precision and memory format from the config (on CPU, unset ones from tune.py's probe),
        then the model (seeded by config.seed), AdamW and the AMP scaler. `compile_now=False` leaves
        torch.compile to `compile()`, so a checkpoint can be loaded into the plain module first."""
        from .tune import choose_settings  # tune builds engines itself to probe

        device = device if device is not None else resolve_device(config.device)
        chosen = choose_settings(config, device, say)
        amp_dtype, memory_format = chosen.amp_dtype, chosen.memory_format
        torch.manual_seed(config.seed)  # model init; everything after draws from explicit generators
        model = build_model(config).to(device, memory_format=memory_format)
        set_path(model, chosen.conv_path)
        optimizer = make_optimizer(model, config, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        engine = cls(config, device, amp_dtype, memory_format, model, optimizer, scaler, model, chosen.how,
                     chosen.conv_path)
        if compile_now:
            engine.compile(say)
        return engine

    def compile(self, say: Callable[[str], None] = print) -> None:
        self.run_model = maybe_compile(self.model, self.config.compile, say, self.device)
        self.say = say
        # the compiled graphs are built at the first train step and the first evaluation: each is watched once
        self.unproven = {"train", "eval"} if self.run_model is not self.model else set()

    def _first_call(self, kind: str, call: Callable[[], object]):
        """`call()`; the first time for `kind` with a compiled model, a failure of the compiler (Triton
        missing, an unsupported op) falls back to the eager model with a note and calls again. Nothing has
        changed the weights by then: the step fails before the optimizer runs."""
        if kind not in self.unproven:
            return call()
        try:
            out = call()
        except Exception as err:  # compiler failures surface as many exception types
            self.say(f"note: --compile failed at the first {kind} call ({type(err).__name__}: "
                      f"{str(err).splitlines()[0][:120] if str(err) else ''}); running eagerly")
            self.run_model, self.unproven = self.model, set()
            self.optimizer.zero_grad(set_to_none=True)
            return call()
        self.unproven.discard(kind)
        return out

    # ------------------------------------------------------------------ training
    @property
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on an augmented batch x (B, 3, 32, 32) with soft targets (B, 10)."""
        x = x.contiguous(memory_format=self.memory_format)
        return self._first_call("train", lambda: optimisation_step(
            self.run_model, self.model, self.optimizer, self.scaler, self.autocast, x, targets, self.config.clip))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def forward_eval(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of uint8 images (B, 3, 32, 32), normalised as in training, in eval mode."""
        x = normalize(images).contiguous(memory_format=self.memory_format)

        def run() -> torch.Tensor:
            self.run_model.eval()
            try:
                with self.autocast:
                    return self.run_model(x).float()
            finally:
                self.run_model.train()

        return self._first_call("eval", run)

    @torch.no_grad()
    def evaluate(self, test_x: torch.Tensor, test_y: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy (%) on the unaugmented test split (two host reads in all)."""
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, test_x.shape[0], EVAL_BATCH):
            logits = self.forward_eval(test_x[i:i + EVAL_BATCH])
            y = test_y[i:i + EVAL_BATCH]
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = test_x.shape[0]
        return loss.item() / n, 100.0 * correct.item() / n

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # amp is not in the run id, so a run may resume under another precision: a disabled scaler saves {},
        # which an enabled one refuses (it then starts from its initial scale); a disabled one ignores any state
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def settings(self) -> dict:
        """The chosen settings as RunConfig values (kept in checkpoints, so a resumed run keeps them)."""
        return {"device": self.device.type, "channels_last": self.memory_format == torch.channels_last,
                "amp": amp_name(self.amp_dtype), "conv_path": self.conv_path}

    def describe(self) -> str:
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype is not None else "fp32"
        layout = "channels_last" if self.memory_format == torch.channels_last else "NCHW"
        conv = f", conv {self.conv_path}" if self.device.type == "cpu" else ""
        return f"{self.device.type}, {amp}, {layout}{conv} ({self.chosen_by})"
