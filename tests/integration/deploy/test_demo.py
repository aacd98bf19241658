"""`make demo` as a new user meets it: the first scrape is exact (no `(unknown)` queue),
the status page shows the demo's worker and queues, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from pathlib import Path

from tests.support.exporter import REPO_ROOT
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.waiting import wait_for


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def test_demo_first_scrape_status_page_and_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, DEMO_STATE_DIR=str(tmp_path / "state"), DEMO_EXPORTER_PORT=str(port))
    demo = ManagedProcess(
        ["bash", str(REPO_ROOT / "deploy" / "demo" / "run.sh")], tmp_path / "demo.out", env=env
    )
    demo.start()
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in demo.log_tail(), 90, interval=0.2,
                 message=demo.log_tail)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        assert f"status page:  {url}/" in demo.log_tail()
        # The first scrape a user makes: tasks counted, and every one with its queue.
        first = get(url + "/metrics")
        series = [line for line in first.splitlines() if not line.startswith("#")]
        assert any(line.startswith("celery_task_succeeded_total{") for line in series)
        assert [line for line in series if "(unknown)" in line] == []

        def page_complete() -> str | None:
            # Workers answer active_queues at once; queues are sampled every 5 s.
            page = get(url + "/")
            wanted = ["<code>celery</code>, <code>reports</code>", "<h3>Queues (2)</h3>"]
            return page if all(w in page for w in wanted) else None

        page = wait_for(page_complete, 60, interval=0.5, message=lambda: get(url + "/"))
        assert re.search(r"<td><code>demo@[^<]+</code></td><td>up</td><td>prefork &times; 2", page)
        for queue in ("celery", "reports"):
            assert f"<td><code>{queue}</code></td>" in page
        assert '<span class="verdict ok">reachable</span>' in page

        # Ctrl-C, as a terminal sends it: to the whole foreground process group.
        demo.signal_group(signal.SIGINT)
        assert demo.wait(60), demo.log_tail()
        assert demo.returncode == 0, demo.log_tail()
        assert demo.log_tail().rstrip().endswith("stopping the demo")
        # Redis, the worker (and its pool), the traffic and the exporter are all gone.
        assert demo.wait_group_gone(30)
    finally:
        demo.stop()
