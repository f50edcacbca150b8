"""Checkpoints that survive crashes: everything needed to continue a run bit-for-bit, written atomically.

A checkpoint holds the model, optimizer, AMP scaler, the engine's chosen memory format and precision, the schedule position (epoch and step within it,
plus the epoch's shuffling order when saved mid-epoch), the best accuracy, the per-epoch history and the RNG
states a run draws from (python, numpy, torch CPU, and the explicit shuffle/augmentation generators). Not
the global CUDA RNG: cmx never draws from it (CUDA draws use the explicit augmentation generator), and saving
it would create a CUDA context on every visible GPU and fail to restore where fewer GPUs are visible. It is
serialised to memory first and then written with tmp + fsync + rename, so a full disk or a kill during
the write leaves the previous checkpoint untouched. The final weights (model.pt) are serialised here too.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..files import atomic_write_bytes


def _serialised(obj: Any) -> bytes:
    """torch.save into memory first: the file is then written whole, atomically, or not at all."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])  # a "cuda" entry (checkpoints before 0.2) is ignored: see the docstring
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def save(path: Path, state: dict[str, Any]) -> None:
    """Atomically replace `path`; on failure (e.g. disk full) the previous checkpoint is kept."""
    data = _serialised(state)
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise UserError(f"cannot write checkpoint {path} ({err.strerror or err}); "
                        f"the previous checkpoint is kept") from None


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None if there is none. A corrupt file is an error, not a silent restart."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated/corrupt zip archives
        raise UserError(f"checkpoint {path} is unreadable ({type(err).__name__}); "
                        f"use --restart to start this run over") from None


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """model.pt: a state_dict of CPU tensors, so it loads on any machine without map_location."""
    atomic_write_bytes(path, _serialised(weights))
