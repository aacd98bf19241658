"""One "## " section of bench/RESULTS.md, written in place by each benchmark but ingest.py.

``ingest.py`` rewrites the whole file and keeps the sections the other scripts wrote
(``lib/report.py`` ``OTHER_SECTIONS``); each other script replaces only its own section,
before the hand-written ``## Notes`` (or at the end).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lib.procs import ROOT

Check = tuple[str, bool, str]  # (name, passed, details)
RESULTS_PATH = ROOT / "bench" / "RESULTS.md"


def replace_section(path: Path, header: str, lines: list[str]) -> None:
    """Put ``lines`` (starting with ``header``) in place of that section of ``path``."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    body = "\n".join(lines).rstrip() + "\n"
    start = text.find("\n" + header + "\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + body + ("\n" + text[end + 1 :] if end >= 0 else "")
    else:
        notes = text.find("\n## Notes")
        if notes >= 0:
            text = text[: notes + 1] + body + "\n" + text[notes + 1 :]
        else:
            text = text.rstrip() + "\n\n" + body
    path.write_text(text)


def run_facts(command: str) -> list[str]:
    """Date, command, commit and load average lines for the top of a section."""
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "exporter"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open("/proc/loadavg") as f:
        load = ", ".join(f.read().split()[:3])
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return [
        f"- Date: `{date}`",
        f"- Command: `{command}`",
        f"- Exporter code: {commit}" + (" (exporter/ modified)" if dirty else ""),
        f"- Machine: {nproc} cores, shared; load average at the start (1, 5, 15 min): {load}",
    ]


def checks_line(checks: list[Check]) -> str:
    """The "- Checks: N of M passed" line of a section, naming the failed ones."""
    failed = [name for name, ok, _ in checks if not ok]
    return f"- Checks: {len(checks) - len(failed)} of {len(checks)} passed" + (
        "" if not failed else " - **FAILED: " + "; ".join(failed) + "**"
    )


def finish(
    header: str, lines: list[str], checks: list[Check], write: bool, list_failed: bool = True
) -> int:
    """Print a section (with the failed checks' details), write it unless ``--no-results``;
    the script's exit code."""
    failed = [c for c in checks if not c[1]]
    if failed and list_failed:
        lines = [*lines, "", "Failed checks:", "", *(f"- {n}: {d}" for n, _, d in failed)]
    print("\n".join(lines))
    if write:
        replace_section(RESULTS_PATH, header, lines)
    return 1 if failed else 0
