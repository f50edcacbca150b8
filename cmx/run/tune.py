"""CPU settings chosen by measurement: which memory format and precision train a given model fastest here.

Why measure: the best choice differs by CPU. On an Intel Xeon with AMX (64/4 p2 k5, batch 128) fp32 NCHW
ran 1.34× the reference, fp32 channels_last 1.26× and bf16 0.76–0.99×, while at 256/8 p1 k9 channels_last
won (2.04×); the AMD EPYC behind benchmarks/RESULTS.md ordered them differently. So when `--channels-last`
or `--amp` is left unset on a CPU, a short probe times a few optimisation steps of each candidate — NCHW
and channels_last in fp32, plus bf16 autocast where the CPU has native bf16 (avx512_bf16 / AMX) — and the
fastest wins. The answer is cached per machine (CPU model, threads, torch version) and model shape in
$CMX_CACHE_DIR/cpu_settings.json (default ~/.cache/cmx), so the probe runs once per shape; `cmx bench
--tune` runs it explicitly. The choice is not part of the run id (like --device). `CMX_CPU_TUNE=off` skips
the probe (the defaults are then channels_last, fp32 and `default_conv_path`), which the test suite uses
for determinism. The probe also chooses, per candidate, how the depthwise convolution is computed
(run/depthwise.py's `paths_for(k)`: the odd- paths only for even k): one depthwise layer's forward +
backward is timed by each path first, and the candidate's step is timed with the fastest.
On CUDA nothing is probed: bf16 autocast (fp16 without bf16) and channels_last are the known-good choice.

`place` is the one resolver of a run's `Placement` (placement.py): the flags, a resumed run's kept settings,
then the CUDA rules or, on a CPU, this probe. The train loop, `cmx bench`, the sweep's probe and the GPU check
all call it; the engine only takes its answer. Precisions are spelt as --amp values ("off", "bf16") in the
candidates and the cache too (entries written before that say "fp32" for "off" and are read as such).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..cifar import IMAGE_SIZE
from ..machine import cpu_model
from .. import cache
from ..config import RunConfig
from .depthwise import DepthwiseConv2d, paths_for
from .engine import Engine
from .placement import Placement, all_fixed, from_flags, keep_settings, resolve_device

PROBE_WARMUP, PROBE_STEPS = 2, 3
CONV_PROBE_ROUNDS = 5  # interleaved rounds of one timed forward + backward call per depthwise path
CPU = torch.device("cpu")
CACHE = "cpu_settings.json"  # in $CMX_CACHE_DIR (cmx/cache.py)
_OLD_SPELLING = {"fp32": "off"}  # cache entries written before precision had one spelling
FIRST_PATHS = ("stock", "wgrad", "padded", "padded-wgrad")  # what an entry without "paths_timed" timed


def place(config: RunConfig, kept: dict | None = None, device: torch.device | None = None,
          say: Callable[[str], None] = print) -> Placement:
    """Where and how a run of `config` computes, resolved once: the flags; then, for what they leave open,
    `kept` (a resumed run's checkpoint "engine" settings, placement.keep_settings); then the CUDA rules, or on
    a CPU the cached probe (CMX_CPU_TUNE=off: the CPU defaults). `device`: config.device resolved already."""
    device = device if device is not None else resolve_device(config.device)
    config = keep_settings(config, kept, device)
    if device.type != "cpu" or all_fixed(config) or os.environ.get("CMX_CPU_TUNE", "on") == "off":
        return from_flags(config, device)
    return choose_on_cpu(config, say)


def candidate(layout: str, precision: str, conv_path: str = "stock", chosen_by: str = "probe") -> Placement:
    """A probe candidate ("channels_last" or "nchw", an --amp value) as the CPU placement it stands for."""
    return Placement(CPU, precision, layout == "channels_last", conv_path, chosen_by)


def cache_path() -> Path:
    return cache.cache_path(CACHE)


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cache_key(config: RunConfig) -> str:
    key = (f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
           f"{config.h}/{config.d} p{config.p} k{config.k} {config.norm}norm, batch {config.batch_size}")
    return key if config.conv_path == "auto" else f"{key}, conv {config.conv_path}"


def candidates(config: RunConfig) -> list[tuple[str, str]]:
    """(layout, precision) pairs left open by the config's flags; precision as an --amp value."""
    layouts = (["channels_last", "nchw"] if config.channels_last is None
               else ["channels_last" if config.channels_last else "nchw"])
    if config.amp == "auto":
        precisions = ["off", "bf16"] if cpu_has_native_bf16() else ["off"]
    else:
        precisions = [config.amp]
    return [(layout, precision) for precision in precisions for layout in layouts]


def read_cached(config: RunConfig, options: list[tuple[str, str]]) -> tuple[str, str, str] | None:
    """(layout, precision, conv path) cached for this machine and shape, or None. Only a probe that timed
    every one of `options` answers for them (the entry's ms_per_step names what it timed): the winner of an
    `--amp off` probe says nothing of bf16, so an `--amp auto` run probes again. From a probe of more
    candidates than `options`, the fastest of `options` is taken (each candidate's conv path is kept)."""
    entry = cache.read_cache(CACHE).get(cache_key(config))
    if not entry or "conv_path" not in entry:
        return None
    if not set(probed_paths(config)) <= set(entry.get("paths_timed", FIRST_PATHS)):
        return None  # probed before some of today's paths existed

    def spelt(key: str) -> tuple[str, str]:
        layout, precision = key.split(" ")
        return layout, _OLD_SPELLING.get(precision, precision)

    ms = {spelt(key): value for key, value in entry.get("ms_per_step", {}).items()}
    paths = {spelt(key): value for key, value in entry.get("conv_paths", {}).items()}
    paths.setdefault((entry["layout"], _OLD_SPELLING.get(entry["precision"], entry["precision"])),
                     entry["conv_path"])  # entries written before conv_paths: the winner's only
    if not set(options) <= set(ms):
        return None
    best = min(options, key=ms.get)
    return (*best, paths[best]) if best in paths else None


def choose_on_cpu(config: RunConfig, say: Callable[[str], None]) -> Placement:
    """The CPU placement for what the flags leave open: the cached probe's choice, else a probe (cached)."""
    options = candidates(config)
    if len(options) == 1 and config.conv_path != "auto":  # e.g. --channels-last on a CPU without native bf16
        return candidate(*options[0], config.conv_path, "flags")
    cached = read_cached(config, options)
    if cached:
        layout, precision, conv = cached
        how = "cached probe"
    else:
        (layout, precision), timings, paths = probe_and_cache(config, options)
        conv, how = paths[(layout, precision)], "probe"
        say("cpu settings probe: " + ", ".join(f"{lay} amp {prec} (conv {paths[(lay, prec)]}) "
                                                f"{1000 * s:.0f} ms/step" for (lay, prec), s in timings.items()))
    say(f"cpu settings: {layout}, amp {precision}, conv {conv} ({how}; override with --channels-last/"
        f"--no-channels-last, --amp, --conv-path)")
    return candidate(layout, precision, conv, how)


def tune_now(config: RunConfig, say: Callable[[str], None] = print) -> tuple[str, str, str]:
    """`cmx bench --tune`: probe every candidate left open by the flags (ignoring the cache), cache and say the
    fastest. Returns (layout, precision, conv path)."""
    from ..errors import UserError
    if resolve_device(config.device).type != "cpu":
        raise UserError("--tune chooses CPU settings; on CUDA cmx uses bf16 (else fp16) and channels_last")
    best, timings, paths = probe_and_cache(config, candidates(config))
    for (layout, precision), seconds in sorted(timings.items(), key=lambda kv: kv[1]):
        say(f"{layout:>13} amp {precision:<4} conv {paths[(layout, precision)]:<12}: {1000 * seconds:8.1f} ms/step "
            f"({config.batch_size / seconds:,.1f} img/s)" + ("   ← chosen" if (layout, precision) == best else ""))
    say(f"cached for {cache_key(config)} in {cache_path()}")
    return (*best, paths[best])


def probe_and_cache(config: RunConfig, options: list[tuple[str, str]]):
    """Probe `options`, cache the fastest for this machine and shape; ((layout, precision), timings, paths)."""
    timings, paths = probe_in_child(config, options)
    best = min(timings, key=timings.get)
    write_cache(config, timings, paths)
    return best, timings, paths


def depthwise_layer(config: RunConfig, layout: str, precision: str) -> tuple[DepthwiseConv2d, Callable[[], None]]:
    """One of the run's depthwise layers on random tokens (B, h, 32/p, 32/p) in `layout`, and a call of its
    forward + backward under `precision`'s autocast: what the probe times per path (set `conv.path`), and
    benchmarks/kernel_scan.py beside the whole step."""
    size = IMAGE_SIZE // config.p  # the token grid after the patch embedding
    gen = torch.Generator().manual_seed(0)
    placed = candidate(layout, precision)
    fmt = placed.memory_format
    x = torch.randn(config.batch_size, config.h, size, size, generator=gen).contiguous(memory_format=fmt)
    grad = torch.randn(x.shape, generator=gen).contiguous(memory_format=fmt)
    conv = DepthwiseConv2d(config.h, config.k).to(memory_format=fmt)
    x.requires_grad_()

    def call() -> None:
        with placed.autocast():
            y = conv(x)
        y.backward(grad.to(y.dtype))
        x.grad = conv.weight.grad = conv.bias.grad = None

    return conv, call


def fastest_conv_path(config: RunConfig, layout: str, precision: str) -> tuple[str, dict[str, float]]:
    """The depthwise path (run/depthwise.py) whose forward + backward of one of the run's depthwise layers is
    fastest here, in this layout and precision, among `paths_for(k)`; (path, median seconds per path). Each
    path is called once untimed (the first call in a process also pays oneDNN's one-time setup: 330 ms
    against 5), then timed in CONV_PROBE_ROUNDS interleaved rounds, one call of each path per round, so that
    a burst of background load falls on every path alike (timing each path's calls back to back let a burst
    pick the wrong one). A path over 3× the best in the first round is not timed further (oneDNN's slow
    kernels can take seconds a call)."""
    conv, call = depthwise_layer(config, layout, precision)

    def once(path: str) -> float:
        conv.path = path
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    paths = paths_for(config.k)
    for path in paths:
        once(path)
    rounds = {path: [once(path)] for path in paths}
    fastest_first = min(times[0] for times in rounds.values())
    timed = [path for path in paths if rounds[path][0] <= 3 * fastest_first]
    for _ in range(CONV_PROBE_ROUNDS - 1):
        for path in timed:
            rounds[path].append(once(path))
    timings = {path: statistics.median(times) for path, times in rounds.items()}
    return min(timings, key=timings.get), timings


def probe(config: RunConfig, options: list[tuple[str, str]]) -> tuple[dict, dict]:
    """For each candidate: its depthwise path (the config's, or the fastest by `fastest_conv_path`) and the
    median seconds per optimisation step with it, on random data at the run's batch size."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch_size, 3, 32, 32, generator=gen)
    targets = torch.softmax(torch.randn(config.batch_size, 10, generator=gen), 1)
    timings, paths = {}, {}
    for layout, precision in options:
        conv = (config.conv_path if config.conv_path != "auto"
                else fastest_conv_path(config, layout, precision)[0])
        engine = Engine.build(config.replace(device="cpu", compile=False), candidate(layout, precision, conv),
                              say=lambda msg: None)
        times = []
        for i in range(PROBE_WARMUP + PROBE_STEPS):
            start = time.perf_counter()
            engine.step(x, targets)
            if i >= PROBE_WARMUP:
                times.append(time.perf_counter() - start)
        timings[(layout, precision)] = statistics.median(times)
        paths[(layout, precision)] = conv
    return timings, paths


def probe_in_child(config: RunConfig, options: list[tuple[str, str]]) -> tuple[dict, dict]:
    """`probe` in a child process, so that its models' memory and one-time costs stay out of the caller
    (whose peak memory `cmx bench` measures, and whose allocator keeps what it once held)."""
    payload = json.dumps({"config": {**config.to_dict(), "data": "-"}, "options": options})
    done = subprocess.run([sys.executable, "-m", "cmx.run.tune", payload], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cpu settings probe failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    found = json.loads(done.stdout.splitlines()[-1])
    timings = {tuple(key.split(" ")): seconds for key, seconds in found["seconds"].items()}
    paths = {tuple(key.split(" ")): path for key, path in found["conv_path"].items()}
    return timings, paths


def write_cache(config: RunConfig, timings: dict, paths: dict) -> None:
    """Cache a probe of `config`'s shape: the fastest candidate, every candidate's seconds per step and conv
    path, and which conv paths were timed (a later probe that has more to choose from is not answered by
    it: entries from before the odd- paths say nothing of them)."""
    best = min(timings, key=timings.get)
    entries = cache.read_cache(CACHE)
    entries[cache_key(config)] = {
        "layout": best[0], "precision": best[1], "conv_path": paths[best],
        "ms_per_step": {f"{lay} {prec}": round(1000 * s, 2) for (lay, prec), s in timings.items()},
        "conv_paths": {f"{lay} {prec}": path for (lay, prec), path in paths.items()},
        "paths_timed": probed_paths(config)}
    cache.write_cache(CACHE, entries)


def probed_paths(config: RunConfig) -> list[str]:
    """The conv paths a probe of `config` chooses among."""
    return paths_for(config.k) if config.conv_path == "auto" else [config.conv_path]


if __name__ == "__main__":  # the child of probe_in_child: one JSON line of seconds per step
    from .allocator import keep_freed_memory

    keep_freed_memory()  # as train() runs: page faults per step would be timed as a cost of every candidate
    request = json.loads(sys.argv[1])
    seconds, paths = probe(RunConfig.from_dict(request["config"]), [tuple(o) for o in request["options"]])
    print(json.dumps({"seconds": {" ".join(key): value for key, value in seconds.items()},
                      "conv_path": {" ".join(key): value for key, value in paths.items()}}))
