"""This machine's CPU model and core count, read without torch: one spelling for the results' device names
(run/provenance.py), the CPU settings cache (run/tune.py), the sweep's slots (sweep/local.py) and its measured
rates (sweep/rates.py)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. 'Intel(R) Xeon(R) Processor'), else what Python knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask: what a container or `taskset` grants)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
