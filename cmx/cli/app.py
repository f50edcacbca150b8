"""The `cmx` command line: thin Typer wrappers over library functions that tests call directly.

Every user mistake surfaces as one line on stderr and exit code 2 (`cmx: error: ...`), never a traceback;
divergence exits 3, a run that another live process is training 4 (RunBusy), an interrupt 130 (SIGINT) or
143 (SIGTERM) with a resumable checkpoint.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import importlib

import typer

from ..errors import CmxError, UserError
from ..config import RunConfig
from .options import config_options

app = typer.Typer(
    name="cmx", no_args_is_help=True, add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
    help="Reproduce the ConvMixer CIFAR-10 study (Tables 7 and 8): train runs, sweep them, tabulate them.",
)

Opt = typer.Option
ResultsOpt = Annotated[Optional[Path], Opt("--results", help="results directory [default: $CMX_RESULTS or results/]")]


@app.command()
@config_options()
def train(
    settings: dict,
    config: Annotated[Optional[Path], Opt("--config", help="JSON/YAML file of settings, e.g. a run's config.json (flags override it)")] = None,
    results: ResultsOpt = None,
    resume: Annotated[str, Opt(help="auto: continue from the run's checkpoint | restart: start over")] = "auto",
    restart: Annotated[bool, Opt("--restart", help="same as --resume restart")] = False,
    force: Annotated[bool, Opt("--force", help="train again even if the run is already done")] = False,
    dry_run: Annotated[bool, Opt("--dry-run", help="print the resolved config, run id and params; train nothing")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="one line per epoch instead of a progress bar")] = False,
    wait: Annotated[bool, Opt("--wait", help="if another process is training this run, wait for it to stop, then report the result or take over")] = False,
):
    """Train one ConvMixer on CIFAR-10 with the paper's recipe (resumes automatically)."""
    cfg = RunConfig.from_file(config, overrides=settings) if config else RunConfig.from_dict(settings, where="flags")
    if resume not in ("auto", "restart"):
        raise UserError(f"--resume must be auto or restart, got {resume!r}")
    if dry_run:
        print_dry_run(cfg)
        return
    from ..run.stop import stop_on_signals
    from ..run.train import train as run_training  # imports torch's training stack only when training

    from ..store.claim import wait_for_turn

    with stop_on_signals() as stop:  # SIGINT/SIGTERM: checkpoint at the next step, exit 130/143
        attempt = lambda: run_training(cfg, results, resume="restart" if restart else resume,  # noqa: E731
                                       force=force, progress="lines" if quiet else "bar", stop=stop)
        result = wait_for_turn(attempt, say=lambda line: typer.echo(line, err=True)) if wait else attempt()
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
    from ..store.resultsdir import ResultsDir

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
