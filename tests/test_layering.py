"""The layering of cmx is a test: every import of every cmx module (function-level ones included) is read from
its source and checked against the rules its subpackage's `__init__` docstring states ("May import: ..."),
the bottom layer (named in cmx/__init__.py) imports only itself, no module imports another in a circle, and
no function grows past the size a reader can hold (80 lines, 6 parameters).

The rules live in the code (each `__init__.py`), ARCHITECTURE.md quotes them, and this test holds both to
what the imports really are. It reads source only: nothing is imported, so a rule broken by a lazy import
inside a function is caught too.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cmx"
MAX_LINES, MAX_PARAMS = 80, 6
RULE = re.compile(r"^\s*May import:\s*(.+?)\s*$", re.M)
BOTTOM = re.compile(r"^\s*Bottom layer:\s*(.+?)\s*$", re.M)


# ---------------------------------------------------------------------- reading the source
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the cmx module it imports (a submodule when `from pkg import submodule`)
    line: int


def imports_of(name: str, path: Path, modules: set[str]) -> list[Import]:
    """Every cmx import in the module's source, wherever it is (module level, in functions, in `if`s)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found += [Import(name, t, node.lineno) for t in targets if t == "cmx" or t.startswith("cmx.")]
    return found


def graph() -> tuple[dict[str, Path], list[Import]]:
    modules = sources()
    edges = [imp for name, path in modules.items() for imp in imports_of(name, path, set(modules))]
    return modules, edges


# ---------------------------------------------------------------------- the rules
def bottom_layer(modules: dict[str, Path]) -> set[str]:
    found = BOTTOM.findall(docstring(modules["cmx"]))
    assert found, "cmx/__init__.py must name the bottom layer in a line 'Bottom layer: cmx.a, cmx.b, ...'"
    return {n.strip() for n in found[0].split(",")}


def rules(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{subpackage: what its modules may import besides themselves}, from each `__init__` docstring."""
    bottom = bottom_layer(modules)
    out = {}
    for name, path in modules.items():
        if path.name != "__init__.py" or name == "cmx":
            continue
        found = RULE.findall(docstring(path))
        assert found, f"{path.relative_to(ROOT)}: its docstring must state 'May import: ...'"
        allowed = set()
        for item in (i.strip() for i in found[0].split(",")):
            allowed |= bottom if item == "the bottom layer" else {item}
        out[name] = allowed
    return out


def owner(module: str, packages) -> str | None:
    """The innermost subpackage holding `module` (None for the bottom layer's modules)."""
    holders = [p for p in packages if module == p or module.startswith(p + ".")]
    return max(holders, key=len) if holders else None


def inside(target: str, allowed: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def violations(modules: dict[str, Path], edges: list[Import]) -> list[str]:
    stated, bottom = rules(modules), bottom_layer(modules)
    bad = []
    for imp in edges:
        home = owner(imp.source, stated)
        if home is None:  # a bottom-layer module (or cmx/__init__, cmx/__main__)
            ok = imp.source in ("cmx", "cmx.__main__") or imp.target in bottom
            rule = "the bottom layer imports only the bottom layer"
        else:
            # a module may use its own subpackage (and its subpackages), and what its rule (or an
            # enclosing package's, for nested ones) allows
            ok = inside(imp.target, {home}) or inside(imp.target, stated[home])
            rule = f"{home}: May import: {', '.join(sorted(stated[home]))}"
        if not ok:
            bad.append(f"{modules[imp.source].relative_to(ROOT)}:{imp.line} imports {imp.target} ({rule})")
    return bad


def cycles(edges: list[Import]) -> list[list[str]]:
    """Every strongly connected group of modules larger than one (Tarjan), plus self-imports."""
    succ: dict[str, set[str]] = {}
    for imp in edges:
        if imp.target != imp.source and not imp.source.startswith(imp.target + "."):  # a parent package's
            succ.setdefault(imp.source, set()).add(imp.target)  # __init__ runs first anyway: not a circle
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return groups


# ---------------------------------------------------------------------- function sizes
LITERAL = (ast.Constant,)


def counted_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameters that count against MAX_PARAMS: all but `self`/`cls` and keyword-only toggles (a
    keyword-only parameter whose default is a literal: a flag or knob a caller names when it wants it)."""
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        if not (isinstance(default, LITERAL) or _literal_tuple(default)):
            names.append(arg.arg)
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    return names + ([f"**{a.kwarg.arg}"] if a.kwarg else [])


def _literal_tuple(node) -> bool:
    return isinstance(node, ast.Tuple) and all(isinstance(e, LITERAL) for e in node.elts)


def cli_commands(tree: ast.Module) -> set[str]:
    """Functions registered as Typer commands: `@app.command(...)` or `app.command("x")(fn)`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                call = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(call, ast.Attribute) and call.attr == "command":
                    names.add(node.name)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
                and isinstance(node.func.func, ast.Attribute) and node.func.func.attr == "command"):
            names |= {arg.id for arg in node.args if isinstance(arg, ast.Name)}
    return names


def oversized(modules: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        commands = cli_commands(tree) if name.startswith("cmx.cli") else set()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            where = f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}"
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_LINES:
                bad.append(f"{where}: {lines} lines (at most {MAX_LINES})")
            params = counted_params(fn)
            if len(params) > MAX_PARAMS and fn.name not in commands:
                bad.append(f"{where}: {len(params)} parameters (at most {MAX_PARAMS} besides keyword-only "
                           f"toggles): {', '.join(params)}")
    return bad


# ---------------------------------------------------------------------- the tests
def test_every_import_follows_its_subpackages_stated_rule():
    modules, edges = graph()
    bad = violations(modules, edges)
    assert not bad, "imports that break the layering:\n" + "\n".join(bad)


def test_no_module_imports_another_in_a_circle():
    _, edges = graph()
    found = cycles(edges)
    assert not found, "import circles (function-level imports included):\n" + "\n".join(" ↔ ".join(g) for g in found)


def test_no_function_is_too_long_or_takes_too_many_parameters():
    bad = oversized(sources())
    assert not bad, "\n".join(bad)


RUN_FILES = ("config.json", "status.json", "epochs.csv", "checkpoint.pt", "model.pt", "result.json", "train.log",
             "submitted.json")
OWNER = "cmx.store.rundir"


def test_only_the_run_directory_type_names_a_run_directorys_files():
    """One owner for the run directory: a file name of it spelled anywhere else (as a string of its own, as in
    `run_dir / "status.json"`) is a second owner."""
    bad = []
    for name, path in sources().items():
        if name in (OWNER, "cmx.store.claim"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in RUN_FILES:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} spells {node.value!r} (use RunDir's path)")
    assert not bad, "\n".join(bad)


def test_architecture_md_quotes_every_stated_rule():
    modules = sources()
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for name, path in modules.items():
        for line in RULE.findall(docstring(path)) + BOTTOM.findall(docstring(path)):
            assert line in text, f"ARCHITECTURE.md does not quote {name}'s rule: {line!r}"


# ---------------------------------------------------------------------- the checker itself can fail
@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A throwaway package laid out like cmx, so the checks are seen to catch what they claim to."""
    pkg = tmp_path / "cmx"

    def write(rel: str, text: str) -> None:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)

    write("__init__.py", '"""Bottom layer: cmx.errors"""\n')
    write("errors.py", "")
    write("low/__init__.py", '"""Low.\n\nMay import: the bottom layer\n"""\n')
    write("high/__init__.py", '"""High.\n\nMay import: cmx.low, the bottom layer\n"""\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    return write


def test_the_checker_catches_an_upward_import_even_inside_a_function(fake_tree):
    fake_tree("high/a.py", "from ..low import b\n")
    fake_tree("low/b.py", "def f():\n    from ..high import a\n")
    modules, edges = graph()
    assert violations(modules, edges) == [
        "cmx/low/b.py:2 imports cmx.high.a (cmx.low: May import: cmx.errors)"]
    assert cycles(edges) == [["cmx.high.a", "cmx.low.b"]]


def test_the_checker_catches_a_bottom_module_importing_upward_and_oversized_functions(fake_tree):
    fake_tree("errors.py", "import cmx.high\n")
    fake_tree("high/c.py", "def f(a, b, c, d, e, f, g, *, toggle=False):\n" + "    x = 1\n" * 80)
    fake_tree("high/d.py", "def ok(a, b, c, d, e, f, *, g=False, h='auto', i=(1, 2)):\n    pass\n")
    modules, edges = graph()
    assert violations(modules, edges) == [
        "cmx/errors.py:1 imports cmx.high (the bottom layer imports only the bottom layer)"]
    assert oversized(modules) == ["cmx/high/c.py:1 f: 81 lines (at most 80)",
                                  "cmx/high/c.py:1 f: 7 parameters (at most 6 besides keyword-only toggles): "
                                  "a, b, c, d, e, f, g"]
