"""The package's import graph between its parts has no cycle (lazy imports inside functions count).

Parts: the subpackages (tasks, data, teachers, training, kd, report) and the shared `schema` module.
The top-level stage modules (cli, run, annotate, train, evaluate, config, ...) compose the parts and
are left out."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stepdistill"
PARTS = ("schema", "tasks", "data", "teachers", "training", "kd", "report")


def _part(module: str) -> str | None:
    head = module.split(".")
    return head[1] if len(head) > 1 and head[0] == "stepdistill" and head[1] in PARTS else None


def import_graph() -> dict[str, set[str]]:
    """part -> the other parts it imports anywhere in its files."""
    graph: dict[str, set[str]] = {p: set() for p in PARTS}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        src = _part(".".join(rel.parts))
        if src is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                dst = _part(name)
                if dst is not None and dst != src:
                    graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_parts_import_each_other_without_cycles():
    graph = import_graph()
    assert find_cycle(graph) is None, f"import cycle between parts: {find_cycle(graph)}"
    assert graph["schema"] == set()
    assert "kd" not in graph["training"] and "tasks" not in graph["schema"]
