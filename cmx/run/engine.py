"""The training engine: how one ConvMixer trains where its `Placement` says (placement.py: device, precision,
memory format, CPU depthwise path, resolved once by `tune.place`) — the model, optimizer, the optimisation
step and evaluation. The train loop and `cmx bench` both use it, so the step that `cmx bench` times is the
step that training runs, and each rule below is written once. The engine resolves no setting itself.

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
from ..config import RunConfig
from .depthwise import set_path
from .model import build_model
from .placement import Placement
from .seeding import init_weights

EVAL_BATCH = 500


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


def optimisation_step(engine: "Engine", x: torch.Tensor, targets: torch.Tensor):
    """One step of the recipe: forward under autocast, soft-target cross-entropy, backward (scaled for fp16),
    gradient clipping at 1.0, AdamW. Returns the detached loss and logits; reads nothing back to the host."""
    optimizer, scaler = engine.optimizer, engine.scaler
    with engine.autocast:
        logits = engine.run_model(x)
        loss = soft_target_cross_entropy(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if engine.config.clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(engine.model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


@dataclass
class Engine:
    """A model with everything needed to train and evaluate it where `placement` says.

    `model` is the module whose state is saved; `run_model` is what is called (the compiled module with
    --compile, else the same object). Build with `Engine.build(config, placement)`.
    """

    config: RunConfig
    placement: Placement
    model: torch.nn.Module
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    run_model: torch.nn.Module
    unproven: set[str] = field(default_factory=set)  # compiled calls not yet run once: "train", "eval"
    say: Callable[[str], None] = print

    @classmethod
    def build(cls, config: RunConfig, placement: Placement, say: Callable[[str], None] = print,
              compile_now: bool = True) -> "Engine":
        """The model (initial weights from config.seed, seeding.py) placed as `placement` says, AdamW and the
        AMP scaler. `compile_now=False` leaves torch.compile to `compile()`, so a checkpoint can be loaded
        into the plain module first."""
        device = placement.device
        model = init_weights(config.seed, lambda: build_model(config))
        model = model.to(device, memory_format=placement.memory_format)
        set_path(model, placement.conv_path)
        optimizer = make_optimizer(model, config, device)
        scaler = torch.amp.GradScaler(device.type, enabled=placement.scaler_enabled)
        engine = cls(config, placement, model, optimizer, scaler, model)
        if compile_now:
            engine.compile(say)
        return engine

    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.placement.amp_dtype

    @property
    def memory_format(self) -> torch.memory_format:
        return self.placement.memory_format

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
        return self.placement.autocast()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on an augmented batch x (B, 3, 32, 32) with soft targets (B, 10)."""
        x = x.contiguous(memory_format=self.memory_format)
        return self._first_call("train", lambda: optimisation_step(self, x, targets))

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
        """The placement as RunConfig values (kept in checkpoints, so a resumed run keeps them)."""
        return self.placement.settings()

    def describe(self) -> str:
        return self.placement.describe()
