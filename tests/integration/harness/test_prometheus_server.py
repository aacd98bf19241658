"""Self-tests of tests/support/prometheus.py: alert and dashboard tests lean on it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.ports import free_port, port_is_open
from tests.support.processes import group_members
from tests.support.prometheus import PrometheusAPIError, PrometheusServer
from tests.support.waiting import wait_for

RULES = """\
groups:
  - name: test
    interval: 1s
    rules:
      - record: test:answer
        expr: vector({value})
      - alert: TestAlwaysFiring
        expr: vector(1)
        labels:
          severity: none
"""


def test_scrapes_queries_restarts_on_the_same_port_and_stops(tmp_path: Path) -> None:
    port = free_port()
    # It scrapes itself: the targets API and a real series without any other process.
    config = PrometheusServer.scrape_config([f"127.0.0.1:{port}"], job="self")
    with PrometheusServer(tmp_path, config, port=port) as server:
        assert server.port == port and port_is_open(port)
        pid = server.pid
        assert pid is not None
        (target,) = server.wait_targets_up(timeout=30)
        assert target["labels"]["job"] == "self"
        assert server.query_value("1 + 1") == 2.0
        assert server.query("vector(3)")[0]["value"][1] == "3"
        up = wait_for(lambda: server.query('up{job="self"}'), timeout=30)
        assert up[0]["value"][1] == "1"
        with pytest.raises(PrometheusAPIError, match="bad_data") as caught:
            server.query("sum(")
        assert caught.value.http_status == 400

        server.restart()
        assert server.port == port
        assert server.pid != pid
        assert group_members(pid) == []
        assert server.query_value("1") == 1.0
        pid = server.pid
        assert pid is not None
    assert not server.running
    assert not port_is_open(port)
    assert group_members(pid) == []
    assert "See you next time" in server.log_path.read_text()


def test_rule_files_reload_and_alerts(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.format(value=1))
    config = "global:\n  evaluation_interval: 1s\n"
    with PrometheusServer(tmp_path / "prom", config, rule_files=[rules]) as server:
        (group,) = server.rules()
        assert {r["name"] for r in group["rules"]} == {"test:answer", "TestAlwaysFiring"}
        wait_for(lambda: server.query_value("test:answer") == 1, timeout=30)
        alert = server.wait_for_alert("TestAlwaysFiring", timeout=30, severity="none")
        assert alert["state"] == "firing"

        rules.write_text(RULES.format(value=2))
        server.reload()
        wait_for(lambda: server.query_value("test:answer") == 2, timeout=30)

        # A broken rule file is refused; the server keeps the rules it had.
        rules.write_text(RULES.format(value="rate(x)"))
        with pytest.raises(PrometheusAPIError, match="reload failed"):
            server.reload()
        assert server.running
        assert server.query_value("test:answer") == 2

        server.reload(rule_files=[])
        assert server.rules() == []


def test_rule_files_go_in_one_place(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        PrometheusServer(tmp_path, "rule_files:\n  - a.yml\n", rule_files=[tmp_path / "b.yml"])


def test_a_config_prometheus_rejects_fails_start_with_its_log(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, "global:\n  scrape_interval: not-a-duration\n")
    with pytest.raises(AssertionError, match="prometheus exited"):
        server.start(timeout=30)
    assert not server.running


def test_a_port_taken_before_the_first_start_is_replaced(tmp_path: Path) -> None:
    config = "global:\n  scrape_interval: 15s\n"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = PrometheusServer(tmp_path / "free", config)
        server.port = taken  # as if someone bound it between free_port() and our start
        with server:
            assert server.port != taken
            assert server.query_value("1") == 1.0
        # A port the caller chose is kept: the failure is reported instead.
        pinned = PrometheusServer(tmp_path / "pinned", config, port=taken)
        with pytest.raises(AssertionError, match="address already in use"):
            pinned.start(timeout=30)
        assert not pinned.running
