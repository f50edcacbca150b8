"""One validated config from flags and YAML; run ids that are stable and mean 'same experiment'."""
import pytest

from cmx.run.config import IDENTITY_FIELDS, RunConfig
from cmx.errors import UserError


def test_run_id_is_stable_and_depends_only_on_identity():
    a = RunConfig(data="x")
    assert a.run_id("cifar10") == RunConfig(data="y", device="cpu", amp="off", compile=True,
                                            eval_every=5).run_id("cifar10")
    assert a.run_id("cifar10") != a.run_id("cifar10-abcdef12")  # a subset never shares a run
    for name in IDENTITY_FIELDS:
        value = getattr(a, name)
        other = (not value) if isinstance(value, bool) else \
            {"norm": "layer", "act": "relu", "residual": "none"}.get(name, value + 1 if not isinstance(value, str) else value)
        assert a.replace(**{name: other}).run_id("cifar10") != a.run_id("cifar10"), name


def test_from_dict_accepts_dashes_and_rejects_unknown_keys():
    cfg = RunConfig.from_dict({"batch-size": 128, "no_such": 1} if False else {"batch-size": 128, "h": 64})
    assert cfg.batch_size == 128 and cfg.h == 64
    with pytest.raises(UserError, match="unknown key 'width'"):
        RunConfig.from_dict({"width": 3}, where="sweeps/x.yaml")


@pytest.mark.parametrize("changes,message", [
    ({"h": 0}, "h must be ≥ 1"), ({"d": -1}, "d must be ≥ 1"), ({"k": 2.5}, "k must be an integer"),
    ({"p": 33}, "larger than the 32x32"), ({"lr": 0}, "lr must be a positive"), ({"lr": -1.0}, "lr must"),
    ({"epochs": 0}, "epochs must be ≥ 1"), ({"batch_size": 0}, "batch_size must be ≥ 1"),
    ({"norm": "group"}, "norm must be one of"), ({"mixup": "yes"}, "mixup must be true or false"),
    ({"wd": -0.1}, "wd must be"), ({"h": True}, "h must be an integer"),
])
def test_validation_messages(changes, message):
    with pytest.raises(UserError, match=message):
        RunConfig(data="x", **changes)


def test_summary_names_non_default_settings():
    assert RunConfig(data="x").summary() == "256/8 p1 k9 seed=0"
    s = RunConfig(data="x", norm="layer", mixup=False, wd=0.01, seed=2).summary()
    assert "norm=layer" in s and "-mixup" in s and "wd=0.01" in s and "seed=2" in s
