"""A small Celery app for `make demo`: a few tasks that succeed, fail, retry and take time."""

from __future__ import annotations

import os
import random
import time

from celery import Celery

app = Celery("demo", broker=os.environ.get("DEMO_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_send_sent_event=True,  # producers announce tasks: exact queue labels, queue wait
    worker_send_task_events=True,  # same as starting the worker with -E
    task_routes={"demo.reports.*": {"queue": "reports"}},
    worker_prefetch_multiplier=1,
    result_backend=None,
)


@app.task(name="demo.orders.process")
def process_order(order_id: int) -> int:
    time.sleep(random.uniform(0.01, 0.3))
    return order_id


@app.task(name="demo.emails.send", bind=True, max_retries=2)
def send_email(self: object, address: str) -> str:
    roll = random.random()
    if roll < 0.1:
        raise ConnectionError("SMTP server refused the connection")
    if roll < 0.2:
        raise self.retry(countdown=1, exc=TimeoutError("SMTP timeout"))  # type: ignore[attr-defined]
    return address


@app.task(name="demo.reports.generate")
def generate_report(kind: str) -> str:
    time.sleep(random.uniform(1.0, 4.0))
    return kind
