"""The house reads one way: choices, layout and options -> data -> models -> strategies -> posthoc -> inference
(training scores its model with it) -> training -> compare / serve -> api -> cli. No module, and no package,
imports one that imports it back, counting the imports inside functions too (a lazy import is still a dependency,
only a later one)."""

from __future__ import annotations

import ast
from pathlib import Path

import freezetune

ROOT = Path(freezetune.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each freezetune module -> the freezetune modules it imports (a package's name where a name is not a module)."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index, low, stack, out = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                out.append(sorted(component + [v]))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_that_imports_it_back():
    assert _cycles(_imports()) == []


def test_no_package_imports_one_that_imports_it_back():
    """Between the top-level parts (freezetune.models, freezetune.training, freezetune.config, ...); the package
    root only re-exports lazily, so it is left out."""
    def part(name):
        return ".".join(name.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, targets in _imports().items():
        for target in targets:
            if part(name) != part(target) and "freezetune" not in (part(name), part(target)):
                graph.setdefault(part(name), set()).add(part(target))
    assert _cycles(graph) == []


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
