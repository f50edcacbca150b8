"""The `cmx` command line: thin Typer wrappers over library functions that tests call directly.

Every user mistake surfaces as one line on stderr and exit code 2 (`cmx: error: ...`), never a traceback;
divergence exits 3, an interrupt 130 (SIGINT) or 143 (SIGTERM) with a resumable checkpoint.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import importlib
import typer

from ..run.config import RunConfig
from ..errors import CmxError, UserError

app = typer.Typer(
    name="cmx", no_args_is_help=True, add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
    help="Reproduce the ConvMixer CIFAR-10 study (Tables 7 and 8): train runs, sweep them, tabulate them.",
)

Opt = typer.Option
ResultsOpt = Annotated[Optional[Path], Opt("--results", help="results directory [default: $CMX_RESULTS or results/]")]


def load_config_file(path: Path) -> dict:
    """A JSON or YAML mapping of RunConfig keys (e.g. a previous run's config.json).

    Read with the sweep files' loader, which (unlike plain PyYAML) takes `1e-05` as a number.
    """
    from ..sweep.plan import load_yaml

    loaded = load_yaml(path, what="--config")
    if not isinstance(loaded, dict):
        raise UserError(f"--config {path} must hold a mapping of settings")
    loaded = dict(loaded)
    loaded.pop("run_id", None), loaded.pop("dataset", None)  # written into config.json, not settings
    return loaded


@app.command()
def train(
    h: Annotated[Optional[int], Opt("--h", help="hidden dimension (width) [default: 256]")] = None,
    d: Annotated[Optional[int], Opt("--d", help="depth [default: 8]")] = None,
    p: Annotated[Optional[int], Opt("--p", help="patch size [default: 1]")] = None,
    k: Annotated[Optional[int], Opt("--k", help="depthwise kernel size [default: 9]")] = None,
    norm: Annotated[Optional[str], Opt(help="batch | layer [default: batch]")] = None,
    act: Annotated[Optional[str], Opt(help="gelu | relu [default: gelu]")] = None,
    residual: Annotated[Optional[str], Opt(help="eq2 | none | both [default: eq2]")] = None,
    scaling: Annotated[Optional[bool], Opt("--scaling/--no-scaling", help="random scaling (RandomResizedCrop 0.75-1)")] = None,
    flip: Annotated[Optional[bool], Opt("--flip/--no-flip", help="random horizontal flip")] = None,
    randaug: Annotated[Optional[bool], Opt("--randaug/--no-randaug", help="RandAugment rand-m9-mstd0.5-inc1")] = None,
    mixup: Annotated[Optional[bool], Opt("--mixup/--no-mixup", help="mixup + cutmix (α 0.5, switch 0.5)")] = None,
    erasing: Annotated[Optional[bool], Opt("--erasing/--no-erasing", help="random erasing p=0.25")] = None,
    clip: Annotated[Optional[bool], Opt("--clip/--no-clip", help="gradient norm clipping at 1.0")] = None,
    lr: Annotated[Optional[float], Opt(help="peak learning rate [default: 0.01]")] = None,
    wd: Annotated[Optional[float], Opt(help="weight decay [default: 0]")] = None,
    epochs: Annotated[Optional[int], Opt(help="epochs [default: 200]")] = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="batch size [default: 64]")] = None,
    seed: Annotated[Optional[int], Opt(help="random seed [default: 0]")] = None,
    eval_every: Annotated[Optional[int], Opt("--eval-every", help="evaluate every N epochs [default: 1]")] = None,
    device: Annotated[Optional[str], Opt(help="auto | cpu | cuda [default: auto]")] = None,
    amp: Annotated[Optional[str], Opt(help="auto | bf16 | fp16 | off [default: auto = bf16/fp16 on CUDA, off on CPU]")] = None,
    channels_last: Annotated[Optional[bool], Opt("--channels-last/--no-channels-last", help="channels_last memory layout [default: on]")] = None,
    compile: Annotated[Optional[bool], Opt("--compile/--no-compile", help="torch.compile the model [default: off]")] = None,
    data: Annotated[Optional[Path], Opt(help="folder with cifar-10-batches-py [default: $CMX_DATA or data/]")] = None,
    tracker: Annotated[Optional[str], Opt(help="none | tensorboard | wandb: watch the run live there [default: none]")] = None,
    wandb_project: Annotated[Optional[str], Opt("--wandb-project", help="W&B project [default: cmx]")] = None,
    config: Annotated[Optional[Path], Opt("--config", help="JSON/YAML file of settings (flags override it)")] = None,
    results: ResultsOpt = None,
    resume: Annotated[str, Opt(help="auto: continue from the run's checkpoint | restart: start over")] = "auto",
    restart: Annotated[bool, Opt("--restart", help="same as --resume restart")] = False,
    force: Annotated[bool, Opt("--force", help="train again even if the run is already done")] = False,
    dry_run: Annotated[bool, Opt("--dry-run", help="print the resolved config, run id and params; train nothing")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="one line per epoch instead of a progress bar")] = False,
):
    """Train one ConvMixer on CIFAR-10 with the paper's recipe (resumes automatically)."""
    flags = {name: value for name, value in locals().items() if name in RunConfig.__dataclass_fields__}
    values = load_config_file(config) if config else {}
    values.update({name: str(v) if isinstance(v, Path) else v for name, v in flags.items() if v is not None})
    cfg = RunConfig.from_dict(values, where=str(config) if config else "flags")
    if resume not in ("auto", "restart"):
        raise UserError(f"--resume must be auto or restart, got {resume!r}")
    if dry_run:
        print_dry_run(cfg)
        return
    from ..run.train import train as run_training  # imports torch's training stack only when training

    result = run_training(cfg, results, resume="restart" if restart else resume, force=force,
                          progress="lines" if quiet else "bar")
    if not result.get("already_done"):
        typer.echo(json.dumps({k: result[k] for k in ("run_id", "test_acc", "best_test_acc", "params", "wall_s")}))


def print_dry_run(cfg: RunConfig) -> None:
    from ..run.data import dataset_fingerprint
    from ..run.model import build_model, count_params, eq4_params

    dataset = dataset_fingerprint(cfg.data)
    for name, value in cfg.to_dict().items():
        typer.echo(f"{name:>14}: {value}")
    typer.echo(f"{'dataset':>14}: {dataset}")
    typer.echo(f"{'run_id':>14}: {cfg.run_id(dataset)}")
    params = count_params(build_model(cfg))
    typer.echo(f"params: {params:,}" + ("" if cfg.norm != "batch" else f" (Eq. 4: {eq4_params(cfg.h, cfg.d, cfg.p, cfg.k):,})"))


@app.command()
def index(
    results: ResultsOpt = None,
    rebuild: Annotated[bool, Opt("--rebuild", help="rewrite runs.csv from the run directories")] = False,
):
    """Show or rebuild results/runs.csv, the index of finished runs (the run directories are the truth)."""
    from ..run.results import ResultsDir

    store = ResultsDir(results)
    if rebuild:
        store.ensure_writable()
        typer.echo(f"rebuilt {store.index_csv}: {store.rebuild_index()} finished runs")
    elif store.index_csv.exists():
        typer.echo(store.index_csv.read_text(), nl=False)
    else:
        raise UserError(f"no index at {store.index_csv}; run `cmx index --rebuild`")


@app.command()
def subset(
    source: Annotated[Path, typer.Argument(help="CIFAR-10 folder to draw from (holding cifar-10-batches-py)")],
    dest: Annotated[Path, typer.Argument(help="folder to write; cifar-10-batches-py is created inside")],
    n_train: Annotated[int, Opt("--train", help="training images to keep")] = 1000,
    n_test: Annotated[int, Opt("--test", help="test images to keep")] = 500,
    seed: Annotated[int, Opt(help="which random subset")] = 0,
):
    """Write a random subset of a CIFAR-10 folder in the official layout, for quick studies on real images."""
    from ..run.data import write_subset

    folder = write_subset(source, dest, n_train, n_test, seed)
    typer.echo(f"wrote {n_train} training and {n_test} test images to {folder}; train on it with --data {dest}")


def _click_exceptions(name: str) -> tuple[type, ...]:
    """Click's exception class `name`, from typer's vendored copy (typer ≥ 0.2x) and/or click itself."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


NO_ARGS, USAGE, EXIT, ABORT = (_click_exceptions(n) for n in ("NoArgsIsHelpError", "UsageError", "Exit", "Abort"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map errors to one stderr line + exit code."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="cmx")
        return code if isinstance(code, int) else 0  # typer.Exit(n) comes back as a return value here
    except CmxError as err:
        typer.echo(f"cmx: error: {err}" if err.exit_code == 2 else f"cmx: {err}", err=True)
        return err.exit_code
    except NO_ARGS as err:
        typer.echo(err.ctx.get_help() if err.ctx else "", err=True)
        return 0
    except USAGE as err:
        ctx = err.ctx
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"cmx: error: {err.format_message()}{hint}", err=True)
        return 2
    except EXIT as err:
        return err.exit_code
    except ABORT + (KeyboardInterrupt,):
        typer.echo("cmx: interrupted", err=True)
        return 130


def run() -> None:
    sys.exit(main())
