"""The README agrees with the documents it summarises; packaging metadata stays current."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
