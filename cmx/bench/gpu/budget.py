"""Time caps for the GPU check: a `Budget` every section asks before each piece of work, and `run_capped`,
which stops a command and everything it started when its time is up.

Why ask before, not after: a check that notices its deadline only once it has passed it overruns by one
piece of work (a cold torch.compile is a minute), and an overrun is a kill, which loses the piece. So each
piece states an estimate of its cost, and a piece that does not fit is recorded "skipped: budget" with
what it needed and what was left. The estimates are guesses until a GPU has run the check (README).

Why a deadline on the wall clock between processes: a section child's own start (Python, torch, CUDA)
is part of its time, so the driver hands it the absolute time to finish by, not a number of seconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

SKIP_PREFIX = "skipped: budget"


class Budget:
    """The time left until `deadline` on `clock` (time.monotonic; a test passes a fake clock)."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic):
        self.deadline, self.clock = deadline, clock

    @classmethod
    def seconds(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> "Budget":
        return cls(clock() + seconds, clock)

    @classmethod
    def until_wall(cls, wall_deadline: float, clock: Callable[[], float] = time.monotonic) -> "Budget":
        """From an absolute time.time() deadline (what the driver passes to a section child)."""
        return cls(clock() + (wall_deadline - time.time()), clock)

    def left(self) -> float:
        return self.deadline - self.clock()

    def fits(self, report, section: str, check: str, cost: float) -> bool:
        """Whether a piece estimated at `cost` seconds fits; if not, its row says "skipped: budget"."""
        left = self.left()
        if left >= cost:
            return True
        report.add(section, check, "skip", f"{SKIP_PREFIX} (needs ~{cost:.0f} s, {max(left, 0):.0f} s left)",
                   needs_s=round(cost, 1), left_s=round(max(left, 0), 1))
        return False


# ---------------------------------------------------------------------- running a command with a cap
def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children before grandchildren. Processes that started a
    session of their own (`cmx sweep` starts each `cmx train` so) are found too: their parent is known."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`, its process group and every descendant. They are stopped first (SIGSTOP) until no new
    one appears, so none can start another or be re-parented out of reach while the tree is killed."""
    stopped: list[int] = []
    for _ in range(5):
        new = [p for p in [pid, *descendants(pid)] if p not in stopped]
        if not new:
            break
        for p in new:
            _signal(p, signal.SIGSTOP)
        stopped += new
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in stopped:
        _signal(p, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exit_on_sigterm() -> None:
    """SIGTERM (a `timeout`, a lease ending) becomes SystemExit(143), so run_capped's cleanup runs."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_capped(cmd: list[str], timeout: float, **kw) -> int:
    """Run `cmd` in its own process group (output passed through unless redirected in `kw`); at `timeout`
    kill it and everything it started. Returns its exit code, 124 when it was killed for time. If this
    process is stopped meanwhile (Ctrl-C, or SIGTERM with exit_on_sigterm), `cmd` goes with it: in its own
    session, a terminal's Ctrl-C would not reach it. (Not on SIGKILL; a PR_SET_PDEATHSIG would need a
    preexec_fn, unsafe once torch has started threads.)"""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    try:
        return proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        return 124
    except BaseException:
        kill_tree(proc.pid)
        proc.wait()
        raise
