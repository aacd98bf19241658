"""The option declarations (Settings fields, exporter/options.py) agree with click's --help, the
environment variables, Settings and the README's option table."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
import pytest

from exporter.cli import command, settings_from_args
from exporter.options import Option, declared_options
from exporter.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DECLARED = list(declared_options(Settings))
# The options whose value fills fields of other names (`into`): a broker spec may carry a name,
# KEY=VALUE options are a dict, the listen address is a host and a port. Every other field is
# named as its flag.
NAMED_BEFORE_THE_TABLE = {
    "broker_url": "broker_url",
    "transport_options": "broker_transport_option",
    "ssl_options": "broker_ssl_option",
    "listen_host": "listen_address",
}


@pytest.fixture(autouse=True)
def _no_exporter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CELERY_EXPORTER_")]:
        monkeypatch.delenv(name)


def _example(option: Option, default: Any, tmp_path: Path) -> tuple[list[str], str]:
    """(command-line arguments, environment value) that set a value other than the default."""
    if option.example is not None:
        return [option.flag, option.example], option.example
    if option.metavar == "PATH":
        path = tmp_path / "web-config.yml"
        path.write_text("{}\n")
        return [option.flag, str(path)], str(path)
    if isinstance(default, bool):
        on, off = option.flag.split("/")
        return [off if default else on], "false" if default else "true"
    if option.choices:
        shown = option.show(default) if option.show else default
        other = next(c for c in option.choices if c != shown)
        return [option.flag, other], other
    assert option.parse is None, f"{option.flag}: give the option an example= (it has a parser)"
    if isinstance(default, int | float):
        value = str(default + 1)
        return [option.flag, value], value
    value = "something"
    return [option.flag, value], value


@pytest.mark.parametrize(
    ("field", "option", "default"), DECLARED, ids=[o.flag for _, o, _ in DECLARED]
)
def test_flag_and_every_environment_variable_set_the_same_settings(
    field: str, option: Option, default: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, env_value = _example(option, default, tmp_path)
    from_flag = settings_from_args(args)
    assert getattr(from_flag, field) != default, f"{args} left {field} at its default"
    assert getattr(Settings(), field) == default
    for envvar in option.envvars():
        monkeypatch.setenv(envvar, env_value)
        assert settings_from_args([]) == from_flag, envvar
        monkeypatch.delenv(envvar)


def test_settings_defaults_are_what_an_empty_command_line_builds() -> None:
    assert settings_from_args([]) == Settings()


def test_new_options_name_their_field_as_their_flag() -> None:
    for field, option, _ in DECLARED:
        assert option.name == NAMED_BEFORE_THE_TABLE.get(field, field), (
            f"name the field of {option.flag} {option.name}, or the flag after the field"
        )
    assert len({option.envvars()[0] for _, option, _ in DECLARED}) == len(DECLARED)


def test_help_shows_each_option_with_its_help_and_default() -> None:
    with click.Context(command, info_name="celery-metrics-exporter") as ctx:
        text = "".join(command.get_help(ctx).split())  # click wraps lines (and at hyphens)
    for _, option, default in DECLARED:
        squeezed = "".join(option.help.split())
        assert squeezed in text, option.flag
        if default not in (None, (), {}, ""):
            shown = option.show(default) if option.show else default
            if isinstance(default, bool):
                shown = option.flag.split("/")[0 if default else 1].removeprefix("--")
            assert f"{squeezed}[default:{shown}" in text, option.flag


def test_readme_option_table_names_every_option_and_only_options() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"^\| `(--[a-z0-9-]+)", readme, re.MULTILINE)
    declared = [option.flag.split("/")[0] for _, option, _ in DECLARED]
    assert sorted(set(declared) - set(listed)) == [], "options missing from the README's table"
    assert sorted(set(listed) - set(declared)) == [], "the README's table names unknown options"
