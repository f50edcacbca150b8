"""End to end: cmx vs the two baselines, same model, epochs, batch and peak lr, one after another.

Trains ConvMixer-64/4 p2 k5 (batch 128, lr 0.01) on a CIFAR folder with
    cmx        `python -m cmx train ... --quiet`, the paper augmentation on whole batches (mixup on / off)
    reference  `python -m cmx.bench.reference` (the public convmixer-cifar10 script's pipeline, in the package;
               per-image torchvision PIL, 1 DataLoader worker; it has no mixup, so it is compared with both cmx runs)
    timm       the script given by --timm-script (timm's transforms + Mixup, 1 worker; mixup on / off; needs
               timm; not in this repository, so without --timm-script the timm runs are skipped, with a note)
each as its own process, in the interleaved order cmx, reference, timm, cmx --no-mixup, timm --no-mixup so
that a change in background load hits both sides. Prints the process wall time (what a user waits for:
start-up, data loading, training, evaluation), the training wall time each script reports, the final test
accuracy, and the ratios baseline wall / cmx wall.

    python benchmarks/end_to_end.py --data DIR      # 10 epochs on DIR (default: $CMX_DATA or data/, as cmx train)
    python benchmarks/end_to_end.py --quick         # 2 epochs, a smoke test
    python benchmarks/end_to_end.py --timm-script PATH/timm_recipe_train.py   # the timm runs too
    python benchmarks/end_to_end.py --cmx-args "--amp bf16" --json e2e.json
    python benchmarks/end_to_end.py --only cmx@0,timm@0,reference,cmx@1,timm@1   # NAME@SEED: several seeds

Measured (see RESULTS.md for the machine, date and load): filled in by the runs recorded there.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cmx.cifar import batches_dir  # noqa: E402
from cmx.config import RunConfig  # noqa: E402

TIMM_RUNS = ("timm", "timm-nomix")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="CIFAR-10 folder [default: $CMX_DATA or data/, as cmx train]")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="2 epochs (smoke test)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--h", type=int, default=64)
    p.add_argument("--d", type=int, default=4)
    p.add_argument("--p", type=int, default=2)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--only", default="cmx,reference,timm,cmx-nomix,timm-nomix",
                   help="comma-separated runs, in the order to run them; NAME@SEED picks a seed (default 0)")
    p.add_argument("--cmx-args", default="", help="extra `cmx train` flags, e.g. '--amp bf16'")
    p.add_argument("--timm-script", help="the timm recipe script (timm_recipe_train.py: the same flags as the "
                   "reference plus --lr, --no-mixup; needs timm); without it the timm runs are skipped")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP_NUM_THREADS for every run (baselines too); 0 leaves torch's default")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.epochs = 2
    # absolute: every run starts in the repository root, whatever folder this script was started from
    a.data = str(Path(a.data or RunConfig().data).resolve())
    if not batches_dir(a.data).is_dir():
        p.error(f"no CIFAR-10 folder at {a.data} (pass --data DIR or set $CMX_DATA)")
    if a.timm_script and not Path(a.timm_script).is_file():
        p.error(f"--timm-script {a.timm_script}: no such file")
    return a


def commands(a, results: Path, seed: int = 0) -> dict[str, list[str]]:
    py = sys.executable
    cmx = [py, "-m", "cmx", "train", "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
           "--h", str(a.h), "--d", str(a.d), "--p", str(a.p), "--k", str(a.k), "--data", a.data,
           "--results", str(results), "--quiet", "--device", "cpu", "--seed", str(seed), *shlex.split(a.cmx_args)]
    model = ["--hdim", str(a.h), "--depth", str(a.d), "--psize", str(a.p), "--conv-ks", str(a.k),
             "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--data", a.data, "--seed", str(seed)]
    timm = [py, str(Path(a.timm_script or "timm_recipe_train.py").resolve()), *model, "--lr", str(a.lr)]
    return {
        "cmx": cmx,
        "cmx-nomix": cmx + ["--no-mixup"],
        "reference": [py, "-m", "cmx.bench.reference", *model, "--lr-max", str(a.lr)],
        "timm": timm,
        "timm-nomix": timm + ["--no-mixup"],
    }


def run(name: str, cmd: list[str], threads: int = 0) -> dict:
    """Run one training process; return its process wall time, reported wall time and final accuracy (%)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    print(f"[{name}] {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"[{name}] failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    final = json.loads(lines[-1])
    acc = final["test_acc"] if name.startswith("cmx") else 100 * final["test_acc"]  # baselines print fractions
    row = {"run": name.split("@")[0], "seed": int(name.partition("@")[2] or 0), "process_wall_s": round(wall, 1), "reported_wall_s": final["wall_s"], "test_acc": round(acc, 2)}
    print(f"[{name}] process {wall:.1f}s, reported {final['wall_s']}s, test acc {acc:.2f}%", flush=True)
    return row


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per run kind: mean process/reported wall and mean ± sample std of the final accuracy over its seeds."""
    out = {}
    for kind in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == kind]
        accs = [r["test_acc"] for r in mine]
        mean = sum(accs) / len(accs)
        std = (sum((v - mean) ** 2 for v in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
        out[kind] = {"run": kind, "n": len(mine), "test_acc": round(mean, 2), "test_acc_std": round(std, 2),
                     "process_wall_s": round(sum(r["process_wall_s"] for r in mine) / len(mine), 1),
                     "reported_wall_s": round(sum(r["reported_wall_s"] for r in mine) / len(mine), 1)}
    return out


def ratios(rows: dict[str, dict]) -> list[tuple[str, float, float]]:
    """(comparison, process-wall ratio, reported-wall ratio): baseline time / cmx time, > 1 = cmx faster."""
    pairs = [("reference / cmx", "reference", "cmx"), ("reference / cmx --no-mixup", "reference", "cmx-nomix"),
             ("timm / cmx", "timm", "cmx"), ("timm --no-mixup / cmx --no-mixup", "timm-nomix", "cmx-nomix")]
    return [(label, rows[b]["process_wall_s"] / rows[c]["process_wall_s"],
             rows[b]["reported_wall_s"] / rows[c]["reported_wall_s"])
            for label, b, c in pairs if b in rows and c in rows]


def main(argv=None) -> None:
    a = parse_args(argv)
    import torch  # only for the header line

    print(f"# end to end: ConvMixer-{a.h}/{a.d} p{a.p} k{a.k}, {a.epochs} epochs, batch {a.batch_size}, "
          f"lr {a.lr}, data {a.data}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"threads {a.threads or 'default'}, load average {os.getloadavg()[0]:.1f} at start, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    runs, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="cmx-e2e-") as tmp:
        for name in a.only.split(","):
            kind, _, seed = name.partition("@")
            cmds = commands(a, Path(tmp) / "results", int(seed or 0))
            if kind not in cmds:
                sys.exit(f"unknown run {kind!r}; known: {', '.join(cmds)}")
            if kind in TIMM_RUNS and not a.timm_script:
                skipped.append(name)
                continue
            runs.append(run(name, cmds[kind], a.threads))
    if skipped:
        print(f"note: {', '.join(skipped)} skipped: no --timm-script given (the timm recipe script is not part "
              f"of this repository)", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    print("| run | seed | process wall s | reported wall s | test acc % |\n|---|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['run']} | {r['seed']} | {r['process_wall_s']:.1f} | {r['reported_wall_s']} | {r['test_acc']:.2f} |")
    rows = summarise(runs)
    print("\n| run | seeds | mean process wall s | mean reported wall s | test acc % (mean ± std) |\n|---|---:|---:|---:|---:|")
    for r in rows.values():
        print(f"| {r['run']} | {r['n']} | {r['process_wall_s']:.1f} | {r['reported_wall_s']:.1f} | "
              f"{r['test_acc']:.2f} ± {r['test_acc_std']:.2f} |")
    print("\n| speed-up (baseline time / cmx time, means) | process wall | reported wall |\n|---|---:|---:|")
    table = ratios(rows)
    for label, pw, rw in table:
        print(f"| {label} | {pw:.2f}× | {rw:.2f}× |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"args": vars(a), "runs": runs, "summary": list(rows.values()),
                                                "ratios": [dict(zip(("comparison", "process_wall", "reported_wall"), t))
                                                           for t in table]}, indent=1))


if __name__ == "__main__":
    main()
