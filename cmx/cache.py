"""Per-machine JSON caches in $CMX_CACHE_DIR (default ~/.cache/cmx): the CPU settings probe's choices
(run/tune.py, cpu_settings.json) and the sweep estimate's step times (sweep/probe.py, step_times.json).

Best effort both ways: an unreadable cache is empty, and an unwritable one only means measuring again next
time. No torch import: the sweep's dry run reads its cache without the training stack.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .files import atomic_write_json


def cache_path(name: str) -> Path:
    root = os.environ.get("CMX_CACHE_DIR") or Path.home() / ".cache" / "cmx"
    return Path(root) / name


def read_cache(name: str) -> dict:
    try:
        return json.loads(cache_path(name).read_text())
    except (OSError, ValueError):
        return {}


def write_cache(name: str, entries: dict) -> None:
    try:
        cache_path(name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_path(name), entries)
    except OSError:
        pass
