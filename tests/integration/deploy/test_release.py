"""The release people install: `python -m build` makes a wheel and an sdist whose metadata passes
`twine check`, and the wheel installs in a fresh venv with the pinned dependencies
(requirements.lock, as the container image does) and reports its version."""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import trove_classifiers

from exporter import __version__
from tests.support.exporter import REPO_ROOT

NAME = "celery_metrics_exporter"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the dev venv's pinned build tools, nothing fetched.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob(f"{NAME}-{__version__}-py3-none-any.whl")
    return wheel


def test_wheel_and_sdist_metadata(dist: Path) -> None:
    wheel = wheel_of(dist)
    (sdist,) = dist.glob(f"{NAME}-{__version__}.tar.gz")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    info = f"{NAME}-{__version__}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert {"exporter/py.typed", "exporter/cli.py", f"{info}/licenses/LICENSE"} <= names
    assert "celery-metrics-exporter = exporter.cli:main" in entry_points
    assert metadata["Name"] == "celery-metrics-exporter"
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert not unknown, f"not PyPI classifiers: {unknown}"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog", "Documentation"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    requires = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    runtime = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in requires}
    assert runtime == {
        "celery", "kombu", "redis", "prometheus-client", "click", "orjson", "pyyaml", "bcrypt"
    }  # fmt: skip
    with tarfile.open(sdist) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    assert {"LICENSE", "README.md", "pyproject.toml", "exporter/py.typed"} <= members


def test_wheel_installs_in_a_fresh_venv_and_reports_its_version(dist: Path, tmp_path: Path) -> None:
    # The pinned runtime dependencies as wheels (from the configured index, once per run),
    # then an install that can use nothing else: the wheel's metadata must name them all.
    wheelhouse = tmp_path / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "-r", str(REPO_ROOT / "requirements.lock"), "--dest", str(wheelhouse)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run(
        [*pip, "install", "--quiet", "--no-index", "--find-links", str(wheelhouse),
         str(wheel_of(dist))],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    subprocess.run([*pip, "check"], check=True, capture_output=True, timeout=60)
    result = subprocess.run(
        [str(venv / "bin" / "celery-metrics-exporter"), "--version"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"celery-metrics-exporter, version {__version__}"


def test_image_labels_and_release_target_carry_the_version() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert f"ARG VERSION={__version__}\n" in dockerfile
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    assert "COPY pyproject.toml README.md LICENSE ./" in dockerfile
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "--build-arg VERSION=$(VERSION)" in makefile
    assert "$(BIN)/python -m build" in makefile
