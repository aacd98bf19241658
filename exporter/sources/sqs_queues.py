"""Where Amazon SQS queue depth is read: ``GetQueueAttributes``, one request per queue.

Through kombu's own SQS channel (``channel.sqs()``), so credentials, region, endpoint,
``queue_name_prefix``, ``predefined_queues`` and STS roles mean what they mean to the workers.
Per queue, SQS's approximate counts:

- ``ApproximateNumberOfMessages``: visible, waiting for a worker (``QueueSample.ready``);
- ``ApproximateNumberOfMessagesNotVisible``: in flight, received by a worker and not deleted
  (acknowledged) yet, until its visibility timeout (``QueueSample.reserved``);
- ``ApproximateNumberOfMessagesDelayed``: sent with ``DelaySeconds`` and not due yet (summed
  over the queues into ``BrokerSample.delayed_total``).

Queues: the ones asked for, Celery's default queue, and, when the workers use a
``queue_name_prefix``, every queue ``ListQueues`` finds under it (the prefix is what sets a
Celery cluster's queues apart from the account's others). kombu names a Celery queue on SQS
``prefix + name`` with ``.`` turned into ``-`` and other punctuation into ``_``; a queue
found by listing is labelled with that SQS name less the prefix, unless a queue asked for
has the same SQS name (then the name asked for, dots and all).

With ``predefined_queues`` the cluster's queues are exactly those: each is read at its URL
with its own credentials and labelled by its key (the name the workers use); a name asked
for that is not predefined (the default ``celery`` included) is skipped and logged once,
since kombu would not reach it either and the URL's credentials may have no right to look.
A queue that fails (access denied to it...) is left out of the sample, named in its
``failed_queues`` (``celery_exporter_source_failed_queues``) and logged once until it answers
again; the sample fails (``source_up`` 0) only when none of the queues answered. An endpoint
that does not answer at all is asked once per sample: its other queues fail at once.

Sampling only reads: it never creates, receives from or deletes from a queue.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kombu.connection import Connection

from exporter.logs import LogOnce
from exporter.sources.base import BrokerSample, QueueSample, release_quietly

ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
log = logging.getLogger(__name__)

# Celery's task_default_queue: watched even before anything names it.
DEFAULT_QUEUE = "celery"


def is_task_queue(name: str) -> bool:
    """Not one of the queues kombu makes for events (``celeryev.<uuid>``) or remote control
    (``<hostname>.celery.pidbox``, ``reply.celery.pidbox``), in their SQS spelling: unused on
    SQS, but a cluster that once tried may have them."""
    return not (name.startswith("celeryev") or name.endswith("celery-pidbox"))


class SqsQueueSource:
    name = "sqs"

    def __init__(self, timeout: float, connect: Callable[[], Connection]) -> None:
        """``connect``: a connection with bounded client timeouts (brokers/sqs.py gives it)."""
        self.timeout = timeout
        self._connect = connect
        self._conn: Connection | None = None
        self._log_once = LogOnce(log)  # per-queue notices
        self._failing: set[str] = set()  # queues whose failure is logged, until they answer

    def _channel(self) -> Any:
        if importlib.util.find_spec("boto3") is None:
            raise RuntimeError("boto3 is not installed: pip install celery-metrics-exporter[sqs]")
        if self._conn is None:
            self._conn = self._connect()
        # kombu's SQS channel lists the queues under the prefix when it opens: a broker
        # that does not answer (or refuses the credentials) fails here.
        return self._conn.default_channel

    def close(self) -> None:
        conn, self._conn = self._conn, None
        release_quietly(conn)

    def sample(self, queues: list[str]) -> BrokerSample:
        failures = _Failures()
        try:
            sample = self._sample(self._channel(), queues, failures)
        except Exception:
            self.close()
            raise
        if failures.errors and not sample.queues:
            # No queue answered: the broker is down for the exporter (the runner logs it
            # once per outage), not each queue.
            self.close()
            raise failures.errors[min(failures.errors)]
        sample.failed_queues = set(failures.errors)
        self._log_failures(failures.errors)
        return sample

    def _log_failures(self, errors: dict[str, Exception]) -> None:
        """Each failing queue once, until it answers (or leaves the cluster's queues)."""
        for label in sorted(errors):
            self._log_once(
                ("fail", label),
                logging.WARNING,
                "sampling sqs queue %r failed: %s",
                label,
                errors[label],
            )
        for label in self._failing - errors.keys():
            self._log_once.forget(("fail", label))
        self._failing = set(errors)

    def _sample(self, channel: Any, queues: list[str], failures: _Failures) -> BrokerSample:
        if channel.predefined_queues:
            return self._sample_predefined(channel, queues, failures)
        sample = BrokerSample(delayed_total=0)
        prefix: str = channel.queue_name_prefix
        # SQS name -> (label, URL or None until looked up)
        found: dict[str, tuple[str, str | None]] = {}
        for listed, listed_url in self._listed(channel, prefix):
            if is_task_queue(listed):
                found[listed_url.rsplit("/", 1)[-1]] = (listed, listed_url)
        for queue in [DEFAULT_QUEUE, *queues]:
            sqs_name = channel.canonical_queue_name(queue)
            label, url = found.get(sqs_name, (queue, None))
            # The name asked for keeps the dots kombu turned into dashes.
            if label == sqs_name[len(prefix) :]:
                label = queue
            found[sqs_name] = (label, url)
        for sqs_name, (label, known_url) in sorted(found.items()):
            _read(sample, channel, label, sqs_name, known_url, failures)
        return sample

    def _sample_predefined(
        self, channel: Any, queues: list[str], failures: _Failures
    ) -> BrokerSample:
        predefined: dict[str, dict[str, Any]] = channel.predefined_queues
        for queue in sorted(set(queues) - set(predefined)):
            self._log_once(
                ("skip", queue),
                logging.WARNING,
                "sqs queue %r is not in predefined_queues: not sampled (kombu would not "
                "reach it either)",
                queue,
            )
        sample = BrokerSample(delayed_total=0)
        for key in sorted(predefined):
            _read(sample, channel, key, key, predefined[key]["url"], failures)
        return sample

    def _listed(self, channel: Any, prefix: str) -> Iterable[tuple[str, str]]:
        """(label, URL) of the cluster's queues under the prefix."""
        if not prefix:
            return []  # the whole account's queues are not the cluster's
        pages = channel.sqs().get_paginator("list_queues")
        urls = [
            url
            for page in pages.paginate(QueueNamePrefix=prefix, PaginationConfig={"PageSize": 1000})
            for url in page.get("QueueUrls", [])
        ]
        return [(url.rsplit("/", 1)[-1][len(prefix) :], url) for url in urls]


@dataclass
class _Failures:
    """One sample's queues that did not answer, with their errors; and the endpoints that
    did not answer at all, whose other queues are not asked again in that sample."""

    errors: dict[str, Exception] = field(default_factory=dict)
    dead_endpoints: dict[str, Exception] = field(default_factory=dict)


def _read(
    sample: BrokerSample,
    channel: Any,
    label: str,
    sqs_name: str,
    url: str | None,
    failures: _Failures,
) -> None:
    """One queue into the sample, or into ``failures``: a queue whose read fails (access
    denied to it, no credentials for it...) is left out, and the others are still read: one
    queue's rights are not the broker's health. An endpoint that does not answer (refused,
    timed out) is not asked again in this sample: its other queues fail at once rather than
    each after a timeout. A predefined queue may have an endpoint (region) of its own."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    endpoint = ""
    try:
        client = channel.sqs(queue=label) if label in channel.predefined_queues else channel.sqs()
        endpoint = str(client.meta.endpoint_url)
        if endpoint in failures.dead_endpoints:
            failures.errors[label] = failures.dead_endpoints[endpoint]
            return
        counts = _counts(client, sqs_name, url)
    except (ConnectionError, HTTPClientError) as error:
        failures.dead_endpoints[endpoint] = error
        failures.errors[label] = error
        return
    except Exception as error:
        failures.errors[label] = error
        return
    if counts is None:  # absent: nothing waits there
        sample.queues[label] = QueueSample(ready=0, reserved=0)
    else:
        _add(sample, label, counts)


def _counts(client: Any, sqs_name: str, url: str | None) -> tuple[int, int, int] | None:
    """(visible, in flight, delayed), None when the queue does not exist."""
    try:
        if url is None:
            url = client.get_queue_url(QueueName=sqs_name)["QueueUrl"]
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=list(ATTRIBUTES))[
            "Attributes"
        ]
    except client.exceptions.QueueDoesNotExist:
        return None
    visible, in_flight, delayed = (int(attributes.get(name, 0)) for name in ATTRIBUTES)
    return visible, in_flight, delayed


def _add(sample: BrokerSample, label: str, counts: tuple[int, int, int]) -> None:
    visible, in_flight, delayed = counts
    sample.queues[label] = QueueSample(ready=visible, reserved=in_flight)
    sample.listed_queues.add(label)
    sample.delayed_total = (sample.delayed_total or 0) + delayed
