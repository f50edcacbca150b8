"""Where a result came from: code version, software versions, hardware. Saved in every result.json."""
from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path

import torch

PACKAGE_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout cmx runs from, or (None, None) when it is not a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_DIR))
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu: " + (platform.processor() or platform.machine())


def provenance(device: torch.device) -> dict:
    commit, dirty = git_state()
    return {
        "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": device.type, "device_name": device_name(device), "host": socket.gethostname(),
        "threads": torch.get_num_threads(), "python": platform.python_version(),
    }
