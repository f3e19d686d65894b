"""The package's layering, checked on its source: every folder imports only the folders
below it (deferred imports inside functions count too), and no module imports another in a
cycle. A new top-level module or folder must be placed in LAYERS."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "audiocpc"

# Lower numbers sit lower; a module may import its own layer (its own folder) or below.
LAYERS = {
    "errors": 0, "fileio": 0, "safe_yaml": 0, "locks": 0,
    "config": 1,
    "presets": 2,
    "data": 3,
    "models": 4,
    "training": 5,
    "evaluation": 6,
    "experiments": 7,
    "api": 8, "hear": 8,
    "cli": 9,
    "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports (a package's attribute counts as the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                     else node.module for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "audiocpc" or n.startswith("audiocpc."))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # audiocpc/__init__.py: public names, imported lazily by string
        return max(LAYERS.values()) + 1
    assert parts[1] in LAYERS, f"{module}: place '{parts[1]}' in LAYERS of {__file__}"
    return LAYERS[parts[1]]


def test_every_module_imports_only_its_own_layer_or_below() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(path, set(modules)):
            if _layer(target) > _layer(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # importing a submodule runs its package's __init__ first: that edge is implicit
        graph[name] = {t for t in _imports(path, set(modules))
                       if t in modules and not name.startswith(t + ".") and t != name}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_registry_and_the_schema_are_leaves() -> None:
    modules = _modules()
    known = set(modules)
    assert _imports(modules["audiocpc.models.registry"], known) <= {"audiocpc.errors"}
    assert _imports(modules["audiocpc.config"], known) <= {"audiocpc.errors"}
    # and the schema needs no torch: `config show` with a bad value answers before torch loads
    source = modules["audiocpc.config"].read_text(encoding="utf-8")
    assert "import torch" not in source
