"""Moved to bench/lib/results.py; kept for scripts that import ``results``."""

from lib.results import (
    RESULTS_PATH,
    Check,
    checks_line,
    finish,
    replace_section,
    run_facts,
)

__all__ = ["RESULTS_PATH", "Check", "checks_line", "finish", "replace_section", "run_facts"]
