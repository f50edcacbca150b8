"""Shared fixtures: tiny generated CIFAR folders and tiny run configs that train in about a second."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# For the whole session (module-scoped fixtures too, and every subprocess): fixed CPU settings (channels_last,
# fp32) instead of a timing-dependent probe, and no writes to the developer's ~/.cache.
os.environ["CMX_CPU_TUNE"] = "off"
os.environ["CMX_ESTIMATE_PROBE"] = "off"  # sweep estimates: no timed probe unless a test asks for one
os.environ["CMX_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmx-test-cache-")
torch.set_num_threads(1)  # tiny models: threads only add overhead (and make a loaded machine crawl)
sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (tiny_cifar, fabricate)

from tiny_cifar import make_tiny_cifar  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """5 x 64 train / 64 test images in the official layout."""
    return make_tiny_cifar(tmp_path_factory.mktemp("tiny-cifar"), n_train_per_batch=64, n_test=64, seed=0)


@pytest.fixture
def tiny_config(tiny_data):
    """A factory of very small, fast RunConfigs on the tiny data (CPU)."""
    from cmx.config import RunConfig

    def make(**changes):
        base = dict(h=8, d=1, p=4, k=3, epochs=2, batch_size=32, device="cpu", data=str(tiny_data))
        return RunConfig(**{**base, **changes})

    return make


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Never read or write the developer's real results/ or data/ from a test."""
    monkeypatch.setenv("CMX_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("CMX_DATA", raising=False)
    monkeypatch.setenv("CMX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CMX_CPU_TUNE", "off")  # fixed CPU settings (channels_last, fp32): no timing-dependent choice
    monkeypatch.setenv("CMX_ESTIMATE_PROBE", "off")  # a sweep's estimate: no timed probe (tests patch one in)


@pytest.fixture(scope="module")
def cli():
    """The result commands (table, findings, plot, report, runs) through typer's CliRunner:
    `cli("table", "--results", root)` → a click Result."""
    import typer
    from typer.testing import CliRunner

    from cmx.cli.analysis import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def cmx_subprocess_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pytest_collection_modifyitems(config, items):
    """`cuda` tests skip with the reason where torch sees no CUDA device, so CI on CPU stays green;
    `make gpu-check` runs them first on a GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False here "
                                   "(run `make gpu-check` on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
