"""The pack's modules import each other without cycles (issue 22, item 5: engine.py and selfcal.py once
imported each other, one of them from inside a function to dodge the cycle at import time).

Every import statement of every module counts, also those inside functions: a function-level import
that closes a cycle is still a cycle, only a hidden one. Edges are resolved to the module they name:
`from . import x` is an edge to the submodule x when x is one, `from .pkg import name` an edge to
pkg's __init__. Importing a submodule also runs its package's __init__ first; that implicit edge is
not counted (every package whose __init__ imports its own submodules would otherwise be a cycle)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("magcache", "model_patches")
TOP = ("nodes.py", "__init__.py")


def pack_modules() -> dict[str, Path]:
    """Dotted name (relative to the pack) -> file; the pack's own __init__ is ''."""
    out = {"": ROOT / "__init__.py"}
    out.update({f.stem: f for f in sorted(ROOT.glob("*.py")) if f.name != "__init__.py"})
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    assert set(TOP) <= {p.name for p in out.values()}
    return out


def package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".") if name else []
    return parts if path.name == "__init__.py" else parts[:-1]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pack modules that `name` imports, anywhere in its source."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue  # the pack is imported under a name chosen by its loader: only relative imports are its own
        base = package_of(name, path)
        base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join(base + (node.module.split(".") if node.module else []))
        for alias in node.names:
            sub = f"{target}.{alias.name}" if target else alias.name
            if sub in modules:
                edges.add(sub)
            elif target in modules:
                edges.add(target)
    edges.discard(name)
    return edges


def graph() -> dict[str, set[str]]:
    modules = pack_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_the_pack_imports():
    g = graph()
    assert "model_patches.spec" in g["model_patches.engine"]
    assert "model_patches.handle" in g["model_patches.selfcal"]  # the calibration handle's own module
    assert "magcache.streams" in g["magcache.state"]  # `from . import streams`: the submodule
    assert "magcache" in g["model_patches.selfcal"]  # `from ..magcache import Preset`: the package
    assert "model_patches.calibrate" in g["nodes"]
    assert "extension" in g[""]  # the pack's __init__, inside its try/else
    assert {"nodes", "nodes_compare", "nodes_framepack", "nodes_raylight"} <= g["extension"]  # also function-level
    assert "magcache.compare" in g["nodes_compare"] and "nodes" in g["nodes_framepack"]


def test_cycle_finder_finds_a_function_level_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_pack_modules():
    assert cycles(graph()) == []


def test_engine_and_selfcal_do_not_import_each_other():
    g = graph()
    assert "model_patches.selfcal" in g["model_patches.engine"]
    assert "model_patches.engine" not in g["model_patches.selfcal"]
