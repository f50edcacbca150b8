"""`cmx bench`: a thin Typer wrapper over `cmx.bench.speed.run_bench` (see that module for what is measured)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import RunConfig
from .options import config_options

Opt = typer.Option

# (key, label, unit) rows of the human table: cmx's number, the reference's, and their ratio
ROWS = (("aug", "augmentation (full paper recipe)", "img/s"), ("train", "train step", "img/s"),
        ("eval", "inference", "img/s"))


@config_options("h", "d", "p", "k", "batch_size", "device", "amp", "channels_last", "conv_path", "compile")
def bench(
    settings: dict,
    tune: Annotated[bool, Opt("--tune", help="on CPU: time the memory formats, precisions and depthwise paths left open, cache the fastest for `cmx train`, print them; measure nothing else")] = False,
    threads: Annotated[Optional[int], Opt("--threads", help="torch intra-op CPU threads [default: torch's choice]")] = None,
    steps: Annotated[int, Opt("--steps", help="timed rounds per measurement (median reported)")] = 10,
    warmup: Annotated[int, Opt("--warmup", help="untimed steps first")] = 2,
    eval_batch_size: Annotated[int, Opt("--eval-batch-size", help="inference batch (cmx evaluates in 500s)")] = 500,
    data: Annotated[Optional[Path], Opt("--data", help="CIFAR folder: augment real images [default: random images]")] = None,
    vs_reference: Annotated[bool, Opt("--vs-reference", help="also measure the reference pipeline, print ratios")] = False,
    reference_steps: Annotated[Optional[int], Opt("--reference-steps", help="cap the reference's train/eval rounds (it is slow on CPU)")] = None,
    reference_script: Annotated[Optional[Path], Opt("--reference-script", help="run the reference's augmentation from this script (same flags, e.g. the public original) [default: the in-package cmx.bench.reference]")] = None,
    sweep: Annotated[Optional[Path], Opt("--sweep", help="sweep file to project [default: sweeps/paper.yaml]")] = None,
    as_json: Annotated[bool, Opt("--json", help="print one JSON object instead of a table")] = False,
):
    """Measure augmentation, train-step and inference throughput and peak memory on this device; project
    a 200-epoch run and the paper sweep; with --vs-reference, the reference pipeline's numbers and ratios."""
    from ..bench import speed as B  # imports torch only when benchmarking
    from ..errors import UserError

    if sweep is not None and not sweep.is_file():
        raise UserError(f"sweep file {sweep} does not exist")
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be ≥ 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    if reference_steps is not None and reference_steps < 1:
        raise UserError(f"--reference-steps must be ≥ 1, got {reference_steps}")
    config = RunConfig.from_dict({**settings, "data": str(data) if data else ""}, where="flags")
    if tune:
        from ..run.tune import tune_now

        tune_now(config, typer.echo)
        return
    opts = B.BenchOptions(steps=steps, warmup=warmup, eval_batch_size=eval_batch_size, data=data,
                          vs_reference=vs_reference, reference_steps=reference_steps,
                          reference_script=reference_script,
                          sweep=sweep if sweep is not None else B.default_sweep())
    say = (lambda msg: None) if as_json else (lambda msg: typer.echo(msg, err=True))
    result = B.run_bench(config, opts, say)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_table(result)


def print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ref = "reference_train_img_per_s" in r
    title = (f"cmx bench — ConvMixer-{r['config']}, batch {r['batch_size']}, {r['device']} ({r['threads']} threads), "
             f"amp {r['amp']}, {'channels_last' if r['channels_last'] else 'NCHW'}"
             f"{', conv ' + r['conv_path'] if r['device'] == 'cpu' else ''}{', compiled' if r['compile'] else ''}")
    table = Table(title=title)
    table.add_column("measured (median of rounds)")
    table.add_column("cmx", justify="right")
    if ref:
        table.add_column("reference", justify="right")
        table.add_column("ratio", justify="right")
    for key, label, unit in ROWS:
        row = [f"{label}, {unit}", f"{r[f'{key}_img_per_s']:,.1f}"]
        if ref:
            row += [f"{r[f'reference_{key}_img_per_s']:,.1f}", f"{r[f'{key}_ratio']:.2f}×"]
        table.add_row(*row)
    mem = ["peak memory, MB", f"{r['peak_mem_mb']:,.0f}"]
    if ref:
        mem += [f"{r['reference_peak_mem_mb']:,.0f}", ""]
    table.add_row(*mem)
    console = Console()
    console.print(table)
    console.print(f"memory: {r['peak_mem_method']}; augmentation on {r['aug_images']} images"
                  + ("; reference augmentation: its own script, 1 DataLoader worker, "
                     f"{r['reference_aug_ops']}; augmentation ratio per pair of runs: "
                     + ", ".join(f"{x:.2f}×" for x in r["aug_ratio_per_pair"]) if ref else ""))
    console.print(f"projection: one 200-epoch run ≈ {r['projected_run_hours']:.1f} h on this device"
                  + (f"; {r['projected_sweep_file']} ({r['projected_sweep_runs']} runs) ≈ "
                     f"{r['projected_sweep_hours']:,.0f} h" if "projected_sweep_hours" in r else ""))
    console.print(f"  ({r['projection_method']})", style="dim")


def gpu_check(
    data: Annotated[Optional[Path], Opt("--data", help="CIFAR-10 folder for the real-image checks [default: $CMX_DATA or data/, as cmx train]")] = None,
    out: Annotated[Path, Opt("--out", help="folder for gpu_check.json and gpu_check.md")] = Path("results/gpu-check"),
    budget: Annotated[float, Opt("--budget", help="seconds for the whole check")] = 460,
    plan: Annotated[bool, Opt("--plan", help="print the time budget and each piece's estimated cost, then exit (no GPU needed)")] = False,
):
    """Prove cmx correct and fast on this machine's CUDA GPU in under 8 minutes: the cuda tests, speed,
    a ~1.5-minute real training and packing; verdicts as they come, report in OUT (cmx.bench.gpu.check).
    Pieces that do not fit the budget are skipped, not failed: exit 1 only for a defect."""
    from ..bench.gpu.check import main as gpu_check_main

    args = (["--data", str(data)] if data else []) + ["--out", str(out), "--budget", str(budget)] + (["--plan"] if plan else [])
    code = gpu_check_main(args)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("gpu-check")(gpu_check)
