"""Amazon SQS (``sqs://``) as a broker: queue depth only.

Celery has no broadcast on SQS, so no task or worker events reach the exporter and no worker
answers remote control (inspect, enable_events): the exporter starts neither, says so once
in the log, on the status page and in ``diagnose``, and reports queue depth: visible, in
flight and delayed messages per queue (sources/sqs_queues.py).

The URL, credentials and transport options are kombu's, as the workers use them:
``sqs://`` takes the credentials from the usual AWS chain (``AWS_ACCESS_KEY_ID``...,
``AWS_DEFAULT_REGION``, an instance role), ``sqs://KEY:SECRET@`` (URL-quoted) names them,
``sqs://KEY:SECRET@host:port`` (or ``AWS_ENDPOINT_URL_SQS``) points at another endpoint
(``is_secure=true`` for https); ``region``, ``queue_name_prefix`` and ``predefined_queues``
are transport options. Needs boto3 (``pip install celery-metrics-exporter[sqs]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from exporter.brokers.base import Broker, Check, boolean, integer, mapping, number, string
from exporter.sources.sqs_queues import SqsQueueSource

if TYPE_CHECKING:
    from celery import Celery

    from exporter.settings import Settings
    from exporter.sources.base import QueueSource

# kombu's SQS channel
OPTION_CHECKS: Mapping[str, Check] = {
    "region": string,
    "queue_name_prefix": string,
    "predefined_queues": mapping,
    "is_secure": boolean,
    "visibility_timeout": number,
    "wait_time_seconds": integer,
    "sts_role_arn": string,
    "sts_token_timeout": integer,
    "client-config": mapping,
}


class SqsBroker(Broker):
    name = "sqs"
    schemes = ("sqs",)
    task_events = False
    remote_control = False
    queue_sample_holds = frozenset({"ready", "reserved"})
    option_checks = OPTION_CHECKS

    def socket_timeouts(self, timeout: float) -> dict[str, Any]:
        # botocore's own defaults (60 s, retried) would hold the sampler for minutes.
        return {
            "client-config": {
                "connect_timeout": timeout,
                "read_timeout": timeout,
                "retries": {"total_max_attempts": 1},
            }
        }

    def queue_source(
        self,
        app: Celery,
        settings: Settings,
        worker_options: Callable[[], dict[str, dict[str, Any]]],
    ) -> QueueSource:
        timeout = settings.sample_timeout
        return SqsQueueSource(timeout, lambda: self.connect(app, timeout))


SQS = SqsBroker()
