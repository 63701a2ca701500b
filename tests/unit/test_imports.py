"""The package's imports flow one way: no cycles, and the serving side loads nothing of training, promotion or
the command line. Read from the source (every import statement, also those inside functions), not by
importing it, so an import that only runs on some path counts too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from emotune.config import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "emotune"

# What a server loads: the BentoML service, the page, the recogniser and what they share.
SERVING_ENTRY_POINTS = ("emotune.service", "emotune.ui", "emotune.recognizer", "emotune.serving")
TRAINING_SIDE = (
    "emotune.data",
    "emotune.datasets",
    "emotune.model",
    "emotune.resume",
    "emotune.tracking",
    "emotune.training",
    "emotune.evaluation",
    "emotune.export",
    "emotune.model_card",
    "emotune.promotion",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_cli(module: str) -> bool:
    return module == "emotune.cli" or module.endswith("_commands") or module.endswith(".commands")


def is_training_side(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in TRAINING_SIDE)


def imports_of(path: Path, modules: set[str]) -> Iterator[tuple[str, str | None]]:
    """(imported emotune module, name taken from it or None) for every import statement in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "emotune":
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] != "emotune":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule, None) if submodule in modules else (base, alias.name)


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """module -> the emotune modules it imports, and every `from x import _private` across modules."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for module, path in files.items():
        graph[module] = set()
        for target, name in imports_of(path, set(files)):
            if target != module:
                graph[module].add(target)
            if name and name.startswith("_") and target != module:
                private.append(f"{module} imports {target}.{name}")
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: tuple[str, ...]) -> dict[str, str]:
    """Every module `start` loads, each with the module that imports it (to name the path in a failure)."""
    parent = {s: "" for s in start}
    todo = list(start)
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in parent:
                parent[nxt] = node
                todo.append(nxt)
    return parent


def chain(parent: dict[str, str], module: str) -> str:
    path = [module]
    while parent.get(path[-1]):
        path.append(parent[path[-1]])
    return " <- ".join(path)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()[0]


def test_the_package_has_no_import_cycle(graph):
    assert cycles(graph) == []


def test_serving_loads_no_training_promotion_or_cli_module(graph):
    parent = reachable(graph, SERVING_ENTRY_POINTS)
    wrong = [chain(parent, m) for m in sorted(parent) if is_training_side(m) or is_cli(m)]
    assert wrong == []
    assert {"emotune.vision", "emotune.music", "emotune.preprocess"} <= set(parent)  # the walk does reach


def test_no_private_name_is_imported_across_modules():
    assert import_graph()[1] == []


def test_the_checks_catch_what_they_are_for():
    """The checks on a made-up graph: a cycle, a serving module reaching training through a helper."""
    made_up = {
        "emotune.a": {"emotune.b"},
        "emotune.b": {"emotune.c"},
        "emotune.c": {"emotune.a"},
        "emotune.recognizer": {"emotune.helper"},
        "emotune.helper": {"emotune.training"},
    }
    assert cycles(made_up) == [["emotune.a", "emotune.b", "emotune.c"]]
    parent = reachable(made_up, ("emotune.recognizer",))
    assert chain(parent, "emotune.training") == "emotune.training <- emotune.helper <- emotune.recognizer"
    assert (
        is_cli("emotune.music.commands") and is_cli("emotune.analyze_commands") and not is_cli("emotune.ui")
    )
    assert is_training_side("emotune.data.splits") and not is_training_side("emotune.datasetsx")
