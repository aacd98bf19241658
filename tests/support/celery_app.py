"""The Celery app that test workers run (``celery -A tests.support.celery_app worker``).

Configured only from the environment, so each worker subprocess gets its own broker:

- ``CELERY_BROKER_URL`` (required): the broker.
- ``TEST_SEND_SENT_EVENT``: "1" sets ``task_send_sent_event`` (tasks this process sends, such as
  retries, then publish ``task-sent``); default "0".
- ``TEST_TASK_ROUTES``: JSON object task name -> queue name, used as
  ``task_routes = {name: {"queue": queue}}``.
- ``TEST_BROKER_TRANSPORT_OPTIONS``: JSON object passed as ``broker_transport_options``
  (e.g. ``{"global_keyprefix": "x:"}``); default none.
- ``TEST_BEAT_SCHEDULE``: JSON object entry -> {"task", "every" (seconds), "args"}, the
  ``beat_schedule`` (for tests that run ``celery beat``).
- ``TEST_BROKER_USE_SSL``: JSON object passed as ``broker_use_ssl``, the TLS options of an
  ``amqps://`` or ``rediss://`` broker (e.g. ``{"ca_certs": "/ca.pem", "cert_reqs": 2}`` for
  py-amqp); default none (Celery's default, ``False``).
- ``TEST_CELERY_CONF``: JSON object of any other settings, applied last (e.g.
  ``{"task_default_queue_type": "quorum", "task_default_exchange_type": "topic"}``).

Results are ignored: no result backend is configured.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

__all__ = ["CustomTaskError", "app"]


def _broker_url() -> str:
    url = os.environ.get("CELERY_BROKER_URL")
    if not url:
        raise RuntimeError("tests.support.celery_app needs CELERY_BROKER_URL in the environment")
    return url


def _json_env(name: str) -> dict[str, Any]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise RuntimeError(f"{name} must be a JSON object, got {raw!r}")
    return value


app = Celery("tests", broker=_broker_url(), set_as_current=True)
app.conf.update(
    result_backend=None,
    task_ignore_result=True,
    task_send_sent_event=os.environ.get("TEST_SEND_SENT_EVENT", "0") == "1",
    task_routes={name: {"queue": queue} for name, queue in _json_env("TEST_TASK_ROUTES").items()},
    broker_transport_options=_json_env("TEST_BROKER_TRANSPORT_OPTIONS"),
    broker_use_ssl=_json_env("TEST_BROKER_USE_SSL") or False,
    beat_schedule={
        entry: {
            "task": spec["task"],
            "schedule": float(spec["every"]),
            "args": tuple(spec.get("args", ())),
        }
        for entry, spec in _json_env("TEST_BEAT_SCHEDULE").items()
    },
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)
app.conf.update(_json_env("TEST_CELERY_CONF"))


class CustomTaskError(Exception):
    """Raised by ``tests.custom_error``: an exception type that is not a builtin."""


@app.task(name="tests.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.fail")
def fail(msg: str) -> None:
    raise ValueError(msg)


@app.task(name="tests.retry_once", bind=True, max_retries=1)
def retry_once(self: Task, key: str) -> str:
    """Retry exactly once (a second ``task-received`` with ``retries == 1``), then succeed."""
    if self.request.retries == 0:
        raise self.retry(countdown=0, exc=RuntimeError(f"first attempt of {key}"))
    return key


@app.task(name="tests.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="tests.wait_for_file")
def wait_for_file(path: str, timeout: float = 60.0) -> bool:
    """Run until ``path`` exists (or ``timeout`` passes): a task the test ends when it wants.

    Returns whether the file appeared.
    """
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@app.task(name="tests.wait_for_file_acks_late", acks_late=True)
def wait_for_file_acks_late(path: str, timeout: float = 60.0) -> bool:
    """``wait_for_file`` acknowledged only when done: it sits in Redis' unacked hash."""
    return bool(wait_for_file(path, timeout))


@app.task(name="tests.reject", acks_late=True)
def reject() -> None:
    raise Reject("rejected on purpose", requeue=False)


@app.task(name="tests.custom_error")
def custom_error() -> None:
    raise CustomTaskError("custom failure")


class OrderFailed(Exception):
    """Raised by ``tests.repr_error``: its ``repr`` names the order, so it differs each time."""

    def __repr__(self) -> str:
        return f"order_{self.args[0]}_failed"


@app.task(name="tests.repr_error")
def repr_error(order: int) -> None:
    raise OrderFailed(order)
