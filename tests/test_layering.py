"""The package's import graph follows one fixed stage order and has no circle.

Nodes are the sub-packages and the top-level modules of stepdistill/; every import statement counts,
lazy ones inside functions and `if TYPE_CHECKING:` blocks included. A module may import modules of
its own stage or of a stage below it, never one above; and nothing may import in a circle, not even
within one stage. A new module must be placed in STAGES (the test names it otherwise).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stepdistill"

# Lowest first. A stage that needs something from a higher one takes it as an argument (a callback,
# a value), never as an import: training gets evaluation as a validation callback, for example.
STAGES: list[tuple[str, set[str]]] = [
    ("shared types and errors", {"__init__", "errors", "schema", "threads"}),
    ("tasks", {"tasks"}),
    ("data", {"data", "embedded", "gguf_llama"}),
    ("teachers", {"teachers"}),
    ("training", {"training"}),
    ("soft-target distillation", {"kd"}),
    ("evaluation", {"evaluate_config", "ranking", "evaluate", "outcomes"}),
    ("report", {"report"}),
    ("the composed config", {"run_config", "config"}),
    (
        "commands",
        {
            "runfiles",
            "runlock",
            "demo_data",
            "annotate",
            "train",
            "predict",
            "kd_targets",
            "run_parallel",
            "run",
            "run_plan",
            "export",
            "cli",
        },
    ),  # fmt: skip
]


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "stepdistill":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree: ast.AST, module: str, is_init: bool) -> list[str]:
    """Every module named by an import statement anywhere in `tree` (relative imports resolved)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_init else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """node -> the other nodes it imports anywhere in its files."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        src = _node(module)
        graph.setdefault(src, set())
        for name in _imports(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            dst = _node(name)
            if dst is None or dst == src:
                continue
            if dst == "__init__" or (package / dst).is_dir() or (package / f"{dst}.py").exists():
                graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher stage, as 'a (stage) -> b (stage)'."""
    level = {node: i for i, (_, nodes) in enumerate(STAGES) for node in nodes}
    return sorted(
        f"{a} ({STAGES[level[a]][0]}) -> {b} ({STAGES[level[b]][0]})"
        for a, targets in graph.items()
        for b in targets
        if level[b] > level[a]
    )


def test_the_checks_catch_a_planted_cycle_and_an_upward_import(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # A lazy import inside a function, in a package laid out like ours, is seen.
    pkg = tmp_path / "stepdistill"
    (pkg / "training").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "training" / "__init__.py").write_text("")
    (pkg / "training" / "loop.py").write_text("def f():\n    from stepdistill.evaluate import score\n")
    (pkg / "evaluate.py").write_text("from stepdistill.training import loop\n")
    graph = import_graph(pkg)
    assert graph["training"] == {"evaluate"} and find_cycle(graph) == ["evaluate", "training", "evaluate"]
    assert upward_imports(graph) == ["training (training) -> evaluate (evaluation)"]


def test_every_module_has_a_stage():
    placed = [node for _, nodes in STAGES for node in nodes]
    assert len(placed) == len(set(placed))
    assert set(import_graph()) <= set(placed), f"place these in STAGES: {set(import_graph()) - set(placed)}"


def test_stages_depend_one_way_without_a_circle():
    graph = import_graph()
    assert find_cycle(graph) is None, f"import circle: {find_cycle(graph)}"
    assert upward_imports(graph) == []


def test_the_rules_the_architecture_names():
    graph = import_graph()
    assert graph["schema"] <= {"errors"} and graph["errors"] == set()
    assert not graph["training"] & {"kd", "evaluate", "report", "config", "train", "run"}
    assert not graph["report"] & {"training", "kd", "evaluate"}
    assert {node for node, targets in graph.items() if "config" in targets} <= STAGES[-1][1]
    # The teacher interface knows no backend: the registry (teachers/registry.py) picks them.
    base = PACKAGE / "teachers" / "base.py"
    inside = {n for n in _imports(ast.parse(base.read_text()), "stepdistill.teachers.base", False)}
    assert not {n for n in inside if n.startswith("stepdistill.teachers.")} - {"stepdistill.teachers.config"}
    assert not any(
        "import torch" in p.read_text() or "from torch" in p.read_text()
        for p in (PACKAGE / "report").rglob("*.py")
    )
