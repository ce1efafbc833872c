"""The package's import structure: no import circle between modules, and each part imports only the
parts below it (the layers of docs/architecture.md). Imports inside functions count too: a deferred
import is still a dependency."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import corl

PACKAGE = Path(corl.__file__).resolve().parent

# Bottom to top; a part may import the parts of lower layers (and itself), never a higher or equal one.
# Keep in step with the table in docs/architecture.md.
LAYERS: list[set[str]] = [
    {"corl.shapes", "corl.paths", "corl.torchvision_compat", "corl.errors", "corl.launch"},  # the synthetic world imports nothing else
    {"corl.config"},  # the one owner of defaults and valid choices
    {"corl.algos", "corl.policy"},  # pure GRPO math; the Janus adapter
    {"corl.data", "corl.generation"},  # rows and loaders; rollouts and the decoding stack
    {"corl.rewards"},
    {"corl.eval", "corl.tasks"},
    {"corl.training"},
    {"corl.trainer", "corl.merge", "corl.report", "corl.basemodel"},
    {"corl.cli"},
]
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """corl.policy.scoring -> corl.policy; corl.trainer -> corl.trainer; corl -> corl."""
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path) -> set[str]:
    """Every corl module a file imports (absolute or relative, at any depth of the file)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            # `from corl.generation import decoding` imports the submodule corl.generation.decoding
            found.update(f"{source}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module -> the corl modules it imports (computed once per test session)."""
    return {module_name(p): imported_modules(p) for p in PACKAGE.rglob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if state.get(start) is None and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_part_has_a_layer():
    parts = {part_of(m) for m in import_graph()} - {"corl"}
    assert parts <= set(LAYER_OF), f"parts without a layer in LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_imports_go_down_the_layers():
    wrong = []
    for module, imports in import_graph().items():
        source = part_of(module)
        if source == "corl":
            continue
        for target in imports:
            destination = part_of(target)
            if destination in (source, "corl"):
                continue
            if LAYER_OF[destination] >= LAYER_OF[source]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layers (docs/architecture.md):\n" + "\n".join(sorted(wrong))


def test_the_shapes_world_imports_nothing_else_from_corl():
    graph = import_graph()
    outside = sorted(f"{m} -> {t}" for m, ts in graph.items() if part_of(m) == "corl.shapes"
                     for t in ts if part_of(t) != "corl.shapes")
    assert not outside, outside


def test_the_checker_sees_a_circle_and_a_wrong_direction():
    """The checks above would fail on a circle and on an upward import (they are not vacuous)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "corl.policy.scoring" in graph["corl.tasks"]  # relative and absolute imports are both seen
    assert LAYER_OF["corl.cli"] > LAYER_OF["corl.shapes"]
