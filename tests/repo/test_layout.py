"""The tests mirror the code (tests/README.md): a unit test file sits at the path of the module
it tests, runs no server, and every integration test belongs to a named scenario."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
EXPORTER = ROOT / "exporter"

# What starts a server, a worker or an exporter process: an integration test's tools.
SERVER_FIXTURES = {
    "redis_server", "redis_url", "rabbitmq_server", "rabbitmq_url", "sqs_server",
    "broker_url", "worker_factory", "producer_factory", "exporter_factory",
}  # fmt: skip
SERVER_HELPERS = {
    "tests.support.servers", "tests.support.workers", "tests.support.exporter",
    "tests.support.prometheus", "tests.support.alertmanager", "tests.support.faultproxy",
    "tests.support.sqs",
}  # fmt: skip


def _test_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("test_*.py"))


def test_every_unit_test_file_mirrors_an_exporter_module() -> None:
    """tests/unit/a/test_b.py tests exporter/a/b.py (or the package exporter/a/b/)."""
    strays = []
    for path in _test_files(TESTS / "unit"):
        relative = path.relative_to(TESTS / "unit")
        name = relative.name.removeprefix("test_").removesuffix(".py")
        target = EXPORTER / relative.parent / name
        if not (target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()):
            strays.append(str(relative))
    assert strays == [], "unit test files that mirror no module of exporter/"
    assert _test_files(TESTS / "unit"), "tests/unit/ is empty: this test checks nothing"


def test_every_unit_test_folder_mirrors_an_exporter_package() -> None:
    folders = [p for p in (TESTS / "unit").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    strays = [
        str(p.relative_to(TESTS / "unit"))
        for p in folders
        if not (EXPORTER / p.relative_to(TESTS / "unit") / "__init__.py").is_file()
    ]
    assert strays == []


def test_unit_tests_start_no_server() -> None:
    """No unit test asks for a broker, worker or exporter fixture or imports the helpers that
    start one (or an integration test's module): those belong under tests/integration/."""
    offenders = []
    for path in _test_files(TESTS / "unit"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.module in SERVER_HELPERS or (node.module or "").startswith("tests.integration")
            ):
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}: {node.module}")
            if isinstance(node, ast.FunctionDef):
                asked = {a.arg for a in node.args.args} & SERVER_FIXTURES
                if asked:
                    offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}: {sorted(asked)}")
    assert offenders == []


def test_no_flat_test_files_and_every_integration_test_in_a_named_scenario() -> None:
    assert [p.name for p in TESTS.glob("test_*.py")] == []
    scenarios = {
        p.relative_to(TESTS / "integration").parts[0] for p in _test_files(TESTS / "integration")
    }
    assert [
        p for p in _test_files(TESTS / "integration") if p.parent == TESTS / "integration"
    ] == []
    readme = (TESTS / "README.md").read_text()
    assert sorted(s for s in scenarios if f"`integration/{s}/`" not in readme) == [], (
        "scenarios missing from tests/README.md"
    )
