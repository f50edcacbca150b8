"""A sweep's cost from measured rates (cmx/sweep/estimate.py, rates.py, probe.py, eta.py): fabricated run
directories with known epoch times, so every projected number below is computed by hand.

Full CIFAR-10 (the fabricated runs' dataset, and the projected configs' missing data folder): 781 batches
of 64 = 49,984 trained images and 10,000 test images per epoch, so one epoch is
U = 3 · 49,984 + 10,000 = 159,952 forward-image units.
"""
from __future__ import annotations

import functools
import re

import pytest
import torch

from cmx.analysis.watch import render
from cmx.cli.app import main
from cmx.cli.analysis import sweep_eta_lines
from cmx.config import RunConfig
from cmx.store.resultsdir import ResultsDir
from cmx.files import now_iso, parse_iso
from cmx.run.provenance import provenance
from cmx.sweep import probe, rates
from cmx.sweep.estimate import config_forward_flops, project, run_flops, schedule
from cmx.sweep.eta import record_queue
from cmx.sweep.plan import make_plan
from fabricate import make_run

CPU = "cpu: Test CPU 9000"
SHAPE = dict(h=32, d=2, p=4, k=5, epochs=4)
T0 = 1.75e9  # a fixed Unix time: fabricated runs start one hour apart from here
STARTUP = 5.0


def cpu_run(root, hour: float, epoch_s: float, device_name: str = CPU, startup: float = STARTUP, **changes) -> str:
    """A finished CPU run that trained alone (its own hour) for `epochs` × epoch_s after `startup` seconds."""
    config = {**SHAPE, **changes}
    wall = config["epochs"] * epoch_s
    start = T0 + 3600 * hour
    return make_run(root, device_name=device_name, epoch_s=epoch_s, wall_s=wall, host="box",
                    started=now_iso(start), finished=now_iso(start + startup + wall), **config)


def config(**changes) -> RunConfig:
    return RunConfig(**{**SHAPE, "data": "nowhere", **changes})


def one(results, cfg: RunConfig, done: int = 0, **kw):
    return project([(cfg, done, True)], results, device=CPU, probing=False, **kw).runs[0]


# ---------------------------------------------------------------------- the sources, best first
def test_same_shape_runs_project_by_data_size_and_epochs(tmp_path):
    cpu_run(tmp_path, 0, epoch_s=10.0, seed=0)
    cpu_run(tmp_path, 1, epoch_s=12.0, seed=1)
    cpu_run(tmp_path, 2, epoch_s=99.0, seed=3, device_name="NVIDIA A100-SXM4-40GB")  # another device: ignored
    # seconds per unit: 40/(4U) and 48/(4U), median 11/U; 8 epochs = 8U units → 88 s, plus the 5 s startup
    got = one(tmp_path, config(seed=2, epochs=8))
    assert (got.basis, got.n_runs) == ("same shape", 2)
    assert got.seconds == pytest.approx(88.0 + STARTUP)
    # an evaluation every 2 epochs: 8 · 3 · 49,984 + 4 · 10,000 units at 11/U s each
    sparse = one(tmp_path, config(seed=2, epochs=8, eval_every=2))
    assert sparse.seconds == pytest.approx(11 * (8 * 3 * 49984 + 4 * 10000) / 159952 + STARTUP)
    # a partly trained run costs its remaining epochs (and starts again)
    assert one(tmp_path, config(seed=2, epochs=8), done=6).seconds == pytest.approx(22.0 + STARTUP)


def test_other_kernels_scale_from_the_nearest_k_by_flops_then_any_shape(tmp_path):
    cpu_run(tmp_path, 0, epoch_s=10.0, k=5)
    cpu_run(tmp_path, 1, epoch_s=40.0, k=9)  # dearer per FLOP than k5, as large kernels are on CPU
    per_flop = {k: s / config_forward_flops(config(k=k)) for k, s in ((5, 40.0), (9, 160.0))}  # 4 epochs

    k11 = one(tmp_path, config(k=11))
    assert (k11.basis, k11.n_runs) == ("k9 by FLOPs", 1)
    assert k11.seconds == pytest.approx(per_flop[9] * config_forward_flops(config(k=11)) + STARTUP)
    assert one(tmp_path, config(k=7)).basis == "k9 by FLOPs"  # a tie: the larger, more pessimistic k
    assert one(tmp_path, config(k=3)).basis == "k5 by FLOPs"

    with pytest.MonkeyPatch.context() as mp:  # with a probe: the measured k9 × the probed k11/k9 step ratio
        mp.setattr(probe, "measure", lambda configs, threads=None, gpu=None:
                   {rates.shape_key(c): (0.01 * c.k, 0.0) for c in configs})
        probed = project([(config(k=11), 0, True)], tmp_path, device=CPU, probing=True).runs[0]
    assert (probed.basis, probed.n_runs) == ("k9 × probed ratio", 1)
    assert probed.seconds == pytest.approx(160.0 * 11 / 9 + STARTUP)

    wide = one(tmp_path, config(h=64))  # no run differs only in k: every run of the device, median per FLOP
    assert (wide.basis, wide.n_runs) == ("FLOPs", 2)
    median = (per_flop[5] + per_flop[9]) / 2
    assert wide.seconds == pytest.approx(median * config_forward_flops(config(h=64)) + STARTUP)


def test_a_device_never_measured_is_probed_once_then_cached(tmp_path, monkeypatch):
    calls = []

    def fake_measure(configs, threads=None, gpu=None):
        calls.append(len(configs))
        return {rates.shape_key(c): (0.5, 0.001) for c in configs}

    monkeypatch.setattr(probe, "measure", fake_measure)
    cpu_run(tmp_path, 0, epoch_s=10.0, device_name="cpu: Some Other CPU")
    runs = [(config(epochs=2), 0, True), (config(epochs=2, seed=1), 0, True), (config(epochs=2, k=9), 0, True)]
    est = project(runs, tmp_path, device=CPU, probing=True)
    # 2 epochs × 781 steps × 0.5 s + 2 evaluations × 10,000 images × 1 ms; no measured startup to add
    assert [p.basis for p in est.runs] == ["probe"] * 3
    assert est.runs[0].seconds == pytest.approx(2 * 781 * 0.5 + 2 * 10000 * 0.001)
    assert calls == [2]  # one child for the two shapes
    assert "3 probe (no finished run on this device" in est.sources()
    assert project(runs, tmp_path, device=CPU, probing=True).runs[2].seconds == pytest.approx(801.0)
    assert calls == [2]  # the second projection read the cache
    assert probe.cache_path().is_file()


def test_a_shape_far_from_every_measured_run_is_probed_rather_than_scaled(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "measure", lambda configs, threads=None, gpu=None:
                        {rates.shape_key(c): (2.0, 0.01) for c in configs})
    cpu_run(tmp_path, 0, epoch_s=10.0)  # 32/2 p4 k5: 5,184 MACs per position × 64 positions
    big = config(h=256, d=8, p=1, k=9)  # ~1,000× the FLOPs per image
    assert one(tmp_path, big).basis == "FLOPs (far)"  # no probe: the far runs are all there is
    got = project([(big, 0, True)], tmp_path, device=CPU, probing=True).runs[0]
    assert got.basis == "probe"
    assert got.seconds == pytest.approx(4 * 781 * 2.0 + 4 * 10000 * 0.01)


def test_the_assumed_tflops_is_the_labelled_last_resort(tmp_path):
    got = one(tmp_path, config(), tflops=2.0)
    assert (got.basis, got.n_runs) == ("assumed", 0)
    assert got.seconds == pytest.approx(run_flops(config()) / 2e12)


# ---------------------------------------------------------------------- slots and the wall-clock
def test_runs_go_to_the_first_free_slot_in_plan_order():
    assert schedule([3, 1, 2, 2], 2) == 5  # slot 0: 3, 2 ; slot 1: 1, 2, then 2 more → 3+2 or 1+2+2
    assert schedule([5, 1, 1, 1], 2) == 5
    assert schedule([5, 1, 1, 1], 1) == 8
    assert schedule([], 3) == 0


def test_workers_wall_clock_assumes_shared_cores_unless_measured(tmp_path):
    cpu_run(tmp_path, 0, epoch_s=10.0, seed=0)
    cpu_run(tmp_path, 1, epoch_s=10.0, seed=1)
    runs = [(config(seed=s), 0, True) for s in (2, 3, 4)]  # 45 s each alone
    est = project(runs, tmp_path, device=CPU, probing=False, slots=2)
    assert est.hours() == pytest.approx(3 * 45 / 3600)  # device-hours: each run alone
    assert est.share == 2 and est.share_basis.startswith("assumed")
    assert est.wall_s == pytest.approx(schedule([90, 90, 90], 2)) == 180
    assert "2 CPU workers, each run 2× as long as alone (assumed" in est.slots_text()

    # two more runs trained side by side (same hour, same host) at 16 s per epoch: sharing costs 1.6×
    cpu_run(tmp_path, 5, epoch_s=16.0, seed=5)
    cpu_run(tmp_path, 5, epoch_s=16.0, seed=6)
    assert sorted(m.concurrency for m in rates.measured_runs(ResultsDir(tmp_path))) == [1, 1, 2, 2]
    est = project(runs, tmp_path, device=CPU, probing=False, slots=2)
    assert est.runs[0].seconds == pytest.approx(45.0)  # the side-by-side runs normalised to alone
    assert est.share == pytest.approx(1.6)
    assert est.share_basis == "measured from 4 runs trained alone and 2 at a time"
    assert est.wall_s == pytest.approx(2 * 45 * 1.6)


def test_a_run_given_part_of_the_cores_counts_as_sharing_them_even_while_alone(tmp_path, monkeypatch):
    # The last run of a 2-worker sweep trains alone for minutes, but on its slot's 1 thread of 2 cores: no
    # faster than beside another run. Counted as alone, its time would be doubled again for the next sweep.
    monkeypatch.setenv("CMX_CPU_SHARE", "2")  # what the sweep's child environment says (test_executors.py)
    assert provenance(torch.device("cpu"))["cpu_share"] == 2
    cpu_run(tmp_path, 0, epoch_s=20.0, seed=0, provenance={"cpu_share": 2})
    cpu_run(tmp_path, 1, epoch_s=10.0, seed=1)  # from before cpu_share was recorded: its overlaps only
    cpu_run(tmp_path, 2, epoch_s=10.0, seed=9, provenance={"cpu_share": "two"})  # unreadable: as if absent
    by_seed = {m.config.seed: m.concurrency for m in rates.measured_runs(ResultsDir(tmp_path))}
    assert by_seed == {0: 2, 1: 1, 9: 1}
    runs = [(config(seed=s), 0, True) for s in (2, 3)]
    est = project(runs, tmp_path, device=CPU, probing=False, slots=2)
    assert est.runs[0].seconds == pytest.approx(45.0)  # 4 epochs × 10 s alone + 5 s startup
    assert est.share == pytest.approx(2.0) and est.share_basis.startswith("measured from 3 runs")
    assert est.wall_s == pytest.approx(2 * 45.0)  # each on its worker, 2× as long as alone


# ---------------------------------------------------------------------- the command line
def _sweep_file(tmp_path, seeds=(0, 1, 2)):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {h: 32, d: 2, p: 4, k: 5, epochs: 4, device: cpu, data: "
                    f"{tmp_path / 'nodata'}}}\nseeds: [{', '.join(map(str, seeds))}]\n")
    return path


def test_dry_run_says_device_hours_basis_and_wall_clock(tmp_path, capsys):
    results = tmp_path / "results"
    here = rates.cpu_name()  # the dry run projects for this machine's CPU
    cpu_run(results, 0, epoch_s=10.0, seed=0, device_name=here)
    cpu_run(results, 1, epoch_s=12.0, seed=1, device_name=here)
    args = ["sweep", str(_sweep_file(tmp_path, (0, 1, 2, 3))), "--results", str(results), "--dry-run"]
    assert main([*args, "--workers", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "4 runs: 2 done, 2 pending" in out
    # seeds 2 and 3: 44 s + 5 s startup each, alone
    assert (f"estimated CPU-hours: 0.027 for the 2 runs to launch (0.054 if all 4 were trained from the start) "
            f"on {here}; basis: 2 same shape, from 2 finished runs measured here") in out
    assert ("estimated wall-clock: 1m 38s for the 2 runs to launch, 2 CPU workers, each run 2× as long as alone "
            "(assumed: 2 runs at once split the device") in out
    assert "same shape ×2" in out and "TFLOP/s" not in out


def test_launch_line_and_watch_eta_use_the_same_rates(tmp_path):
    results = tmp_path / "results"
    here = rates.cpu_name()
    cpu_run(results, 0, epoch_s=10.0, seed=0, device_name=here)
    cpu_run(results, 1, epoch_s=10.0, seed=1, device_name=here)
    plan = make_plan(_sweep_file(tmp_path, (2, 3)), results)
    record_queue(plan.results, plan.name, plan.runs, slots=1, share_of=1, cluster=None)
    # seed 2 is training: 1 of 4 epochs done at 10 s → 30 s left; seed 3 waits: 4 · 10 s + 5 s startup
    make_run(results, state="running", epoch=1, epoch_s=10.0, seed=2, **{**SHAPE, "device": "cpu"})
    status = ResultsDir(results).status(plan.runs[0].run_id)
    frame = render(results, now=parse_iso(status["updated"]), sweep_eta=functools.partial(sweep_eta_lines, results))
    from rich.console import Console

    console = Console(width=300, record=True, file=open("/dev/null", "w"))
    console.print(frame)
    text = console.export_text()
    line = next(line for line in text.splitlines() if line.startswith("sweep s:"))
    assert re.search(r"sweep s: ETA ≈1m 15s for its 2 runs left on 1 slot\(s\); 1 running from their own epochs, "
                     r"basis: 1 same shape, from 2 finished runs measured here", line), line


@pytest.mark.slow
def test_the_probe_child_times_a_real_step_and_an_evaluation(tiny_config):
    cfg = tiny_config(epochs=1)
    timed = probe.measure([cfg, cfg.replace(k=5)], threads=1)
    assert set(timed) == {rates.shape_key(cfg), rates.shape_key(cfg.replace(k=5))}
    for step_s, eval_s in timed.values():
        assert 0 < step_s < 10 and 0 < eval_s < 0.1


def test_a_stopped_sweep_shows_no_eta(tmp_path):
    results = tmp_path / "results"
    plan = make_plan(_sweep_file(tmp_path, (2, 3)), results)
    record_queue(plan.results, plan.name, plan.runs, slots=1, share_of=1, cluster=None)
    make_run(results, state="interrupted", epoch=1, seed=2, **{**SHAPE, "device": "cpu"})
    assert sweep_eta_lines(results, []) == []


def test_a_from_scratch_figure_resting_on_the_assumption_says_so(tmp_path, capsys):
    """Done runs measured on another CPU: their from-scratch time here is the assumed TFLOP/s, and the dry run
    must say so rather than print a CPU-hour figure that looks measured."""
    results = tmp_path / "results"
    cpu_run(results, 0, epoch_s=10.0, seed=0, device_name="cpu: Some Other CPU")
    args = ["sweep", str(_sweep_file(tmp_path, (0,))), "--results", str(results), "--dry-run", "--no-probe"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 runs: 1 done" in out
    assert "if all 1 were trained from the start, 1 of them assumed at 40 TFLOP/s)" in out
    assert "assumed (not measured):" in out

