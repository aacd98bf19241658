"""Which task names get series of their own, and which fold into ``(other)``.

Series grow with the number of distinct task names. Three limits bound them:

- include/exclude glob patterns (``--task-include``/``--task-exclude``): a name that is not
  included, or is excluded, is counted under ``name="(other)"``;
- a cap on distinct names (``--max-task-names``): names beyond it fold into ``(other)`` too;
- idle removal (``--task-name-forget-after``): a name without events for that long loses
  its series and its place under the cap (see ``idle``).

Folding keeps every count: an event of an excluded task still increments a counter, under
``(other)``. Each name folded or removed is counted once in
``celery_exporter_dropped_label_values_total{label="name",reason}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import translate

from exporter.labels import UNKNOWN, label_value
from exporter.prom.counting import LabelledCounter

OTHER = "(other)"
# Remembered raw name -> label decisions; beyond this the memo is reset (decisions are
# recomputed, admitted names keep their place).
MAX_MEMO = 50_000
# Folded names remembered so each is counted once; beyond it a name may count again.
MAX_FOLDED_REMEMBERED = 100_000


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of the shell-style patterns (``*``, ``?``, ``[...]``)."""
    parts = [translate(p) for p in patterns if p]
    return re.compile("|".join(parts)) if parts else None


class TaskNames:
    def __init__(
        self,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        max_names: int = 0,
        dropped: LabelledCounter | None = None,
    ) -> None:
        self._include = compile_globs(include)
        self._exclude = compile_globs(exclude)
        self.max_names = max_names  # 0: no cap
        self.dropped = (
            dropped
            if dropped is not None
            else LabelledCounter(
                "celery_exporter_dropped_label_values_total", "", ("label", "reason")
            )
        )
        # Counted by the caller; here so every reason exists (at 0) from the start.
        self.dropped.inc(("hostname", "idle"), 0.0)
        self.dropped.inc(("queue_name", "idle"), 0.0)
        self._memo: dict[str, str] = {}
        # Label values with series of their own -> when an event last named them.
        self.last_seen: dict[str, float] = {}
        self._folded: set[str] = set()
        for reason in ("excluded", "over_limit", "idle"):
            self.dropped.inc(("name", reason), 0.0)

    def __len__(self) -> int:
        """Task names that currently have series of their own."""
        return len(self.last_seen)

    def label(self, raw: object) -> str:
        """The ``name`` label for an event's task name (hot path: one dict lookup)."""
        if type(raw) is str:
            cached = self._memo.get(raw)
            if cached is not None:
                return cached
        value = self._decide(raw)
        if type(raw) is str:
            if len(self._memo) >= MAX_MEMO:
                self._memo.clear()
            self._memo[raw] = value
        return value

    def _decide(self, raw: object) -> str:
        value = label_value(raw)
        if value == UNKNOWN or value in self.last_seen:
            return value
        if (self._include is not None and not self._include.fullmatch(value)) or (
            self._exclude is not None and self._exclude.fullmatch(value)
        ):
            return self._fold(value, "excluded")
        if self.max_names and len(self.last_seen) >= self.max_names:
            return self._fold(value, "over_limit")
        self.last_seen[value] = 0.0
        return value

    def _fold(self, value: str, reason: str) -> str:
        if value not in self._folded:
            if len(self._folded) < MAX_FOLDED_REMEMBERED:
                self._folded.add(value)
            self.dropped.inc(("name", reason))
        return OTHER

    def touch(self, name: str, now: float) -> None:
        """An event for ``name`` (a label this object returned) arrived. Re-admits a name
        forgotten while one of its tasks was still running."""
        if name != OTHER and name != UNKNOWN:
            self.last_seen[name] = now

    def idle(self, now: float, forget_after: float) -> list[str]:
        """Names with no event for ``forget_after`` seconds: they give up their place and
        the caller removes their series. A later event admits them again."""
        cutoff = now - forget_after
        gone = [name for name, seen in self.last_seen.items() if seen < cutoff]
        for name in gone:
            del self.last_seen[name]
            self.dropped.inc(("name", "idle"))
        if gone:
            # Memoised decisions may point at forgotten names; an over-limit fold may now fit.
            self._memo.clear()
            self._folded.clear()
        return gone
