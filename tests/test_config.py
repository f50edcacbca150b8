"""One validated config from flags and YAML; run ids that are stable and mean 'same experiment'."""
import pytest

from cmx.config import IDENTITY_FIELDS, RunConfig
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


def test_every_config_field_is_a_train_option_with_the_fields_help():
    """One declaration: RunConfig's fields are `cmx train`'s options (a new field gets its option for free)."""
    import typer.main

    from cmx.cli import app
    from cmx.config import FIELD_NAMES

    train = typer.main.get_command(app).commands["train"]
    options = {param.name: param for param in train.params}
    for name in FIELD_NAMES:
        assert name in options, f"RunConfig.{name} has no `cmx train` option"
        assert options[name].help.startswith(RunConfig.__dataclass_fields__[name].metadata["help"]), name
        assert "--" + name.replace("_", "-") in options[name].opts, name
    bench = {param.name for param in typer.main.get_command(app).commands["bench"].params}
    assert {"h", "d", "p", "k", "batch_size", "device", "amp", "channels_last", "compile"} <= bench


def test_a_train_flag_reaches_the_config_and_the_config_file_is_overridden_by_flags(tmp_path, capsys):
    from cmx.cli.app import main

    saved = tmp_path / "config.json"
    saved.write_text('{"h": 32, "d": 2, "wd": 1e-05, "mixup": false, "run_id": "x", "dataset": "y"}')
    assert main(["train", "--config", str(saved), "--d", "3", "--dry-run", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "h: 32" in out and "d: 3" in out and "wd: 1e-05" in out and "mixup: False" in out
