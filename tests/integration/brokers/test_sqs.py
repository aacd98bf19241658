"""Amazon SQS as a broker (exporter/brokers/sqs.py): queue depth only, said plainly.

moto's standalone server stands in for Amazon SQS (tests/support/sqs.py). Tasks are sent by a
real Celery producer through kombu's SQS transport; the exporter is the real daemon (and the
real ``diagnose``) in a subprocess, given the broker URL and the workers' transport options.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import quote

import pytest
from celery import Celery

from exporter.brokers import for_url
from exporter.brokers.app import make_app
from exporter.brokers.sqs import SQS
from exporter.settings import Settings
from exporter.sources.base import QueueSample
from exporter.sources.sqs_queues import SqsQueueSource
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.metrics import label_values, value
from tests.support.ports import free_port
from tests.support.sqs import ACCESS_KEY, REGION, SECRET_KEY, MotoSqsServer, unique_prefix
from tests.support.waiting import wait_for

NOTICE = "Celery sends no task or worker events over sqs"


def _producer(url: str, options: dict[str, Any]) -> Celery:
    app = Celery("sqs-producer", broker=url, set_as_current=False)
    app.conf.broker_transport_options = options
    return app


def _fill(server: MotoSqsServer, prefix: str) -> None:
    """celery: 3 sent, 1 of them received (in flight), 1 more sent with a delay;
    video.encode: 2 sent. Plus a queue of another cluster (another prefix)."""
    app = _producer(server.url(), {"region": REGION, "queue_name_prefix": prefix})
    for n in range(3):
        app.send_task("tests.add", args=(n, n), queue="celery")
    # kombu's SQS transport turns the delay_seconds property into SQS's DelaySeconds.
    app.send_task("tests.add", args=(9, 9), queue="celery", delay_seconds=600)
    for _ in range(2):
        app.send_task("tests.encode", queue="video.encode")
    client = server.client()
    url = client.get_queue_url(QueueName=f"{prefix}celery")["QueueUrl"]
    # A worker received it and has not deleted (acknowledged) it yet.
    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    assert len(received["Messages"]) == 1
    other = _producer(server.url(), {"region": REGION, "queue_name_prefix": "other-" + prefix})
    other.send_task("tests.add", args=(1, 1), queue="celery")


@pytest.fixture
def sqs_exporter(sqs_server: MotoSqsServer, tmp_path: Any) -> Any:
    prefix = unique_prefix()
    _fill(sqs_server, prefix)
    exporter = ExporterProcess(
        sqs_server.url(),
        tmp_path,
        [
            "--broker-transport-option", f"queue_name_prefix={prefix}",
            "--broker-transport-option", f"region={REGION}",
        ],
        broker_url_in_env=True,  # as from a Kubernetes Secret: not on the command line
    )  # fmt: skip
    try:
        yield exporter.start(wait_ready=True)
    finally:
        exporter.stop()


def test_depth_visible_in_flight_and_delayed_of_the_queues_under_the_prefix(
    sqs_exporter: ExporterProcess,
) -> None:
    samples = wait_for(
        lambda: (
            (s := sqs_exporter.scrape())
            and value(s, "celery_exporter_source_up", source="sqs") == 1.0
            and s
        ),
        30.0,
        message=lambda: sqs_exporter.log(),
    )
    # Found by ListQueues under the prefix; kombu named video.encode's SQS queue video-encode.
    assert label_values(samples, "celery_queue_messages", "queue_name") == {
        "celery",
        "video-encode",
    }
    assert value(samples, "celery_queue_messages", queue_name="celery") == 2.0
    assert value(samples, "celery_queue_messages", queue_name="video-encode") == 2.0
    assert value(samples, "celery_queue_reserved_messages", queue_name="celery") == 1.0
    assert value(samples, "celery_queue_reserved_messages", queue_name="video-encode") == 0.0
    assert value(samples, "celery_broker_delayed_messages") == 1.0
    assert value(samples, "celery_exporter_broker_up") == 1.0
    # Nothing that would read as "no worker alive" or "no consumer" to the alerts.
    names = {name for name, _ in samples}
    assert not {n for n in names if n.startswith(("celery_worker", "celery_task"))}
    assert "celery_workers_online" not in names
    assert "celery_queue_worker_consumers" not in names

    # Said plainly: one log line at start, the landing page's notice instead of the tables.
    log = sqs_exporter.log()
    assert log.count(NOTICE) == 1, log
    status, page = sqs_exporter.get("/")
    assert status == 200
    assert "not available on sqs" in page and NOTICE in page
    assert '<table class="workers">' not in page and "No worker seen yet" not in page
    assert "not visible on sqs" in page  # the consumers column
    assert "no task or worker events on sqs: queue depth only" in page
    status, ready = sqs_exporter.get("/readyz")
    assert status == 200 and "sampling queues (no events on this broker)" in ready

    # The secret never shows; the key id is masked with it (user:***).
    _, metrics = sqs_exporter.get("/metrics")
    for text in (log, page, metrics):
        assert SECRET_KEY not in text and "NeverShown" not in text
    assert f"sqs://{ACCESS_KEY}:***@127.0.0.1:{sqs_exporter.broker_url.rsplit(':', 1)[1]}" in log


def test_diagnose_reports_queue_depth_and_a_finding_not_a_failure(
    sqs_server: MotoSqsServer,
) -> None:
    """``sqs://KEY:SECRET@`` with the endpoint and region from the usual AWS variables."""
    prefix = unique_prefix()
    _fill(sqs_server, prefix)
    url = f"sqs://{ACCESS_KEY}:{SECRET_KEY.replace('/', '%2F').replace('+', '%2B')}@"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        AWS_ENDPOINT_URL_SQS=sqs_server.endpoint,
        AWS_DEFAULT_REGION=REGION,
    )
    argv = [
        sys.executable, "-m", "exporter", "diagnose", "--broker-url", url,
        "--broker-transport-option", f"queue_name_prefix={prefix}", "--queues", "video.encode",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "(queues only: Celery sends no events over sqs)" in out
    assert "Workers   not visible on sqs" in out
    rows = {
        line.split()[0]: line.split()[1:] for line in out.splitlines() if "(not visible)" in line
    }
    # ready, in flight (reserved), oldest; video.encode keeps its dot: it was asked for.
    assert rows == {
        "celery": ["2", "1", "-", "(not", "visible)"],
        "video.encode": ["2", "0", "-", "(not", "visible)"],
    }
    assert "  - = not known. oldest: sqs does not tell\n" in out
    assert "  scheduled for later (DelaySeconds): 1\n" in out
    assert "INFO      no task or worker events on sqs: queue depth only" in out
    assert "Result: 0 critical, 0 warning(s) (exit 0)" in out
    assert SECRET_KEY not in out + result.stderr and "NeverShown" not in out + result.stderr


def test_named_queues_are_read_without_a_prefix_and_absent_ones_are_zero(
    sqs_server: MotoSqsServer,
) -> None:
    """No queue_name_prefix: the queues named (and Celery's default), never the account's
    others; a named queue that does not exist reads 0."""
    prefix = unique_prefix()  # only to keep this test's queues apart: as plain names
    app = _producer(sqs_server.url(), {"region": REGION})
    app.send_task("tests.add", args=(1, 1), queue=f"{prefix}reports.daily")
    settings = Settings(broker_url=sqs_server.url(), transport_options={"region": REGION})
    exporter_app = Celery(broker=settings.broker_url, set_as_current=False)
    exporter_app.conf.broker_transport_options = {"region": REGION}
    source = SQS.queue_source(exporter_app, settings, dict)
    assert isinstance(source, SqsQueueSource)
    try:
        sample = source.sample([f"{prefix}reports.daily", f"{prefix}absent"])
    finally:
        source.close()
    queues = {name: (q.ready, q.reserved) for name, q in sample.queues.items()}
    assert queues[f"{prefix}reports.daily"] == (1, 0)
    assert queues[f"{prefix}absent"] == (0, 0)
    assert set(queues) == {"celery", f"{prefix}reports.daily", f"{prefix}absent"}
    assert f"{prefix}absent" not in sample.listed_queues


def test_an_unreachable_endpoint_is_broker_down_and_the_daemon_keeps_serving(
    tmp_path: Any,
) -> None:
    closed = free_port()  # nothing listens there
    url = f"sqs://{ACCESS_KEY}:{quote(SECRET_KEY, safe='')}@127.0.0.1:{closed}"
    exporter = ExporterProcess(url, tmp_path, broker_url_in_env=True)
    exporter.start(wait_ready=False)
    try:
        wait_for(lambda: "sampling sqs queues failed" in exporter.log(), 30.0)
        samples = exporter.scrape()
        assert value(samples, "celery_exporter_broker_up") == 0.0
        assert value(samples, "celery_exporter_source_up", source="sqs") == 0.0
        assert exporter.status("/readyz") == 503
        status, page = exporter.get("/")
        assert status == 200 and "UNREACHABLE" in page and NOTICE in page
        log = exporter.log()
        assert log.count("sampling sqs queues failed") == 1, log  # once per outage
        for text in (log, page):
            assert SECRET_KEY not in text and "NeverShown" not in text
    finally:
        exporter.stop()


@pytest.mark.parametrize(
    "client_config", [None, {"max_pool_connections": 10}], ids=["default", "client-config"]
)
def test_an_endpoint_that_never_answers_fails_the_sample_within_the_timeout(
    client_config: dict[str, Any] | None,
) -> None:
    """Accepts the connection and never answers: botocore's own 60 s timeouts, retried, would
    hold the sampler for minutes. A user's client-config (proxies, pool size) keeps the
    exporter's timeouts. The bound is on a hang, generous for a loaded machine."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel accepts; nothing ever reads or answers
    port = listener.getsockname()[1]
    options: dict[str, Any] = {"region": REGION}
    if client_config is not None:
        options["client-config"] = client_config
    settings = Settings(
        broker_url=f"sqs://AKIA:secret@127.0.0.1:{port}",
        sample_timeout=2.0,  # the bound below leaves 4 s for a loaded machine's overhead
        transport_options=options,
    )
    assert for_url(settings.broker_url) is SQS
    app = Celery(broker=settings.broker_url, set_as_current=False)
    app.conf.broker_transport_options = dict(settings.transport_options)
    source = SQS.queue_source(app, settings, dict)
    import boto3  # noqa: F401  (its first import is not what the bound is about)

    try:
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            source.sample([])
        elapsed = time.monotonic() - started
        assert f"127.0.0.1:{port}" in str(raised.value)
        assert elapsed < 3 * settings.sample_timeout, elapsed
    finally:
        source.close()
        listener.close()


@pytest.mark.usefixtures("no_ambient_aws_credentials")
def test_a_predefined_region_that_does_not_answer_fails_only_its_own_queues(
    sqs_server: MotoSqsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu gives each predefined queue a client of its own region. A region whose endpoint
    is down (fault injected: that region's client is pointed at a port where nothing
    listens, since moto serves every region at one address) leaves out its queues only; the
    queue in the broker's region is still read, and the source stays up."""
    import boto3
    import kombu.transport.SQS as kombu_sqs

    client = sqs_server.client()
    prefix = unique_prefix()
    orders = client.create_queue(QueueName=f"{prefix}orders")["QueueUrl"]
    client.send_message(QueueUrl=orders, MessageBody="x")
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    down = f"http://127.0.0.1:{free_port()}"
    make_client = kombu_sqs.Channel.new_sqs_client

    def regional_client(channel: Any, region: str, *args: Any, **kwargs: Any) -> Any:
        if region == "eu-south-9":
            return boto3.client(
                "sqs", endpoint_url=down, region_name=region,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            )  # fmt: skip
        return make_client(channel, region, *args, **kwargs)

    monkeypatch.setattr(kombu_sqs.Channel, "new_sqs_client", regional_client)
    far = {**keys, "region": "eu-south-9"}
    source = _predefined_source(
        sqs_server.url(credentials=False),
        {
            "orders": {"url": orders, **keys},
            "far": {"url": f"{down}/123456789012/{prefix}far", **far},
            "far2": {"url": f"{down}/123456789012/{prefix}far2", **far},
        },
    )
    try:
        for _ in range(2):
            sample = source.sample([])
            assert sample.queues == {"orders": QueueSample(ready=1, reserved=0)}
            assert sample.failed_queues == {"far", "far2"}
    finally:
        source.close()


@pytest.mark.usefixtures("no_ambient_aws_credentials")
def test_queues_found_by_prefix_are_read_when_named_ones_are_denied(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An IAM policy that denies ``GetQueueUrl``: the queues found by listing (their URLs
    come with the list) are read; the ones only named (``celery``, ``--queues``), which need
    their URL looked up, are left out and named in ``failed_queues``, each logged once. moto
    enforces IAM on a server of this test's own (auth on would break the shared one)."""
    import boto3

    server = MotoSqsServer(tmp_path)
    server.start()
    try:
        prefix = unique_prefix()
        admin = server.client()
        orders = admin.create_queue(QueueName=f"{prefix}orders")["QueueUrl"]
        admin.send_message(QueueUrl=orders, MessageBody="x")
        iam = boto3.client(
            "iam", endpoint_url=server.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip
        iam.create_user(UserName="exporter")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "sqs:GetQueueUrl", "Resource": "*"},
            ],
        }
        iam.put_user_policy(UserName="exporter", PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="exporter")["AccessKey"]
        server.enable_auth()
        url = (
            f"sqs://{key['AccessKeyId']}:{quote(key['SecretAccessKey'], safe='')}"
            f"@127.0.0.1:{server.port}"
        )
        settings = Settings(
            broker_url=url, transport_options={"region": REGION, "queue_name_prefix": prefix}
        )
        source = settings.broker.queue_source(make_app(settings), settings, dict)
        try:
            for _ in range(2):
                sample = source.sample(["video.encode"])
                assert sample.queues == {"orders": QueueSample(ready=1, reserved=0)}
                assert sample.failed_queues == {"celery", "video.encode"}
        finally:
            source.close()
    finally:
        server.stop()
    for queue in ("celery", "video.encode"):
        line = f"sampling sqs queue '{queue}' failed"
        lines = [r for r in caplog.records if line in r.getMessage()]
        assert len(lines) == 1, caplog.text


@pytest.mark.usefixtures("no_ambient_aws_credentials")
def test_the_daemon_counts_a_queue_it_cannot_read_and_serves_the_others(
    sqs_server: MotoSqsServer, tmp_path: Any
) -> None:
    """What the on-call sees of a predefined queue the exporter may not read: its depth is
    not a made-up 0 but absent, celery_exporter_source_failed_queues says how many are
    missing, the log names it once, and the source stays up on the queues that answer."""
    client = sqs_server.client()
    prefix = unique_prefix()
    orders = client.create_queue(QueueName=f"{prefix}orders")["QueueUrl"]
    for _ in range(2):
        client.send_message(QueueUrl=orders, MessageBody="x")
    locked = client.create_queue(QueueName=f"{prefix}locked")["QueueUrl"]
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    predefined = {"orders": {"url": orders, **keys}, "locked": {"url": locked}}
    exporter = ExporterProcess(
        sqs_server.url(credentials=False),
        tmp_path,
        [
            "--broker-transport-option", f"region={REGION}",
            "--broker-transport-option", f"predefined_queues={json.dumps(predefined)}",
            "--sample-interval", "1",
        ],
    )  # fmt: skip
    exporter.start(wait_ready=True)
    try:
        wait_for(
            lambda: value(exporter.scrape(), "celery_queue_messages", queue_name="orders") == 2.0,
            30.0,
        )

        def last_success() -> float:
            stamp = value(
                exporter.scrape(), "celery_exporter_source_last_success_timestamp_seconds",
                source="sqs",
            )  # fmt: skip
            assert stamp is not None
            return stamp

        first = last_success()
        wait_for(lambda: last_success() >= first + 2.0, 30.0)  # two samples later at least
        samples = exporter.scrape()
        log = exporter.log()
        assert log.count("sampling sqs queue 'locked' failed") == 1, log
        # The daemon's own lines (the harness's header repeats the command line).
        daemon_lines = [line for line in log.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
        assert daemon_lines and not [line for line in daemon_lines if SECRET_KEY in line]
        assert value(samples, "celery_exporter_source_failed_queues", source="sqs") == 1.0
        assert value(samples, "celery_exporter_source_up", source="sqs") == 1.0
        assert label_values(samples, "celery_queue_messages", "queue_name") == {"orders"}
        assert exporter.status("/readyz") == 200
    finally:
        exporter.stop()


@pytest.mark.usefixtures("no_ambient_aws_credentials")
def test_predefined_queues_at_an_endpoint_that_never_answers_fail_the_sample_once() -> None:
    """No answer is the endpoint's failure, not each queue's: the sample fails after one
    timeout, not one per predefined queue (three here)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel accepts; nothing ever reads or answers
    port = listener.getsockname()[1]
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    predefined = {
        name: {"url": f"http://127.0.0.1:{port}/123456789012/{name}", **keys}
        for name in ("a", "b", "c")
    }
    settings = Settings(
        broker_url=f"sqs://127.0.0.1:{port}",
        sample_timeout=2.0,
        transport_options={"region": REGION, "predefined_queues": predefined},
    )
    source = settings.broker.queue_source(make_app(settings), settings, dict)
    import boto3  # noqa: F401  (its first import is not what the bound is about)

    try:
        started = time.monotonic()
        with pytest.raises(Exception, match=f"127.0.0.1:{port}"):
            source.sample([])
        elapsed = time.monotonic() - started
        # One timeout and the overhead of a loaded machine; three would be 6 s and more.
        assert elapsed < 2.5 * settings.sample_timeout, elapsed
    finally:
        source.close()
        listener.close()


@pytest.fixture
def no_ambient_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the credentials the test names: none from the environment, files or metadata."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _predefined_source(url: str, predefined: dict[str, Any]) -> SqsQueueSource:
    settings = Settings(
        broker_url=url,
        transport_options={"region": REGION, "predefined_queues": predefined},
    )
    source = settings.broker.queue_source(make_app(settings), settings, dict)
    assert isinstance(source, SqsQueueSource)
    return source


@pytest.mark.usefixtures("no_ambient_aws_credentials")
@pytest.mark.parametrize("url_credentials", [False, True], ids=["per-queue-only", "url-too"])
def test_predefined_queues_are_read_with_their_own_credentials_labelled_by_their_keys(
    sqs_server: MotoSqsServer, caplog: pytest.LogCaptureFixture, url_credentials: bool
) -> None:
    """kombu's documented setup: per-queue credentials, none in the URL, and keys that need
    not be the SQS names. Only the predefined queues are read (not ``celery`` nor a name asked
    for), each at its URL: the key ``zorders`` is the queue ``<prefix>a-orders``, never looked
    up by its key (which would find no queue and report 0)."""
    client = sqs_server.client()
    prefix = unique_prefix()
    orders = client.create_queue(QueueName=f"{prefix}a-orders")["QueueUrl"]
    client.send_message(QueueUrl=orders, MessageBody="x")
    empty = client.create_queue(QueueName=f"{prefix}empty")["QueueUrl"]
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    source = _predefined_source(
        sqs_server.url(credentials=url_credentials),
        {"zorders": {"url": orders, **keys}, "empty": {"url": empty, **keys}},
    )
    try:
        first = source.sample(["video"])
        # As the daemon does: the queues found are asked for again.
        second = source.sample(sorted({"video", *first.listed_queues}))
    finally:
        source.close()
    for sample in (first, second):
        assert sample.queues.get("zorders") == QueueSample(ready=1, reserved=0)
    for sample in (first, second):
        assert sample.queues == {
            "zorders": QueueSample(ready=1, reserved=0),
            "empty": QueueSample(ready=0, reserved=0),
        }
        assert sample.listed_queues == {"zorders", "empty"}
        assert sample.delayed_total == 0
    skipped = [r for r in caplog.records if "not in predefined_queues" in r.getMessage()]
    assert len(skipped) == 1 and "'video'" in skipped[0].getMessage()  # once


@pytest.mark.usefixtures("no_ambient_aws_credentials")
def test_a_predefined_queue_that_fails_is_left_out_and_the_others_are_still_read(
    sqs_server: MotoSqsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue the exporter may not read (here: no credentials for it) is not a broker
    outage: the others are sampled, the failure logged once. None answering fails the sample
    (source_up 0), as with any broker that does not answer."""
    client = sqs_server.client()
    prefix = unique_prefix()
    orders = client.create_queue(QueueName=f"{prefix}orders")["QueueUrl"]
    client.send_message(QueueUrl=orders, MessageBody="x")
    locked = client.create_queue(QueueName=f"{prefix}locked")["QueueUrl"]
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    url = sqs_server.url(credentials=False)
    source = _predefined_source(url, {"orders": {"url": orders, **keys}, "locked": {"url": locked}})
    try:
        for _ in range(2):
            sample = source.sample([])
            assert sample.queues == {"orders": QueueSample(ready=1, reserved=0)}
            assert sample.failed_queues == {"locked"}
    finally:
        source.close()
    failed = [r for r in caplog.records if "sampling sqs queue 'locked' failed" in r.getMessage()]
    assert len(failed) == 1, caplog.text
    only_locked = _predefined_source(url, {"locked": {"url": locked}})
    try:
        with pytest.raises(Exception, match="credentials"):
            only_locked.sample([])
    finally:
        only_locked.close()
