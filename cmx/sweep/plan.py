"""Sweep files: YAML → a validated, expanded, de-duplicated plan of runs, each with its run_id and state.

Why a plan: the paper's CIFAR study is 43 runs of 200 epochs. Everything an executor needs is decided here,
before anything launches: each run's RunConfig, its run_id (the results directory name), and what is
already done, so a re-launch only trains what is missing. Mistakes fail here with one line naming the file,
the line and the key (exit 2), never an hour into a sweep.

A sweep file (sweeps/*.yaml):

    name: kernel                  # optional; default: the file name without .yaml
    base: {epochs: 200, lr: 0.01} # settings of every run: `cmx train` option names, `-` or `_`
    runs:                         # optional variants: partial configs, each with an optional table label
      - {label: "- RandAug", randaug: false}
    grid: {k: [3, 5, 7]}          # optional cartesian product: key → list of values
    seeds: [0]                    # optional; every config is trained once per seed
    include: [table7.yaml]        # optional other sweep files (paths relative to this one)
    paper: {h: 256, d: 8, p: 1}   # optional: the runs are scaled stand-ins for these paper rows (below)

Expansion: every run × every grid point × every seed, layered base < run < grid point < seed < `--set`
(`--seeds` replaces the files' seed lists). Included files expand first, with their own base; the
including file's `base` and `seeds` override theirs (like `--set`/`--seeds` for that subtree), and it
has runs of its own only if it gives `runs` or `grid`. Runs with the same run_id, within a file or across
included files, are planned once and remember every sweep and label that asked for them. Relative `data`
paths are relative to the working directory, as with `cmx train --data`.

Roles (`paper:`): a scaled-down study says which paper row each run stands for by the config changes
that turn the run into that row (64/4 p2 k5 + {h: 256, d: 8, p: 1} = the paper's 256/8 p1 k5; every other
setting carries over). Given at file level (every run of that file; included files keep their own) or in
a `runs` entry (overriding the file's key by key). It is not part of the run's config or run id. The
stand-in config is resolved here to the paper rows it matches, as `cmx table` matches (cmx.paper), so a
`paper:` that names no row of the paper fails at plan time; `record_roles` writes them to roles.json.
"""
from __future__ import annotations

import difflib
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paper as paper_rows
from ..roles import Role, record_roles as _record
from ..config import FIELD_NAMES, RunConfig
from ..errors import UserError
from ..yamlfile import YamlList, YamlMap, load_yaml, parse_scalar
from ..store.resultsdir import ResultsDir

TOP_KEYS = ("name", "base", "runs", "grid", "seeds", "include", "paper")
# Long names people write for the paper's one-letter settings (for "did you mean" hints only).
ALIASES = {"width": "h", "hidden": "h", "dim": "h", "depth": "d", "patch": "p", "patch_size": "p", "kernel": "k",
           "kernel_size": "k", "weight_decay": "wd", "learning_rate": "lr", "batch": "batch_size"}


# ---------------------------------------------------------------------- validation of one setting
def check_setting(key: Any, value: Any, where: str) -> str:
    """Validate one `key: value` against RunConfig; returns the field name. `where` = 'FILE:LINE' or '--set'."""
    name = str(key).replace("-", "_")
    if name not in FIELD_NAMES:
        close = difflib.get_close_matches(name, (*FIELD_NAMES, *ALIASES), n=1)
        hint = (f" (did you mean '{ALIASES.get(close[0], close[0])}'?)" if close
                else f" (known: {', '.join(FIELD_NAMES)})")
        raise UserError(f"{where}: unknown key '{key}'{hint}")
    if isinstance(value, (dict, list)):
        kind = "list" if isinstance(value, list) else "mapping"
        raise UserError(f"{where}: '{key}' must be a single value, got a {kind}")
    try:
        RunConfig(**{name: value})  # every RunConfig check is per field, so one field at a time is enough
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    return name


# ---------------------------------------------------------------------- expansion
@dataclass
class Variant:
    """One expanded config before de-duplication: settings with where each came from."""

    sweep: str
    label: str
    settings: dict[str, tuple[Any, str]]  # field name → (value, 'FILE:LINE' or '--set')
    paper: dict[str, tuple[Any, str]] | None = None  # the `paper:` changes (None: no role)
    paper_where: str = ""  # 'FILE:LINE' of the `paper:` key that applies

    @property
    def paper_changes(self) -> dict[str, Any]:
        """The `paper:` settings alone (without where each was written)."""
        return {name: value for name, (value, _) in (self.paper or {}).items()}


def _paper(block: Any, path: Path, line: int) -> dict[str, tuple[Any, str]]:
    """A `paper:` mapping → {field: (value, where)}; only MATCH_FIELDS, since only they pick a row."""
    if not isinstance(block, YamlMap):
        raise UserError(f"{_at(path, line)}: paper must be a mapping of the settings that turn a run into the "
                        f"paper row it stands for, e.g. paper: {{h: 256, d: 8, p: 1}}; got {block!r}")
    out = {}
    for key, value in block.items():
        where = _at(path, block.lines[key])
        name = check_setting(key, value, where)
        if name not in paper_rows.MATCH_FIELDS:
            raise UserError(f"{where}: paper: '{key}' does not pick a paper row (give only "
                            f"{', '.join(paper_rows.MATCH_FIELDS)}); a run's budget is shown beside the row as it is")
        out[name] = (value, where)
    return out


def _at(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _settings(block: Any, path: Path, what: str, allow_label: bool = False) -> tuple[dict, str]:
    """A mapping of settings (plus an optional label) → ({field: (value, where)}, label)."""
    if block is None:
        return {}, ""
    if not isinstance(block, YamlMap):
        line = getattr(block, "line", 0)
        raise UserError(f"{_at(path, line) if line else path}: {what} must be a mapping of settings, "
                        f"got {type(block).__name__}")
    out, label = {}, ""
    for key, value in block.items():
        where = _at(path, block.lines[key])
        if key == "paper":
            if allow_label:  # a runs entry: its `paper:` is read by _paper
                continue
            raise UserError(f"{where}: 'paper' goes at the top level of the file or in a runs entry, not in {what}")
        if allow_label and key == "label":
            if isinstance(value, (dict, list)) or value is None:
                raise UserError(f"{where}: label must be text, got {value!r}")
            label = str(value)
            continue
        out[check_setting(key, value, where)] = (value, where)
    return out, label


def _grid(block: Any, path: Path, line: int) -> list[dict]:
    """grid: {key: [v1, v2]} → the cartesian product as a list of {field: (value, where)}."""
    if block is None:
        return [{}]
    if not isinstance(block, YamlMap):
        raise UserError(f"{_at(path, line)}: grid must be a mapping of key → list of values, "
                        f"got {type(block).__name__}")
    axes = []
    for key, values in block.items():
        where = _at(path, block.lines[key])
        if not isinstance(values, YamlList):
            raise UserError(f"{where}: grid '{key}' must be a list of values, got {values!r}")
        if not values:
            raise UserError(f"{where}: grid '{key}' is an empty list")
        axis = []
        for value, item_line in zip(values, values.lines):
            name = check_setting(key, value, _at(path, item_line))
            axis.append((name, value, _at(path, item_line)))
        axes.append(axis)
    return [{name: (value, where) for name, value, where in point} for point in itertools.product(*axes)]


def _seeds(value: Any, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in items):
        raise UserError(f"{where}: seeds must be a list of integers ≥ 0, got {value!r}")
    return list(items)


Seeds = tuple[list[int], str]  # seed list and where it was given ('--seeds' or 'FILE:LINE')


def expand_file(path: Path, seeds: Seeds | None = None, overrides: dict | None = None,
                _stack: tuple[Path, ...] = ()) -> list[Variant]:
    """All variants of one sweep file (includes first), in file order.

    `seeds` replaces the file's seed list and `overrides` go on top of every run's settings: that is how
    `--seeds`, and an including file's `seeds` and `base`, reach the runs of the files it includes.
    """
    path, overrides = Path(path), overrides or {}
    if path.resolve() in _stack:
        raise UserError(f"{path}: include cycle ({' → '.join(p.name for p in (*_stack, path.resolve()))})")
    doc = load_yaml(path)
    if doc is None:
        raise UserError(f"{path}: the sweep file is empty")
    if not isinstance(doc, YamlMap):
        raise UserError(f"{path}:1: a sweep file must be a mapping with base/runs/grid/seeds/include")
    for key in doc:
        if key not in TOP_KEYS:
            hint = "; run settings go under 'base'" if str(key).replace("-", "_") in FIELD_NAMES else ""
            raise UserError(f"{_at(path, doc.lines[key])}: unknown top-level key '{key}' "
                            f"(expected one of: {', '.join(TOP_KEYS)}){hint}")
    line = lambda key: doc.lines.get(key, 1)  # noqa: E731
    file_paper = _paper(doc["paper"], path, line("paper")) if "paper" in doc else None
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise UserError(f"{_at(path, line('name'))}: name must be text, got {name!r}")
    base, _ = _settings(doc.get("base"), path, "base")
    if seeds is None and "seeds" in doc:
        seeds = (_seeds(doc["seeds"], _at(path, line("seeds"))), _at(path, line("seeds")))

    variants: list[Variant] = []
    includes = doc.get("include") or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise UserError(f"{_at(path, line('include'))}: include must be a list of sweep file paths")
    for i, inc in enumerate(includes):
        target = path.parent / inc
        if not target.is_file():
            where = _at(path, includes.lines[i] if isinstance(includes, YamlList) else line("include"))
            raise UserError(f"{where}: included sweep file {target} does not exist")
        variants += expand_file(target, seeds, {**base, **overrides}, (*_stack, path.resolve()))

    if not ("runs" in doc or "grid" in doc or ("base" in doc and not includes)):
        if not includes:
            raise UserError(f"{path}: defines no runs (give base, runs, grid or include)")
        return variants  # only includes (its base and seeds applied to them)
    runs = doc.get("runs")
    if runs is None:
        runs = [None]
    elif not isinstance(runs, YamlList) or not runs:
        raise UserError(f"{_at(path, line('runs'))}: runs must be a non-empty list of partial configs")
    points = _grid(doc.get("grid"), path, line("grid"))
    seed_list, seed_where = seeds if seeds is not None else ([None], "")
    for run in runs:
        run_settings, label = _settings(run, path, "each entry of runs", allow_label=True)
        role, role_where = file_paper, _at(path, line("paper"))
        if isinstance(run, YamlMap) and "paper" in run:
            role_where = _at(path, run.lines["paper"])
            role = {**(file_paper or {}), **_paper(run["paper"], path, run.lines["paper"])}
        for point in points:
            for seed in seed_list:
                settings = {**base, **run_settings, **point}
                if seed is not None:
                    settings["seed"] = (seed, seed_where)
                variants.append(Variant(name, label, {**settings, **overrides}, role, role_where))
    return variants


def parse_overrides(items: list[str]) -> dict[str, tuple[Any, str]]:
    """`--set key=value` strings → {field: (value, '--set key=value')}; values are YAML scalars."""
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=10")
        value = parse_scalar(text)
        where = f"--set {item}"
        out[check_setting(key.strip(), value, where)] = (value, where)
    return out


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` → [0, 1, 2]."""
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2") from None
    return _seeds(seeds, "--seeds")


# ---------------------------------------------------------------------- the plan
@dataclass
class PlannedRun:
    """One distinct run: what to train, where its results live, and what state they are in."""

    config: RunConfig
    run_id: str
    dataset: str
    sweeps: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    state: str = "pending"
    roles: list[Role] = field(default_factory=list)  # the paper rows it stands for (sweep `paper:` keys)

    @property
    def label(self) -> str:
        return " / ".join(self.labels)

    @property
    def title(self) -> str:
        """The table label if the sweep gave one, else the config summary ('256/8 p1 k9 seed=0')."""
        return self.label or self.config.summary()


@dataclass
class Plan:
    name: str
    path: Path
    runs: list[PlannedRun]
    n_variants: int  # configs before de-duplication
    results: ResultsDir

    def refresh(self) -> "Plan":
        for run in self.runs:
            run.state = self.results.state(run.run_id)
        return self

    def counts(self) -> Counter:
        return Counter(run.state for run in self.runs)


def record_roles(plan: Plan) -> Path | None:
    """Merge the plan's roles into <results>/roles.json (see cmx.roles); None when nothing changed."""
    return _record(plan.results.root, ((r.run_id, r.sweeps, r.roles) for r in plan.runs))


def _stand_in_rows(config: RunConfig, variant: Variant, sets: dict) -> list[paper_rows.PaperRow]:
    """The paper rows that `config` with the variant's `paper:` changes matches; UserError if none."""
    changes = variant.paper_changes
    stand_in = config.replace(**changes)
    rows = paper_rows.rows_matching(stand_in)
    if not rows:
        text = ", ".join(f"{k}: {v}" for k, v in changes.items())
        who = variant.label or _no_seed(config)
        forced = [w for name, (_, w) in sets.items() if name in paper_rows.MATCH_FIELDS]
        also = f" (with {', '.join(forced)})" if forced else ""
        raise UserError(f"{variant.paper_where}: paper {{{text}}} turns run '{who}' into {_no_seed(stand_in)}{also}, "
                        f"which matches no row of the paper")
    return rows


def _no_seed(config: RunConfig) -> str:
    return re.sub(r" seed=\d+$", "", config.summary())


def make_plan(path: str | Path, results: str | Path | None = None, overrides: list[str] | None = None,
              seeds: list[int] | None = None, *, typed: dict[str, tuple[Any, str]] | None = None) -> Plan:
    """Load, validate and expand a sweep file, de-duplicate by run_id, and read each run's state.

    overrides: `--set KEY=VALUE` texts (YAML scalars); typed: {field: (value, where)} from typed options
    (e.g. `--tracker`, where = "--tracker"), checked as they are, never turned back into text."""
    from ..run.data import dataset_fingerprint  # reads file sizes only

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist")
    sets = parse_overrides(overrides or [])
    sets.update({check_setting(key, value, where): (value, where) for key, (value, where) in (typed or {}).items()})
    variants = expand_file(path, None if seeds is None else (seeds, "--seeds"))
    fingerprints: dict[str, str] = {}
    by_id: dict[str, PlannedRun] = {}
    for variant in variants:
        settings = {**variant.settings, **sets}
        values = {name: value for name, (value, _) in settings.items()}
        try:
            config = RunConfig.from_dict(values)
        except UserError as err:  # every field was checked alone; this only catches combinations
            where = ", ".join(sorted({w for _, w in settings.values()}))
            raise UserError(f"{path}: run '{variant.label or variant.sweep}' ({where}): {err}") from None
        if config.data not in fingerprints:
            fingerprints[config.data] = dataset_fingerprint(config.data)
        dataset = fingerprints[config.data]
        run_id = config.run_id(dataset)
        run = by_id.setdefault(run_id, PlannedRun(config, run_id, dataset))
        if variant.sweep not in run.sweeps:
            run.sweeps.append(variant.sweep)
        if variant.label and variant.label not in run.labels:
            run.labels.append(variant.label)
        if variant.paper is not None:
            for row in _stand_in_rows(config, variant, sets):
                role = Role(row.row_id, variant.sweep, variant.label, variant.paper_where, variant.paper_changes)
                if role not in run.roles:
                    run.roles.append(role)
    name = load_yaml(path).get("name", path.stem)
    for run in by_id.values():  # what W&B groups and tags the run by, unless the file says otherwise
        tags = ",".join(label.replace(",", ";") for label in run.labels)
        run.config = run.config.replace(wandb_group=run.config.wandb_group or str(name),
                                        wandb_tags=run.config.wandb_tags or tags)
    return Plan(str(name), path, list(by_id.values()), len(variants), ResultsDir(results)).refresh()
