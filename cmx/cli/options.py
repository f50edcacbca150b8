"""Command-line options derived from `RunConfig`'s fields: the run configuration is declared once.

Each field of RunConfig (name, type, default, help) becomes a Typer option: `--h`, `--batch-size`,
`--mixup/--no-mixup`, ... A command decorated with `@config_options(...)` receives the flags the user
actually gave as one dict, `settings` (unset flags are left out, so a `--config` file or the field's
default applies). Adding a field to RunConfig adds its option to `cmx train`, its key to sweep files and
`--config` files; tests/test_config.py checks that they agree.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ..config import CHOICES, FIELD_NAMES, RunConfig

_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "bool | None": bool}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_help(name: str) -> str:
    f = RunConfig.__dataclass_fields__[name]
    text = f.metadata["help"]
    if name in CHOICES and not any(choice in text for choice in CHOICES[name][1:]):
        text += f" ({' | '.join(CHOICES[name])})"
    default = None if f.default is MISSING else f.default
    if default not in (None, "") and "default" not in text:
        text += f" [default: {str(default).lower() if isinstance(default, bool) else default}]"
    return text


def config_parameter(name: str) -> inspect.Parameter:
    """The Typer option of one RunConfig field, default None (= not given)."""
    f = RunConfig.__dataclass_fields__[name]
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    py = Path if name == "data" else _TYPES[kind]
    decls = [f"{flag(name)}/--no-{name.replace('_', '-')}"] if py is bool else [flag(name)]
    option = typer.Option(*decls, help=option_help(name), show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[py], option])


def config_options(*names: str) -> Callable:
    """Decorator: give the command one option per named RunConfig field (default: all of them); the
    command gets `settings` = {field: value} for the ones given on the command line."""
    names = names or FIELD_NAMES
    unknown = set(names) - set(FIELD_NAMES)
    if unknown:
        raise ValueError(f"not RunConfig fields: {sorted(unknown)}")

    def wrap(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "settings"]
        params = [config_parameter(n) for n in names] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(fn)
        def command(**kwargs):
            settings = {}
            for name in names:
                value = kwargs.pop(name, None)
                if value is not None:
                    settings[name] = str(value) if isinstance(value, Path) else value
            return fn(settings=settings, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap
