"""CPU settings chosen by measurement: which memory format and precision train a given model fastest here.

Why measure: the best choice differs by CPU. On an Intel Xeon with AMX (64/4 p2 k5, batch 128) fp32 NCHW
ran 1.34× the reference, fp32 channels_last 1.26× and bf16 0.76–0.99×, while at 256/8 p1 k9 channels_last
won (2.04×); the AMD EPYC behind benchmarks/RESULTS.md ordered them differently. So when `--channels-last`
or `--amp` is left unset on a CPU, a short probe times a few optimisation steps of each candidate — NCHW
and channels_last in fp32, plus bf16 autocast where the CPU has native bf16 (avx512_bf16 / AMX) — and the
fastest wins. The answer is cached per machine (CPU model, threads, torch version) and model shape in
$CMX_CACHE_DIR/cpu_settings.json (default ~/.cache/cmx), so the probe runs once per shape; `cmx bench
--tune` runs it explicitly. The choice is not part of the run id (like --device). `CMX_CPU_TUNE=off` skips
the probe (the defaults are then channels_last, fp32), which the test suite uses for determinism.
On CUDA nothing is probed: bf16 autocast (fp16 without bf16) and channels_last are the known-good choice.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from .config import RunConfig
from .engine import AMP_DTYPES, Engine, resolve_amp, resolve_device, resolve_memory_format

PROBE_WARMUP, PROBE_STEPS = 2, 3
_LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}

def _amp(precision: str) -> str:
    """A probe's precision label ("fp32", "bf16", "fp16") as an --amp value ("off" for fp32)."""
    return "off" if precision == "fp32" else precision


def cache_path() -> Path:
    root = os.environ.get("CMX_CACHE_DIR") or Path.home() / ".cache" / "cmx"
    return Path(root) / "cpu_settings.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cache_key(config: RunConfig) -> str:
    return (f"{cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
            f"{config.h}/{config.d} p{config.p} k{config.k} {config.norm}norm, batch {config.batch_size}")


def candidates(config: RunConfig) -> list[tuple[str, str]]:
    """(layout, precision) pairs left open by the config's flags."""
    layouts = (["channels_last", "nchw"] if config.channels_last is None
               else ["channels_last" if config.channels_last else "nchw"])
    if config.amp == "auto":
        precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    else:
        precisions = ["fp32" if config.amp == "off" else config.amp]
    return [(layout, precision) for precision in precisions for layout in layouts]


def choose_settings(config: RunConfig, device: torch.device,
                    say: Callable[[str], None]) -> tuple[torch.dtype | None, torch.memory_format, str]:
    """(autocast dtype, memory format, how chosen) for a run of `config` on `device`."""
    fixed = config.channels_last is not None and config.amp != "auto"
    if device.type != "cpu" or fixed or os.environ.get("CMX_CPU_TUNE", "on") == "off":
        how = "flags" if fixed else "default"
        return resolve_amp(config.amp, device), resolve_memory_format(config.channels_last), how
    options = candidates(config)
    if len(options) == 1:
        layout, precision = options[0]
        return AMP_DTYPES[_amp(precision)], _LAYOUTS[layout], "flags"
    cached = read_cache().get(cache_key(config))
    if cached and (cached["layout"], cached["precision"]) in options:
        layout, precision, how = cached["layout"], cached["precision"], "cached probe"
    else:
        (layout, precision), timings = probe_and_cache(config, options)
        how = "probe"
        say("cpu settings probe: " + ", ".join(f"{lay} {prec} {1000 * s:.0f} ms/step"
                                                for (lay, prec), s in timings.items()))
    say(f"cpu settings: {layout}, {precision} ({how}; override with --channels-last/--no-channels-last, --amp)")
    return AMP_DTYPES[_amp(precision)], _LAYOUTS[layout], how


def tune_now(config: RunConfig, say: Callable[[str], None] = print) -> tuple[str, str]:
    """`cmx bench --tune`: probe every candidate left open by the flags (ignoring the cache), cache and say the
    fastest. Returns (layout, precision)."""
    from ..errors import UserError
    if resolve_device(config.device).type != "cpu":
        raise UserError("--tune chooses CPU settings; on CUDA cmx uses bf16 (else fp16) and channels_last")
    best, timings = probe_and_cache(config, candidates(config))
    for (layout, precision), seconds in sorted(timings.items(), key=lambda kv: kv[1]):
        say(f"{layout:>13} {precision}: {1000 * seconds:8.1f} ms/step ({config.batch_size / seconds:,.1f} img/s)"
            + ("   ← chosen" if (layout, precision) == best else ""))
    say(f"cached for {cache_key(config)} in {cache_path()}")
    return best


def probe_and_cache(config: RunConfig, options: list[tuple[str, str]]):
    """Probe `options`, cache the fastest for this machine and shape; ((layout, precision), timings)."""
    timings = probe_in_child(config, options)
    best = min(timings, key=timings.get)
    write_cache(cache_key(config), *best, timings)
    return best, timings


def probe(config: RunConfig, options: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Median seconds per optimisation step of each candidate, on random data at the run's batch size."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch_size, 3, 32, 32, generator=gen)
    targets = torch.softmax(torch.randn(config.batch_size, 10, generator=gen), 1)
    timings = {}
    for layout, precision in options:
        settings = config.replace(channels_last=layout == "channels_last", device="cpu", compile=False,
                                  amp=_amp(precision))
        engine = Engine.build(settings, torch.device("cpu"), say=lambda msg: None)
        times = []
        for i in range(PROBE_WARMUP + PROBE_STEPS):
            start = time.perf_counter()
            engine.step(x, targets)
            if i >= PROBE_WARMUP:
                times.append(time.perf_counter() - start)
        timings[(layout, precision)] = statistics.median(times)
    return timings


def probe_in_child(config: RunConfig, options: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """`probe` in a child process, so that its models' memory and one-time costs stay out of the caller
    (whose peak memory `cmx bench` measures, and whose allocator keeps what it once held)."""
    payload = json.dumps({"config": {**config.to_dict(), "data": "-"}, "options": options})
    done = subprocess.run([sys.executable, "-m", "cmx.run.tune", payload], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cpu settings probe failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return {tuple(key.split(" ")): seconds for key, seconds in json.loads(done.stdout.splitlines()[-1]).items()}


def read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def write_cache(key: str, layout: str, precision: str, timings: dict) -> None:
    """Best effort: an unwritable cache only means probing again next time."""
    from .results import atomic_write_json

    entries = read_cache()
    entries[key] = {"layout": layout, "precision": precision,
                    "ms_per_step": {f"{lay} {prec}": round(1000 * s, 2) for (lay, prec), s in timings.items()}}
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_path(), entries)
    except OSError:
        pass


if __name__ == "__main__":  # the child of probe_in_child: one JSON line of seconds per step
    request = json.loads(sys.argv[1])
    found = probe(RunConfig.from_dict(request["config"]), [tuple(o) for o in request["options"]])
    print(json.dumps({f"{layout} {precision}": seconds for (layout, precision), seconds in found.items()}))
