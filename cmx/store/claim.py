"""One run, one trainer: a run is claimed before it is trained, so two launches never train it twice.

Layout: DIR/runs/<run_id>/claims/<N>.json, N = 1, 2, 3, ... one file per training attempt. The claim
with the highest N is the current one; the lower ones are the run's history (who trained it, when, up
to which epoch). A claim holds host, pid (and the pid's start time), start time, heartbeat time, the
epoch reached, the heartbeat timeout readers should apply, and `released` once its holder has stopped.

The primitive: link(2). A claim is written completely to a unique temporary file, then hard-linked to
the name `claims/<N+1>.json`. link() fails with EEXIST when the name exists, and the server decides, so
of any number of processes on any number of hosts exactly one creates a given N; readers never see a
half-written claim (O_CREAT|O_EXCL would show an empty file while it is being written). On NFS a lost
reply to a retransmitted link() can report an error although it succeeded, so success is also judged by
the temporary file's link count reaching 2: the recipe of open(2)'s O_EXCL notes for lock files on NFS.

Why not flock/fcntl locks: on NFS they go through the lock manager (NLM/lockd, or NFSv4 leases) that many
clusters mount without (`nolock`, Lustre's default `noflock`, some GPFS/BeeGFS setups), where flock then
fails or, worse, locks only on the local node; a lock also says nothing about who holds it or since when,
and a lock lost in a server reboot goes unnoticed. A file made by link() works wherever rename works.

Why numbered files instead of one claim.json: taking over a dead holder's claim must itself be
race-free. Two takers that both judged claim N stale both try to create N+1: one wins, the other gets
EEXIST and reads N+1, now a live claim. Nothing is renamed or deleted by name, so no taker can remove a
claim that someone else created meanwhile (the ABA race of "unlink the stale lock, then create").

When a claim is free (the run may be claimed by anyone):
  - its holder released it (done, failed, interrupted: every exit path of train());
  - same host and the pid is dead (or is another process now: its start time differs): at once;
  - any host: no heartbeat for `timeout_s`. The holder refreshes its heartbeat every HEARTBEAT_S from a
    daemon thread, so a live holder misses beats only while the interpreter is blocked (a long native call
    holding the GIL, a checkpoint on a slow filesystem, a suspended process). The timeout is
    max(TIMEOUT_FLOOR_S, 2 x the holder's longest epoch so far): an epoch is the natural unit of "this long
    without progress", and a holder on another node that was lost costs at most that before the run
    resumes from its checkpoint. $CMX_CLAIM_TIMEOUT (seconds) overrides it for holders and readers.
A holder that finds a higher claim than its own (it was judged dead, e.g. a network partition longer than
the timeout) has lost the run: it says so on stderr and calls `on_lost` (train() sets its stop request, so
the run checkpoints and stops as if pre-empted).
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import Interrupted, RunBusy
from ..files import atomic_write_json, now_iso, read_json

CLAIMS = "claims"
HEARTBEAT_S = 30.0  # seconds between heartbeats of a holder
EPOCH_POLL_S = 5.0  # the holder looks at status.json this often, to record a new epoch in its claim
TIMEOUT_FLOOR_S = 600.0  # a claim is never judged dead sooner than this (unless its pid is dead on this host)
WAIT_POLL_S = 2.0  # `cmx train --wait`: how often the holder is looked at


def default_timeout() -> float | None:
    """$CMX_CLAIM_TIMEOUT in seconds, if set (tests, clusters with very long or very short epochs)."""
    value = os.environ.get("CMX_CLAIM_TIMEOUT")
    return float(value) if value else None


# ---------------------------------------------------------------------- reading claims
def claims_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CLAIMS


def _numbers(run_dir: Path) -> list[int]:
    try:
        names = os.listdir(claims_dir(run_dir))
    except OSError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def current(run_dir: Path) -> tuple[int, dict | None]:
    """(N, content) of the highest claim; (0, None) when the run was never claimed.

    A listing may be stale on NFS (directory attribute caching); probing N+1 by name catches up, and
    acquire() does not depend on it: link() is decided by the server.
    """
    numbers = _numbers(run_dir)
    n = numbers[-1] if numbers else 0
    while (claims_dir(run_dir) / f"{n + 1}.json").exists():
        n += 1
    if n == 0:
        return 0, None
    content = read_json(claims_dir(run_dir) / f"{n}.json")
    if content is None:  # unreadable: judge it by its file's age instead (see is_live)
        with contextlib.suppress(OSError):
            content = {"unreadable": True, "heartbeat_unix": (claims_dir(run_dir) / f"{n}.json").stat().st_mtime}
    return n, content


def is_live(claim: dict | None, now: float | None = None) -> bool:
    """Does `claim` still hold its run? (See the module docstring for the rules.)"""
    if not claim or claim.get("released"):
        return False
    now = time.time() if now is None else now
    if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int):
        if not pid_alive(claim["pid"], claim.get("pid_start")):
            return False  # died without releasing (kill -9, OOM killer): free at once
    timeout = default_timeout() or float(claim.get("timeout_s") or TIMEOUT_FLOOR_S)
    heartbeat = claim.get("heartbeat_unix")
    return isinstance(heartbeat, (int, float)) and now - heartbeat <= timeout


def holder(run_dir: Path) -> dict | None:
    """The live claim on `run_dir`, or None when anyone may train it."""
    _, claim = current(run_dir)
    return claim if is_live(claim) else None


def describe(claim: dict, now: float | None = None) -> str:
    """'pid 123 on host-a since 2025-01-01T10:00:00+0000, epoch 3/10, heartbeat 12s ago'."""
    now = time.time() if now is None else now
    if claim.get("unreadable"):
        return "an unreadable claim file (judged by its age)"
    epoch = f", epoch {claim.get('epoch', 0)}/{claim['epochs']}" if claim.get("epochs") else ""
    beat = claim.get("heartbeat_unix")
    ago = f", heartbeat {max(0, now - beat):.0f}s ago" if isinstance(beat, (int, float)) else ""
    return f"pid {claim.get('pid')} on {claim.get('host')} since {claim.get('started')}{epoch}{ago}"


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, pid_start: str | None = None) -> bool:
    """Is process `pid` (on this host) alive, and, when `pid_start` is given, still the same process?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = _proc_start(pid)
    return pid_start is None or started is None or started == pid_start


# ---------------------------------------------------------------------- holding a claim
@dataclass
class Claim:
    """A claim this process holds; a context manager that releases it on every way out."""

    run_dir: Path
    number: int
    content: dict
    heartbeat_s: float = HEARTBEAT_S
    on_lost: Callable[[], None] | None = None
    progress: Callable[[], dict | None] = lambda: None  # the run's status (RunDir.status): the epoch reached
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _epoch_seen: tuple[int, float] | None = None  # (epoch, when it was first seen)

    @property
    def path(self) -> Path:
        return claims_dir(self.run_dir) / f"{self.number}.json"

    def start_heartbeat(self) -> "Claim":
        self._thread = threading.Thread(target=self._beat, name=f"cmx-claim-{self.run_dir.name}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        """Every HEARTBEAT_S, and within EPOCH_POLL_S of a new epoch (so the claim shows the epoch reached)."""
        last = time.monotonic()
        while not self._stop.wait(min(EPOCH_POLL_S, self.heartbeat_s)):
            status = self.progress() or {}
            new_epoch = status.get("pid") == os.getpid() and status.get("epoch") != self.content.get("epoch")
            if not new_epoch and time.monotonic() - last < self.heartbeat_s:
                continue
            last = time.monotonic()
            if (claims_dir(self.run_dir) / f"{self.number + 1}.json").exists():
                self.lost.set()
                print(f"cmx: lost the claim on run {self.run_dir.name}: another process judged this one dead "
                      f"and took it over; stopping", file=sys.stderr, flush=True)
                if self.on_lost is not None:
                    self.on_lost()
                return
            with contextlib.suppress(OSError):  # a missed beat on a flaky filesystem is not fatal
                self.refresh()

    def refresh(self, **extra) -> None:
        """Write the heartbeat, the epoch reached (from status.json) and the timeout others should apply."""
        now = time.time()
        status = self.progress() or {}
        epoch = status.get("epoch") if status.get("pid") == os.getpid() else None
        if isinstance(epoch, int):
            if self._epoch_seen is not None and epoch > self._epoch_seen[0]:
                epoch_s = (now - self._epoch_seen[1]) / (epoch - self._epoch_seen[0])
                self.content["longest_epoch_s"] = round(max(epoch_s, self.content.get("longest_epoch_s") or 0), 1)
            if self._epoch_seen is None or epoch != self._epoch_seen[0]:
                self._epoch_seen = (epoch, now)
            self.content["epoch"] = epoch
        self.content["timeout_s"] = default_timeout() or max(TIMEOUT_FLOOR_S,
                                                             2 * (self.content.get("longest_epoch_s") or 0))
        self.content.update(heartbeat=now_iso(now), heartbeat_unix=now, **extra)
        atomic_write_json(self.path, self.content)

    def release(self, outcome: str = "released") -> None:
        """Mark the claim released (idempotent). Our own numbered file only: a claim that was taken over
        is above ours and untouched."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self.content.get("released"):
            return
        with contextlib.suppress(OSError):
            self.refresh(released=now_iso(time.time()), outcome=outcome)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, kind, err, tb) -> None:
        outcome = "done" if kind is None else ("interrupted" if issubclass(kind, Interrupted) else "failed")
        self.release(outcome)


def acquire(run_dir: str | os.PathLike, epochs: int | None = None, heartbeat_s: float = HEARTBEAT_S,
            on_lost: Callable[[], None] | None = None, *, progress: Callable[[], dict | None] = lambda: None) -> Claim:
    """Claim `run_dir` for this process and start its heartbeat; RunBusy (exit 4) when a live process holds it.
    `progress()`: the run's status (RunDir passes its reader), whose epoch the heartbeats record.

    Writes nothing but the claim (and its folder), and nothing at all when the run is busy.
    """
    run_dir = Path(run_dir)
    n, claim = current(run_dir)
    if is_live(claim):  # the common busy case: decided before anything is written
        raise _busy(run_dir, claim)
    folder = claims_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    content = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
               "token": uuid.uuid4().hex, "started": now_iso(now), "heartbeat": now_iso(now), "heartbeat_unix": now,
               "epoch": 0, "epochs": epochs, "timeout_s": default_timeout() or TIMEOUT_FLOOR_S, "released": None}
    tmp = folder / f".claim-{content['host']}-{content['pid']}-{content['token']}.tmp"
    atomic_write_json(tmp, content)
    try:
        while True:
            if is_live(claim):
                raise _busy(run_dir, claim)
            if _link(tmp, folder / f"{n + 1}.json"):
                return Claim(run_dir, n + 1, content, heartbeat_s, on_lost, progress).start_heartbeat()
            n += 1  # someone else created n + 1 first: judge theirs
            claim = read_json(folder / f"{n}.json")
    finally:
        tmp.unlink(missing_ok=True)


def _busy(run_dir: Path, claim: dict) -> RunBusy:
    return RunBusy(f"run {run_dir.name} is being trained by {describe(claim)}; nothing was written "
                   f"(cmx train --wait waits for it)", run_dir=run_dir, holder=claim)


def _link(tmp: Path, name: Path) -> bool:
    """Create `name` as a hard link to `tmp`: True if we created it (see the module docstring)."""
    try:
        os.link(tmp, name)
        return True
    except FileExistsError:
        return False
    except OSError:
        with contextlib.suppress(OSError):
            if os.stat(tmp).st_nlink == 2:  # NFS: the link was made but the reply was lost
                return True
        raise


# ---------------------------------------------------------------------- --wait
def wait_for_turn(attempt: Callable[[], dict], say: Callable[[str], None] = print) -> dict:
    """Call `attempt()` (a train() call); while the run is busy, wait for its holder to stop and try again.

    When the holder finishes, the next attempt finds the run done and reports its result; when it was
    interrupted or died, the next attempt takes the claim and resumes from the checkpoint.
    """
    while True:
        try:
            return attempt()
        except RunBusy as busy:
            say(f"waiting for run {busy.run_dir.name}: held by {describe(busy.holder)}")
            while holder(busy.run_dir) is not None:
                time.sleep(WAIT_POLL_S)


