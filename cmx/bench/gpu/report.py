"""The GPU check's report: OUT/gpu_check.json (environment and every figure) and OUT/gpu_check.md (one table:
check, verdict, figure), rewritten after every verdict.

Why rewritten each time, from the file: the check runs its sections in child processes with time caps, and
a check cut short (a cap, a lease ending) must keep every verdict it reached. Each `add` reads the JSON,
appends and writes both files atomically; only one process writes at a time (the driver waits for its child).
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ...files import atomic_write_bytes, atomic_write_json

JSON_NAME, MD_NAME = "gpu_check.json", "gpu_check.md"
VERDICTS = ("pass", "FAIL", "info", "skip", "error")  # FAIL and error are defects; skip includes "skipped: budget"


def environment() -> dict[str, Any]:
    """GPU name, driver, CUDA, cuDNN and torch versions (what every figure depends on)."""
    import torch

    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                           "host": platform.node(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if torch.backends.cudnn.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0 and smi.stdout.strip():
            env["driver"] = smi.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return env


class Report:
    """`add(section, check, verdict, figure, **numbers)` records one row (printed at once, flushed) and its
    numbers under figures[section][check]; `update(**top)` sets top-level fields."""

    def __init__(self, out: str | Path, fresh: bool = False, echo=print):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.json_path, self.md_path = self.out / JSON_NAME, self.out / MD_NAME
        self.echo = echo
        if fresh or not self.json_path.exists():
            self._write({"environment": {}, "checks": [], "figures": {}})

    def load(self) -> dict[str, Any]:
        return json.loads(self.json_path.read_text())

    def add(self, section: str, check: str, verdict: str, figure: str = "", **numbers: Any) -> None:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        data = self.load()
        data["checks"].append({"section": section, "check": check, "verdict": verdict, "figure": figure})
        if numbers:
            data["figures"].setdefault(section, {})[check] = numbers
        self._write(data)
        self.echo(f"[{verdict}] {section}: {check}" + (f" — {figure}" if figure else ""))
        sys.stdout.flush()

    def update(self, **top: Any) -> None:
        data = self.load()
        data.update(top)
        self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.json_path, data)
        atomic_write_bytes(self.md_path, render_markdown(data).encode())


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict[str, Any]) -> str:
    """gpu_check.md: a header naming the GPU and versions, then one table (check, verdict, figure)."""
    env = data.get("environment", {})
    gpu = env.get("gpu", "no GPU recorded")
    versions = ", ".join(f"{k} {env[k]}" for k in ("driver", "cuda", "cudnn", "torch", "python") if k in env)
    lines = [f"# cmx GPU check — {gpu}", ""]
    if versions:
        lines += [versions, ""]
    if "wall_s" in data:
        lines += [f"Whole check: {data['wall_s']:.0f} s wall (budget {data.get('budget_s', '?')} s)"
                  + (f"; {data['outcome']}" if "outcome" in data else ""), ""]
    elif data.get("checks"):
        lines += ["(check in progress, or cut short: the rows below are what it reached)", ""]
    lines += ["| check | verdict | figure |", "|---|---|---|"]
    for row in data.get("checks", []):
        lines.append(f"| {_cell(row['section'] + ': ' + row['check'])} | {_cell(row['verdict'])} | "
                     f"{_cell(row['figure'])} |")
    lines += ["", "Projections are labelled as such; every other figure was measured in this check "
                  "(numbers in gpu_check.json).", ""]
    return "\n".join(lines)
