"""`make gpu-check` / `cmx gpu-check` / `python -m cmx.bench.gpu_check`: prove on one CUDA GPU, in under 8
minutes, that cmx is correct and fast there.

    python -m cmx.bench.gpu_check --data ../shared/data/cifar10-mini --out results/gpu-check

Sections, in order, each with a time cap inside the whole budget (default 460 s):
    tests     `pytest -m cuda` (tests/test_cuda.py): CUDA == CPU pixels, no host sync, precisions, resume, sweep
    speed     img/s, memory, variants, profiler breakdown, depthwise bandwidth (cmx.bench.gpu_speed)
    training  256/8 p1 k9 on the real images for ~2 minutes, and a projected 200-epoch time (cmx.bench.gpu_runs)
    packing   4 short runs, --per-gpu 1 vs 4
Each section runs in its own process, killed at its cap, so one that hangs or overruns cannot take the budget
from the others; verdicts are printed as they come and written to OUT/gpu_check.json and OUT/gpu_check.md
after each (cmx.bench.gpu_report), so a check cut short keeps what it reached.

Without CUDA it prints one line, NO_CUDA, and exits 2. Exit 1 when any check failed or ran out of time.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from .gpu_report import Report, environment

NO_CUDA = "gpu-check needs a CUDA device; found none"
REPO = Path(__file__).resolve().parents[2]
BUDGET_S = 460  # the 8 minutes, less start-up and a margin
CAPS = {"tests": 140, "speed": 110, "training": 130, "packing": 70}  # seconds; sum ≤ BUDGET_S
TRAINING_S = 100  # the short training's own time (probe included), inside its cap


# ---------------------------------------------------------------------- running things with a cap
def run_capped(cmd: list[str], timeout: float, **kw) -> int:
    """Run `cmd` in its own process group, its output passed through; kill the group at `timeout`.
    Returns its exit code, 124 when it was killed for time."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    try:
        return proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124


def child_env(data: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if data is not None:
        env["CMX_REAL_DATA"] = str(Path(data).resolve())  # the cuda tests' real images
    return env


# ---------------------------------------------------------------------- the tests section
def junit_rows(xml_path: Path) -> dict[str, dict[str, list[str]]]:
    """pytest's junit XML → {test function: {"passed"/"failed"/"skipped": [messages]}} (parameters folded)."""
    rows: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = case.get("name", "?").split("[")[0]
        outcome, message = "passed", ""
        for tag, what in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome, message = what, (node.get("message") or "").splitlines()[0:1]
                message = message[0][:200] if message else ""
                break
        rows[name][outcome].append(message)
    return rows


def report_tests(report: Report, rows: dict[str, dict[str, list[str]]], code: int) -> None:
    for name, outcomes in rows.items():
        n = sum(len(v) for v in outcomes.values())
        if outcomes.get("failed"):
            report.add("tests", name, "FAIL", f"{len(outcomes['failed'])} of {n} failed: {outcomes['failed'][0]}")
        elif outcomes.get("skipped") and not outcomes.get("passed"):
            report.add("tests", name, "skip", outcomes["skipped"][0])
        else:
            report.add("tests", name, "pass", f"{len(outcomes.get('passed', []))} of {n} passed")
    failed = sum(len(o.get("failed", [])) for o in rows.values())
    total = sum(sum(len(v) for v in o.values()) for o in rows.values())
    skipped = sum(len(o.get("skipped", [])) for o in rows.values())
    verdict = ("timeout" if code == 124 else "FAIL" if code != 0 or failed else
               "skip" if total == skipped else "pass")
    report.add("tests", "pytest -m cuda", verdict, f"{total - failed - skipped} of {total} tests passed, "
               f"{skipped} skipped (exit {code})", tests=total, failed=failed, skipped=skipped, exit_code=code)


def tests_section(report: Report, data: Path | None, timeout: float) -> None:
    if not (REPO / "tests" / "test_cuda.py").is_file():
        report.add("tests", "pytest -m cuda", "skip", f"no tests/test_cuda.py under {REPO} (not a source checkout)")
        return
    with tempfile.TemporaryDirectory(prefix="cmx-gpu-tests-") as tmp:
        xml = Path(tmp) / "cuda.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs",
               f"--junitxml={xml}", "tests/test_cuda.py"]
        code = run_capped(cmd, timeout, cwd=REPO, env=child_env(data))
        rows = junit_rows(xml) if xml.is_file() else {}
    report_tests(report, rows, code)


# ---------------------------------------------------------------------- the sections run in a child
def run_section(name: str, data: Path, out: Path, seconds: float) -> None:
    """One section in this process (the driver starts `--section NAME` children)."""
    import torch

    report = Report(out)
    deadline = time.monotonic() + seconds
    device = torch.device("cuda")
    if name == "speed":
        from . import gpu_speed
        from ..run.data import load_cifar10

        loaded = load_cifar10(data, download=False)
        gpu_speed.run(report, loaded.train_x[:2048], loaded.train_y[:2048], deadline - 5, device)
    elif name == "training":
        from .gpu_runs import short_training

        short_training(report, data, min(TRAINING_S, seconds - 15))
    elif name == "packing":
        from .gpu_runs import packing
        from ..run.data import load_cifar10

        def run_sweep(sweep: Path, results: Path, per_gpu: int, left: float) -> int:
            cmd = [sys.executable, "-m", "cmx", "sweep", str(sweep), "--results", str(results), "--gpus", "0",
                   "--per-gpu", str(per_gpu)]
            return run_capped(cmd, left, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())

        packing(report, data, deadline, run_sweep, load_cifar10(data, download=False).train_x.shape[0])
    else:
        raise ValueError(f"unknown section {name!r}")


def section_child(name: str, data: Path, out: Path, cap: float, report: Report) -> int:
    cmd = [sys.executable, "-m", "cmx.bench.gpu_check", "--section", name, "--data", str(data), "--out", str(out),
           "--seconds", str(int(cap))]
    t0 = time.monotonic()
    code = run_capped(cmd, cap, env=child_env(data))
    if code == 124:
        report.add(name, "section", "timeout", f"stopped at its {cap:.0f} s cap; the rows above are what it reached")
    elif code != 0:
        report.add(name, "section", "error", f"exited {code} after {time.monotonic() - t0:.0f} s (traceback above)")
    return code


# ---------------------------------------------------------------------- the whole check
def check(data: Path, out: Path, budget: float = BUDGET_S, sections=tuple(CAPS)) -> int:
    """The whole check (CUDA is known to be present). Returns 0 when nothing failed, else 1."""
    t0 = time.monotonic()
    report = Report(out, fresh=True)
    report.update(environment=environment(), budget_s=budget, data=str(data))
    env = report.load()["environment"]
    print(f"gpu-check on {env.get('gpu')} (driver {env.get('driver', '?')}, CUDA {env.get('cuda')}, "
          f"torch {env.get('torch')}); budget {budget:.0f} s; report in {out}", flush=True)
    if not (Path(data) / "cifar-10-batches-py").is_dir() and not (Path(data) / "test_batch").is_file():
        report.add("setup", "data", "FAIL", f"no CIFAR-10 folder at {data} (pass DATA=... / --data)")
        sections = tuple(s for s in sections if s == "tests")
    for name in sections:
        left = budget - (time.monotonic() - t0)
        cap = min(CAPS[name], left - 5)
        if cap < 20:
            report.add(name, "section", "skip", f"only {left:.0f} s of the {budget:.0f} s budget left")
            continue
        print(f"--- {name} (cap {cap:.0f} s)", flush=True)
        if name == "tests":
            tests_section(report, data, cap)
        else:
            section_child(name, data, out, cap, report)
    wall = time.monotonic() - t0
    bad = [row for row in report.load()["checks"] if row["verdict"] in ("FAIL", "timeout", "error")]
    outcome = "all checks passed" if not bad else f"{len(bad)} check(s) failed or ran out of time"
    report.update(wall_s=round(wall, 1), outcome=outcome)
    print(f"gpu-check: {outcome}; {wall:.0f} s; {out / 'gpu_check.md'}", flush=True)
    return 1 if bad else 0


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cifar10-mini"), help="CIFAR-10 folder")
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"), help="report folder")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--only", default=",".join(CAPS), help="comma-separated sections to run")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this process
    parser.add_argument("--seconds", type=float, default=120, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not cuda_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.section:
        run_section(args.section, args.data, args.out, args.seconds)
        return 0
    sections = tuple(s for s in args.only.split(",") if s)
    unknown = [s for s in sections if s not in CAPS]
    if unknown:
        print(f"gpu-check: unknown section(s) {', '.join(unknown)} (known: {', '.join(CAPS)})", file=sys.stderr)
        return 2
    return check(args.data, args.out, args.budget, sections)


if __name__ == "__main__":
    sys.exit(main())
