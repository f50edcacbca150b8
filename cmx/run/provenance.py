"""Where a result came from: code version, software versions, hardware. Saved in every result.json.

Two handles on the code: the git commit of the checkout cmx runs from (None when it is not one, e.g. a
wheel in site-packages), and `source_sha256`, a hash of the installed package's own .py files that any
install has. It is the sha256 of the `sha256sum` listing of those files sorted by relative path, so it
can be checked by hand in any copy of the package:

    cd cmx && find . -name '*.py' -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum
"""
from __future__ import annotations

import functools
import hashlib
import platform
import socket
import subprocess
from pathlib import Path

import torch

from ..machine import cpu_model, cpu_share

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the cmx package (this file is cmx/run/provenance.py)


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout cmx runs from, or (None, None) when the package is not tracked by
    git (a copy installed inside some other repository, e.g. a .venv in a checkout, is not that commit)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        tracked = git("ls-files", "--error-unmatch", "--", "__init__.py")
        if head.returncode != 0 or tracked.returncode != 0:
            return None, None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_DIR))
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.lru_cache(maxsize=1)
def source_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the package's .py files (see the module docstring for the same hash in a shell)."""
    listing = []
    for path in sorted(package_dir.rglob("*.py"), key=lambda p: p.relative_to(package_dir).as_posix()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        listing.append(f"{digest}  {path.relative_to(package_dir).as_posix()}\n")
    return hashlib.sha256("".join(listing).encode()).hexdigest()


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a model's final weights (names, dtypes, shapes and raw bytes, in state_dict order).

    Two runs with the same hash learned the same model: an ablation that changes nothing (e.g. gradient
    clipping that never triggers) is then "not testable" rather than a noisy comparison (cmx findings)."""
    hasher = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        hasher.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu: " + cpu_model()


def provenance(device: torch.device) -> dict:
    commit, dirty = git_state()
    return {
        "git_commit": commit, "git_dirty": dirty, "source_sha256": source_sha256(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "device": device.type, "device_name": device_name(device),
        "host": socket.gethostname(), "threads": torch.get_num_threads(), "cpu_share": cpu_share(),
        "python": platform.python_version(),
    }
