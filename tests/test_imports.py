"""The module graph, read with ``ast``: no import cycle, the node never imports training, and
docs/architecture.md names every module file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sswe_node", "training")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` (a module or ``module.attribute``) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Every import (module level, inside functions, under TYPE_CHECKING) between our modules."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(filter(None, (_owner(a.name, modules) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    target = _owner(f"{source}.{alias.name}", modules) or _owner(source, modules)
                    if target:
                        targets.add(target)
        targets.discard(name)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    # Known edges, module level and inside a function: the walk must find both kinds.
    assert "sswe_node.quantities" in graph["sswe_node.model"]
    assert "training.datafile" in graph["training.evaluate"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert _cycles(import_graph()) == []


def test_the_node_never_imports_training() -> None:
    graph = import_graph()
    offenders = {
        module: sorted(t for t in targets if t.split(".")[0] == "training")
        for module, targets in graph.items()
        if module.split(".")[0] == "sswe_node"
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_module_reads_training_by_name_either() -> None:
    # importlib.import_module("training...") would dodge the ast walk above.
    for path in (ROOT / "sswe_node").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"import_module\(\s*['\"]training", text), path


def test_architecture_lists_every_module_file() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`((?:sswe_node|training)/[\w/]+\.py)`", doc))
    files = {
        str(p.relative_to(ROOT))
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py" and "migrations/versions" not in p.as_posix()
    }
    assert sorted(files - listed) == [], "missing from docs/architecture.md: scripts/module_list.py"
    assert sorted(listed - files) == [], "docs/architecture.md names modules that do not exist"


def _sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
    }


def test_one_quantity_unit_table() -> None:
    defining = [
        f for f, text in _sources().items() if re.search(r'"youngs-modulus":\s*"kPa"', text)
    ]
    assert defining == ["sswe_node/quantities.py"]


def test_one_peer_parser() -> None:
    defining = [f for f, text in _sources().items() if "(?P<port>" in text]
    assert defining == ["sswe_node/aetitle.py"]


def test_one_durable_write() -> None:
    # fsync + rename lives in sswe_node.node.storage; the others call atomic_write.
    defining = [f for f, text in _sources().items() if "os.fsync(" in text]
    assert defining == ["sswe_node/node/storage.py"]
