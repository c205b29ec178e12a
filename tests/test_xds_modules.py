"""The modules of meshlab.xds import each other without a cycle: each depends only on
the ones below it (the admin view, for one, on the cache and the status board, not on
the server that starts it). Every import counts, also those under TYPE_CHECKING or
inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import meshlab.xds
from meshlab.xds import admin
from meshlab.xds.cache import SnapshotCache
from meshlab.xds.snapshot import Snapshot
from meshlab.xds.status import StatusBoard

from test_xds_server import mesh

PACKAGE = Path(meshlab.xds.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The meshlab.xds modules PATH imports (the package's __init__ excluded)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "meshlab.xds":  # `from meshlab.xds import types`
                found |= {f"meshlab.xds.{alias.name}" for alias in node.names
                          if (PACKAGE / f"{alias.name}.py").exists()}
            elif node.module.startswith("meshlab.xds."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("meshlab.xds.")}
    return found


def graph() -> dict[str, set[str]]:
    return {f"meshlab.xds.{path.stem}": imports_of(path) for path in PACKAGE.glob("*.py")
            if path.name != "__init__.py"}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(edges.get(module, ())):
            found = visit(imported, path + [module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(edges):
        found = visit(module, [])
        if found:
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_meshlab_xds():
    edges = graph()
    assert edges["meshlab.xds.server"] >= {"meshlab.xds.admin"}, "the graph is read wrongly"
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def test_the_admin_view_needs_only_the_cache_and_the_board():
    cache, board = SnapshotCache(), StatusBoard()
    snapshot: Snapshot = mesh("a")
    cache.set_snapshot("n1", snapshot)
    code, document = admin.respond(cache, board, "GET", "/status", {})
    assert code == 200 and document["nodes"]["n1"]["snapshot"]["version"] == snapshot.version
    code, document = admin.respond(cache, board, "GET", "/snapshot", {"node": ["n1"]})
    assert code == 200 and document["resources"]["CDS"][0]["name"] == "a"
    assert admin.respond(cache, board, "POST", "/status", {})[0] == 405
