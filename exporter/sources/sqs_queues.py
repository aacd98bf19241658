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
again; the sample fails (``source_up`` 0) when none of the queues answered, or when the
endpoint does not answer at all.

Sampling only reads: it never creates, receives from or deletes from a queue.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable
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
        self._failures: dict[str, Exception] = {}  # the latest error of each failed queue

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
        self._failures.clear()
        try:
            sample = self._sample(self._channel(), queues)
        except Exception:
            self.close()
            raise
        if sample.failed_queues and not sample.queues:
            # No queue answered: the broker is down for the exporter.
            self.close()
            raise self._failures[min(sample.failed_queues)]
        return sample

    def _sample(self, channel: Any, queues: list[str]) -> BrokerSample:
        if channel.predefined_queues:
            return self._sample_predefined(channel, queues)
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
            self._read(sample, channel, label, sqs_name, known_url)
        return sample

    def _sample_predefined(self, channel: Any, queues: list[str]) -> BrokerSample:
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
            self._read(sample, channel, key, key, predefined[key]["url"])
        return sample

    def _read(
        self, sample: BrokerSample, channel: Any, label: str, sqs_name: str, url: str | None
    ) -> None:
        """One queue into the sample. A queue that fails (access denied to it, no
        credentials for it...) is left out, named in ``failed_queues`` and logged once until
        it answers again: one queue's rights are not the broker's health. No answer at all
        (connection refused, timed out) is the broker's: it fails the whole sample at once,
        rather than once per queue, each after its timeout."""
        from botocore.exceptions import ConnectionError, HTTPClientError

        try:
            counts = self._counts(channel, label, sqs_name, url)
        except (ConnectionError, HTTPClientError):
            raise
        except Exception as error:
            sample.failed_queues.add(label)
            self._failures[label] = error
            self._log_once(
                ("fail", label), logging.WARNING, "sampling sqs queue %r failed: %s", label, error
            )
            return
        self._log_once.forget(("fail", label))
        if counts is None:  # absent: nothing waits there
            sample.queues[label] = QueueSample(ready=0, reserved=0)
        else:
            _add(sample, label, counts)

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

    def _counts(
        self, channel: Any, label: str, sqs_name: str, url: str | None
    ) -> tuple[int, int, int] | None:
        """(visible, in flight, delayed), None when the queue does not exist."""
        predefined = channel.predefined_queues
        client = channel.sqs(queue=label) if label in predefined else channel.sqs()
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
