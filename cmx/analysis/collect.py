"""Read a results directory into one pandas DataFrame, one row per run directory.

`cmx table`, `cmx plot`, `cmx report` and `cmx runs` all start here, so they agree on what a run is and
which runs are unreadable. Run directories are written while we read them (and may be half-copied from
another machine), so every file may be missing or corrupt: such a run is skipped with a warning
(`SkippedRun`, a UserWarning) instead of crashing the whole report. The CLI prints those warnings to
stderr, one line each.

Roles (cmx.roles: the paper rows a scaled-down run stands for, recorded by `cmx sweep` in roles.json) come
along as two extra columns, `roles` and `role_sweeps` (tuples; empty for a run without a role), outside
COLUMNS so `cmx runs` prints what it always did; so do EXTRA_COLUMNS, what `cmx findings` needs of a
finished run beyond its accuracy: `weights_sha256` (the hash of its final weights) and `curve_sha256` (of
its epochs.csv without timings), which tell that two arms learned the same model, and `converge_epochs`,
the epoch at which its test accuracy first reached CONVERGE_FRACTION of its final accuracy; and for the
report, `train_images` and `test_images` (the data sizes, for the test set's binomial error).
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pandas as pd

from .. import paper
from ..roles import read_roles, roles_path
from ..config import IDENTITY_FIELDS, RunConfig
from ..errors import UserError
from ..store import claim
from ..store.resultsdir import STATES, ResultsDir
from ..store.rundir import RunDir
from ..files import read_json

PROVENANCE_FIELDS = ("git_commit", "git_dirty", "source_sha256", "torch", "cuda", "device_name", "host")  # as provenance.py writes
COLUMNS = (
    ("run_id", "dataset", "state") + IDENTITY_FIELDS
    + ("epoch", "test_acc", "best_test_acc", "best_epoch", "params", "wall_s", "img_per_s", "finished",
       "device", "summary") + PROVENANCE_FIELDS + ("holder",)  # holder: who trains a running run
)
EXTRA_COLUMNS = ("weights_sha256", "curve_sha256", "converge_epochs", "train_images", "test_images")
CONVERGE_FRACTION = 0.9  # "converges": reaches 90% of the final test accuracy
CHANCE = 10.0  # test accuracy (%) of an untrained 10-class model: the curve's start at epoch 0
# Names of GPUs as torch.cuda.get_device_name() prints them, for results whose provenance lacks a device
# type (the config's device may just say "auto").
_GPU_NAME = re.compile(r"nvidia|tesla|geforce|quadro|rtx|gtx|\b[avhlt]\d{2,3}\b|radeon|instinct|cuda|gpu", re.I)


class SkippedRun(UserWarning):
    """A run directory that could not be read; the message names it and says why."""


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """Every readable run under `root`/runs as a DataFrame with the columns in COLUMNS (may be empty).

    Unreadable run dirs are skipped with a SkippedRun warning each and listed in
    `frame.attrs["skipped"]` as "path: why". Raises UserError when `root` does not exist (most likely a
    typo in --results).
    """
    rd = ResultsDir(root)
    if not rd.root.is_dir():
        raise UserError(f"results dir {rd.root} does not exist")
    rows, skipped = [], []
    for run_id in rd.run_ids():
        row = _load_one(rd, run_id)
        if isinstance(row, str):
            skipped.append(f"{rd.run_dir(run_id)}: {row}")
            warnings.warn(f"skipping {skipped[-1]}", SkippedRun, stacklevel=2)
        else:
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS) + list(EXTRA_COLUMNS))
    for name in ("test_acc", "best_test_acc", "wall_s", "img_per_s", "params", "best_epoch", "converge_epochs"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    frame.attrs["skipped"] = skipped
    return _with_roles(frame, rd.root)


def _with_roles(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Add `roles` (paper row ids each run stands for) and `role_sweeps` (the sweeps that said so)."""
    roles = read_roles(root)
    if roles is None:
        warnings.warn(f"ignoring {roles_path(root)}: unreadable (runs are matched by their own configuration)",
                      SkippedRun, stacklevel=3)
        roles = {}
    unknown = sorted({e["row"] for entries in roles.values() for e in entries} - set(paper.BY_ID))
    if unknown:
        warnings.warn(f"{roles_path(root)}: ignoring roles for rows the paper does not have: {', '.join(unknown)}",
                      SkippedRun, stacklevel=3)
    rows, sweeps = [], []
    for run_id in frame["run_id"]:
        entries = [e for e in roles.get(run_id, []) if e["row"] in paper.BY_ID]
        rows.append(tuple(dict.fromkeys(e["row"] for e in entries)))
        sweeps.append(tuple(dict.fromkeys(str(e.get("sweep", "")) for e in entries)))
    return frame.assign(roles=pd.Series(rows, index=frame.index, dtype=object),
                        role_sweeps=pd.Series(sweeps, index=frame.index, dtype=object))


def _load_one(rd: ResultsDir, run_id: str) -> dict | str:
    """One run dir as a flat dict, or the reason (a str) why it cannot be trusted."""
    run = rd.run(run_id)
    run_dir = run.path
    result = _read_if_present(run.result_json)
    if result is False or (result is not None and not _finite(result.get("test_acc"))):
        return "result.json is unreadable or has no test_acc"
    status = _read_if_present(run.status_json)
    if status is False and result is None:
        return "status.json is unreadable"
    config = _read_if_present(run.config_json)
    if config is False:
        return "config.json is unreadable"
    if config is None:  # e.g. copied without it: result.json carries the config too
        config = dict((result or {}).get("config") or {})
        if not config:
            return "no config.json"
    missing = [name for name in IDENTITY_FIELDS if name not in config]
    if missing:
        return f"config.json lacks {', '.join(missing)}"
    try:
        cfg = RunConfig.from_dict({k: v for k, v in config.items() if k not in ("run_id", "dataset")},
                                  where=str(run.config_json))
    except (UserError, TypeError) as err:
        return f"invalid config ({err})"

    if result is not None:
        state = "done"
    else:
        state = run.state()
        if state == "done":  # result.json appeared while we were reading: read it once more
            result = run.result()
            if result is None or not _finite(result.get("test_acc")):
                return "result.json is being written"
    status = status or {}
    result = result or {}
    prov = result.get("provenance") or {}

    row = {name: getattr(cfg, name) for name in IDENTITY_FIELDS}
    row.update(
        run_id=run_id,
        dataset=str(config.get("dataset") or result.get("dataset") or "unknown"),
        state=state,
        epoch=cfg.epochs if state == "done" else _epochs_done(run_dir, status),
        test_acc=result.get("test_acc"),
        best_test_acc=result.get("best_test_acc"),
        best_epoch=result.get("best_epoch"),
        params=result.get("params"),
        wall_s=result.get("wall_s"),
        img_per_s=result.get("img_per_s"),
        finished=result.get("finished"),
        device=device_type(cfg.device, prov) if result else None,
        summary=cfg.summary(),
        **{name: prov.get(name) for name in PROVENANCE_FIELDS},
        holder=_holder(run) if state == "running" else None,
        weights_sha256=result.get("weights_sha256"),
        train_images=(result.get("images") or {}).get("train"), test_images=(result.get("images") or {}).get("test"),
        **(_curve_facts(run_dir, result.get("test_acc")) if state == "done" else {}),
    )
    return row


def _curve_facts(run_dir: Path, final: float) -> dict:
    """curve_sha256 and converge_epochs of a finished run (None each when epochs.csv is unusable)."""
    import hashlib

    curve = load_curve(run_dir, quiet=True)
    if curve is None or curve.empty:
        return {}
    learned = curve[[c for c in curve.columns if c != "seconds"]]  # timings differ between identical runs
    digest = hashlib.sha256(learned.to_csv(index=False, lineterminator="\n").encode()).hexdigest()
    return {"curve_sha256": digest, "converge_epochs": epochs_to_fraction(curve, final, CONVERGE_FRACTION)}


def epochs_to_fraction(curve: pd.DataFrame, final: float, fraction: float) -> float | None:
    """The (fractional) epoch at which test accuracy first reaches `fraction` × `final`.

    Linear between evaluated epochs, starting from chance at epoch 0, so two runs that both get there
    within epoch 2 still differ (1.3 vs 1.8) instead of tying at 2: with 8-epoch runs whole epochs are
    too coarse to compare convergence speed. None when the curve has no evaluations."""
    points = curve.dropna(subset=["test_acc"])
    if points.empty or not _finite(final):
        return None
    target = fraction * final
    prev_epoch, prev_acc = 0.0, CHANCE
    for epoch, acc in zip(points["epoch"].astype(float), points["test_acc"].astype(float)):
        if acc >= target:
            if prev_acc >= target:  # a final accuracy near chance: "reached" from the start
                return prev_epoch
            return prev_epoch + (epoch - prev_epoch) * (target - prev_acc) / (acc - prev_acc)
        prev_epoch, prev_acc = epoch, acc
    return float(points["epoch"].iloc[-1])


def _holder(run: RunDir) -> str | None:
    """'pid 123 on host-a since <time>, epoch 3/10, heartbeat 12s ago' for the run's live claim."""
    held = run.holder()
    return claim.describe(held) if held else None


def _read_if_present(path: Path) -> dict | None | bool:
    """The parsed JSON object; None when the file is absent; False when it exists but is unreadable."""
    if not path.exists():
        return None
    value = read_json(path)
    return False if value is None else value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _epochs_done(run_dir: Path, status: dict) -> int:
    """Completed epochs of an unfinished run: status.json says so; epochs.csv is the fallback."""
    epoch = status.get("epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        return epoch
    curve = load_curve(run_dir, quiet=True)
    return int(curve["epoch"].max()) if curve is not None and len(curve) else 0


def device_type(config_device: str, provenance: dict) -> str:
    """'gpu' or 'cpu' for compute-hour totals: provenance's device type (cuda/cpu/mps), else the
    config's explicit device, else judged by the device name (older results; the config may say auto)."""
    kind = provenance.get("device") or (config_device if config_device in ("cpu", "cuda") else None)
    if kind:
        return "cpu" if kind == "cpu" else "gpu"
    name = str(provenance.get("device_name") or "")
    return "gpu" if _GPU_NAME.search(name) else "cpu"


def load_curve(run_dir: str | Path, quiet: bool = False) -> pd.DataFrame | None:
    """epochs.csv as numbers (rows that do not parse, e.g. a half-written last line, are dropped).

    None when the file is missing or unusable; a warning says why unless `quiet`.
    """
    path = RunDir(run_dir).epochs_csv
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        if not quiet:
            warnings.warn(f"ignoring {path}: {err}", SkippedRun, stacklevel=2)
        return None
    if not {"epoch", "test_acc"} <= set(frame.columns):
        if not quiet:
            warnings.warn(f"ignoring {path}: no epoch/test_acc columns", SkippedRun, stacklevel=2)
        return None
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame.dropna(subset=["epoch"]).astype({"epoch": int}).sort_values("epoch").reset_index(drop=True)


# ---------------------------------------------------------------------- choosing runs (cmx runs, curves)
def choose_dataset(runs: pd.DataFrame, wanted: str | None) -> str:
    """The dataset to tabulate: `wanted` if it has runs, else 'cifar10' if present, else the most common."""
    counts = runs["dataset"].value_counts()
    if wanted is not None:
        if wanted not in counts.index:
            known = ", ".join(f"{name} ({n} runs)" for name, n in counts.items()) or "none"
            raise UserError(f"no runs for dataset '{wanted}' (datasets present: {known})")
        return wanted
    if counts.empty or "cifar10" in counts.index:
        return "cifar10"
    most = counts.max()
    return sorted(name for name, n in counts.items() if n == most)[0]


def filter_runs(runs: pd.DataFrame, status: list[str] | None = None, where: list[str] | None = None,
                dataset: str | None = None) -> pd.DataFrame:
    """Rows whose state is one of `status`, dataset equals `dataset`, and every `key=value` in `where`.

    Values are parsed by the column's kind (true/false, numbers compared with a relative tolerance so
    `wd=1e-2` matches 0.01). Unknown keys, states or unparsable values raise UserError.
    """
    keep = pd.Series(True, index=runs.index)
    for word in status or []:
        if word not in STATES:
            raise UserError(f"--status must be one of {'|'.join(STATES)}, got '{word}'")
    if status:
        keep &= runs["state"].isin(status)
    if dataset is not None:
        keep &= runs["dataset"] == dataset
    for clause in where or []:
        key, sep, text = clause.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in runs.columns:
            raise UserError(f"--where expects key=value with key one of {', '.join(COLUMNS)}; got '{clause}'")
        keep &= _equals(runs[key], key, text.strip())
    return runs[keep]


def _equals(column: pd.Series, key: str, text: str) -> pd.Series:
    default = getattr(RunConfig(data="-"), key, None)
    if isinstance(default, bool) or key == "git_dirty":
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise UserError(f"--where {key}=... expects true or false, got '{text}'")
        return column == (lowered in ("true", "1", "yes", "on"))
    if isinstance(default, (int, float)) or key in ("epoch", "test_acc", "best_test_acc", "best_epoch",
                                                    "params", "wall_s", "img_per_s"):
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--where {key}=... expects a number, got '{text}'") from None
        numbers = pd.to_numeric(column, errors="coerce").astype(float)
        return (numbers - value).abs() <= 1e-9 * max(1.0, abs(value))
    return column.astype(str) == text


def resolve_run_ids(runs: pd.DataFrame, wanted: list[str]) -> list[str]:
    """Full run ids for ids or unique prefixes (as `git` accepts short hashes); UserError otherwise."""
    out = []
    for prefix in wanted:
        hits = [run_id for run_id in runs["run_id"] if run_id.startswith(prefix)]
        if len(hits) != 1:
            why = "matches no run" if not hits else f"is ambiguous ({', '.join(hits[:4])})"
            raise UserError(f"run id '{prefix}' {why}")
        out.append(hits[0])
    return out
