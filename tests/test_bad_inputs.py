"""Every user mistake: one clear line on stderr, exit code 2, no traceback, nothing written.

Add a case with one line in CASES: (id, setup(tmp_path, tiny_data) -> extra argv, expected text).
"""
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from cmx.cli.app import main
from tiny_cifar import make_tiny_cifar

BASE = ["train", "--h", "8", "--d", "1", "--p", "4", "--k", "3", "--epochs", "1", "--device", "cpu", "-q"]


def flags(*argv):
    return lambda tmp, data: [*argv, "--data", str(data)]


def data_with(mutate):
    """A fresh tiny dataset with one defect applied by `mutate(folder)`."""
    def setup(tmp, data):
        root = make_tiny_cifar(tmp / "bad-data", n_train_per_batch=16, n_test=16)
        mutate(root / "cifar-10-batches-py")
        return ["--data", str(root)]
    return setup


def rewrite(name, change):
    def mutate(folder):
        with open(folder / name, "rb") as fh:
            entry = pickle.load(fh)
        change(entry)
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    return mutate


def truncate(folder):
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


CASES = [
    ("h-zero", flags("--h", "0"), "h must be ≥ 1"),
    ("h-negative", flags("--h", "-4"), "h must be ≥ 1"),
    ("h-not-integer", flags("--h", "2.5"), "'--h'"),
    ("d-zero", flags("--d", "0"), "d must be ≥ 1"),
    ("p-zero", flags("--p", "0"), "p must be ≥ 1"),
    ("k-negative", flags("--k", "-3"), "k must be ≥ 1"),
    ("k-text", flags("--k", "nine"), "'--k'"),
    ("patch-larger-than-image", flags("--p", "33"), "larger than the 32x32 image"),
    ("unknown-norm", flags("--norm", "group"), "norm must be one of batch|layer"),
    ("unknown-act", flags("--act", "tanh"), "act must be one of gelu|relu"),
    ("unknown-residual", flags("--residual", "eq4"), "residual must be one of eq2|none|both"),
    ("lr-zero", flags("--lr", "0"), "lr must be a positive number"),
    ("lr-negative", flags("--lr", "-0.1"), "lr must be a positive number"),
    ("epochs-zero", flags("--epochs", "0"), "epochs must be ≥ 1"),
    ("batch-zero", flags("--batch-size", "0"), "batch_size must be ≥ 1"),
    ("batch-larger-than-data", flags("--batch-size", "100000"), "larger than the"),
    ("wd-negative", flags("--wd", "-1"), "wd must be"),
    ("cuda-without-cuda", flags("--device", "cuda"), "no CUDA device"),
    ("unknown-device", flags("--device", "tpu"), "device must be one of"),
    ("unknown-amp", flags("--amp", "fp8"), "amp must be one of"),
    ("unknown-flag", flags("--width", "3"), "No such option"),
    ("bad-resume", flags("--resume", "maybe"), "--resume must be"),
    ("data-missing-offline", lambda tmp, data: ["--data", str(tmp / "nowhere")], "cannot download CIFAR-10"),
    ("data-empty-offline", lambda tmp, data: ["--data", str((tmp / "empty").mkdir() or tmp / "empty")],
     "cannot download CIFAR-10"),
    ("data-incomplete", data_with(lambda f: (f / "test_batch").unlink()), "incomplete: missing test_batch"),
    ("data-truncated", data_with(truncate), "truncated or corrupt pickle"),
    ("data-corrupt", data_with(lambda f: (f / "data_batch_2").write_bytes(b"\x80\x04garbage" * 100)),
     "truncated or corrupt pickle"),
    ("data-not-a-pickle-dict", data_with(lambda f: (f / "data_batch_1").write_bytes(pickle.dumps([1, 2]))),
     "expected a dict"),
    ("data-unsafe-pickle", data_with(lambda f: (f / "data_batch_1").write_bytes(pickle.dumps({"data": Evil()}))),
     "truncated or corrupt pickle"),
    ("data-wrong-shape", data_with(rewrite("data_batch_1", lambda e: e.update(data=e["data"][:, :100]))),
     "must be uint8 of shape (N, 3072)"),
    ("data-wrong-dtype", data_with(rewrite("data_batch_1", lambda e: e.update(data=e["data"].astype(np.float32)))),
     "must be uint8"),
    ("data-label-count", data_with(rewrite("test_batch", lambda e: e.update(labels=e["labels"][:-1]))),
     "'labels' must be 16 integers"),
    ("data-label-out-of-range", data_with(rewrite("data_batch_4", lambda e: e["labels"].__setitem__(0, 10))),
     "labels must be in 0-9"),
    ("data-negative-label", data_with(rewrite("data_batch_4", lambda e: e["labels"].__setitem__(3, -1))),
     "labels must be in 0-9"),
    ("data-missing-labels", data_with(rewrite("data_batch_5", lambda e: e.pop("labels"))), "missing 'data' or 'labels'"),
    ("results-not-writable", lambda tmp, data: ["--data", str(data), "--results",
                                                str((tmp / "f").write_text("x") and tmp / "f" / "r")], "not writable"),
    ("config-missing", lambda tmp, data: ["--data", str(data), "--config", str(tmp / "no.yaml")], "cannot read --config"),
    ("config-bad-yaml", lambda tmp, data: ["--data", str(data), "--config",
                                           str((tmp / "c.yaml").write_text("h: [1,\n") and tmp / "c.yaml")],
     "not valid YAML"),
    ("config-unknown-key", lambda tmp, data: ["--data", str(data), "--config",
                                              str((tmp / "c.yaml").write_text("width: 3\n") and tmp / "c.yaml")],
     "unknown key 'width'"),
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Make the download fail at once and locally, as it does on a machine without internet."""
    monkeypatch.setattr("cmx.run.data.URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")


@pytest.mark.parametrize("case_id,setup,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case_id, setup, expected, tiny_data, tmp_path, capsys):
    results = tmp_path / "results"
    argv = [*BASE, "--results", str(results), *setup(tmp_path, tiny_data)]
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("cmx: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err
    runs = results / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run directory was created"
    assert not (results / "runs.csv").exists()


def test_the_corpus_is_large():
    assert len(CASES) >= 35
