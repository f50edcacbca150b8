"""One typed, validated configuration for a training run.

The same `RunConfig` is built from `cmx train` flags and from sweep YAML (`RunConfig.from_dict`), saved as
`config.json` with every run, and hashed into the `run_id` that names the run directory. Only the fields
that change *what is learned* enter the hash (IDENTITY_FIELDS); where and how fast it runs (device, AMP,
memory layout, compile, data path, eval cadence) does not, so a run interrupted on one machine resumes
on another and identical table rows from different sweep files share one run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import Any

from .cifar import CHANNELS, IMAGE_SIZE, N_CLASSES
from .errors import UserError

CHOICES = {
    "norm": ("batch", "layer"),
    "act": ("gelu", "relu"),
    "residual": ("eq2", "none", "both"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "conv_path": ("auto", "stock", "wgrad", "padded", "padded-wgrad", "strips", "padded-strips",
                  "odd-stock", "odd-wgrad", "odd-padded", "odd-padded-wgrad", "odd-strips",
                  "odd-padded-strips"),  # run/depthwise.py's PATHS
    "tracker": ("none", "tensorboard", "wandb"),
}


def eq4_params(h: int, d: int, p: int, k: int, n_classes: int = N_CLASSES, c_in: int = CHANNELS) -> int:
    """Paper Eq. 4: the exact parameter count of ConvMixer-h/d (patch p, kernel k) with BatchNorm."""
    return h * (d * (k * k + h + 6) + c_in * p * p + n_classes + 3) + n_classes


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class RunConfig:
    # -- model (paper Fig. 3, Eq. 1-3)
    h: int = _opt(256, "hidden dimension (width)")
    d: int = _opt(8, "depth: number of ConvMixer blocks")
    p: int = _opt(1, "patch size of the patch embedding")
    k: int = _opt(9, "depthwise kernel size")
    norm: str = _opt("batch", "normalisation: batch (paper) or layer (Table 7 'BatchNorm → LayerNorm')")
    act: str = _opt("gelu", "activation: gelu (paper) or relu (Table 7 'GELU → ReLU')")
    residual: str = _opt("eq2", "residuals: eq2 (paper), none ('- Residual in Eq. 2'), both ('+ Residual in Eq. 3')")
    # -- augmentation toggles, one per Table 7 row (all on = paper)
    scaling: bool = _opt(True, "random scaling: RandomResizedCrop scale 0.75-1, ratio 3/4-4/3")
    flip: bool = _opt(True, "random horizontal flip p=0.5")
    randaug: bool = _opt(True, "RandAugment rand-m9-mstd0.5-inc1 (timm)")
    mixup: bool = _opt(True, "mixup 0.5 + cutmix 0.5, switch 0.5, label smoothing 0.1")
    erasing: bool = _opt(True, "random erasing p=0.25, pixel mode")
    clip: bool = _opt(True, "gradient norm clipping at 1.0")
    # -- optimisation
    lr: float = _opt(0.01, "peak learning rate of the one-cycle schedule (AdamW)")
    wd: float = _opt(0.0, "AdamW weight decay (not applied to 1-D params)")
    epochs: int = _opt(200, "training epochs")
    batch_size: int = _opt(64, "batch size")
    seed: int = _opt(0, "random seed (model init, shuffling, augmentation)")
    # -- how it runs (not part of the run's identity)
    eval_every: int = _opt(1, "evaluate on the test split every N epochs (and always after the last)")
    device: str = _opt("auto", "auto, cpu or cuda")
    amp: str = _opt("auto", "mixed precision: auto (bf16, else fp16, on CUDA; on CPU the faster of fp32 and bf16 by a cached probe), bf16, fp16, off")
    channels_last: bool | None = _opt(None, "channels_last memory layout (default: on CUDA on; on CPU the faster layout by a cached probe)")
    conv_path: str = _opt("auto", "CPU depthwise convolution path: auto (the fastest for the shape, by the cached probe), stock (oneDNN), wgrad, padded, padded-wgrad, strips, padded-strips; odd-<one of those>: an even kernel computed as the k+1 one (run/depthwise.py)")
    compile: bool = _opt(False, "torch.compile the model (once per process)")
    data: str = _opt("", "directory holding cifar-10-batches-py (default: $CMX_DATA or data/)")
    # -- live views of the run (not part of its identity either): cmx/run/tracking.py
    tracker: str = _opt("none", "none | tensorboard (event files in the run's tb/) | wandb (Weights & Biases)")
    wandb_project: str = _opt("cmx", "W&B project")
    wandb_group: str = _opt("", "W&B group (cmx sweep sets the sweep's name)")
    wandb_tags: str = _opt("", "comma-separated W&B tags (cmx sweep sets the run's table labels)")

    # ------------------------------------------------------------------ construction
    def __post_init__(self):
        if not self.data:
            object.__setattr__(self, "data", os.environ.get("CMX_DATA", "data"))
        self.validate()

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "RunConfig":
        """Build from a dict whose keys may use dashes or underscores; reject unknown keys by name."""
        known = {f.name for f in fields(cls)}
        clean = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise UserError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
            clean[name] = value
        return cls(**clean)

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> "RunConfig":
        """From a JSON or YAML mapping of settings — e.g. a run's config.json, which is how a local sweep's
        child process gets its run — with `overrides` (e.g. command-line flags) on top."""
        from .yamlfile import load_yaml  # JSON is YAML; this loader also reads `1e-05` as a number

        loaded = load_yaml(Path(path), what="--config")
        if not isinstance(loaded, dict):
            raise UserError(f"--config {path} must hold a mapping of settings")
        values = {k: v for k, v in loaded.items() if k not in ("run_id", "dataset")}  # config.json extras
        values.update(overrides or {})
        return cls.from_dict(values, where=str(path))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise UserError(f"{f.name} must be an integer, got {value!r}")
            elif kind == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserError(f"{f.name} must be a number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise UserError(f"{f.name} must be true or false, got {value!r}")
            elif kind == "bool | None":
                if value is not None and not isinstance(value, bool):
                    raise UserError(f"{f.name} must be true, false or unset, got {value!r}")
            elif kind == "str":
                if not isinstance(value, str):
                    raise UserError(f"{f.name} must be a string, got {value!r}")
        for name in ("h", "d", "p", "k", "epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.p > IMAGE_SIZE:
            raise UserError(f"patch size p={self.p} is larger than the {IMAGE_SIZE}x{IMAGE_SIZE} image")
        if self.seed < 0:
            raise UserError(f"seed must be ≥ 0, got {self.seed}")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise UserError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.wd < float("inf"):
            raise UserError(f"wd must be a number ≥ 0, got {self.wd}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {'|'.join(allowed)}, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ identity
    def identity(self, dataset: str) -> dict[str, Any]:
        """The fields that determine what is learned, plus the dataset fingerprint."""
        ident = {name: getattr(self, name) for name in IDENTITY_FIELDS}
        ident["dataset"] = dataset
        return ident

    def run_id(self, dataset: str) -> str:
        """Stable 12-hex-digit hash of the canonical identity: same command, same run directory."""
        canonical = json.dumps(self.identity(dataset), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """Short human label, e.g. '256/8 p1 k9' plus every non-default setting that changes learning."""
        parts = [f"{self.h}/{self.d} p{self.p} k{self.k}"]
        default = RunConfig(data=self.data)
        for name in IDENTITY_FIELDS:
            if name in ("h", "d", "p", "k", "seed"):
                continue
            value = getattr(self, name)
            if value != getattr(default, name):
                if isinstance(value, bool):
                    parts.append(("+" if value else "-") + name)
                else:
                    parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        parts.append(f"seed={self.seed}")
        return " ".join(parts)


IDENTITY_FIELDS = (
    "h", "d", "p", "k", "norm", "act", "residual",
    "scaling", "flip", "randaug", "mixup", "erasing", "clip",
    "lr", "wd", "epochs", "batch_size", "seed",
)
FIELD_NAMES = tuple(f.name for f in fields(RunConfig))
