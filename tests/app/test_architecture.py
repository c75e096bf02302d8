"""The shape of the package, checked so that a change cannot undo it quietly.

- Layers (docs/architecture.md): a module imports only its own layer and those
  below it. Every import counts: at run time, inside a function, or for type
  checking only.
- No import cycle between modules.
- Classes and modules readable in one sitting (at most 400 lines; the board's
  script is not Python), functions under complexity 15 (McCabe's, counted as
  radon does closely enough).
- A source is a plug-in: only its own package and the one list of sources
  (sources/registry.py) import it; its routes and commands live in the layers
  they belong to (``sources/<name>/web.py`` is web, ``.../cli.py`` is CLI).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "astpresence"

#: layer -> the layers it may import (its own included).
ALLOWED = {
    "domain": {"domain"},
    "store": {"domain", "store"},
    "engine": {"domain", "store", "engine"},
    "asterisk": {"domain", "store", "engine", "asterisk"},
    "sources": {"domain", "store", "engine", "sources"},
    # a leader runs its followers' questions for the sources' plug-ins
    "cluster": {"domain", "store", "engine", "cluster", "sources"},
    "web": {"domain", "store", "engine", "asterisk", "cluster", "sources", "web"},
    "app": {"domain", "store", "engine", "asterisk", "cluster", "sources", "web", "app"},
    "cli": {"domain", "store", "engine", "asterisk", "cluster", "sources", "web", "app",
            "agent", "cli"},
    # the desktop agent: a client of the API (the engine's backoff is all it borrows)
    "agent": {"domain", "engine", "agent"},
    "": {"cli"},  # astpresence/__main__.py
    "version": set(),
}
for _layer in ALLOWED.values():
    _layer.add("version")
MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 400
#: A source package's modules that belong to a layer above the sources'.
UPPER_PARTS = {"web": "web", "cli": "cli"}
MAX_COMPLEXITY = 15


def modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = modules()


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "astpresence":
        return "version"  # __init__.py: __version__ and nothing else, for every layer
    if len(parts) == 4 and parts[1] == "sources" and parts[3] in UPPER_PARTS:
        return UPPER_PARTS[parts[3]]  # a source's routes or commands
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else ""


def imported(module: str, path: Path, tree: ast.Module) -> set[str]:
    """The package's modules that ``module`` imports (every import statement)."""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            hits = [n for n in names if n in MODULES] or ([target] if target in MODULES else [])
            out.update(hits)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
    out.discard(module)
    return out


GRAPH = {m: imported(m, *MODULES[m]) for m in MODULES}


def test_the_layers_are_the_package_folders() -> None:
    assert {layer(m) for m in MODULES} == set(ALLOWED)
    assert not GRAPH["astpresence"], "astpresence/__init__.py imports nothing"
    for name in ALLOWED:
        if name not in ("", "version"):
            doc = ast.get_docstring(MODULES[f"astpresence.{name}"][1]) or ""
            assert "May import" in doc or "may import" in doc, f"astpresence/{name}/__init__.py"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_layer_imports_one_above_it(module: str) -> None:
    own = layer(module)
    wrong = sorted(m for m in GRAPH[module] if layer(m) not in ALLOWED[own])
    assert not wrong, f"{module} ({own or 'top'}) imports {wrong}"


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler,
            ast.Assert, ast.comprehension, ast.match_case)


def complexity(fn: ast.AST) -> int:
    n = 1
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda)):
            continue
        if isinstance(node, BRANCHES):
            n += 1
        elif isinstance(node, ast.BoolOp):
            n += len(node.values) - 1
    return n


def test_classes_fit_in_one_sitting_and_functions_stay_simple() -> None:
    found = []
    for module, (path, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    found.append(f"class {module}.{node.name}: {lines} lines")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                cc = complexity(node)
                if cc > MAX_COMPLEXITY:
                    found.append(f"function {module}.{node.name}: complexity {cc}")
    assert not found, "split these:\n" + "\n".join(found)


def test_modules_fit_in_one_sitting() -> None:
    long = [f"{module}: {lines} lines" for module, (path, _) in MODULES.items()
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, "split these:\n" + "\n".join(long)


SOURCE_PACKAGES = sorted({".".join(m.split(".")[:3]) for m in MODULES
                          if m.startswith("astpresence.sources.") and m.count(".") >= 3})


def test_a_source_is_named_only_by_its_package_and_the_list() -> None:
    assert SOURCE_PACKAGES, "no source package found"
    for package in SOURCE_PACKAGES:
        users = sorted(m for m, deps in GRAPH.items()
                       if not m.startswith(package + ".") and m != package
                       and m != "astpresence.sources.registry"
                       and any(d == package or d.startswith(package + ".") for d in deps))
        assert not users, f"{package} is imported outside its package by {users}"


def test_every_registered_source_has_its_parts_in_the_right_layers() -> None:
    from astpresence.sources.registry import SOURCES

    assert [f"astpresence.sources.{p.name}" for p in SOURCES] == SOURCE_PACKAGES
    for plugin in SOURCES:
        for module, want in ((plugin.web, "web"), (plugin.cli, "cli")):
            if module:
                assert module in MODULES, module
                assert layer(module) == want, f"{module} is not in the {want} layer"
