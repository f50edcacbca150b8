"""Fabricate results directories for tests: run dirs with config/status/epochs/result files, no training.

The files follow the layout `cmx train` writes (cmx/results.py): `make_run(root, test_acc=95.1, k=5)`
writes a finished 256/8 p1 k5 run; `state="running"` with `epoch=37` writes an unfinished one;
`corrupt(...)` damages a file the way a crash or a half-finished copy would.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from cmx.run.results import now_iso
from cmx.run.config import RunConfig

OTHER_HOST = "gpu-node-7"  # a 'running' status from another host is trusted without a pid check


def make_run(
    root: Path,
    *,
    dataset: str = "cifar10",
    state: str = "done",
    test_acc: float = 95.0,
    best_test_acc: float | None = None,
    epoch: int | None = None,
    wall_s: float = 3600.0,
    device_name: str = "NVIDIA A100-SXM4-40GB",
    git_commit: str = "abc1234",
    git_dirty: bool = False,
    torch_version: str = "2.4.0",
    host: str = OTHER_HOST,
    eval_every: int = 1,
    epoch_s: float = 10.0,
    started: str = "2025-01-01T00:00:00+0000",
    finished: str = "2025-01-02T00:00:00+0000",
    **changes,
) -> str:
    """Write one run directory and return its run_id. `changes` are RunConfig fields (k=5, seed=1, ...);
    `epoch_s` is every epoch's duration in epochs.csv, `started`/`finished` its status and result times."""
    cfg = RunConfig(data="data", eval_every=eval_every, **changes)
    run_id = cfg.run_id(dataset)
    run_dir = Path(root) / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", {**cfg.to_dict(), "run_id": run_id, "dataset": dataset})

    done_epochs = cfg.epochs if state == "done" else (epoch if epoch is not None else cfg.epochs // 3)
    best = test_acc if best_test_acc is None else best_test_acc
    curve = _curve(done_epochs, cfg.epochs, test_acc, best, eval_every, epoch_s)
    with open(run_dir / "epochs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"])
        writer.writerows(curve)
    _write_json(run_dir / "status.json", {
        "run_id": run_id, "status": state, "host": host, "pid": 999999, "started": started,
        # fresh: an old 'running' status from another host reads as interrupted; a done one was last
        # written as the run finished
        "updated": finished if state == "done" else now_iso(), "epoch": done_epochs, "epochs": cfg.epochs,
        "error": "boom" if state == "failed" else None,
    })
    if state == "done":
        best_epoch = max((row for row in curve if row[5] != ""), key=lambda row: row[5])[0]
        _write_json(run_dir / "result.json", {
            "run_id": run_id, "dataset": dataset, "config": cfg.to_dict(), "test_acc": test_acc,
            "best_test_acc": best, "best_epoch": best_epoch, "params": 706570, "epochs": cfg.epochs,
            "wall_s": wall_s, "img_per_s": 5000.0, "finished": finished, "seed": cfg.seed,
            "provenance": {"git_commit": git_commit, "git_dirty": git_dirty, "torch": torch_version,
                           "cuda": "12.1" if "NVIDIA" in device_name else None,
                           "device": "cuda" if "NVIDIA" in device_name else "cpu",
                           "device_name": device_name, "host": host},
        })
    return run_id


def _curve(done: int, total: int, final: float, best: float, eval_every: int, epoch_s: float = 10.0) -> list[list]:
    """A plausible rising test-accuracy curve ending at `final` (at the last epoch) with peak `best`."""
    rows = []
    for epoch in range(1, done + 1):
        evaluated = epoch % eval_every == 0 or epoch == total
        frac = epoch / total
        acc = round(10 + (best - 10) * min(1.0, 1.6 * frac) ** 0.5, 2)
        if epoch == total:
            acc = final
        rows.append([epoch, 0.01 * frac, round(2.3 * (1 - frac) + 0.5, 4), round(acc - 2, 2),
                     round(2.3 * (1 - frac) + 0.2, 4) if evaluated else "", acc if evaluated else "", epoch_s])
    return rows


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def corrupt(root: Path, run_id: str, name: str, how: str = "truncate") -> Path:
    """Damage runs/<run_id>/<name>: 'truncate' (half-written), 'garbage', or 'delete'."""
    path = Path(root) / "runs" / run_id / name
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        text = path.read_text()
        path.write_text(text[: len(text) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\xff not json at all")
    else:
        raise ValueError(how)
    return path


def small_study(root: Path) -> dict[str, list[str]]:
    """The fixture behind tests/golden/table_small.md; returns run ids by role.

    Hand-computed numbers (final test accuracy, sample std):
      Baseline (256/8 p1 k9), seeds 95.5, 95.9, 96.1: mean 95.8333, std 0.30551, t(0.975, 2) = 4.3027,
        CI 95.8333 ± 0.7589 = [95.074, 96.592] contains the paper's 95.88 → ✓
      - RandAug, seeds 92.5, 93.5: mean 93.0, std 0.70711, t(0.975, 1) = 12.706, CI [86.65, 99.35] ∋ 92.86 → ✓
      - Random Scaling, seeds 90.0, 90.2: mean 90.1, std 0.14142, CI [88.83, 91.37] ∌ 86.24 → ✗
      GELU → ReLU: one 50-epoch run (93.0) only → shown with the epochs marker
      - Random Erasing: one run at lr 0.02 → shown with the lr/batch marker
      - Mixup and CutMix: running, 37 of 200 epochs done
      256/8 p1 k5: 200-epoch run 95.3 plus a 50-epoch run → row uses the 200-epoch run, ‡ marker
      256/8 p1 k9 h=512: matches no paper row (Other runs with --all)
      a broken run dir (config.json truncated) → skipped with a warning
    """
    ids: dict[str, list[str]] = {}
    ids["baseline"] = [make_run(root, seed=s, test_acc=a, best_test_acc=a + 0.1)
                       for s, a in enumerate((95.5, 95.9, 96.1))]
    ids["randaug"] = [make_run(root, seed=s, randaug=False, test_acc=a) for s, a in enumerate((92.5, 93.5))]
    ids["scaling"] = [make_run(root, seed=s, scaling=False, test_acc=a) for s, a in enumerate((90.0, 90.2))]
    ids["relu"] = [make_run(root, act="relu", epochs=50, test_acc=93.0)]
    ids["erasing"] = [make_run(root, erasing=False, lr=0.02, test_acc=95.1)]
    ids["mixup"] = [make_run(root, mixup=False, state="running", epoch=37)]
    ids["k5"] = [make_run(root, k=5, test_acc=95.3), make_run(root, k=5, epochs=50, test_acc=92.0)]
    ids["wide"] = [make_run(root, h=512, test_acc=96.5, wall_s=7200.0, device_name="cpu: AMD EPYC 7763 64-Core Processor",
                            git_dirty=True)]
    broken = make_run(root, k=7, test_acc=95.0)
    corrupt(root, broken, "config.json", "truncate")
    corrupt(root, broken, "result.json", "truncate")
    ids["broken"] = [broken]
    return ids


FINDINGS_SPREAD = 0.2  # each row's seeds are mean − 0.2, mean, mean + 0.2: sample std exactly 0.2


def findings_study(root: Path) -> None:
    """The fixture behind tests/golden/findings_small.md: one claim (at least) per verdict.

    Every row with three seeds has them at mean ± 0.2 (sample std 0.2), so each comparison of two such
    rows has se = 0.2·√(2/3) = 0.163299, Welch df = 4 exactly, t(0.975, 4) = 2.776445 and a 95% interval
    of effect ± 0.453391. Means (256/8 p1 k9 unless said):
      Baseline 95.8; LayerNorm 94.5 (BN − LN = 1.3 [0.847, 1.753] → holds)
      − erasing 96.5 (Baseline − it = −0.7 [−1.153, −0.247] → contradicted)
      − RandAug 92.9 (2.9 [2.447, 3.353] straddles the claimed 3 → inconclusive)
      − scaling 90.0 (5.8 [5.347, 6.253] > 3 → holds); − mixup 95.8 (0.0 [−0.453, 0.453] > −0.5 → holds)
      ReLU 96.9 (GELU − ReLU = −1.1 [−1.553, −0.647] < −0.5 → contradicted)
      − clipping: one seed, 88.0 → needs ≥2 seeds (point effect +7.8)
      wd 1e-2: running 3/200 → not run; 256/24 k3: nothing → not run
      256/10 k3: three seeds at 50 epochs only → not comparable (epochs 200 vs 50)
      p = 2 (k9) 95.0, p = 4 93.0, p = 8 86.0 → chain 0.8, 2.0, 7.0, all hold → holds
      p = 2 kernels: k3 94.0, k5 95.0 (k5 − k3 = 1.0 → holds); k7 95.1 (≈ k5: 0.1 [−0.353, 0.553] →
        inconclusive), k9 95.0 (0.0 → holds), k11 96.0 (1.0 [0.547, 1.453] → contradicted) → contradicted
      128 (p1 k8): d4 91.0, d8 93.0, d12 92.0 → d12 > d8 contradicted → chain contradicted
      256 (p1 k8): d4 93.0, d8 95.0, d12 95.9, d16 96.0 → d16 > d12 0.1 inconclusive → chain inconclusive
      width: 256 − 128 at d 4, 8, 12 = 2.0, 2.0, 3.9 → holds
      p1 kernels: k5 one seed 95.2, k7 one seed 95.6 → k7 ≥ k5 needs ≥2 seeds (+0.4); k3, k15 not run
    """
    def seeds(mean: float, **changes) -> None:
        for seed, acc in enumerate((mean - FINDINGS_SPREAD, mean, mean + FINDINGS_SPREAD)):
            make_run(root, seed=seed, test_acc=round(acc, 4), **changes)

    seeds(95.8)
    seeds(94.5, norm="layer")
    seeds(96.5, erasing=False)
    seeds(92.9, randaug=False)
    seeds(90.0, scaling=False)
    seeds(95.8, mixup=False)
    seeds(96.9, act="relu")
    make_run(root, clip=False, test_acc=88.0)
    make_run(root, wd=1e-2, state="running", epoch=3)
    seeds(94.0, d=10, k=3, epochs=50)
    for p, mean in ((2, 95.0), (4, 93.0), (8, 86.0)):
        seeds(mean, p=p)
    for k, mean in ((3, 94.0), (5, 95.0), (7, 95.1), (11, 96.0)):
        seeds(mean, p=2, k=k)
    for h, d, mean in ((128, 4, 91.0), (128, 8, 93.0), (128, 12, 92.0),
                       (256, 4, 93.0), (256, 8, 95.0), (256, 12, 95.9), (256, 16, 96.0)):
        seeds(mean, h=h, d=d, k=8)
    make_run(root, k=5, test_acc=95.2)
    make_run(root, k=7, test_acc=95.6)
