"""The house shows its layers (README "How the package is laid out"): no import goes up a layer, no module
imports itself back through a circle, and modules outside the math core stay small.

Imports are read from the source (every ``import`` / ``from ... import`` of a ``multidom`` or
``reward_models`` module, at module level or inside a function), so a lazy import cannot hide a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Lower number = lower layer; a module may import its own layer or lower ones.
LAYERS = {
    "multidom.core": 0,
    "multidom.keys": 0,
    "reward_models": 1,
    "multidom.objectives": 1,
    "multidom.lm": 2,
    "multidom.trainers": 3,
    "multidom.evaluation": 4,
    "multidom.app": 5,
    "multidom.__main__": 5,
}
#: Modules allowed past ~300 lines, each with its reason in its docstring.
LONG_OK = {"multidom.app.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for base in ("multidom", "reward_models"):
        for path in (ROOT / base).rglob("*.py"):
            if "configs" in path.parts:
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out[name] = path
    return out


def _layer(name: str) -> int:
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len, default=None)
    if best is None:
        if name == "multidom":
            return 0  # the top-level package re-exports the core only
        raise AssertionError(f"module {name} belongs to no layer; add it to LAYERS and the README table")
    return LAYERS[best]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_import_goes_up_a_layer():
    bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
           for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph = _graph()
    graph = {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in graph.items()}  # a package's own init
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_modules_outside_the_core_stay_small():
    long = {name: n for name, path in _modules().items()
            if not name.startswith("multidom.core") and (n := len(path.read_text().splitlines())) > 320
            and name not in LONG_OK}
    assert not long, long
