"""Headless Chromium (Debian's ``chromium``) as a user's browser: the DOM after rendering,
and screenshots. No driver: ``--dump-dom`` and ``--screenshot`` are Chromium's own."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = shutil.which("chromium")
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)  # fmt: skip


def _run(url: str, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "chromium is not installed (make system-packages)"
    # A fresh profile each time: nothing cached from another run or test.
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip


def dump_dom(url: str) -> str:
    """The page's DOM, serialized by the browser after loading it."""
    return _run(url, "--dump-dom").stdout


def screenshot(url: str, path: Path, width: int = 1100, height: int = 1100) -> Path:
    """A PNG of the page as the browser renders it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(url, f"--screenshot={path}", f"--window-size={width},{height}")
    return path


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag in ("p", "tr", "div", "h1", "h2", "h3", "br", "section", "li"):
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def dom_text(dom: str) -> tuple[str, list[str]]:
    """(the text a reader sees, one line per block; every element's tag in order)."""
    parser = _Text()
    parser.feed(dom)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line), parser.tags
