"""The training step across kernel sizes on CPU: ms per step and ms per GFLOP, per layout, before/after.

Why: a CPU user's Table 8 sweep is a kernel scan, and oneDNN's depthwise kernels are not proportional to their
FLOPs (run/depthwise.py). For each model shape, memory layout and k this builds two engines — the depthwise
convolution by oneDNN's own kernels ("stock", what cmx did before the per-shape paths) and by the path the CPU
probe chooses for the shape ("chosen", tune.fastest_conv_path) — and times their training steps interleaved
round by round, every k in the same rounds (the same background load hits all). The FLOPs are the analytic
convolution + head FLOPs × 3 (forward + backward, sweep/estimate.py); "per-FLOP vs k9" divides each ms/GFLOP
by k9's in the same column, so 1.00 means the step costs exactly its FLOP share. The depthwise layers alone
(one layer's forward + backward by the chosen path, × depth, timed in the same rounds) are split out: their
"dw ×k9" is what choosing a convolution path controls, and "rest" (the step minus them: the embedding, the
pointwise convolutions, BatchNorm, GELU, residual adds, the head, AdamW) is the part that does not grow with
k. The last column, "×k9 if dw at k9's rate", is the step's per-FLOP ratio had its depthwise layers cost k9's
ms per depthwise GFLOP: what a path as efficient as k9's would reach at that k, k9 staying as measured; "×k9
if dw were free" the same with depthwise layers that cost nothing, a bound no convolution path can beat.

    python benchmarks/kernel_scan.py                                  # 64/4 p2 b128 and 256/8 p1 b64, fp32
    python benchmarks/kernel_scan.py --shapes 64/4/2/128 --amp bf16 --ks 3,9,15 --rounds 5
    python benchmarks/kernel_scan.py --threads 1 --cpu-time        # on a machine others are using
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmx.bench.speed import cmx_train_step, interleaved  # noqa: E402
from cmx.cifar import IMAGE_SIZE  # noqa: E402
from cmx.run.allocator import keep_freed_memory  # noqa: E402
from cmx.config import RunConfig  # noqa: E402
from cmx.run.tune import depthwise_layer, fastest_conv_path, place  # noqa: E402
from cmx.sweep.estimate import TRAIN_FACTOR, forward_flops  # noqa: E402

PAPER_KS = (3, 5, 7, 8, 9, 11, 13, 15)  # Table 8's kernel sizes (8: its even one) and the odd ones between


class Shape(NamedTuple):
    """A model shape and batch, as --shapes spells it: h/d/p/batch."""
    h: int
    d: int
    p: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> "Shape":
        return cls(*(int(v) for v in text.split("/")))


def cpu_flags() -> str:
    """The instruction-set flags that decide oneDNN's kernels (lscpu)."""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("Model name")), "?")
    have = [f for f in wanted if f" {f} " in f" {flags} "]
    return f"{model}; {' '.join(have)}"


class Timing(NamedTuple):
    """How the contenders are timed: `rounds` interleaved rounds (median), by process CPU time or the wall
    clock, with or without the stock steps (at 256/8 on an AVX2 CPU they are 60–75 s each at k15, and without
    them the same minutes buy 2–3× the rounds of the chosen steps)."""
    rounds: int
    cpu_time: bool = False
    stock: bool = True


def scan(shape: Shape, layout: str, amp: str, ks, timing: Timing) -> list[dict]:
    """Every k's stock step, chosen step and depthwise layer, all timed in the same interleaved rounds: the
    per-FLOP ratios divide one k's time by k9's, so both must see the same minutes of this VM (timed k by k,
    the k-free "rest" swung ±15% between rows of one scan)."""
    h, d, p, batch = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    targets = torch.softmax(torch.randn(batch, 10, generator=gen), 1)
    steps, rows = {}, []
    for k in ks:
        base = RunConfig(h=h, d=d, p=p, k=k, batch_size=batch, device="cpu", amp=amp,
                         channels_last=layout == "channels_last", data="-")
        chosen, _ = fastest_conv_path(base, layout, amp)
        contenders = (("stock", "stock"),) * timing.stock + (("chosen", chosen),)
        for name, path in contenders:
            cfg = base.replace(conv_path=path)
            steps[k, name] = cmx_train_step(cfg, place(cfg), x, targets)[0]
        layer, steps[k, "layer"] = depthwise_layer(base, layout, amp)  # one of the step's layers, chosen path
        layer.path = chosen
        rows.append({"k": k, "path": chosen, "gflop": TRAIN_FACTOR * forward_flops(h, d, p, k) * batch / 1e9,
                     "dw_gflop": TRAIN_FACTOR * 2 * (IMAGE_SIZE // p) ** 2 * k * k * h * d * batch / 1e9})
    for step in steps.values():  # warm-up
        step()
    clock = time.process_time if timing.cpu_time else time.perf_counter
    times = interleaved(steps, timing.rounds, torch.device("cpu"), clock=clock)
    for row in rows:
        k = row["k"]
        for name in ("stock", "chosen", "layer"):
            row[name] = 1000 * statistics.median(times[k, name]) if (k, name) in times else float("nan")
        row["dw"] = d * row.pop("layer")  # the step's d depthwise layers
        print(f"  {h}/{d} p{p} b{batch} {layout:>13} {amp:>4} k{k:<2}  stock {row['stock']:8.1f} ms  "
              f"chosen ({row['path']}) {row['chosen']:8.1f} ms  (depthwise {row['dw']:6.1f} ms)", flush=True)
    return rows


def table(shape: str, layout: str, amp: str, rows: list[dict]) -> str:
    k9 = next((r for r in rows if r["k"] == 9), rows[0])
    lines = [f"\n{shape}, {layout}, {amp}: ms/step (ms/GFLOP; per-FLOP vs k{k9['k']} in the same column)",
             "| k | GFLOP/step | stock ms | stock ms/GF | stock ×k9 | chosen path | chosen ms | chosen ms/GF | chosen ×k9 "
             "| dw ms | dw ×k9 | rest ms | ×k9 if dw at k9's rate | ×k9 if dw were free |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    k9_dw_rate, k9_rate = k9["dw"] / k9["dw_gflop"], k9["chosen"] / k9["gflop"]
    for r in rows:
        per = {name: r[name] / r["gflop"] for name in ("stock", "chosen")}
        rel = {name: per[name] / (k9[name] / k9["gflop"]) for name in per}
        dw_rel = (r["dw"] / r["dw_gflop"]) / k9_dw_rate
        # What a convolution path can reach at best: the step if its depthwise layers cost k9's ms per GFLOP
        # and the rest stayed as measured (the rest has no k in it; only its FLOP-free part breaks the ratio).
        reach = ((r["chosen"] - r["dw"] + k9_dw_rate * r["dw_gflop"]) / r["gflop"]) / k9_rate
        free = ((r["chosen"] - r["dw"]) / r["gflop"]) / k9_rate  # no path does better than a free one
        lines.append(f"| {r['k']} | {r['gflop']:.2f} | {r['stock']:.0f} | {per['stock']:.1f} | {rel['stock']:.2f} | "
                     f"{r['path']} | {r['chosen']:.0f} | {per['chosen']:.1f} | {rel['chosen']:.2f} | "
                     f"{r['dw']:.0f} | {dw_rel:.2f} | {r['chosen'] - r['dw']:.0f} | {reach:.2f} | {free:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="64/4/2/128,256/8/1/64", help="h/d/p/batch, comma-separated")
    ap.add_argument("--ks", default=",".join(map(str, PAPER_KS)))
    ap.add_argument("--layouts", default="channels_last,nchw")
    ap.add_argument("--amp", default="off", choices=["off", "bf16"])
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per contender (median reported)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by process CPU time (use with --threads 1 on a loaded machine)")
    ap.add_argument("--no-stock", action="store_true",
                    help="time the chosen paths only (more rounds in the same minutes; stock columns: nan)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does (train.py): no page faults per step in the figures
    ks = [int(k) for k in args.ks.split(",")]
    print(f"cpu: {cpu_flags()}; {torch.get_num_threads()} threads; torch {torch.__version__}; timed by "
          f"{'process CPU time' if args.cpu_time else 'wall clock'}", flush=True)
    out = []
    for shape in args.shapes.split(","):
        h, d, p, batch = parsed = Shape.parse(shape)
        for layout in args.layouts.split(","):
            rows = scan(parsed, layout, args.amp, ks, Timing(args.rounds, args.cpu_time, not args.no_stock))
            out.append(table(f"{h}/{d} p{p} batch {batch}", layout, args.amp, rows))
    print("\n".join(out))


if __name__ == "__main__":
    main()
