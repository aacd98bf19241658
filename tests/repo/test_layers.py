"""The folders are the layers (docs/architecture.md): a module imports from its own layer or
below, never up. Read from the source (every import statement, also inside functions), so a
back edge fails here before it tangles the package."""

from __future__ import annotations

import ast
from pathlib import Path

EXPORTER = Path(__file__).resolve().parents[2] / "exporter"

# Leaf helpers any layer may use: they import nothing else of the exporter but each other.
LEAVES = {"exporter.logs", "exporter.redact", "exporter.labels"}


def _module(path: Path) -> str:
    parts = path.relative_to(EXPORTER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The exporter modules ``path`` imports (``from exporter.x import y`` names
    ``exporter.x.y`` as well when ``y`` is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            if node.level:  # relative: resolve against the importing package
                base = _module(path).split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                module = ".".join([*base, module])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("exporter.") and _exists(name)}


def _exists(name: str) -> bool:
    path = EXPORTER.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph(folder: str) -> dict[str, set[str]]:
    return {_module(path): _imports(path) for path in sorted((EXPORTER / folder).rglob("*.py"))}


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_leaves_import_only_leaves() -> None:
    for leaf in LEAVES:
        path = EXPORTER / (leaf.split(".", 1)[1] + ".py")
        assert _imports(path) <= LEAVES, leaf


def test_prometheus_primitives_import_nothing_above_them() -> None:
    graph = _graph("prom")
    assert graph, "exporter/prom/ is the primitives package"
    upward = {
        module: sorted(n for n in names if not _within(n, "exporter.prom") and n not in LEAVES)
        for module, names in graph.items()
    }
    assert {m: names for m, names in upward.items() if names} == {}


# The wiring and what serves HTTP sit above every collector.
ABOVE_COLLECTORS = (
    "exporter.collectors",
    "exporter.watch",
    "exporter.daemon",
    "exporter.web",
    "exporter.status_page",
    "exporter.cli",
)


def test_input_and_state_never_import_collectors_or_the_wiring() -> None:
    """Events, state, sources, brokers and remote control write through the seams of
    events/stages.py (and control.py's ControlHealth): the collectors implement them, the
    wiring (watch.py) passes them in."""
    graph: dict[str, set[str]] = {}
    for folder in ("events", "state", "sources", "brokers", "prom"):
        graph.update(_graph(folder))
    graph["exporter.control"] = _imports(EXPORTER / "control.py")
    upward = {
        module: sorted(n for n in names if _within(n, *ABOVE_COLLECTORS))
        for module, names in graph.items()
    }
    assert {m: names for m, names in upward.items() if names} == {}


def test_collectors_are_registered_in_one_place() -> None:
    """Only the wiring builds collectors: watch.py per broker, daemon.py for the process."""
    importers = {
        _module(path)
        for path in sorted(EXPORTER.rglob("*.py"))
        if not _within(_module(path), "exporter.collectors")
        and any(_within(n, "exporter.collectors") for n in _imports(path))
    }
    assert importers == {"exporter.watch", "exporter.daemon"}
