"""Stopping a run as a value: the caller owns a `StopRequest`, `train()` checks it at every step boundary.

Why not signal handlers inside `train()`: the owner of the process knows which signals mean "stop" (the CLI:
SIGINT/SIGTERM; a SLURM job: also the pre-emption signal USR2), and a library function that installs
handlers makes every caller guess whether training is under way. Here the owner sets the request, from a
signal handler, another thread or a test, and training saves a checkpoint at the next step and raises
`Interrupted` (exit code 128 + the signal's number).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading


class StopRequest(threading.Event):
    """A threading.Event that also remembers why it was set (the signal number, for the exit code)."""

    def __init__(self):
        super().__init__()
        self.signum: int = signal.SIGTERM

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self.set()

    @property
    def reason(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest | None = None, signals=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, the given signals set `stop` (a second one exits at once: checkpoints are atomic, so
    nothing is corrupted). Outside the main thread, where handlers cannot be installed, nothing changes."""
    stop = stop if stop is not None else StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum, frame):
        if stop.is_set():
            os._exit(128 + signum)
        stop.request(signum)

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
