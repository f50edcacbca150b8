"""CPU settings chosen by measurement (cmx/run/tune.py): probe once per machine and shape, then the cache."""
from __future__ import annotations

import json

import pytest
import torch

from cmx.cli.app import main
from cmx.run import tune
from cmx.config import RunConfig
from cmx.run.depthwise import PATHS, paths_for
from cmx.run.placement import Placement

CPU = torch.device("cpu")


@pytest.fixture
def probing(monkeypatch, tmp_path):
    monkeypatch.setenv("CMX_CPU_TUNE", "on")
    monkeypatch.setenv("CMX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cpu_settings.json"


def tiny(**changes) -> RunConfig:
    return RunConfig(**{"h": 8, "d": 1, "p": 4, "k": 3, "batch_size": 16, "device": "cpu", "data": "-", **changes})


def test_the_probe_picks_a_candidate_caches_it_and_is_not_run_again(probing, monkeypatch):
    said = []
    chosen = tune.place(tiny(), say=said.append)
    assert chosen.chosen_by == "probe" and chosen.device == CPU
    assert chosen.precision in ("off", "bf16") and chosen.conv_path in PATHS
    entry = json.loads(probing.read_text())[tune.cache_key(tiny())]
    assert set(entry["ms_per_step"]) == {f"{lay} {prec}" for lay, prec in tune.candidates(tiny())}
    assert entry["conv_path"] == chosen.conv_path
    assert any(line.startswith("cpu settings:") for line in said)

    monkeypatch.setattr(tune, "probe_in_child", lambda *a: pytest.fail("probed again despite the cache"))
    again = tune.place(tiny(seed=5, epochs=3), say=said.append)  # same shape
    assert (again.precision, again.channels_last, again.conv_path, again.chosen_by) == \
        (chosen.precision, chosen.channels_last, chosen.conv_path, "cached probe")


@pytest.mark.parametrize("paths_timed", [None, ["stock", "wgrad", "padded", "padded-wgrad"]])
def test_a_cache_entry_from_before_a_path_existed_is_probed_again(probing, monkeypatch, paths_timed):
    """A probe written before the strips paths (no "paths_timed", or one without them) does not answer for a
    run whose probe would time them: the machine may be faster by one of them."""
    config = tiny(k=5)
    tune.place(config, say=lambda _: None)
    entries = json.loads(probing.read_text())
    entry = entries[tune.cache_key(config)]
    assert "strips" in entry["paths_timed"]
    if paths_timed is None:
        del entry["paths_timed"]
    else:
        entry["paths_timed"] = paths_timed
    probing.write_text(json.dumps(entries))
    probed = []
    real = tune.probe_in_child
    monkeypatch.setattr(tune, "probe_in_child", lambda *a: probed.append(1) or real(*a))
    assert tune.place(config, say=lambda _: None).chosen_by == "probe" and probed


def test_flags_win_and_a_new_shape_is_probed_on_its_own(probing, monkeypatch):
    monkeypatch.setattr(tune, "probe_in_child", lambda *a: pytest.fail("flags were given: nothing to probe"))
    assert tune.place(tiny(channels_last=False, amp="off", conv_path="padded")) == \
        Placement(CPU, "off", False, "padded", "flags")
    monkeypatch.setattr(tune, "cpu_has_native_bf16", lambda: False)  # amp auto leaves one candidate: fp32
    assert tune.place(tiny(channels_last=True, conv_path="wgrad")) == Placement(CPU, "off", True, "wgrad", "flags")
    assert tune.cache_key(tiny(h=16)) != tune.cache_key(tiny())
    assert not probing.exists()


def test_bench_tune_prints_every_candidate_and_the_choice(probing, capsys):
    assert main(["bench", "--tune", "--h", "8", "--d", "1", "--p", "4", "--k", "3", "--batch-size", "16",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("ms/step") == len(tune.candidates(tiny())) and "← chosen" in out
    assert probing.exists()


def test_a_resumed_run_keeps_the_settings_it_started_with(probing, tiny_config, tmp_path, monkeypatch):
    """Interrupted under one choice, resumed after the cache says otherwise: the run keeps its first choice
    (so it stays what an uninterrupted run would have been)."""
    import signal

    from cmx.errors import Interrupted
    from cmx.run import train as train_module
    from cmx.run.stop import StopRequest

    cfg = tiny_config(epochs=2)
    monkeypatch.setattr(tune, "probe_in_child",  # NCHW fp32 with the padded path measures fastest at first
                        lambda config, options: ({o: 1.0 if o == ("nchw", "off") else 2.0 for o in options},
                                                 {o: "padded" for o in options}))
    stop, real = StopRequest(), train_module.lr_at
    monkeypatch.setattr(train_module, "lr_at", lambda *a: (stop.request(signal.SIGINT), real(*a))[1])
    with pytest.raises(Interrupted):
        train_module.train(cfg, tmp_path / "r", stop=stop)
    monkeypatch.setattr(train_module, "lr_at", real)
    entries = json.loads(probing.read_text())
    for entry in entries.values():  # the machine's choice changes meanwhile
        entry.update(layout="channels_last", precision="off", conv_path="stock")
    probing.write_text(json.dumps(entries))
    result = train_module.train(cfg, tmp_path / "r")
    assert result["provenance"]["engine"] == "cpu, fp32, NCHW, conv padded (flags)"  # kept from the checkpoint


def test_the_conv_probe_times_every_path_and_returns_the_fastest(monkeypatch):
    """fastest_conv_path really times the paths: a path made slow is not chosen."""
    import time

    from cmx.run import depthwise

    real = depthwise._DepthwiseConvCPU.forward
    slow = depthwise.PATHS["padded"]

    def forward(ctx, x, weight, bias, how):
        if how == slow:
            time.sleep(0.05)
        return real(ctx, x, weight, bias, how)

    monkeypatch.setattr(depthwise._DepthwiseConvCPU, "forward", staticmethod(forward))
    best, timings = tune.fastest_conv_path(tiny(k=5), "channels_last", "off")
    assert set(timings) == set(paths_for(5)) and best != "padded" and best == min(timings, key=timings.get)
    assert not any(path.startswith("odd-") for path in timings)  # for odd k they are their base paths


def test_for_an_even_kernel_the_probe_also_times_it_as_the_odd_one_a_size_larger():
    _, timings = tune.fastest_conv_path(tiny(k=4), "nchw", "off")
    assert set(timings) == set(PATHS) and {"odd-stock", "odd-wgrad"} <= set(timings)


def test_without_the_probe_the_default_path_follows_the_measured_rule(monkeypatch):
    monkeypatch.setenv("CMX_CPU_TUNE", "off")
    assert tune.place(tiny(k=3)).conv_path == "stock"
    assert tune.place(tiny(k=9)).conv_path == "wgrad"
    assert tune.place(tiny(k=15, channels_last=False)).conv_path == "padded-wgrad"
    assert tune.place(tiny(k=9, conv_path="stock")).conv_path == "stock"
