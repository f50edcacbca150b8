"""Random numbers for the augmentation, always from an explicit `torch.Generator` (never the global RNG),
so that a resumed run draws exactly what an uninterrupted one would; and the CPU/GPU dispatch rule.
"""
from __future__ import annotations

import functools

import torch

Tensor = torch.Tensor


def uniform(gen: torch.Generator, shape, device) -> Tensor:
    """U[0, 1) float32 drawn on the generator's device, returned on `device`."""
    return torch.rand(shape, generator=gen, device=gen.device).to(device)


def normal(gen: torch.Generator, shape, device) -> Tensor:
    return torch.randn(shape, generator=gen, device=gen.device).to(device)


def integers(gen: torch.Generator, high: int, shape, device) -> Tensor:
    """Uniform integers in [0, high)."""
    return torch.randint(high, shape, generator=gen, device=gen.device).to(device)


@functools.lru_cache(maxsize=64)
def device_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor made once per device: torch.tensor(..., device=cuda) copies from pageable
    host memory and waits for the GPU each time. Do not modify the result in place."""
    return torch.tensor(values, dtype=dtype, device=device)


def resolve_dispatch(dispatch: str, device: torch.device) -> str:
    """How a per-image random choice is carried out. "subset": compute only what was drawn, reading the
    choices on the host (free on CPU). "mask": compute every alternative and keep the drawn one with
    torch.where, so nothing waits for the host (what a GPU wants). "auto": subset on CPU, mask elsewhere."""
    if dispatch not in ("auto", "subset", "mask"):
        raise ValueError(f"dispatch must be auto, subset or mask, not {dispatch!r}")
    if dispatch == "auto":
        return "subset" if torch.device(device).type == "cpu" else "mask"
    return dispatch
