"""The README agrees with the documents it summarises; packaging metadata stays current."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quotes_the_scaling_figures_of_docs_scaling() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    scaling = " ".join((ROOT / "docs" / "scaling.md").read_text().split())
    quoted = re.search(
        r"One core ingests (\S+) batched or (\S+) one-per-message events per second, and "
        r"renders `/metrics` with 50,000 series in (\S+) ms",
        readme,
    )
    assert quoted, "the README's resources paragraph changed shape: update this test"
    batched, single, scrape_ms = quoted.groups()
    assert f"| one core saturated at about | {batched} events/s | {single} events/s |" in scaling
    assert f"answers in {scrape_ms} ms (median" in scaling


def test_readme_screenshot_of_the_status_page_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    (path,) = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", readme)
    assert (ROOT / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_license_is_an_spdx_string_for_setuptools() -> None:
    """A `license = {text = ...}` table makes setuptools warn on every install."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', pyproject, flags=re.M)
    assert re.search(r'^requires = \["setuptools>=77"\]', pyproject, flags=re.M)  # PEP 639


def _module_map() -> list[str]:
    """The first word of each entry of the README's module map (the code block under
    "How it is built"): a path under exporter/, a module or a package (``name/``)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## How it is built", 1)[1].split("```\nexporter/\n", 1)[1]
    block = block.split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if re.match(r"  \S", line)]


def _has_code(path: Path) -> bool:
    """A package's __init__.py is a module of its own when it defines something (more than
    a docstring, imports and ``__all__``)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(not (isinstance(t, ast.Name) and t.id == "__all__") for t in targets):
                return True
    return False


def test_readme_module_map_names_every_module_and_only_modules() -> None:
    package = ROOT / "exporter"
    modules = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" or _has_code(path)
    }
    entries = _module_map()
    packages = [entry for entry in entries if entry.endswith("/")]
    assert [p for p in packages if not (package / p / "__init__.py").is_file()] == []
    named = [entry for entry in entries if not entry.endswith("/")]
    assert len(named) == len(set(named)), "a module is named twice"
    assert sorted(modules - set(named)) == [], "modules missing from the README's map"
    assert sorted(set(named) - modules) == [], "the README's map names modules that are gone"
