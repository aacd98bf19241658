"""The dashboards against Grafana's own dashboard schema.

No Grafana server can run here, and Grafana publishes no JSON Schema of the dashboard; it
publishes the schema as TypeScript types generated from its CUE definitions (@grafana/schema
on npm, Apache-2.0). tests/grafana_schema/ holds that file (version in its header); each
dashboard becomes a typed object literal and the TypeScript compiler (Debian's
node-typescript) checks it: unknown fields (excess properties), missing required ones, wrong
types and enum values all fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.exporter import REPO_ROOT

SCHEMA = REPO_ROOT / "tests" / "grafana_schema" / "dashboard_types.gen.d.ts"
DASHBOARDS = sorted((REPO_ROOT / "grafana" / "dashboards").glob("*.json"))
ENUM = re.compile(r"export declare enum (\w+) \{([^}]*)\}")
MEMBER = re.compile(r"(\w+)\s*=\s*(\"[^\"]*\"|-?\d+)")


def tsc() -> str:
    path = shutil.which("tsc")
    if path is None:
        pytest.fail("tsc is missing: run `make test` (installs Debian's node-typescript)")
    return path


def literal_types(declarations: str) -> str:
    """String enums as unions of their values: JSON holds "thresholds", which TypeScript
    does not accept for the enum member FieldColorModeId.Thresholds."""
    values: dict[str, str] = {}

    def union(match: re.Match[str]) -> str:
        members = MEMBER.findall(match.group(2))
        for member, value in members:
            values[f"{match.group(1)}.{member}"] = value
        return f"export type {match.group(1)} = {' | '.join(v for _, v in members)};"

    text = ENUM.sub(union, declarations)
    return re.sub(r"\b\w+\.\w+\b", lambda m: values.get(m.group(0), m.group(0)), text)


def typecheck(directory: Path, dashboards: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (directory / "dashboard_types.gen.d.ts").write_text(literal_types(SCHEMA.read_text()))
    files = []
    for name, text in dashboards.items():
        path = directory / f"{name}.ts"
        path.write_text(
            "import type { Dashboard } from './dashboard_types.gen';\n"
            f"export const dashboard: Dashboard = {text};\n"
        )
        files.append(str(path))
    return subprocess.run(
        [tsc(), "--noEmit", "--strict", "--target", "es2020", "--moduleResolution", "node",
         *files],
        capture_output=True, text=True, timeout=120, cwd=directory,
    )  # fmt: skip


def test_dashboards_pass_grafanas_schema(tmp_path: Path) -> None:
    assert len(DASHBOARDS) == 4
    result = typecheck(tmp_path, {p.stem.replace("-", "_"): p.read_text() for p in DASHBOARDS})
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_unknown_and_mistyped_fields(tmp_path: Path) -> None:
    text = DASHBOARDS[0].read_text()
    broken = {
        "unknown_field": text.replace('"graphTooltip": 1', '"graphTooltip": 1, "grapTooltip": 1'),
        "bad_enum": text.replace('"mode": "absolute"', '"mode": "relativ"', 1),
        "bad_type": text.replace('"editable": true', '"editable": "yes"'),
    }
    assert all(b != text for b in broken.values())
    result = typecheck(tmp_path, broken)
    assert result.returncode != 0
    for name in broken:
        assert f"{name}.ts(" in result.stdout, (name, result.stdout)
