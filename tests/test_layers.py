"""The package's layers: every import of a mesaprobe module points down, never into a cycle.

Imports are read from the source (module level and inside functions alike), so a cycle
hidden in a function-local import fails here as surely as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

#: Layers, lowest first: a module may import modules of its own layer or below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "mesaprobe",
        "mesaprobe.errors",
        "mesaprobe.settings",
        "mesaprobe.registry",
        "mesaprobe.seeding",
        "mesaprobe.metrics",
        "mesaprobe.artifacts",
        "mesaprobe.device",
        "mesaprobe.manifests",
    ),
    ("mesaprobe.envs", "mesaprobe.models", "mesaprobe.agents", "mesaprobe.frozen"),
    ("mesaprobe.baselines",),
    ("mesaprobe.train",),
    ("mesaprobe.kinds",),
    ("mesaprobe.gym",),  # Gymnasium environments of every family, frozen runs as policies
    ("mesaprobe.probes",),
    ("mesaprobe.study",),
    ("mesaprobe.analysis",),
    ("mesaprobe.jobs",),
    ("mesaprobe.cli", "mesaprobe.__main__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted((SOURCE / "mesaprobe").rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (rank, prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported mesaprobe module, line, inside a function) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend(
                    (alias.name, child.lineno, in_function)
                    for alias in child.names
                    if alias.name.split(".")[0] == "mesaprobe"
                )
            elif (
                isinstance(child, ast.ImportFrom)
                and child.module
                and child.module.split(".")[0] == "mesaprobe"
            ):
                for alias in child.names:  # `from mesaprobe.x import y` where y is a module
                    candidate = f"{child.module}.{alias.name}"
                    found.append(
                        (candidate if candidate in MODULES else child.module, child.lineno, in_function)
                    )
            visit(child, inside)

    visit(tree, False)
    return found


GRAPH = {module: sorted({target for target, _, _ in imports_of(module)} - {module}) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = [target for target in GRAPH[module] if layer_of(target) > layer_of(module)]
    assert not upward, f"{module} (layer {layer_of(module)}) imports higher layers: {upward}"


def test_no_import_cycle():
    """Depth-first search for a back edge; the cycle found is shown."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in GRAPH.get(module, ()):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(MODULES):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_local_imports_give_their_reason(module):
    """A function-local import is for start-up time only, with a comment saying so."""
    lines = MODULES[module].read_text().splitlines()
    for target, line, in_function in imports_of(module):
        if not in_function:
            continue
        first = line - 1  # a block of imports shares the comment above its first line
        while first > 0 and lines[first - 1].strip().startswith(("from ", "import ")):
            first -= 1
        nearby = lines[first - 1] + lines[line - 1]
        assert "#" in nearby, f"{module}:{line} imports {target} inside a function without a reason"


def test_the_checks_can_fail():
    """The cycle and layer checks see a function-local import (a hidden cycle's usual form)."""
    tree = ast.parse("def f():\n    from mesaprobe.cli import main\n")
    node = tree.body[0].body[0]
    assert isinstance(node, ast.ImportFrom) and node.module == "mesaprobe.cli"
    assert layer_of("mesaprobe.cli") > layer_of("mesaprobe.envs.base")
