"""exporter/malloc.py: glibc accepts the settings; elsewhere nothing happens."""

from __future__ import annotations

import platform

import pytest

from exporter.malloc import tune_malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_settings() -> None:
    assert tune_malloc() is True
