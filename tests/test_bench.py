"""`cmx bench` runs on CPU with a tiny config and reports every documented number (no timings asserted)."""
import json
import subprocess
import sys

import pytest

from cmx.bench.speed import DEFAULT_REFERENCE
from cmx.cli.app import main
from conftest import REPO, cmx_subprocess_env

TINY = ["--h", "8", "--d", "1", "--p", "4", "--k", "3", "--batch-size", "16", "--device", "cpu",
        "--steps", "2", "--warmup", "1", "--eval-batch-size", "16"]
KEYS = ("aug_img_per_s", "train_img_per_s", "eval_img_per_s", "peak_mem_mb", "projected_run_hours")


def bench_json(*extra: str) -> dict:
    # a fresh process, so the CPU peak-memory phase starts from a small heap
    done = subprocess.run([sys.executable, "-m", "cmx", "bench", *TINY, "--json", *extra], capture_output=True,
                          text=True, cwd=REPO, env=cmx_subprocess_env(), timeout=120)
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


@pytest.mark.skipif(not DEFAULT_REFERENCE.is_file(), reason="benchmarks/reference_pipeline.py is not beside this cmx (not an editable install)")
def test_bench_vs_reference_reports_reference_numbers_and_ratios(tiny_data):
    result = bench_json("--vs-reference", "--data", str(tiny_data))
    for key in ("aug", "train", "eval"):
        assert result[f"reference_{key}_img_per_s"] > 0
        assert result[f"{key}_ratio"] > 0
    assert result["aug_images"] == "real"
    assert len(result["aug_ratio_per_pair"]) == 3 and all(r > 0 for r in result["aug_ratio_per_pair"])
    assert "--ra-n 2 --ra-m 9 --jitter 0" in result["reference_aug_ops"]  # the reference runs cmx's ops


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
