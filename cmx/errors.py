"""Exceptions that carry a user-facing one-line message and the exit code the CLI should use.

Library code raises these; only the CLI turns them into `stderr` + exit code, so tests can call the
library directly and still check the message.
"""


class CmxError(Exception):
    """Base class: `str(err)` is the single line shown to the user."""

    exit_code = 1


class UserError(CmxError):
    """A mistake in flags, YAML, data or paths: the user can fix it. Exit code 2, nothing written."""

    exit_code = 2


class Diverged(CmxError):
    """Training produced a non-finite loss. Exit code 3; the run is marked `failed`."""

    exit_code = 3


class Interrupted(CmxError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. Exit code 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    def __reduce__(self):  # picklable across processes (submitit returns exceptions to the submitter)
        return (type(self), (str(self), self.signum))


class RunBusy(CmxError):
    """Another live process holds the run's claim (cmx.store.claim). Exit code 4; nothing was written."""

    exit_code = 4

    def __init__(self, message: str, run_dir=None, holder: dict | None = None):
        super().__init__(message)
        self.run_dir, self.holder = run_dir, holder or {}

    def __reduce__(self):  # picklable across processes, like Interrupted
        return (type(self), (str(self), self.run_dir, self.holder))
