"""Accuracy risk of bf16 autocast on CPU: the same short cmx runs in fp32 and in bf16, seed by seed.

Trains ConvMixer-64/4 p2 k5 (batch 128, lr 0.01, the full paper augmentation) with `cmx.train.train` for
each (amp, seed), alternating amp settings so background load hits both alike, and prints final test
accuracy, wall time and train img/s. Differences within seed-to-seed spread mean no measurable risk at this
length; it says nothing about 200-epoch runs.

    python benchmarks/cpu_precision.py                      # 2 epochs, seeds 0 1, /work/shared/data/cifar10-mini
    python benchmarks/cpu_precision.py --epochs 5 --seeds 0 1 2

Measured (see RESULTS.md for machine, date and load): filled in by the runs recorded there.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cmx.config import RunConfig  # noqa: E402
from cmx.data import load_cifar10  # noqa: E402
from cmx.train import train  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-mini"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--amp", nargs="+", default=["off", "bf16"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    a = p.parse_args(argv)
    data = load_cifar10(a.data, download=False)
    print(f"ConvMixer-64/4 p2 k5, {a.epochs} epochs, batch 128, lr 0.01, {a.data}; "
          f"load average {os.getloadavg()[0]:.1f} at start, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            for amp in a.amp:
                cfg = RunConfig(h=64, d=4, p=2, k=5, epochs=a.epochs, batch_size=128, lr=0.01, seed=seed,
                                device="cpu", amp=amp, channels_last=a.channels_last, data=a.data)
                # amp is not part of the run id: give each setting its own results dir
                r = train(cfg, Path(tmp) / amp, data=data)
                rows.append((amp, seed, r["test_acc"], r["wall_s"], r["img_per_s"]))
                print(f"amp {amp} seed {seed}: test acc {r['test_acc']:.2f}%, {r['wall_s']:.0f}s, "
                      f"{r['img_per_s']} img/s", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    print("| amp | seed | test acc % | wall s | train img/s |\n|---|---:|---:|---:|---:|")
    for amp, seed, acc, wall, ips in rows:
        print(f"| {amp} | {seed} | {acc:.2f} | {wall:.0f} | {ips} |")
    for amp in a.amp:
        accs = [acc for m, _, acc, _, _ in rows if m == amp]
        print(f"mean test acc, amp {amp}: {sum(accs) / len(accs):.2f}% over {len(accs)} seeds")


if __name__ == "__main__":
    main()
