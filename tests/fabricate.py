"""Fabricate results directories for tests: run dirs with config/status/epochs/result files, no training.

The files follow the layout `cmx train` writes (cmx/store/rundir.py): `make_run(root, test_acc=95.1, k=5)`
writes a finished 256/8 p1 k5 run; `state="running"` with `epoch=37` writes an unfinished one;
`corrupt(...)` damages a file the way a crash or a half-finished copy would.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from cmx.files import now_iso
from cmx.config import RunConfig, eq4_params

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
    git_dirty: bool | None = False,
    source_sha256: str | None = "5ca1ab1e" * 8,
    weights_sha256: str | None = None,
    torch_version: str = "2.4.0",
    host: str = OTHER_HOST,
    eval_every: int = 1,
    train_images: int = 50000,
    test_images: int = 10000,
    epoch_s: float = 10.0,
    started: str = "2025-01-01T00:00:00+0000",
    finished: str = "2025-01-02T00:00:00+0000",
    provenance: dict | None = None,
    **changes,
) -> str:
    """Write one run directory and return its run_id. `changes` are RunConfig fields (k=5, seed=1, ...);
    `epoch_s` is every epoch's duration in epochs.csv, `started`/`finished` its status and result times.

    `weights_sha256`: the final weights' hash; by default one unique to the run (no two runs learned the
    same model), so give two runs the same value to fabricate arms that are identical. `provenance`: more
    fields of result.json's provenance (e.g. threads, cpu_share)."""
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
            "best_test_acc": best, "best_epoch": best_epoch, "params": eq4_params(cfg.h, cfg.d, cfg.p, cfg.k),
            "images": {"train": train_images, "test": test_images}, "epochs": cfg.epochs,
            "wall_s": wall_s, "img_per_s": 5000.0, "finished": finished, "seed": cfg.seed,
            "weights_sha256": weights_sha256 or f"weights-of-{run_id}",
            "provenance": {"git_commit": git_commit, "git_dirty": git_dirty, "source_sha256": source_sha256,
                           "torch": torch_version,
                           "cuda": "12.1" if "NVIDIA" in device_name else None,
                           "device": "cuda" if "NVIDIA" in device_name else "cpu",
                           "device_name": device_name, "host": host, **(provenance or {})},
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


FINDINGS_SPREAD = 0.2
# Seed offsets of a row's three runs (seeds 0, 1, 2 unless said): every pattern has sample std 0.2, and the
# per-seed difference of two rows with different patterns (A − B, B − C, A − C) is the effect plus
# (−0.2, −0.2, 0.4) in some order: mean 0, sd √0.12 = 0.34641, so se = 0.2 exactly.
PATTERNS = {"A": (-0.2, 0.0, 0.2), "B": (0.0, 0.2, -0.2), "C": (0.2, -0.2, 0.0)}


def findings_study(root: Path) -> None:
    """The fixture behind tests/golden/findings_small.md: one claim (at least) per verdict and method.

    Paired (both rows seeds 0, 1, 2, different patterns): se = 0.2, df = 2, t(0.975, 2) = 4.302653,
    95% interval effect ± 0.860531. Welch (one row at seeds 3, 4, 5): se = 0.2·√(2/3) = 0.163299, df = 4,
    t(0.975, 4) = 2.776445, interval ± 0.453391. Means (256/8 p1 k9 unless said), pattern in brackets:
      Baseline 95.8 [A]; LayerNorm 94.5 [B] (BN − LN = 1.3 [0.439, 2.161] → holds, paired)
      − erasing 97.0 [B] (Baseline − it = −1.2 [−2.061, −0.339], the paper's rows say +0.64 → contradicted)
      − RandAug 92.9 [B] (2.9 [2.039, 3.761] straddles the claimed 3 → inconclusive)
      − scaling 90.0 [C] (5.8 > 3 → holds); − mixup 95.8 at seeds 3-5 (Welch 0.0 ± 0.453: on the line)
      ReLU 95.6 at seeds 3-5 (GELU − ReLU = 0.2 [−0.253, 0.653], Welch: pokes out of ±0.5 → inconclusive;
        5 seeds per row would decide: t(0.975, 8)·0.2·√(2/5) = 0.2917 < 0.3 while n = 4 gives 0.3461)
      − residual Eq. 2: 95.6 [C] (0.2 ± 0.861, paired TOST → inconclusive; 8 seeds would decide)
      + residual Eq. 3: one seed, 94.0 → needs ≥2 seeds
      − clipping: the baseline's runs again (same accuracies and weight hashes per seed) → not testable
      wd 1e-2: running 3/200 → not run; 256/24 k3: nothing → not run
      256/10 k3: three seeds at 50 epochs only → not comparable (epochs 200 vs 50)
      p = 2 (k9) 94.8 [B], p = 4 93.0 [C], p = 8 86.0 [A] → chain 1.0, 1.8, 7.0, all hold → holds
      p = 2 kernels: k3 94.0 [A], k5 95.0 [C] (k5 − k3 = 1.0 → holds); k7 95.1 [A] (0.1 → inconclusive),
        k9 is p = 2's 94.8 (−0.2 → inconclusive), k11 96.5 [B] (1.5 [0.639, 2.361] → contradicted)
      p = 1 kernels: k3 93.5 [A]; k5 95.5 at seeds 3-5 (k5 − k3 = 2.0, Welch → holds); k7 one seed 95.6
        (k7 > k5 needs ≥2 seeds); k15 not run
      kernel × patch: (95.5 − 93.5) − (95.0 − 94.0) = 1.0, Welch over four rows: se = 0.2·√(4/3) =
        0.230940, df = 8, t(0.975, 8) = 2.306004 → [0.467, 1.533] → holds
      128 (p1 k8): d4 91.0 [A], d8 93.0 [B], d12 92.0 [C] → d12 > d8 contradicted → chain contradicted
      256 (p1 k8): d4 93.0 [B], d8 95.0 [C], d12 95.9 [A], d16 96.0 [B], d20 not run
      width: 256 − 128 at d 4, 8, 12 = 2.0, 2.0, 3.9 → holds
    """
    def seeds(mean: float, pattern: str = "A", at: tuple[int, ...] = (0, 1, 2), **changes) -> None:
        for seed, offset in zip(at, PATTERNS[pattern]):
            make_run(root, seed=seed, test_acc=round(mean + offset, 4), **changes)

    seeds(95.8, weights_sha256=None)
    for seed, offset in zip((0, 1, 2), PATTERNS["A"]):  # − clipping: the baseline's model again
        make_run(root, seed=seed, clip=False, test_acc=round(95.8 + offset, 4),
                 weights_sha256=f"weights-of-{RunConfig(data='data', seed=seed).run_id('cifar10')}")
    seeds(94.5, "B", norm="layer")
    seeds(97.0, "B", erasing=False)
    seeds(92.9, "B", randaug=False)
    seeds(90.0, "C", scaling=False)
    seeds(95.8, at=(3, 4, 5), mixup=False)
    seeds(95.6, at=(3, 4, 5), act="relu")
    seeds(95.6, "C", residual="none")
    make_run(root, residual="both", test_acc=94.0)
    make_run(root, wd=1e-2, state="running", epoch=3)
    seeds(94.0, d=10, k=3, epochs=50)
    for p, mean, pattern in ((2, 94.8, "B"), (4, 93.0, "C"), (8, 86.0, "A")):
        seeds(mean, pattern, p=p)
    for k, mean, pattern in ((3, 94.0, "A"), (5, 95.0, "C"), (7, 95.1, "A"), (11, 96.5, "B")):
        seeds(mean, pattern, p=2, k=k)
    for h, d, mean, pattern in ((128, 4, 91.0, "A"), (128, 8, 93.0, "B"), (128, 12, 92.0, "C"),
                                (256, 4, 93.0, "B"), (256, 8, 95.0, "C"), (256, 12, 95.9, "A"), (256, 16, 96.0, "B")):
        seeds(mean, pattern, h=h, d=d, k=8)
    seeds(93.5, k=3)
    seeds(95.5, at=(3, 4, 5), k=5)
    make_run(root, k=7, test_acc=95.6)


def mini_study(root: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> list[str]:
    """The mini study (sweeps/mini/study.yaml) as fabricated finished runs with its roles.json: every
    planned run, at a made-up but deterministic accuracy (45-60%, from its run id), on 10,000/2,000 images.
    Returns the run ids."""
    import hashlib

    from cmx.sweep.plan import make_plan, record_roles

    study = Path(__file__).resolve().parents[1] / "sweeps" / "mini" / "study.yaml"
    plan = make_plan(study, root, overrides=["data=/nonexistent"], seeds=list(seeds))  # dataset 'cifar10'
    changes = ("h", "d", "p", "k", "norm", "act", "residual", "scaling", "flip", "randaug", "mixup", "erasing",
               "clip", "lr", "wd", "epochs", "batch_size", "seed")
    for run in plan.runs:
        draw = int(hashlib.sha256(run.run_id.encode()).hexdigest()[:8], 16) / 16 ** 8
        make_run(root, dataset=run.dataset, test_acc=round(45 + 15 * draw, 2), wall_s=600.0 + 10 * run.config.d,
                 device_name="cpu: AMD EPYC 7763 64-Core Processor", train_images=10000, test_images=2000,
                 **{name: getattr(run.config, name) for name in changes})
    record_roles(plan)
    return [run.run_id for run in plan.runs]
