"""YAML (and JSON) files read for people: line numbers in every error, no duplicate keys, `1e-2` a number.

Used by sweep files (sweep/plan.py) and `cmx train --config` files (config.py): a mistake is reported
as "FILE:LINE: problem" (UserError, exit 2), never as a parser traceback.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class YamlMap(dict):
    """A YAML mapping plus the 1-based line of itself and of each key."""

    line = 0

    def __init__(self):
        super().__init__()
        self.lines: dict[Any, int] = {}


class YamlList(list):
    """A YAML sequence plus the 1-based line of itself and of each item."""

    line = 0

    def __init__(self):
        super().__init__()
        self.lines: list[int] = []


class _YamlError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader building YamlMap/YamlList, refusing duplicate keys, and reading `1e-2` as a float.

    PyYAML implements YAML 1.1, where a float needs a dot (`1e-2` would be the *string* '1e-2'); weight
    decays are written that way, so exponent-only numbers are floats here, as in YAML 1.2 and JSON.
    """


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    out = YamlMap()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, (dict, list)):
            raise _YamlError(line, "a mapping key must be a plain name")
        if key in out:
            raise _YamlError(line, f"duplicate key '{key}' (first on line {out.lines[key]})")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    out = YamlList()
    out.line = node.start_mark.line + 1
    for item in node.value:
        out.append(loader.construct_object(item, deep=True))
        out.lines.append(item.start_mark.line + 1)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d[\d_]*(\.\d*)?|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def load_yaml(path: Path, what: str = "sweep file") -> Any:
    """Parse a YAML (or JSON) file into YamlMap/YamlList values; UserError 'FILE:LINE: problem' on any defect."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 — _Loader is a SafeLoader
    except _YamlError as err:
        raise UserError(f"{path}:{err.line}: {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None


def parse_scalar(text: str) -> Any:
    """A `--set` value, read as a YAML scalar (10 → int, 1e-2 → float, false → bool, ../data → str)."""
    try:
        value = yaml.load(text, Loader=_Loader) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return value
