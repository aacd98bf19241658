"""The status page at ``/`` as a person sees it: in a real browser (headless Chromium),
during a real routing mismatch (incident 04), with hostile names rendered as text."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.browser import dom_text, dump_dom, screenshot
from tests.support.exporter import ExporterProcess
from tests.support.publish import publish_raw_events
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

# Names chosen by whoever runs the workers and writes the tasks: markup and quotes.
HOSTILE_WORKER = """<script>alert("w'1")</script>@test"""
HOSTILE_TASK = """<script>alert("t'1")</script>"""


def test_routing_mismatch_in_a_real_browser(
    redis_url: str,
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
    exporter_factory: Callable[..., ExporterProcess],
    tmp_path: Path,
) -> None:
    worker = worker_factory(redis_url, HOSTILE_WORKER, queues=("celery",), heartbeat_interval=1)
    exporter = exporter_factory(redis_url, "--sample-interval", "1")
    worker.wait_ready()
    producer = producer_factory(redis_url, send_sent_event=True)
    for i in range(9):
        producer.send(HOSTILE_TASK, args=(i,), queue="ml_processing")
    # A second producer host sending the same task: the "several senders" finding names it.
    sent = {
        "type": "task-sent", "uuid": str(uuid.uuid4()), "name": HOSTILE_TASK,
        "queue": "ml_processing", "hostname": "gen2@other-host", "timestamp": time.time(),
        "utcoffset": 0, "pid": 2, "clock": 1, "args": "()", "kwargs": "{}",
    }  # fmt: skip
    publish_raw_events(redis_url, [(json.dumps(sent).encode(), "application/json")], "task.sent")

    def settled() -> str | None:
        page = exporter.get("/")[1]
        # The worker's active_queues reply has arrived once the cause names its queue.
        wanted = (
            "holds 9 messages and no worker consumes it",
            "2 senders seen",
            "workers consume <code>celery</code>:",
        )
        return page if all(w in page for w in wanted) else None

    page = wait_for(settled, 60, interval=0.5, message=lambda: exporter.get("/")[1])
    assert page.count("<script") == 0, "a name was rendered as markup"

    text, tags = dom_text(dump_dom(exporter.url + "/"))
    assert "script" not in tags  # the page has no script, and no name became one
    lines = text.splitlines()
    assert "CRITICAL queue ml_processing holds 9 messages and no worker consumes it" in lines
    assert (
        "Cause: workers consume celery: the tasks are routed to a queue no worker listens to"
        in lines
    ), text
    assert (
        "Fix: check task routes / worker -Q (add ml_processing to a worker's -Q, or "
        "celery control add_consumer ml_processing)"
    ) in lines
    # The queue that needs attention is the first row, with its depth and no consumer.
    queue_rows = [
        line
        for line in lines
        if line.startswith("| ml_processing") or line.startswith("| celery |")
    ]
    assert queue_rows[0].split(" | ")[:3] == ["| ml_processing", "9", "0"], queue_rows
    assert queue_rows[0].endswith("| no consumer")
    # Hostile names, exactly as given, as text.
    assert f"INFO 2 senders seen for {HOSTILE_TASK}" in lines
    (worker_row,) = [line for line in lines if line.startswith(f"| {HOSTILE_WORKER} | up |")]
    assert worker_row.endswith("| celery"), worker_row
    assert "reachable since" in text and "1 critical, 0 warning(s)" in text

    shot = screenshot(exporter.url + "/", tmp_path / "artifacts" / "status-page.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")
