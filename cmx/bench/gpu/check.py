"""`make gpu-check` / `cmx gpu-check` / `python -m cmx.bench.gpu`: prove on one CUDA GPU, in under 8
minutes, that cmx is correct and fast there.

    python -m cmx.bench.gpu --data DIR --out results/gpu-check     # DIR: $CMX_DATA or data/ when not given

Sections, in order, each with a time cap inside the whole budget (default 460 s):
    tests     `pytest -m cuda` (tests/test_cuda.py): CUDA == CPU pixels, no host sync, precisions, resume, sweep
    speed     img/s, memory, variants, profiler breakdown, depthwise bandwidth (cmx.bench.gpu.speed)
    training  256/8 p1 k9 on the real images for ~1.5 minutes, and a projected 200-epoch time (cmx.bench.gpu.runs)
    packing   4 short runs, --per-gpu 1 vs 4
Time: each section checks the time it has left before each piece of work, against an estimate of that
piece's cost, and records "skipped: budget" for a piece that does not fit (budget.Budget). Each section
runs in its own process, handed an absolute deadline and killed (with everything it started) at its cap,
so one that hangs cannot take the budget from the others; a section that finishes early leaves its time to
the next. Verdicts are printed as they come and written to OUT/gpu_check.json and OUT/gpu_check.md after
each (cmx.bench.gpu.report), so a check cut short keeps what it reached; the cuda tests' results are
streamed to a file as they come (tests_plugin), so a killed tests section keeps them too.

Without CUDA it prints one line, NO_CUDA, and exits 2. Exit 1 only for a real defect: a check that FAILed or
a section that crashed. A piece or section the budget could not hold is a `skip`, not a failure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from ...cifar import batches_dir
from ...config import RunConfig
from . import tests_plugin as plugin
from .budget import SKIP_PREFIX, Budget, exit_on_sigterm, run_capped
from .report import Report, environment

NO_CUDA = "gpu-check needs a CUDA device; found none"
REPO = Path(__file__).resolve().parents[3]
BUDGET_S = 460  # the 8 minutes, less start-up and a margin
CAPS = {"tests": 130, "speed": 130, "training": 100, "packing": 90}  # seconds; sum ≤ BUDGET_S
MIN_START = {"tests": 30, "speed": 45, "training": 50, "packing": 40}  # below this a section is not started
GRACE_S = 5  # a section child's deadline is this far before its kill, to write its last rows
END_MARGIN_S = 3  # kept at the end of the budget for the summary
TEST_COST_S = 20  # a cuda test is started only with this much of the tests section left (estimate)
TRAINING_S = 90  # the short training's own time at most (probe included), inside its cap


def child_env(data: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if data is not None:
        env["CMX_REAL_DATA"] = str(Path(data).resolve())  # the cuda tests' real images
    return env


def budget_plan(budget: float = BUDGET_S) -> list[str]:
    """The budget as planned: each section's cap and its pieces' estimates (printed by --plan and the dry run)."""
    from .runs import PACK_RUN_S, PACK_RUNS, TRAINING_MIN_S
    from .speed import COST_S

    lines = [f"budget {budget:.0f} s; caps " + ", ".join(f"{k} {v} s" for k, v in CAPS.items())
             + f" (sum {sum(CAPS.values())} s); a section starts with ≥ its minimum left: "
             + ", ".join(f"{k} {v} s" for k, v in MIN_START.items()),
             f"tests: each cuda test starts only with ≥ {TEST_COST_S} s of the section left",
             "speed pieces (estimates, s): " + ", ".join(f"{k} {v}" for k, v in COST_S.items())
             + " (variants: 1.5× the base step's measured time, batch 512: 3×)",
             f"training: starts with ≥ {TRAINING_MIN_S} s; probe, then as many epochs as fit in ≤ {TRAINING_S} s",
             f"packing: --per-gpu 1 needs ~{PACK_RUNS * PACK_RUN_S} s, --per-gpu {PACK_RUNS} ~{2 * PACK_RUN_S} s"]
    return lines


# ---------------------------------------------------------------------- the tests section
def read_test_log(path: Path) -> dict[str, dict[str, list[str]]]:
    """The plugin's JSON lines → {test function: {"passed"/"failed"/"skipped": [messages]}} (parameters
    folded); whatever was written before a kill."""
    rows: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        name = row["test"].split("::")[-1].split("[")[0]
        rows[name][row["outcome"]].append(row.get("message", ""))
    return rows


def report_tests(report: Report, rows: dict[str, dict[str, list[str]]], code: int, cap: float) -> None:
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
    budget_skips = sum(m.startswith(SKIP_PREFIX) for o in rows.values() for m in o.get("skipped", []))
    counts = f"{total - failed - skipped} of {total} tests passed, {skipped} skipped"
    if failed:
        verdict, figure = "FAIL", f"{counts} (exit {code})"
    elif code == 124:
        verdict, figure = "skip", f"{SKIP_PREFIX}: stopped at its {cap:.0f} s cap; {counts} by then (rows above)"
    elif code not in (0, 5):  # 5: no tests collected
        verdict, figure = "FAIL", f"pytest exited {code} (collection or internal error; its output is above)"
    else:
        verdict = "skip" if total == skipped else "pass"
        figure = f"{counts}" + (f" ({budget_skips} for budget)" if budget_skips else "") + f" (exit {code})"
    report.add("tests", "pytest -m cuda", verdict, figure, tests=total, failed=failed, skipped=skipped,
               skipped_for_budget=budget_skips, exit_code=code)


def tests_section(report: Report, data: Path | None, timeout: float, test_file: Path | None = None,
                  test_cost: float = TEST_COST_S) -> int:
    """`pytest -m cuda` on `test_file` (tests/test_cuda.py), killed at `timeout`; each test's outcome is
    kept as it comes. Returns pytest's exit code (124 when killed)."""
    test_file = test_file or REPO / "tests" / "test_cuda.py"
    if not test_file.is_file():
        report.add("tests", "pytest -m cuda", "skip", f"no {test_file} (not a source checkout)")
        return 0
    with tempfile.TemporaryDirectory(prefix="cmx-gpu-tests-") as tmp:
        log = Path(tmp) / "tests.jsonl"
        env = {**child_env(data), plugin.LOG_ENV: str(log), plugin.COST_ENV: str(test_cost),
               plugin.DEADLINE_ENV: str(time.time() + timeout - GRACE_S)}
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-p",
               "cmx.bench.gpu.tests_plugin", "-rfEs", str(test_file)]
        code = run_capped(cmd, timeout, cwd=REPO, env=env)
        rows = read_test_log(log)
    report_tests(report, rows, code, timeout)
    return code


# ---------------------------------------------------------------------- the sections run in a child
def run_section(name: str, data: Path, out: Path, budget: Budget, device=None) -> None:
    """One section in this process (the driver starts `--section NAME` children; the dry run calls it)."""
    import torch

    report = Report(out)
    device = device if device is not None else torch.device("cuda")
    if name == "speed":
        from . import speed as gpu_speed
        from ...run.data import load_cifar10

        loaded = load_cifar10(data, download=False)
        gpu_speed.run(report, loaded.train_x[:2048], loaded.train_y[:2048], budget, device)
    elif name == "training":
        from .runs import TRAINING_MIN_S, short_training

        if budget.fits(report, "training", "short training", TRAINING_MIN_S):
            short_training(report, data, min(TRAINING_S, budget.left() - 2), device=device.type)
    elif name == "packing":
        from .runs import Packing, packing
        from ...run.data import load_cifar10

        packing(report, data, budget, sweep_subprocess, Packing(load_cifar10(data, download=False).train_x.shape[0]))
    else:
        raise ValueError(f"unknown section {name!r}")


def sweep_subprocess(sweep: Path, results: Path, per_gpu: int, left: float) -> int:
    """`cmx sweep FILE --gpus 0 --per-gpu N`, killed with its trainings after `left` seconds (124)."""
    cmd = [sys.executable, "-m", "cmx", "sweep", str(sweep), "--results", str(results), "--gpus", "0",
           "--per-gpu", str(per_gpu)]
    return run_capped(cmd, left, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())


def section_child(name: str, report: Report, data: Path, out: Path, cap: float) -> int:
    """Section `name` in a child process with an absolute deadline GRACE_S before its kill at `cap`."""
    cmd = [sys.executable, "-m", "cmx.bench.gpu", "--section", name, "--data", str(data), "--out", str(out),
           "--deadline", f"{time.time() + cap - GRACE_S:.3f}"]
    return run_capped(cmd, cap, env=child_env(data))


def run_in_child(name: str, report: Report, data: Path, out: Path, cap: float) -> int:
    if name == "tests":
        tests_section(report, data, cap)
        return 0  # the tests section reports its own ending
    return section_child(name, report, data, out, cap)


def section_ended(report: Report, name: str, cap: float, code: int, took: float) -> None:
    if code == 124:
        report.add(name, "section", "skip", f"{SKIP_PREFIX}: stopped at its {cap:.0f} s cap; the rows above "
                   f"are what it reached")
    elif code != 0:
        report.add(name, "section", "error", f"exited {code} after {took:.0f} s (traceback above)")


# ---------------------------------------------------------------------- the whole check
def check(data: Path, out: Path, budget: float = BUDGET_S, sections=tuple(CAPS),
          clock: Callable[[], float] = time.monotonic,
          run: Callable[[str, Report, Path, Path, float], int] = run_in_child) -> int:
    """The whole check (CUDA is known to be present). Returns 1 when a check failed or a section crashed,
    else 0. `clock` and `run` (how a section is run within its cap) are the dry run's seams."""
    whole = Budget.seconds(budget, clock)
    report = Report(out, fresh=True)
    report.update(environment=environment(), budget_s=budget, data=str(data))
    env = report.load()["environment"]
    print(f"gpu-check on {env.get('gpu')} (driver {env.get('driver', '?')}, CUDA {env.get('cuda')}, "
          f"torch {env.get('torch')}); budget {budget:.0f} s; report in {out}", flush=True)
    if not batches_dir(data).is_dir():
        report.add("setup", "data", "FAIL", f"no CIFAR-10 folder at {data} (pass DATA=... / --data)")
        sections = tuple(s for s in sections if s == "tests")
    planned = 0.0  # the caps of the sections run so far: what they were given, to hand on what they left
    for i, name in enumerate(sections):
        later = sum(MIN_START[s] for s in sections[i + 1:])
        unused = max(0.0, planned - (budget - whole.left()))
        cap = min(CAPS[name] + unused, whole.left() - later - END_MARGIN_S)
        planned += CAPS[name]
        if cap < MIN_START[name]:
            report.add(name, "section", "skip", f"{SKIP_PREFIX} (needs ≥ {MIN_START[name]} s; {max(cap, 0):.0f} s "
                       f"of the {budget:.0f} s budget left for it)")
            continue
        print(f"--- {name} (cap {cap:.0f} s)", flush=True)
        t0 = clock()
        section_ended(report, name, cap, run(name, report, data, out, cap), clock() - t0)
    wall = budget - whole.left()
    rows = report.load()["checks"]
    bad = [row for row in rows if row["verdict"] in ("FAIL", "error")]
    skipped = sum(row["figure"].startswith(SKIP_PREFIX) for row in rows)
    outcome = ("no defect found" if not bad else f"{len(bad)} check(s) failed") + \
              (f"; {skipped} piece(s) skipped for budget" if skipped else "")
    report.update(wall_s=round(wall, 1), outcome=outcome)
    print(f"gpu-check: {outcome}; {wall:.0f} s; {out / 'gpu_check.md'}", flush=True)
    return 1 if bad else 0


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="CIFAR-10 folder [default: $CMX_DATA or data/, as cmx train]")
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"), help="report folder")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--only", default=",".join(CAPS), help="comma-separated sections to run")
    parser.add_argument("--plan", action="store_true", help="print the time budget's plan and exit (no GPU needed)")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this process
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # internal: its time.time() deadline
    args = parser.parse_args(argv)
    if args.data is None:
        args.data = Path(RunConfig().data)  # the rule of `cmx train --data`
    exit_on_sigterm()  # a stopped check stops what it started (run_capped)
    if args.plan:
        print("\n".join(budget_plan(args.budget)))
        return 0
    if not cuda_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.section:
        budget = Budget.seconds(120) if args.deadline is None else Budget.until_wall(args.deadline)
        run_section(args.section, args.data, args.out, budget)
        return 0
    sections = tuple(s for s in args.only.split(",") if s)
    unknown = [s for s in sections if s not in CAPS]
    if unknown:
        print(f"gpu-check: unknown section(s) {', '.join(unknown)} (known: {', '.join(CAPS)})", file=sys.stderr)
        return 2
    return check(args.data, args.out, args.budget, sections)


if __name__ == "__main__":
    sys.exit(main())
