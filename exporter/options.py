"""One declaration per option: a ``Settings`` field carries its flag, help and parsing.

``cli.py`` builds the click options (and their ``CELERY_EXPORTER_<FLAG>`` environment
variables) from these records, and turns what click parsed back into ``Settings``; the README's
option table is kept in step by ``tests/unit/test_options.py``. No click here: the records say what
an option is, ``cli.py`` says how click reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ENV_PREFIX = "CELERY_EXPORTER"

# A bound on a number: 0 excluded ("must be more than zero") or allowed ("zero or more").
Minimum = Literal["above_zero", "zero_or_more"]


class Fields(dict[str, Any]):
    """What an option's ``into`` returns when it sets several Settings fields."""


@dataclass(frozen=True)
class Option:
    """One command-line flag, also read from the environment."""

    flag: str  # "--sample-interval"; a boolean is "--native-histograms/--no-native-histograms"
    help: str
    # Text to value, raising ValueError with a message for the user. None: the default's type
    # (float, int, str; a bool is an on/off flag pair).
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    ignore_case: bool = False  # of the choices
    minimum: Minimum | None = None
    int_range: tuple[int, int] | None = None
    multiple: bool = False  # repeatable (--broker-url)
    key_values: bool = False  # repeatable KEY=VALUE; from the environment split on newlines or ';'
    # The default as the flag would be written, shown by --help (None: the value itself).
    show: Callable[[Any], str] | None = None
    # The parsed value to the field's value, or to several fields (``Fields``). Raises
    # ValueError naming the problem (shown as an error of this flag).
    into: Callable[[Any], Any] | None = None
    # Names earlier versions read (before the derived one existed), still honoured.
    legacy_envvars: tuple[str, ...] = ()
    # A valid value that is not the default, for tests/unit/test_options.py (needed with `parse`).
    example: str | None = None

    @property
    def name(self) -> str:
        """``--sample-interval`` -> ``sample_interval``: click's parameter name."""
        return self.flag.split("/")[0].removeprefix("--").replace("-", "_")

    def envvars(self, prefix: str = ENV_PREFIX) -> list[str]:
        return [f"{prefix}_{self.name.upper()}", *self.legacy_envvars]

    def settings_values(self, field: str, value: Any) -> Mapping[str, Any]:
        """The Settings fields a parsed value sets (ValueError: a bad value)."""
        converted = value if self.into is None else self.into(value)
        return converted if isinstance(converted, Fields) else {field: converted}


def option(default: Any, flag: str, help: str, **kwargs: Any) -> Any:
    """A ``Settings`` field with its default and the option that sets it."""
    metadata = {"option": Option(flag, help, **kwargs)}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared_options(settings_class: type) -> Iterator[tuple[str, Option, Any]]:
    """(Settings field, its option, default) in declaration order: the order of --help."""
    for field in dataclasses.fields(settings_class):
        declared = field.metadata.get("option")
        if declared is None:
            continue
        if field.default_factory is not dataclasses.MISSING:
            yield field.name, declared, field.default_factory()
        else:
            yield field.name, declared, field.default
