"""`cmx bench` runs on CPU with a tiny config and reports every documented number (no timings asserted)."""
import json
import subprocess
import sys

import pytest

from cmx.cli.app import main
from conftest import REPO, cmx_subprocess_env

TINY = ["--h", "8", "--d", "1", "--p", "4", "--k", "3", "--batch-size", "16", "--device", "cpu",
        "--steps", "2", "--warmup", "1", "--eval-batch-size", "16"]
KEYS = ("aug_img_per_s", "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "projected_run_hours")


def bench_json(*extra: str, cwd=REPO) -> dict:
    # a fresh process, so the CPU peak-memory phase starts from a small heap
    done = subprocess.run([sys.executable, "-m", "cmx", "bench", *TINY, "--json", *extra], capture_output=True,
                          text=True, cwd=cwd, env=cmx_subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_json_reports_the_documented_numbers():
    result = bench_json()
    assert result["device"] == "cpu"
    for key in KEYS:
        assert result[key] > 0, key
    assert result["peak_mem_method"]
    assert result["projected_sweep_runs"] > 0 and result["projected_sweep_hours"] > 0  # sweeps/paper.yaml
    assert "projection" in result["projection_method"]
    assert not any(key.startswith("reference_") for key in result)


def test_bench_vs_reference_reports_reference_numbers_and_ratios(tiny_data):
    result = bench_json("--vs-reference", "--data", str(tiny_data))
    for key in ("aug", "train", "eval"):
        assert result[f"reference_{key}_img_per_s"] > 0
        assert result[f"{key}_ratio"] > 0
    assert result["aug_images"] == "real"
    assert len(result["aug_ratio_per_pair"]) == 3 and all(r > 0 for r in result["aug_ratio_per_pair"])
    assert "--ra-n 2 --ra-m 9 --jitter 0" in result["reference_aug_ops"]  # the reference runs cmx's ops


def test_bench_vs_reference_needs_no_file_outside_the_package(tmp_path):
    """From a folder with nothing in it and no --data: the in-package reference (cmx.bench.reference) on
    random images written to a temporary folder; the sweep projection still finds the checkout's sweeps/."""
    result = bench_json("--vs-reference", cwd=tmp_path)
    for key in ("aug", "train", "eval"):
        assert result[f"reference_{key}_img_per_s"] > 0
    assert result["aug_images"] == "random"
    assert result["projected_sweep_file"] == str(REPO / "sweeps" / "paper.yaml")
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the working directory


def test_the_reference_runs_as_a_module_in_its_three_modes(tiny_data, tmp_path):
    """`python -m cmx.bench.reference`, as benchmarks/end_to_end.py and `cmx bench` start it, from a folder
    outside the repository: each mode prints its JSON line."""
    def run(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "cmx.bench.reference", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=cmx_subprocess_env(), timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    small = ["--hdim", "8", "--depth", "1", "--psize", "4", "--conv-ks", "3", "--batch-size", "32", "--workers", "0"]
    assert run("--mode", "step", *small, "--batches", "2")["img_per_s"] > 0
    assert run("--mode", "aug", "--data", str(tiny_data), *small, "--batches", "3")["img_per_s"] > 0
    final = run("--data", str(tiny_data), *small, "--epochs", "1")
    assert 0 <= final["test_acc"] <= 1 and final["train_images"] == 5 * 64


def test_bench_table_for_humans(capsys):
    assert main(["bench", *TINY]) == 0
    out = capsys.readouterr().out
    assert "train step" in out and "projection" in out and "peak memory" in out


@pytest.mark.parametrize("args, message", [(["--steps", "0"], "--steps"),
                                           (["--sweep", "no/such.yaml"], "no/such.yaml")])
def test_bench_bad_input_is_one_line(capsys, args, message):
    assert main(["bench", *TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cmx: error:") and message in err and len(err.splitlines()) == 1
