"""A pytest plugin for the GPU check's tests section (`pytest -p cmx.bench.gpu.tests_plugin`): each test's
outcome is appended to a JSON-lines file as soon as it is known, and a test that would start too close to
the section's deadline is skipped ("skipped: budget") instead of being killed half-way.

Why: pytest's --junitxml is written only when the session ends, so a section killed at its cap lost every
result it had. The driver reads this file whether pytest finished or not (gpu_check.read_test_log).
"""
from __future__ import annotations

import json
import os
import time

import pytest

LOG_ENV, DEADLINE_ENV, COST_ENV = "CMX_GPU_TESTS_LOG", "CMX_GPU_TESTS_DEADLINE", "CMX_GPU_TESTS_COST_S"


def pytest_runtest_setup(item) -> None:
    deadline, cost = os.environ.get(DEADLINE_ENV), float(os.environ.get(COST_ENV, "0"))
    if deadline is not None and time.time() + cost > float(deadline):
        left = max(0.0, float(deadline) - time.time())
        pytest.skip(f"skipped: budget (a test may take ~{cost:.0f} s, {left:.0f} s left)")


def _message(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        return (text.strip().splitlines() or [""])[0][:200]
    return ""


def pytest_runtest_logreport(report) -> None:
    """One line per test: its call's outcome, or the setup's when setup skipped or failed (the call never
    ran), or a failing teardown's."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed) or \
            (report.when == "teardown" and report.failed):
        row = {"test": report.nodeid, "outcome": report.outcome, "message": _message(report),
               "seconds": round(report.duration, 2)}
        with open(path, "a") as log:
            log.write(json.dumps(row) + "\n")
            log.flush()
