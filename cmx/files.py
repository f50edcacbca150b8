"""Files that are never half-written, and the timestamps written in them: the generic file helpers every layer
uses (run directories, caches, roles, the GPU report). Torch-free, imports nothing of cmx.

Every write replaces its file atomically (write a temporary file in the same directory, fsync, rename, fsync
the directory), so a reader or a crash sees either the old or the complete new version, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is always either the old or the complete new content."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: Path) -> dict | None:
    """The parsed file, or None when it is missing or unreadable (a half-copied dir must not crash readers)."""
    try:
        with open(path) as fh:
            value = json.load(fh)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


ISO_TIME = "%Y-%m-%dT%H:%M:%S%z"  # how every timestamp in a run directory is written


def now_iso(t: float | None = None) -> str:
    """`t` (default: now) as local time with its offset, e.g. 2026-11-30T12:31:05+0000."""
    return time.strftime(ISO_TIME, time.localtime(t))


def parse_iso(text) -> float | None:
    """The Unix time of a now_iso() timestamp; None when `text` is not one."""
    try:
        return datetime.strptime(text, ISO_TIME).timestamp()
    except (TypeError, ValueError):
        return None
