"""Where and in what number format a run computes: one `Placement` value and the pure rules that make one.

A placement is the device, the precision, the memory format and the CPU depthwise path (run/depthwise.py),
plus how they were chosen. Precision has one spelling everywhere inside cmx, the `--amp` flag's values:
"off" (fp32), "bf16" and "fp16"; the autocast dtype is derived from it, never turned back into a name.

The rules here read nothing but the config, the device and torch's view of the GPU: flags first, a resumed
run's kept settings, then the CUDA rules (bf16 where the GPU computes in it natively, else fp16 with a
GradScaler; channels_last) or the CPU defaults. The CPU probe (tune.py) fills what the flags leave open on a
CPU; `tune.place` is the one resolver that applies them all. Nothing here imports the engine or the probe.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # precision → autocast dtype
_TEXT = {"off": "fp32", "bf16": "bfloat16", "fp16": "float16"}  # precision → the text of describe()


@dataclass(frozen=True)
class Placement:
    """How a run's steps are computed. precision: "off" | "bf16" | "fp16"; conv_path: the CPU depthwise path
    ("stock" on CUDA); chosen_by: "flags", "default", "probe" or "cached probe"."""

    device: torch.device
    precision: str = "off"
    channels_last: bool = True
    conv_path: str = "stock"
    chosen_by: str = "flags"

    def __post_init__(self):
        if self.precision not in AMP_DTYPES:
            raise ValueError(f"precision {self.precision!r} is not one of {sorted(AMP_DTYPES)}")

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: fp32, autocast off)."""
        return AMP_DTYPES[self.precision]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def scaler_enabled(self) -> bool:
        """fp16 needs a GradScaler (its range underflows small gradients); fp32 and bf16 do not."""
        return self.precision == "fp16"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def settings(self) -> dict:
        """The placement as RunConfig values (kept in checkpoints, so a resumed run keeps them)."""
        return {"device": self.device.type, "channels_last": self.channels_last, "amp": self.precision,
                "conv_path": self.conv_path}

    def describe(self) -> str:
        """e.g. "cpu, fp32, NCHW, conv wgrad (flags)" (stored in result.json's provenance)."""
        layout = "channels_last" if self.channels_last else "NCHW"
        conv = f", conv {self.conv_path}" if self.device.type == "cpu" else ""
        return f"{self.device.type}, {_TEXT[self.precision]}, {layout}{conv} ({self.chosen_by})"


# ---------------------------------------------------------------------- the rules
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


def resolve_precision(amp: str, device: torch.device) -> str:
    """--amp auto: bf16 on CUDA GPUs that compute in it natively, else fp16 (with a GradScaler); off on CPU
    (unless the probe chooses, tune.py). An explicit --amp is obeyed."""
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "off"
    return "bf16" if native_bf16(device) else "fp16"


def default_conv_path(k: int, channels_last: bool) -> str:
    """The depthwise path when nothing is probed (CMX_CPU_TUNE=off): measured on an AMX Xeon and two AMD
    EPYCs, oneDNN's own kernels win at k ≤ 3, the grouped weight gradient everywhere else, and NCHW from
    k11 also needs the padded forward (oneDNN's NCHW forward leaves its fast kernel there on AVX2, at k15
    on AVX-512)."""
    if k <= 3:
        return "stock"
    if not channels_last and k >= 11:
        return "padded-wgrad"
    return "wgrad"


def all_fixed(config: RunConfig) -> bool:
    """Whether the flags leave nothing for a probe to choose."""
    return config.channels_last is not None and config.amp != "auto" and config.conv_path != "auto"


def from_flags(config: RunConfig, device: torch.device) -> Placement:
    """The placement without a probe: the flags, and for what they leave open the CUDA rules or the CPU
    defaults (channels_last, fp32, `default_conv_path`)."""
    channels_last = config.channels_last is not False  # unset = on
    if device.type != "cpu":
        conv = "stock"
    else:
        conv = config.conv_path if config.conv_path != "auto" else default_conv_path(config.k, channels_last)
    return Placement(device, resolve_precision(config.amp, device), channels_last, conv,
                     "flags" if all_fixed(config) else "default")


def keep_settings(config: RunConfig, kept: dict | None, device: torch.device) -> RunConfig:
    """A resumed run keeps the memory format, precision and depthwise path it started with (`kept`: the
    checkpoint's "engine", Placement.settings(), on the same kind of device), unless its flags now say
    otherwise: a CPU probe that would choose differently today cannot make a resumed run differ from an
    uninterrupted one."""
    if not kept or kept.get("device") != device.type:
        return config
    changes = {}
    if config.channels_last is None:
        changes["channels_last"] = kept["channels_last"]
    if config.amp == "auto":
        changes["amp"] = kept["amp"]
    if config.conv_path == "auto":  # checkpoints from before the paths: the one fast path they had
        old = "wgrad" if kept["amp"] == "off" and config.k % 2 == 1 and config.k >= 5 else "stock"
        changes["conv_path"] = kept.get("conv_path", old)
    return config.replace(**changes)
