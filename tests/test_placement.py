"""A run's placement (cmx/run/placement.py, resolved by cmx/run/tune.py's `place`) and its seeding rule
(cmx/run/seeding.py): one spelling of precision, resolved once, kept on resume, the CUDA rules checked on a
CPU, and a model built from its seed without touching the process-wide RNG."""
from __future__ import annotations

import json

import pytest
import torch

from cmx import cache
from cmx.config import CHOICES, RunConfig
from cmx.run import placement as placement_module, tune
from cmx.run.engine import Engine
from cmx.run.depthwise import BASE_PATHS
from cmx.run.model import build_model
from cmx.run.placement import AMP_DTYPES, Placement, keep_settings
from cmx.run.seeding import init_weights, run_generators

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def tiny(**changes) -> RunConfig:
    return RunConfig(**{"h": 8, "d": 1, "p": 4, "k": 5, "batch_size": 16, "device": "cpu", "data": "-", **changes})


@pytest.fixture
def probing(monkeypatch):
    """The CPU probe switched on, but failing if it is ever run: a test that reaches it has resolved badly."""
    monkeypatch.setenv("CMX_CPU_TUNE", "on")
    monkeypatch.setattr(tune, "probe_in_child", lambda *a: pytest.fail("the probe ran"))


# ---------------------------------------------------------------------- one spelling
def test_precision_is_spelt_as_the_amp_flag_and_the_dtype_only_derived():
    assert set(AMP_DTYPES) == set(CHOICES["amp"]) - {"auto"}
    with pytest.raises(ValueError):
        Placement(CPU, "fp32")  # the probe's old label is not a precision any more
    fp16 = Placement(CUDA, "fp16")
    assert (fp16.amp_dtype, fp16.scaler_enabled, fp16.memory_format) == (torch.float16, True, torch.channels_last)
    assert (Placement(CPU, "off", False).amp_dtype, Placement(CPU, "off", False).memory_format) == \
        (None, torch.contiguous_format)
    assert not Placement(CUDA, "bf16").scaler_enabled and Placement(CPU, "bf16").autocast().fast_dtype == torch.bfloat16
    assert tune.candidates(tiny(amp="off", channels_last=False)) == [("nchw", "off")]


def test_describe_keeps_the_text_result_json_has_always_stored():
    assert Placement(CPU, "off", False, "wgrad", "flags").describe() == "cpu, fp32, NCHW, conv wgrad (flags)"
    assert Placement(CPU, "bf16", True, "stock", "cached probe").describe() == \
        "cpu, bfloat16, channels_last, conv stock (cached probe)"
    assert Placement(CUDA, "fp16", True, "stock", "default").describe() == "cuda, float16, channels_last (default)"


def test_settings_go_to_a_checkpoint_and_back_unchanged(probing):
    for placed in (Placement(CPU, "off", False, "padded", "probe"), Placement(CPU, "bf16", True, "wgrad", "probe")):
        kept = placed.settings()
        assert kept == {"device": "cpu", "channels_last": placed.channels_last, "amp": placed.precision,
                        "conv_path": placed.conv_path}
        again = tune.place(tiny(), kept)
        assert (again.precision, again.channels_last, again.conv_path) == \
            (placed.precision, placed.channels_last, placed.conv_path)


# ---------------------------------------------------------------------- resolved once
def test_the_engine_resolves_nothing_itself(monkeypatch):
    def fail(*args, **kw):
        raise AssertionError("Engine.build resolved a setting")

    for name in ("resolve_device", "resolve_precision", "from_flags", "keep_settings", "native_bf16"):
        monkeypatch.setattr(placement_module, name, fail)
    for name in ("place", "choose_on_cpu", "candidates"):
        monkeypatch.setattr(tune, name, fail)
    placed = Placement(CPU, "off", False, "padded", "probe")
    engine = Engine.build(tiny(), placed, say=fail)
    assert engine.placement is placed and engine.describe() == "cpu, fp32, NCHW, conv padded (probe)"
    assert engine.model.embed[0].weight.is_contiguous() and not engine.scaler.is_enabled()


def test_a_training_run_resolves_its_placement_once(tiny_config, tmp_path, monkeypatch):
    from cmx.run import train as train_module

    calls = []
    real = train_module.place
    monkeypatch.setattr(train_module, "place", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    result = train_module.train(tiny_config(epochs=1), tmp_path)
    assert len(calls) == 1 and result["provenance"]["engine"] == "cpu, fp32, channels_last, conv stock (default)"


def test_flags_beat_kept_settings_and_kept_settings_beat_the_probe(probing):
    kept = {"device": "cpu", "channels_last": False, "amp": "off", "conv_path": "padded"}
    assert tune.place(tiny(), kept) == Placement(CPU, "off", False, "padded", "flags")
    assert tune.place(tiny(channels_last=True, conv_path="wgrad"), kept) == \
        Placement(CPU, "off", True, "wgrad", "flags")
    old = {"device": "cpu", "channels_last": True, "amp": "off"}  # a checkpoint from before the conv paths
    assert keep_settings(tiny(k=5), old, CPU).conv_path == "wgrad"
    assert keep_settings(tiny(k=3), old, CPU).conv_path == "stock"
    cuda_kept = {**kept, "device": "cuda"}  # another kind of device: nothing is kept
    assert keep_settings(tiny(), cuda_kept, CPU) == tiny()


def test_an_old_cache_entry_spelt_fp32_is_read_as_off(monkeypatch, tmp_path):
    monkeypatch.setenv("CMX_CPU_TUNE", "on")
    monkeypatch.setattr(tune, "probe_in_child", lambda *a: pytest.fail("the cached entry was not read"))
    monkeypatch.setattr(tune, "cpu_has_native_bf16", lambda: True)
    config = tiny(conv_path="padded")  # a path such an entry timed (today's auto would time newer ones too)
    cache.write_cache(tune.CACHE, {tune.cache_key(config): {  # as written before conv_paths and "off"
        "layout": "nchw", "precision": "fp32", "conv_path": "padded",
        "ms_per_step": {"nchw fp32": 1.0, "channels_last fp32": 2.0, "nchw bf16": 3.0, "channels_last bf16": 4.0}}})
    assert tune.place(config, say=lambda msg: None) == Placement(CPU, "off", False, "padded", "cached probe")
    tune.write_cache(config, {("channels_last", "bf16"): 0.5}, {("channels_last", "bf16"): "wgrad"})
    written = json.loads(tune.cache_path().read_text())[tune.cache_key(config)]
    assert written["precision"] == "bf16" and written["ms_per_step"] == {"channels_last bf16": 500.0}
    assert written["conv_paths"] == {"channels_last bf16": "wgrad"}


def test_a_probe_of_fewer_candidates_does_not_answer_for_more(monkeypatch, tmp_path):
    """An `--amp off` probe's winner says nothing of bf16: an `--amp auto` run probes again. A probe of more
    candidates answers for fewer, with the fastest of those asked for and its own conv path."""
    monkeypatch.setenv("CMX_CPU_TUNE", "on")
    monkeypatch.setenv("CMX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tune, "cpu_has_native_bf16", lambda: True)
    probed = []

    def fake_probe(config, options):  # bf16 fastest, then channels_last fp32; a different path for each
        probed.append(list(options))
        ms = {("channels_last", "bf16"): 1.0, ("nchw", "bf16"): 1.5, ("channels_last", "off"): 2.0,
              ("nchw", "off"): 3.0}
        return {o: ms[o] for o in options}, {o: "padded" if o[1] == "off" else "wgrad" for o in options}

    monkeypatch.setattr(tune, "probe_in_child", fake_probe)
    say = lambda msg: None  # noqa: E731
    assert tune.place(tiny(amp="off"), say=say) == Placement(CPU, "off", True, "padded", "probe")
    assert tune.place(tiny(amp="off"), say=say).chosen_by == "cached probe"
    assert tune.place(tiny(), say=say) == Placement(CPU, "bf16", True, "wgrad", "probe")  # probed again
    assert len(probed) == 2 and len(probed[1]) == 4
    assert tune.place(tiny(amp="off"), say=say) == Placement(CPU, "off", True, "padded", "cached probe")
    assert tune.place(tiny(amp="off", channels_last=False), say=say) == \
        Placement(CPU, "off", False, "padded", "cached probe")
    assert len(probed) == 2


# ---------------------------------------------------------------------- the CUDA rules, on a CPU
@pytest.mark.parametrize("native,precision", [(True, "bf16"), (False, "fp16")])
def test_on_cuda_auto_is_bf16_where_native_else_fp16_and_channels_last(monkeypatch, probing, native, precision):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    placed = tune.place(tiny(device="cuda", conv_path="wgrad"), device=CUDA)  # no probe on CUDA, no CPU path
    assert placed == Placement(CUDA, precision, True, "stock", "default")
    assert placed.scaler_enabled == (precision == "fp16")
    assert tune.place(tiny(device="cuda", amp="off", channels_last=False, conv_path="stock"), device=CUDA) == \
        Placement(CUDA, "off", False, "stock", "flags")


def test_device_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tune.place(tiny(device="auto")).device == CPU


# ---------------------------------------------------------------------- the seeding rule
def test_a_model_gets_the_weights_of_its_seed_and_leaves_the_global_rng_as_found():
    config = tiny(seed=7)
    torch.manual_seed(config.seed)
    before_rule = build_model(config).state_dict()  # the rule as it was written: reseed, then build

    torch.manual_seed(123)
    state = torch.get_rng_state()
    engine = Engine.build(config, Placement(CPU, "off", False, "stock"), say=print)
    assert torch.equal(torch.get_rng_state(), state)
    built = engine.model.state_dict()
    assert all(torch.equal(before_rule[name], built[name].contiguous()) for name in before_rule)
    assert all(torch.equal(a, b) for a, b in zip(init_weights(7, lambda: build_model(config)).parameters(),
                                                   engine.model.parameters()))
    assert torch.equal(torch.get_rng_state(), state)


def test_the_run_generators_are_seed_and_seed_plus_one():
    gens = run_generators(4, CPU)
    assert torch.equal(torch.randperm(50, generator=gens["shuffle"]),
                       torch.randperm(50, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(torch.rand(5, generator=gens["augment"]), torch.rand(5, generator=torch.Generator().manual_seed(5)))


def test_an_even_kernel_probed_before_the_odd_paths_existed_is_probed_again(monkeypatch, tmp_path):
    """A cache entry says which conv paths its probe timed; one that did not time the odd- paths does not
    answer for an even kernel, where they are candidates, but still does for an odd one, where they are not.
    (An entry with no list at all timed the first four paths only: test_tune.)"""
    monkeypatch.setenv("CMX_CPU_TUNE", "on")
    monkeypatch.setenv("CMX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tune, "cpu_has_native_bf16", lambda: False)
    probed = []
    monkeypatch.setattr(tune, "probe_in_child", lambda config, options: probed.append(config.k) or (
        {o: 1.0 for o in options}, {o: "odd-wgrad" if config.k % 2 == 0 else "wgrad" for o in options}))
    old = {"layout": "nchw", "precision": "off", "conv_path": "padded",
           "ms_per_step": {"nchw off": 1.0, "channels_last off": 2.0}, "paths_timed": list(BASE_PATHS)}
    cache.write_cache(tune.CACHE, {tune.cache_key(tiny(k=k)): old for k in (5, 8)})
    say = lambda msg: None  # noqa: E731
    assert tune.place(tiny(k=5), say=say) == Placement(CPU, "off", False, "padded", "cached probe")
    assert tune.place(tiny(k=8), say=say).conv_path == "odd-wgrad" and probed == [8]
    assert tune.place(tiny(k=8), say=say).chosen_by == "cached probe" and probed == [8]
