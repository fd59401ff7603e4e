"""The top-level packages of ``src/peace`` form one-way layers (docs/architecture.md).

Every module is read with ``ast``; every ``import`` and ``from ... import`` counts, those inside
functions and ``if TYPE_CHECKING`` blocks included. A package may import only the packages its
row of :data:`MAY_IMPORT` lists, and those are all in lower layers, so no circle can form.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "peace"

#: bottom first; a package imports only from layers below its own
LAYERS: list[tuple[str, ...]] = [
    ("utils", "config", "metrics"),
    ("data", "store"),
    ("nn",),
    ("baselines",),
    ("models",),
    ("flows",),
    ("eval", "serve"),
    ("cli",),
    ("__main__",),
]

#: the rule, the same table as in docs/architecture.md
MAY_IMPORT: dict[str, set[str]] = {
    "utils": set(),
    "config": set(),
    "metrics": set(),
    "data": {"utils", "config"},
    "store": {"utils"},
    "nn": {"utils", "config"},
    "baselines": {"utils", "config", "nn"},
    "models": {"utils", "config", "data", "nn", "baselines"},
    "flows": {"utils", "config", "metrics", "data", "store", "nn", "models"},
    "eval": {"utils", "config", "metrics", "data", "nn", "models", "flows"},
    "serve": {"utils", "config", "data", "store", "nn"},
    "cli": {"utils", "config", "data", "store", "models", "flows", "eval", "serve"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    """``src/peace/flows/pretrain.py`` -> ``peace.flows.pretrain``."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` imports, at any depth of the syntax tree.

    ``from peace import flows`` yields ``peace.flows``; relative imports are resolved against
    ``module`` (a package's ``__init__`` when ``is_package``).
    """
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def top_level(name: str) -> str | None:
    """``peace.flows.pretrain`` -> ``flows``; None for a name outside ``peace`` or ``peace``
    itself."""
    parts = name.split(".")
    if parts[0] != "peace" or len(parts) < 2:
        return None
    return parts[1]


def package_edges() -> dict[tuple[str, str], list[str]]:
    """``{(importer, imported): [module, ...]}`` between different top-level packages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        here = top_level(module)
        if here is None:  # peace/__init__.py
            continue
        names = imported_modules(path.read_text(encoding="utf-8"), module, path.stem == "__init__")
        for name in names:
            there = top_level(name)
            if there is not None and there != here:
                edges.setdefault((here, there), []).append(module)
    return edges


def violations(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    return [
        f"{', '.join(sorted(set(modules)))} imports peace.{there}: {here} may import only "
        f"{sorted(MAY_IMPORT.get(here, set()))} (docs/architecture.md)"
        for (here, there), modules in sorted(edges.items())
        if there not in MAY_IMPORT.get(here, set())
    ]


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Every circle of the package graph, found by depth-first search from each node."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    found = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each circle once, from its smallest node
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_every_package_is_in_the_table() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages == set(MAY_IMPORT)
    assert sorted(p for layer in LAYERS for p in layer) == sorted(MAY_IMPORT)


def test_the_table_only_points_down() -> None:
    layer = {p: k for k, names in enumerate(LAYERS) for p in names}
    for package, allowed in MAY_IMPORT.items():
        for other in allowed:
            assert layer[other] < layer[package], f"{package} may import {other}, not below it"


def test_packages_import_only_what_their_layer_allows() -> None:
    problems = violations(package_edges())
    assert not problems, "\n".join(problems)


def test_no_import_circle_between_packages() -> None:
    circles = cycles(set(package_edges()))
    assert not circles, [" -> ".join(c) for c in circles]


# --------------------------------------------------------------------------- the checker itself
def test_the_walker_sees_known_imports() -> None:
    """Imports at module level and inside functions are found, so the rule is not vacuous."""
    edges = package_edges()
    assert "peace.flows.offline_inference" in edges[("flows", "store")]
    assert "peace.serve.state" in edges[("serve", "store")]
    # cli/deploy.py imports the service inside a command function
    assert "peace.cli.deploy" in edges[("cli", "serve")]


@pytest.mark.parametrize(
    "line",
    [
        "from peace.flows import pretrain",
        "from peace.flows.publish import finetune_and_publish",
        "import peace.eval.benchmark",
        "from ..models import build_model",
        "def handler():\n    from peace.baselines import build_competitor",
    ],
)
def test_a_forbidden_import_in_serve_is_reported(line: str) -> None:
    names = imported_modules(line, "peace.serve.app")
    edges = {("serve", top_level(n)): ["peace.serve.app"] for n in names if top_level(n)}
    assert violations(edges), line


def test_a_circle_is_found() -> None:
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c", "a"]]
    assert cycles({("a", "b"), ("b", "c")}) == []
