"""Precision of the shipped alerts: what must NOT page, with the shipped ``for:`` durations.

Four real scenarios run at the same time, each on its own broker (Redis database or server),
exporter (default flags) and two workers, all scraped by one real Prometheus that loads
``alerts/celery.rules.yml`` unchanged. Each exporter's series carry a target label
``broker=<scenario>``, as one Prometheus watching several clusters labels them, so the
scenarios cannot hide (or cause) each other's alerts:

- ``healthy``: 35 s of ordinary traffic from one producer (Poisson sends, a burst that
  drains, failures, retries), then 155 s of quiet, while a real ``celery beat`` sends a
  task every 5 s throughout: nothing fires (before issue 14, CeleryPeriodicTaskMissed did
  for the producer's task names after about 140 s of quiet).
- ``outage``: the broker stops for 105 s and returns: CeleryBrokerUnreachable fires,
  nothing else does, and nothing fires a minute after recovery.
- ``restart``: the exporter restarts under traffic: nothing fires.
- ``scaledown``: one of two workers is stopped cleanly (worker-offline): nothing fires.

The scenarios take about 3.5 minutes of wall time together (190 s of timeline); the module's
tests share them.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.events.test_beat import start_beat
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.processes import ManagedProcess
from tests.support.prometheus import PrometheusServer
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

RULES = REPO_ROOT / "alerts" / "celery.rules.yml"
SCENARIOS = ("healthy", "outage", "restart", "scaledown")
# Every scenario lasts this long (seconds after its workers are ready).
DURATION = 190.0
TRAFFIC = 35.0  # seconds of traffic at the start of "healthy"
# The broker of "outage" is down between these offsets (CeleryBrokerUnreachable fires after
# 60-90 s of it, with 15 s scrapes and evaluations).
OUTAGE = (25.0, 130.0)
EVENT = 30.0  # when "restart" restarts its exporter and "scaledown" stops a worker
BEAT = {"pulse": {"task": "tests.sleep", "every": 5, "args": [0]}}  # runs in "healthy"


@dataclass
class Scenario:
    name: str
    broker_url: str
    logdir: Path
    exporter: ExporterProcess | None = None
    workers: list[CeleryWorker] = field(default_factory=list)
    producer: Producer | None = None
    started: float = 0.0  # time.time() when its timeline began
    marks: dict[str, float] = field(default_factory=dict)  # time.time() of named moments
    error: BaseException | None = None
    beat: ManagedProcess | None = None

    def at(self, offset: float) -> None:
        """Sleep until ``offset`` seconds into the timeline (pacing, not a readiness wait)."""
        time.sleep(max(0.0, self.started + offset - time.time()))

    def poisson_traffic(self, until: float, rate: float, rng: random.Random) -> None:
        assert self.producer is not None
        while time.time() < self.started + until:
            self.producer.send("tests.add", args=(1, 2))
            time.sleep(rng.expovariate(rate))


@dataclass
class Run:
    prometheus: PrometheusServer
    scenarios: dict[str, Scenario]
    ended: float

    def firing(self, broker: str, since: float | None = None) -> set[str]:
        """Alert names firing for ``broker`` at the end of the run, or at any evaluation
        since ``since``."""
        selector = f'ALERTS{{alertstate="firing", broker="{broker}"}}'
        if since is not None:
            selector = f"max_over_time({selector}[{max(1, round(self.ended - since))}s])"
        return {s["metric"]["alertname"] for s in self.prometheus.query(selector, at=self.ended)}

    def all_firing(self) -> list[dict[str, str]]:
        """Every alert (any broker, or none) firing at any time during the run."""
        first = min(s.started for s in self.scenarios.values())
        window = max(1, round(self.ended - first))
        samples = self.prometheus.query(
            f'max_over_time(ALERTS{{alertstate="firing"}}[{window}s])', at=self.ended
        )
        return [s["metric"] for s in samples]


def _scrape_config(targets: dict[str, int]) -> str:
    # 15 s, as most users scrape (and a rule evaluation as often).
    lines = [
        "global:",
        "  scrape_interval: 15s",
        "  scrape_timeout: 10s",
        "  evaluation_interval: 15s",
        "scrape_configs:",
        "  - job_name: celery-exporter",
        "    static_configs:",
    ]
    for broker, port in targets.items():
        lines += [
            f"      - targets: [{json.dumps(f'127.0.0.1:{port}')}]",
            f"        labels: {{broker: {json.dumps(broker)}}}",
        ]
    return "\n".join(lines) + "\n"


def _start_workers(scenario: Scenario) -> None:
    for i in (1, 2):
        worker = CeleryWorker(
            scenario.broker_url, f"{scenario.name}-{i}@precision", pool="prefork",
            concurrency=1, logdir=scenario.logdir,
        )  # fmt: skip
        scenario.workers.append(worker)
        worker.start()
    for worker in scenario.workers:
        worker.wait_ready(timeout=60)


def _healthy(s: Scenario, rng: random.Random) -> None:
    assert s.producer is not None
    s.at(5)
    for _ in range(3):
        s.producer.send("tests.fail", args=("an ordinary failure",))
        s.producer.send("tests.retry_once", args=(f"retry-{rng.random()}",))
    s.poisson_traffic(until=20, rate=2.0, rng=rng)
    for i in range(60):  # a burst that drains within seconds
        s.producer.send("tests.add", args=(i, i))
    s.poisson_traffic(until=TRAFFIC, rate=2.0, rng=rng)
    s.marks["quiet"] = time.time()


def _outage(s: Scenario, rng: random.Random, redis_server: RedisServer) -> None:
    s.poisson_traffic(until=OUTAGE[0], rate=2.0, rng=rng)
    redis_server.stop()
    s.marks["down"] = time.time()
    s.at(OUTAGE[1])
    redis_server.start()
    s.marks["up"] = time.time()
    s.poisson_traffic(until=OUTAGE[1] + 20, rate=2.0, rng=rng)
    # The run lasts at least a minute past recovery, however long the restart took.
    time.sleep(max(0.0, s.marks["up"] + 61 - time.time()))


def _restart(s: Scenario, rng: random.Random) -> None:
    assert s.exporter is not None
    s.poisson_traffic(until=EVENT, rate=1.0, rng=rng)
    s.exporter.stop()
    s.exporter.start(timeout=60)
    s.marks["restarted"] = time.time()
    s.poisson_traffic(until=DURATION - 30, rate=1.0, rng=rng)


def _scaledown(s: Scenario, rng: random.Random) -> None:
    s.poisson_traffic(until=EVENT, rate=1.0, rng=rng)
    s.workers[1].stop(timeout=30)  # warm shutdown: the worker says worker-offline
    s.marks["scaled_down"] = time.time()
    s.poisson_traffic(until=DURATION - 30, rate=1.0, rng=rng)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("precision")
    shared = RedisServer(base / "redis-shared")
    private = RedisServer(base / "redis-outage")  # the one that goes down
    servers = {"healthy": shared, "outage": private, "restart": shared, "scaledown": shared}
    scenarios: dict[str, Scenario] = {}
    prometheus: PrometheusServer | None = None
    try:
        shared.start()
        private.start()
        for db, name in enumerate(SCENARIOS, start=1):
            server = servers[name]
            scenarios[name] = Scenario(name, server.url(db), base / name)
        for s in scenarios.values():
            s.exporter = ExporterProcess(s.broker_url, s.logdir).start(timeout=60)
            s.producer = Producer(s.broker_url, send_sent_event=True)
        prometheus = PrometheusServer(
            base / "prometheus",
            _scrape_config({name: s.exporter.port for name, s in scenarios.items() if s.exporter}),
            rule_files=[RULES],
        )
        prometheus.start()
        for s in scenarios.values():
            _start_workers(s)
        healthy = scenarios["healthy"]
        healthy.beat = start_beat(healthy.broker_url, healthy.logdir, "beat", BEAT)
        prometheus.wait_targets_up(60)

        plans: dict[str, Callable[[Scenario, random.Random], None]] = {
            "healthy": _healthy,
            "outage": lambda s, rng: _outage(s, rng, private),
            "restart": _restart,
            "scaledown": _scaledown,
        }

        def play(s: Scenario, seed: int) -> None:
            try:
                plans[s.name](s, random.Random(seed))
                s.at(DURATION)
            except BaseException as exc:  # reported by the test of this scenario
                s.error = exc

        threads = []
        began = time.time()
        for seed, s in enumerate(scenarios.values()):
            s.started = began
            threads.append(threading.Thread(target=play, args=(s, seed), daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 120)
        ended = time.time()
        # The last evaluation before `ended` is what the queries see.
        yield Run(prometheus, scenarios, ended)
    finally:
        for s in scenarios.values():
            if s.beat is not None:
                s.beat.stop()
            if s.producer is not None:
                s.producer.close()
        # Warm shutdowns in parallel: each takes a second or two.
        stopping = [
            threading.Thread(target=w.stop, kwargs={"timeout": 15})
            for s in scenarios.values()
            for w in s.workers
        ]
        for t in stopping:
            t.start()
        for t in stopping:
            t.join()
        for s in scenarios.values():
            if s.exporter is not None:
                s.exporter.stop()
        if prometheus is not None:
            prometheus.stop()
        private.stop()
        shared.stop()


def _check(run: Run, name: str) -> Scenario:
    s = run.scenarios[name]
    if s.error is not None:
        raise AssertionError(f"scenario {name} failed: {s.error!r}") from s.error
    return s


def _logs(s: Scenario) -> str:
    return s.exporter.log()[-4000:] if s.exporter is not None else ""


def test_a_healthy_day_raises_no_alert(run: Run) -> None:
    s = _check(run, "healthy")
    assert run.firing("healthy", since=s.started) == set(), _logs(s)
    # The traffic was real and came from one producer: exactly what used to look periodic.
    senders = run.prometheus.query_value(
        'celery_task_senders{broker="healthy", name="tests.add"}', at=run.ended
    )
    regular = run.prometheus.query_value(
        'celery_task_arrival_regular{broker="healthy", name="tests.add"}', at=run.ended
    )
    assert (senders, regular) == (1.0, 0.0)
    # The beat ran all along and was learned as periodic: it kept time, so it did not page.
    beat_regular = run.prometheus.query_value(
        'celery_task_arrival_regular{broker="healthy", name="tests.sleep"}', at=run.ended
    )
    assert beat_regular == 1
    # Quiet for longer than 3 intervals + for: 2m + an evaluation (15 s).
    assert run.ended - s.marks["quiet"] >= 145


def test_a_broker_outage_pages_once(run: Run) -> None:
    s = _check(run, "outage")
    assert run.firing("outage", since=s.started) == {"CeleryBrokerUnreachable"}
    # A minute after recovery nothing fires any more...
    assert run.ended - s.marks["up"] >= 60
    assert run.firing("outage") == set()
    # ...and the consequences are over, so nothing fires once the settling time ends.
    exporter = s.exporter
    assert exporter is not None
    wait_for(
        lambda: run.prometheus.query_value('celery_workers_online{broker="outage"}') == 2
        and run.prometheus.query_value('celery_exporter_source_up{broker="outage"}') == 1,
        60, message=lambda: _logs(s),
    )  # fmt: skip


def test_an_exporter_restart_raises_no_alert(run: Run) -> None:
    s = _check(run, "restart")
    assert "restarted" in s.marks
    assert run.firing("restart", since=s.started) == set(), _logs(s)


def test_a_clean_scale_down_raises_no_alert(run: Run) -> None:
    s = _check(run, "scaledown")
    assert run.firing("scaledown", since=s.started) == set(), _logs(s)
    # The stopped worker is known as down (so CeleryWorkerLost had its chance to fire).
    up = run.prometheus.query_value(
        'celery_worker_up{broker="scaledown", hostname="scaledown-2@precision"}', at=run.ended
    )
    assert up == 0
    # Longer than CeleryWorkerLost's for: 2m + an evaluation.
    assert run.ended - s.marks["scaled_down"] >= 140


def test_no_alert_without_a_cause_fires_anywhere(run: Run) -> None:
    """Across all four scenarios (and alerts without a broker label, such as
    CeleryExporterAbsent), the one page is the outage's root cause."""
    for name in SCENARIOS:
        _check(run, name)
    pages = sorted((m["alertname"], m.get("broker", "")) for m in run.all_firing())
    assert pages == [("CeleryBrokerUnreachable", "outage")]
