"""This machine's CPU model and core count, read without torch: one spelling for the results' device names
(run/provenance.py), the CPU settings cache (run/tune.py), the sweep's slots (sweep/local.py) and its measured
rates (sweep/rates.py)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# Set by a launcher that splits this machine's cores between N runs (sweep/local.py's --workers slots): each
# run had 1/N of them, also while it ran alone. Threads alone cannot tell: with SMT a lone run's default
# (torch: the physical cores) equals a 2-slot share of the logical CPUs.
CPU_SHARE_ENV = "CMX_CPU_SHARE"


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


def cpu_share() -> int:
    """How many ways a launcher split the cores this run may use (1: they are all its own)."""
    return parse_share(os.environ.get(CPU_SHARE_ENV))


def parse_share(value) -> int:
    """A recorded share of the cores ($CMX_CPU_SHARE, a result.json's cpu_share), 1 where absent or
    unreadable (a hand-edited result.json or environment is no reason to fail)."""
    try:
        return max(1, int(value or 1))
    except (TypeError, ValueError):
        return 1
