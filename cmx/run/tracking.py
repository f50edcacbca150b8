"""Trackers: a run mirrored live into the tools researchers already watch, TensorBoard and Weights & Biases.

The run directory stays the truth; a tracker is a view of it. It sees what the progress reporter sees, at
the same moments: the start (with the epoch a resumed run continues from), each epoch's row once that epoch
is safe on disk, and the result once result.json is written. So a tracker never fails a run: every call
goes through `Guarded`, which turns the first exception into one warning line on stderr and switches the
tracker off; the run still ends `done`.

The packages are optional extras (`pip install "cmx[tensorboard]"`, `"cmx[wandb]"`); `make_tracker` checks
for them before training starts (UserError, exit 2, naming the extra).
"""
from __future__ import annotations

import importlib
import netrc
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from ..errors import UserError
from ..config import IDENTITY_FIELDS, RunConfig
from .progress import Reporter
from ..store.rundir import RunDir

TRACKERS = ("none", "tensorboard", "wandb")
# epoch row key → scalar name (TensorBoard tag, W&B key); test_* are absent on epochs without evaluation
SCALARS = {"train_loss": "train/loss", "train_acc": "train/acc", "test_loss": "test/loss", "test_acc": "test/acc",
           "lr": "train/lr", "img_per_s": "train/img_per_s"}
FINAL = ("test_acc", "best_test_acc")  # result.json fields compared across runs (HParams metrics, W&B summary)


def _warn(text: str) -> None:
    print(f"cmx: {text}", file=sys.stderr, flush=True)


class Tracker:
    """The interface, and `--tracker none`: every hook does nothing."""

    name = "none"

    def start(self, run_id: str, config: RunConfig, resumed_from_epoch: int) -> None:
        """A run (re)starts; `resumed_from_epoch` epochs are already done (0 for a fresh run)."""

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """Epoch `epoch` (1-based) finished; `metrics` is its row (SCALARS keys, test_* may be None)."""

    def finish(self, result: dict) -> None:
        """The run is done; `result` is its result.json."""

    def fail(self, error: BaseException) -> None:
        """The run stopped early: failed, diverged or interrupted (a later run of it resumes)."""


NoTracker = Tracker


def require(name: str) -> None:
    """UserError (exit 2) when tracker `name` needs a package that is not installed."""
    if name not in TRACKERS:
        raise UserError(f"tracker must be one of {'|'.join(TRACKERS)}, got {name!r}")
    if name == "none":
        return
    try:
        importlib.import_module(name)
    except ImportError:
        raise UserError(f'--tracker {name} needs the {name} package: pip install "cmx[{name}]"') from None


def make_tracker(config: RunConfig, run: RunDir, warn=_warn) -> Tracker:
    """The tracker `config.tracker` names, guarded; raises UserError first if its package is missing."""
    require(config.tracker)
    if config.tracker == "none":
        return NoTracker()
    kind = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}[config.tracker]
    return Guarded(kind(run, warn), warn)


class Guarded(Tracker):
    """Runs each call of `inner`; the first exception becomes one warning line and turns the tracker off."""

    def __init__(self, inner: Tracker, warn=_warn):
        self.inner, self.warn, self.name = inner, warn, inner.name

    def _call(self, method: str, *args) -> None:
        if self.inner is None:
            return
        try:
            getattr(self.inner, method)(*args)
        except Exception as err:  # any library error: the run must go on
            self.inner = None
            why = (str(err).strip().splitlines() or [""])[0][:200]
            self.warn(f"warning: {self.name} tracker turned off after an error in {method}: "
                      f"{type(err).__name__}: {why} (the run goes on; its directory has everything)")

    def start(self, run_id, config, resumed_from_epoch):
        self._call("start", run_id, config, resumed_from_epoch)

    def log_epoch(self, epoch, metrics):
        self._call("log_epoch", epoch, metrics)

    def finish(self, result):
        self._call("finish", result)

    def fail(self, error):
        self._call("fail", error)


class TrackingReporter(Reporter):
    """A progress reporter that also feeds a tracker: the trainer needs no tracker code in its loop.

    Every hook (and anything else asked of it) goes to the wrapped reporter first.
    """

    def __init__(self, inner: Reporter, tracker: Tracker, config: RunConfig):
        self.inner, self.tracker, self.config = inner, tracker, config

    def __getattr__(self, name):  # hooks this class does not know yet
        return getattr(self.inner, name)

    def message(self, text):
        self.inner.message(text)

    def start(self, run_id, summary, epochs, steps_per_epoch, first_epoch):
        self.inner.start(run_id, summary, epochs, steps_per_epoch, first_epoch)
        self.tracker.start(run_id, self.config, first_epoch)

    def step(self, n=1, **fields):
        self.inner.step(n, **fields)

    def epoch(self, row):
        self.inner.epoch(row)
        self.tracker.log_epoch(row["epoch"], row)

    def stop(self):
        self.inner.stop()


def hparams(run_id: str, config: RunConfig) -> dict:
    """What tells runs of a sweep apart: the identity fields, plus the run id and the sweep's label."""
    values = {name: getattr(config, name) for name in IDENTITY_FIELDS}
    values.update(run_id=run_id, sweep=config.wandb_group, label=config.wandb_tags)
    return values


# ---------------------------------------------------------------------- TensorBoard
class TensorBoardTracker(Tracker):
    """Event files in <run dir>/tb/: per-epoch scalars, and the config + final accuracies for HParams.

    `tensorboard --logdir results/runs` shows every run; the HParams tab compares them in one table.
    A resumed run opens its writer with purge_step = the first epoch it will log, so TensorBoard's reader
    drops whatever an earlier attempt logged from there on: one curve, no step twice.
    """

    name = "tensorboard"

    def __init__(self, run: RunDir, warn=_warn):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 — fails here, not mid-run

        self.log_dir = run.tensorboard_dir
        self.writer = None

    def start(self, run_id, config, resumed_from_epoch):
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=resumed_from_epoch + 1)
        values = hparams(run_id, config)
        kinds = {bool: api_pb2.DATA_TYPE_BOOL, int: api_pb2.DATA_TYPE_FLOAT64, float: api_pb2.DATA_TYPE_FLOAT64,
                 str: api_pb2.DATA_TYPE_STRING}
        metrics = (*(f"hparams/{key}" for key in FINAL), SCALARS["test_acc"], SCALARS["train_loss"])
        self._hparams_summary("experiment", plugin_data_pb2.HParamsPluginData(experiment=api_pb2.Experiment(
            hparam_infos=[api_pb2.HParamInfo(name=k, type=kinds[type(v)]) for k, v in values.items()],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metrics])))
        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for key, value in values.items():
            kind = "bool" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"
            setattr(start.hparams[key], f"{kind}_value", value)
        self._hparams_summary("session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=start))
        self.writer.flush()

    def log_epoch(self, epoch, metrics):
        for key, tag in SCALARS.items():
            if metrics.get(key) is not None:
                self.writer.add_scalar(tag, metrics[key], epoch)
        self.writer.flush()  # a run killed with SIGKILL keeps every epoch it logged

    def finish(self, result):
        for key in FINAL:
            self.writer.add_scalar(f"hparams/{key}", result[key], result["epochs"])
        self._end("STATUS_SUCCESS")

    def fail(self, error):
        # No session end: TensorBoard keeps the first record of a tag, and a stopped run can still resume
        # (`--rerun-failed` or the same command) and end in success.
        self._end(None)

    def _end(self, status: str | None) -> None:
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        if self.writer is None:
            return
        if status is not None:
            end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status), end_time_secs=time.time())
            self._hparams_summary("session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=end))
        self.writer.close()
        self.writer = None

    def _hparams_summary(self, kind: str, data) -> None:
        """One HParams plugin record (`_hparams_/<kind>`), built from the plugin's protos (no TensorFlow)."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import metadata

        value = Summary.Value(tag=f"_hparams_/{kind}", metadata=metadata.create_summary_metadata(data))
        value.tensor.CopyFrom(metadata.NULL_TENSOR)
        self.writer.file_writer.add_summary(Summary(value=[value]))


# ---------------------------------------------------------------------- Weights & Biases
class WandbTracker(Tracker):
    """One W&B run per cmx run: id = the run id (a resume continues it), the config as W&B config, the
    sweep's name as group and its table labels as tags. Offline (files under <run dir>/wandb/, upload with
    `wandb sync`) when there is no API key or no network, said in one line; WANDB_MODE and WANDB_DIR win."""

    name = "wandb"

    def __init__(self, run: RunDir, warn=_warn):
        import wandb  # noqa: F401 — fails here, not mid-run

        self.run_dir, self.warn, self.run = run.path, warn, None

    def start(self, run_id, config, resumed_from_epoch):
        import wandb

        mode, why = wandb_mode()
        folder = os.environ.get("WANDB_DIR") or str(self.run_dir)
        Path(folder).mkdir(parents=True, exist_ok=True)
        tags = [t.strip()[:64] for t in config.wandb_tags.split(",") if t.strip()]  # W&B: ≤ 64 characters
        self.run = wandb.init(
            project=config.wandb_project, id=run_id, resume="allow", name=tags[0] if tags else config.summary(),
            group=config.wandb_group or None, tags=tags, config={**config.to_dict(), "run_id": run_id},
            dir=folder, mode=mode, settings=wandb.Settings(console="off", silent=True))
        if why:
            self.warn(f"note: W&B offline ({why}): run {run_id} logged under {folder}/wandb; "
                      f"upload later with `wandb sync {folder}/wandb/offline-run-*`")

    def log_epoch(self, epoch, metrics):
        values = {tag: metrics[key] for key, tag in SCALARS.items() if metrics.get(key) is not None}
        self.run.log({**values, "epoch": epoch}, step=epoch)

    def finish(self, result):
        for key in (*FINAL, "best_epoch", "params", "wall_s", "img_per_s"):
            self.run.summary[key] = result.get(key)
        self.run.finish(exit_code=0)

    def fail(self, error):
        if self.run is not None:
            self.run.finish(exit_code=getattr(error, "exit_code", 1))


def wandb_mode() -> tuple[str, str | None]:
    """(mode, why offline): WANDB_MODE if set; offline without an API key or when W&B cannot be reached."""
    if os.environ.get("WANDB_MODE"):
        mode = os.environ["WANDB_MODE"]
        return mode, "WANDB_MODE=offline" if mode == "offline" else None
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.hostname or "api.wandb.ai"
    if not os.environ.get("WANDB_API_KEY"):
        try:
            has_key = netrc.netrc().authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            has_key = False
        if not has_key:
            return "offline", "no API key: set WANDB_API_KEY or run `wandb login`"
    try:
        socket.create_connection((host, url.port or (443 if url.scheme != "http" else 80)), timeout=3).close()
    except OSError:
        return "offline", f"{host} cannot be reached"
    return "online", None
