"""Which priority lists a Redis queue really has, whatever the producers were configured with.

kombu stores priority ``p`` of queue ``q`` in ``<q><sep><step>`` where ``step`` is the
largest of ``priority_steps`` not above ``p`` (``p`` clamped to 0..9; step 0 is the bare
list). Producers and workers configured with other ``priority_steps`` or ``sep`` than the
exporter (kombu's default is ``[0, 3, 6, 9]`` and ``\\x06\\x16``) fill lists the exporter
would not read: the backlog hidden in them is the priority-queue incident. So the layout is
learned, not assumed:

- every step 1..9 is probed for each known separator (one ``EXISTS`` per queue and sample,
  over the lists not yet known): that covers every list kombu can create;
- separators are learned from kombu's binding members (``<queue><sep><sep><queue>`` for
  Celery's automatic queues), from the workers' own options and from sub-list keys a
  bounded keyspace scan finds (see ``redis_keyspace.py``); a keyspace key is no evidence
  of a separator made only of the punctuation people put in queue names (``-_.:@``):
  ``tasks-1`` is far likelier a queue of its own than a priority list of ``tasks``;
- a key whose name is itself a known queue (workers' queues, ``--queues``, bindings, sent
  tasks) is that queue, never a priority list of another one;
- a list once found is read on every later sample (0 when it empties, so its series stays).

Lists found that the configured (or default) layout does not name are a mismatch: counted
anyway, logged once per queue, exported and reported by ``diagnose``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SEP = "\x06\x16"
DEFAULT_STEPS = (0, 3, 6, 9)
# kombu clamps message priorities to 0..9 and maps each to a step not above it.
PROBED_STEPS = tuple(range(1, 10))
# A separator learned from a key must look like one: short, with no letters or digits (so
# "celery-beat-1" is not read as queue "celery" with separator "-beat-").
MAX_SEP_LENGTH = 8
# Characters of ordinary queue names ("tasks-1", "reports_2", "jobs.3", "a:b", "x@y"): a
# separator made only of these is learned from Celery's own evidence (bindings, workers'
# options), never from a key name alone.
NAME_PUNCTUATION = frozenset("-_.:@")


@dataclass(frozen=True)
class PriorityMismatch:
    """Sub-lists of a queue that the configured layout does not name."""

    found_steps: tuple[int, ...]  # every step found (0 included), ascending
    found_seps: tuple[str, ...]  # separators of the lists found outside the configuration
    configured_steps: tuple[int, ...]
    configured_sep: str
    steps_configured: bool  # False: kombu's default, as no option was given

    def describe(self) -> str:
        source = "configured" if self.steps_configured else "kombu's default"
        seps = ", ".join(repr(s) for s in self.found_seps)
        return (
            f"priority lists for steps {list(self.found_steps)} (separator {seps}) while the "
            f"exporter's priority_steps are {list(self.configured_steps)} ({source}), "
            f"separator {self.configured_sep!r}"
        )

    def fix(self) -> str:
        options = [f"priority_steps={_json_list(self.found_steps)}"]
        if self.found_seps and self.found_seps[0] != self.configured_sep:
            options.append(f"sep={self.found_seps[0]!r}")
        flags = " ".join(f"--broker-transport-option '{o}'" for o in options)
        return (
            "give producers, workers and the exporter the same broker_transport_options "
            f"(exporter: {flags})"
        )


def _json_list(steps: tuple[int, ...]) -> str:
    return "[" + ",".join(str(s) for s in steps) + "]"


def sep_of_default_binding(member: str) -> tuple[str, str] | None:
    """(queue, sep) from a binding member ``<q><sep><sep><q>`` (routing key = queue name,
    no pattern: how Celery binds its automatic queues), when the separator is unknown."""
    for k in range(len(member) // 2 - 1, 0, -1):
        queue = member[:k]
        if not member.endswith(queue):
            continue
        middle = member[k : len(member) - k]
        half = len(middle) // 2
        if len(middle) % 2 == 0 and middle[:half] == middle[half:] and plausible_sep(middle[:half]):
            return queue, middle[:half]
    return None


def plausible_sep(sep: str) -> bool:
    return 0 < len(sep) <= MAX_SEP_LENGTH and not any(c.isalnum() for c in sep)


def keyspace_sep(sep: str) -> bool:
    """A separator worth learning from a key name alone: not one of a queue name's own."""
    return plausible_sep(sep) and not set(sep) <= NAME_PUNCTUATION


class PriorityLayout:
    """The priority lists to read per queue: configured, probed, learned."""

    def __init__(self, prefix: str, sep: str, steps: tuple[int, ...], steps_configured: bool):
        self.prefix = prefix
        self.sep = sep
        self.steps = steps
        self.steps_configured = steps_configured
        self.seps: list[str] = [sep]  # known separators, the configured one first
        # queue -> (sep, step) lists found beyond the configured ones
        self.found: dict[str, set[tuple[str, int]]] = {}
        # queue -> steps whose list held messages in some sample
        self.seen: dict[str, set[int]] = {}
        self._logged: set[str] = set()
        # (sep, step) lists the workers' own options name (inspect conf)
        self.worker_lists: set[tuple[str, int]] = set()
        self._workers_logged: set[tuple[str, tuple[int, ...]]] = set()
        # hostname -> how its own options differ from the exporter's
        self.worker_mismatch: dict[str, PriorityMismatch] = {}
        # every queue known in the current sample: such a key is never a priority list
        self.queues: set[str] = set()

    def learn_sep(self, sep: str) -> None:
        if sep not in self.seps and plausible_sep(sep):
            self.seps.append(sep)

    def key(self, queue: str, sep: str, step: int) -> str:
        name = f"{self.prefix}{queue}"
        return name if step == 0 else f"{name}{sep}{step}"

    def is_other_queue(self, queue: str, sep: str, step: int) -> bool:
        """The list's name is a known queue of its own (``tasks-1`` beside ``tasks``)."""
        return step != 0 and f"{queue}{sep}{step}" in self.queues

    def note_queues(self, queues: set[str]) -> None:
        """The queues known in this sample; lists found earlier that turn out to be one of
        them (its worker came up after the key was seen) are not the other queue's."""
        self.queues = set(queues)
        for queue in list(self.found):
            kept = {p for p in self.found[queue] if not self.is_other_queue(queue, *p)}
            if kept != self.found[queue]:
                self.forget(queue)  # what it saw included the other queue's messages
                if kept:
                    self.found[queue] = kept

    def configured(self) -> list[tuple[str, int]]:
        lists = [(self.sep, step) for step in self.steps]
        if 0 not in self.steps:  # kombu still puts priorities below the first step there
            lists.insert(0, (self.sep, 0))
        return lists

    def lists(self, queue: str) -> list[tuple[str, int]]:
        """(sep, step) of every list to read for this queue, step 0 (the bare list) first:
        the configured ones, those of the workers' own options, those found."""
        configured = self.configured()
        extra = sorted(self.worker_lists | self.found.get(queue, set()), key=lambda p: (p[1], p[0]))
        # In consumption order (kombu reads the lowest step first); a stable sort keeps the
        # configured separator first within a step.
        pairs = configured + [p for p in extra if p not in configured]
        return sorted((p for p in pairs if not self.is_other_queue(queue, *p)), key=lambda p: p[1])

    def unprobed(self, queue: str) -> list[tuple[str, int]]:
        """Possible lists not read yet: probed with one EXISTS per queue and sample."""
        known = set(self.lists(queue))
        return [
            (s, step)
            for s in self.seps
            for step in PROBED_STEPS
            if (s, step) not in known and not self.is_other_queue(queue, s, step)
        ]

    def found_list(self, queue: str, sep: str, step: int) -> None:
        """A list that exists (or held messages) outside the configured ones."""
        if (sep, step) in self.configured() or self.is_other_queue(queue, sep, step):
            return
        self.found.setdefault(queue, set()).add((sep, step))
        self.learn_sep(sep)

    def learn_workers(self, options_by_worker: dict[str, dict[str, Any]]) -> None:
        """The current workers' options; ``worker_mismatch`` names only current workers."""
        mismatches: dict[str, PriorityMismatch] = {}
        for hostname, options in options_by_worker.items():
            mismatch = self.learn_worker(hostname, options)
            if mismatch is not None:
                mismatches[hostname] = mismatch
        # Assigned whole: the status page and diagnose read it from other threads.
        self.worker_mismatch = mismatches

    def learn_worker(self, hostname: str, options: dict[str, Any]) -> PriorityMismatch | None:
        """A worker's own broker_transport_options (its ``inspect conf`` reply): its lists
        are read for every queue from now on, before any message is found in them. Returns
        how they differ from the exporter's, if they do."""
        sep = options.get("sep", DEFAULT_SEP)
        steps = tuple(options.get("priority_steps", DEFAULT_STEPS))
        prefix = options.get("global_keyprefix", "") or ""
        if prefix != self.prefix:
            return None  # other keys entirely: not this exporter's to read
        self.learn_sep(sep)
        for step in steps:
            if step and (sep, step) not in self.worker_lists:
                self.worker_lists.add((sep, step))
        if (sep, steps) == (self.sep, self.steps):
            return None
        mismatch = PriorityMismatch(
            found_steps=steps,
            found_seps=(sep,),
            configured_steps=self.steps,
            configured_sep=self.sep,
            steps_configured=self.steps_configured,
        )
        if (sep, steps) not in self._workers_logged:
            self._workers_logged.add((sep, steps))
            log.warning(
                "worker %s uses priority_steps %s and separator %r, the exporter %s (%s) and "
                "%r: its priority lists are read too; give the exporter "
                "--broker-transport-option 'priority_steps=%s'%s",
                hostname,
                list(steps),
                sep,
                list(self.steps),
                "configured" if self.steps_configured else "kombu's default",
                self.sep,
                _json_list(steps),
                "" if sep == self.sep else f" --broker-transport-option 'sep={sep}'",
            )
        return mismatch

    def log_mismatch(self, queue: str) -> None:
        """One warning per queue, once a sample has counted its lists."""
        mismatch = self.mismatch(queue)
        if mismatch is not None and queue not in self._logged:
            self._logged.add(queue)
            log.warning(
                "Redis queue %r has %s: counted anyway, but the configurations disagree; %s",
                queue,
                mismatch.describe(),
                mismatch.fix(),
            )

    def forget(self, queue: str) -> None:
        self.found.pop(queue, None)
        self.seen.pop(queue, None)

    def saw(self, queue: str, step: int) -> None:
        """A list of this step held messages (what producers use, for the suggested fix)."""
        self.seen.setdefault(queue, set()).add(step)

    def mismatch(self, queue: str) -> PriorityMismatch | None:
        extra = self.found.get(queue)
        if not extra:
            return None
        steps = {0} | self.seen.get(queue, set()) | {step for _sep, step in extra}
        return PriorityMismatch(
            found_steps=tuple(sorted(steps)),
            found_seps=tuple(sorted({s for s, _step in extra}, key=self.seps.index)),
            configured_steps=self.steps,
            configured_sep=self.sep,
            steps_configured=self.steps_configured,
        )

    def classify(self, key: str, queues: set[str]) -> tuple[str, str, int] | None:
        """(queue, sep, step) when ``key`` looks like a priority list of a known queue: not
        itself a known queue, and with a separator already known or one no queue name
        would contain."""
        if not key.startswith(self.prefix) or len(key) < 3 or key[len(self.prefix) :] in queues:
            return None
        last = key[-1]
        if not ("1" <= last <= "9") or key[-2].isalnum():
            return None
        rest = key[len(self.prefix) : -1]
        for cut in range(len(rest) - 1, max(0, len(rest) - MAX_SEP_LENGTH - 1), -1):
            queue, sep = rest[:cut], rest[cut:]
            if queue in queues and (sep in self.seps or keyspace_sep(sep)):
                return queue, sep, int(last)
        return None
