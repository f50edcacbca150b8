"""Which CPU settings make cmx's train step fast: fp32/bf16 autocast × NCHW/channels_last (× torch.compile),
beside the reference's Fig. 3 model as written (NCHW fp32, plain AdamW), interleaved round by round.

Every contender is built once, warmed up, then each takes one timed step per round in turn, so background
load hits them alike; img/s = batch / median step time. The cmx contenders are `cmx.bench.speed.cmx_train_step`
(exactly cmx.run.train's step) with RunConfig.amp / channels_last / compile set per variant.

    python benchmarks/train_step_variants.py                       # 256/8 p1 k9, batch 64
    python benchmarks/train_step_variants.py --rounds 10 --compile --threads 1
    python benchmarks/train_step_variants.py --h 64 --d 4 --p 2 --k 5 --batch-size 128

Measured (see RESULTS.md for machine, date and load): filled in by the runs recorded there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmx.augment.pipeline import augment_batch  # noqa: E402
from cmx.bench.speed import cmx_train_step, interleaved, rate, reference_train_step  # noqa: E402
from cmx.run.tune import place  # noqa: E402
from cmx.config import RunConfig  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--h", type=int, default=256)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--p", type=int, default=1)
    p.add_argument("--k", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per contender")
    p.add_argument("--reference-rounds", type=int, default=None, help="cap for the (slow) reference")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="add torch.compile variants")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--variants", default="fp32-nchw,fp32-cl,bf16-nchw,bf16-cl",
                   help="comma-separated subset of {fp32,bf16}-{nchw,cl}[-compile]")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--json", dest="json_out")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    base = RunConfig(h=a.h, d=a.d, p=a.p, k=a.k, batch_size=a.batch_size, device="cpu")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.batch_size, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (a.batch_size,), generator=gen)
    x, targets = augment_batch(images, labels, gen)

    steps, built = {}, {}
    names = a.variants.split(",")
    if a.compile:
        names = [n + suffix for n in names for suffix in ("", "-compile")]
    for label in names:
        amp, layout, *compiled = label.split("-")
        if amp not in ("fp32", "bf16") or layout not in ("nchw", "cl") or compiled not in ([], ["compile"]):
            sys.exit(f"unknown variant {label!r}: use {{fp32,bf16}}-{{nchw,cl}}[-compile]")
        cfg = base.replace(amp="bf16" if amp == "bf16" else "off", channels_last=layout == "cl",
                           compile=bool(compiled))
        start = time.perf_counter()
        steps[label], _ = cmx_train_step(cfg, place(cfg, device=device), x, targets, say=print)
        for _ in range(a.warmup):
            steps[label]()
        built[label] = time.perf_counter() - start
        print(f"built + warmed up {label} in {built[label]:.1f}s", flush=True)
    if not a.no_reference:
        start = time.perf_counter()
        steps["reference"], _ = reference_train_step(base, device, x.contiguous(), targets.argmax(1))
        for _ in range(max(1, min(a.warmup, a.reference_rounds or a.warmup))):
            steps["reference"]()
        built["reference"] = time.perf_counter() - start
        print(f"built + warmed up reference in {built['reference']:.1f}s", flush=True)

    load0 = os.getloadavg()[0]
    t = interleaved(steps, a.rounds, device, {"reference": a.reference_rounds or a.rounds})
    rows = {name: {"img_per_s": rate(a.batch_size, s), "steps": len(s), "min_s": min(s), "max_s": max(s)}
            for name, s in t.items()}
    ref = rows.get("reference", {}).get("img_per_s")
    print(f"\nConvMixer-{a.h}/{a.d} p{a.p} k{a.k}, batch {a.batch_size}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, load average {load0:.1f} → {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| variant | img/s (median) | step s min–max | steps | × reference |\n|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        ratio = f"{r['img_per_s'] / ref:.2f}×" if ref else ""
        print(f"| {name} | {r['img_per_s']:.1f} | {r['min_s']:.2f}–{r['max_s']:.2f} | {r['steps']} | {ratio} |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"args": vars(a), "threads": torch.get_num_threads(),
                                                "rows": rows, "build_s": built}, indent=1))


if __name__ == "__main__":
    main()
