"""The package's layer map holds: imports only point downwards, and nothing cycles.

The order is the one in docs/architecture.md (and the README's map). Every
top-level module or subpackage of ``metarl_jax`` must have a layer here, so
a new one is placed consciously. Imports are parsed, not executed: a lazy
import inside a function counts for the layering too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metarl_jax"

# bottom to top; a module may import from its own layer and the ones below
LAYERS = (
    ("utils", "sharding"),     # helpers any layer may use
    ("envs",),
    ("tasks", "families"),
    ("nn",),
    ("rl",),
    ("core",),
    ("players",),
    ("algorithms",),
    ("training",),
    ("cli",),
)
ANYWHERE = {"utils", "sharding"}
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def top_level(module: str) -> str | None:
    """``metarl_jax.core.rollout -> "core"``; ``None`` for the package root itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, *, import_time_only: bool = False, package: str | None = None) -> set[str]:
    """The ``metarl_jax`` modules ``path`` imports (all, or only at import time)."""
    tree = ast.parse(path.read_text())
    if package is None:
        package = (module_name(path) if path.name == "__init__.py"
                   else module_name(path).rsplit(".", 1)[0])
    nodes = tree.body if import_time_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            if target != "metarl_jax":  # "from metarl_jax import tasks" imports tasks only
                out.add(target)
            # "from metarl_jax.nn import memory": the submodule is imported too
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "metarl_jax" or m.startswith("metarl_jax.")}


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0]
             for p in SOURCES} - {"__init__"}
    assert not names - set(LAYER), f"modules without a layer in the map: {names - set(LAYER)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path):
    own = top_level(module_name(path))
    if own is None:  # the package root re-exports the public API
        return
    for target in imports(path):
        layer = top_level(target)
        assert layer is not None, f"{path.name} imports the package root {target!r}"
        if layer in ANYWHERE or layer not in LAYER:
            continue
        assert LAYER[layer] <= LAYER[own], (
            f"{module_name(path)} ({own}, layer {LAYER[own]}) imports {target} "
            f"({layer}, layer {LAYER[layer]}): imports must point downwards")


def test_no_import_cycles():
    """No cycle among the modules imported when the package is imported."""
    graph = {}
    for path in SOURCES:
        graph[module_name(path)] = {m for m in imports(path, import_time_only=True)
                                    if m in {module_name(p) for p in SOURCES}}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt == node or nxt.startswith(node + "."):  # a package importing its submodule
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_check_catches_an_upward_import(tmp_path):
    """The parser sees a lazy, function-level import from a layer above."""
    probe = PACKAGE / "envs" / "environment.py"
    assert "metarl_jax.envs.environment" == module_name(probe)
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from metarl_jax.algorithms import maml\n")
    assert imports(fake, package="metarl_jax.envs") == {"metarl_jax.algorithms",
                                                        "metarl_jax.algorithms.maml"}
