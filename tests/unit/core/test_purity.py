"""services/core stays pure: no Kafka/metrics/async clients, no environment, clock, global RNG or
salted built-in hash(). Scans the AST of every module, so a lazy import inside a function fails
too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "services" / "core"
FORBIDDEN_MODULES = {"confluent_kafka", "faust", "prometheus_client", "aiokafka", "os", "time",
                     "datetime", "random", "secrets", "uuid", "sys", "socket", "threading"}
ALLOWED_NP_RANDOM = {"Generator", "default_rng", "PCG64", "BitGenerator", "SeedSequence"}
MODULES = sorted(CORE.glob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _np_random_attrs(tree: ast.AST) -> list[str]:
    """Attributes used as np.random.X / numpy.random.X."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if inner.attr == "random" and isinstance(inner.value, ast.Name) and \
                    inner.value.id in ("np", "numpy"):
                found.append(node.attr)
    return found


def test_core_has_modules() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [n for n in _imports(tree) if n.split(".")[0] in FORBIDDEN_MODULES
           or n in ("numpy.random.random", "numpy.random.seed")]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_global_rng_or_salted_hash(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad_rng = [a for a in _np_random_attrs(tree) if a not in ALLOWED_NP_RANDOM]
    assert not bad_rng, f"{path.name} uses the global numpy RNG: {bad_rng}"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert not [c for c in calls if c.func.id in ("hash", "id")], f"{path.name} calls hash()/id()"
    environ = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "environ"]
    assert not environ, f"{path.name} reads an environment"


def test_scanner_catches_violations() -> None:
    """The checks above would fire on the things they forbid."""
    tree = ast.parse("import time\nfrom os import environ\nimport numpy as np\n"
                     "x = np.random.rand(3)\ny = hash('a')\n")
    assert {"time", "os"} <= {n.split(".")[0] for n in _imports(tree)}
    assert _np_random_attrs(tree) == ["rand"]


def _graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of services/<package> it imports anywhere in its file (type-checking
    and lazy imports included: a circle through them is still a circle for a reader)."""
    modules = sorted((CORE.parent / package).glob("*.py"))
    graph: dict[str, set[str]] = {}
    names = {m.stem for m in modules}
    for module in modules:
        deps = set()
        for name in _imports(ast.parse(module.read_text())):
            parts = name.split(".")
            if parts[:2] == ["services", package] and len(parts) > 2 and parts[2] in names:
                deps.add(parts[2])
        deps.discard(module.stem)
        graph[module.stem] = deps
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order, the first repeated last), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for dep in sorted(graph[node]):
            found = visit(dep, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


# The packages read most as layers: core (pure selection logic) and contracts (the declaration
# vocabulary, its compiler and the declared events), with a module each the graph must hold.
LAYERED = {"core": {"arms", "flush", "gates", "selector", "state"},
           "contracts": {"kinds", "shapes", "codegen", "records", "containers", "events"}}


@pytest.mark.parametrize("package", sorted(LAYERED))
def test_no_import_circle(package: str) -> None:
    graph = _graph(package)
    assert LAYERED[package] <= set(graph)  # the graph is read
    circle = _circle(graph)
    assert circle is None, f"import circle in services/{package}: " + " -> ".join(circle or [])


def test_circle_finder_finds_circles() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
