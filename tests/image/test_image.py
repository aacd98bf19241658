"""The container image, built for real with buildah and run as its non-root user.

``make test-image`` runs these (they are kept out of ``make test``): see conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import __version__
from tests.image.conftest import TIMINGS, Buildah
from tests.support.ports import free_port
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for

UID = 10001
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses")


def _config(buildah: Buildah, image: str) -> dict:
    config: dict = buildah.inspect_image(image)["Docker"]["config"]
    return config


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        for child in _children(todo.pop()):
            seen.append(child)
            todo.append(child)
    return seen


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines)}


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_image_config(buildah: Buildah, image: str) -> None:
    config = _config(buildah, image)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["celery-metrics-exporter"]  # exec form: no shell
    assert not config.get("Cmd")
    assert "9808/tcp" in config["ExposedPorts"]
    healthcheck = config["Healthcheck"]["Test"]
    assert healthcheck[0] == "CMD", healthcheck  # not CMD-SHELL
    assert "/healthz" in healthcheck[-1] and "http.client" in healthcheck[-1]
    labels = config["Labels"]
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), (key, labels)
    assert labels["org.opencontainers.image.version"] == __version__
    assert "PATH=/opt/venv/bin:" in " ".join(config["Env"])


def test_no_build_tools_in_final_image(buildah: Buildah, image: str) -> None:
    container = buildah("from", "--pull=never", image).strip()
    try:
        out = buildah(
            "run", "--isolation=chroot", "--user", f"{UID}:{UID}", container, "--",
            "python3", "-c",
            "import shutil, importlib.util as u; "
            "print([t for t in ('pip', 'pip3', 'gcc', 'cc', 'make') if shutil.which(t)], "
            "[m for m in ('pip', 'setuptools') if u.find_spec(m)])",
        )  # fmt: skip
    finally:
        buildah("rm", container)
    assert out.strip() == "[] []", out


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_exporter_runs_as_non_root_scrapes_and_stops_on_sigterm(
    buildah: Buildah, image: str, redis: RedisServer, tmp_path: Path
) -> None:
    config = _config(buildah, image)
    port = free_port()
    listen = f"127.0.0.1:{port}"  # chroot isolation shares the host's network namespace
    container = buildah("from", "--pull=never", image).strip()
    log = tmp_path / "exporter.log"
    proc = buildah.popen(
        "run", "--isolation=chroot", "--user", config["User"],
        "--env", f"CELERY_EXPORTER_BROKER_URL={redis.url()}",
        "--env", f"CELERY_EXPORTER_LISTEN_ADDRESS={listen}",
        container, "--", *config["Entrypoint"],
        log=log,
    )  # fmt: skip
    try:
        base = f"http://{listen}"

        def healthy() -> bool:
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
            return _get(f"{base}/healthz")[0] == 200

        wait_for(healthy, 60, message=lambda: log.read_text()[-3000:], ignore=(OSError,))
        wait_for(
            lambda: _metric(_get(f"{base}/metrics")[1], "celery_exporter_broker_up") == 1,
            30,
            message=lambda: "broker_up never 1:\n" + log.read_text()[-3000:],
        )

        # The exporter process (python, under buildah's chroot helpers) runs as UID 10001.
        def exporter_pid() -> int | None:
            for pid in _descendants(proc.pid):
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{pid}/cmdline").read_text()
                    exe = os.readlink(f"/proc/{pid}/exe")  # the interpreter, not the helpers
                    if "celery-metrics-exporter" in cmdline and "python" in exe:
                        return pid
            return None

        pid = wait_for(exporter_pid, 10, message="exporter process not found")
        status = _status(pid)
        assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]
        assert status["Gid"].split() == [str(UID)] * 4, status["Gid"]

        # The image's own HEALTHCHECK command, run in the image as its user.
        health = config["Healthcheck"]["Test"][1:]
        buildah(
            "run", "--isolation=chroot", "--user", config["User"],
            "--env", f"CELERY_EXPORTER_LISTEN_ADDRESS={listen}",
            container, "--", *health,
        )  # fmt: skip

        # Idle RSS: let it settle through a few sample intervals, then read VmRSS.
        settle_until = time.monotonic() + 12
        wait_for(lambda: time.monotonic() >= settle_until, 15, interval=0.5)
        TIMINGS["exporter_idle_rss_kib"] = int(_status(pid)["VmRSS"].split()[0])

        begin = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=10)
        TIMINGS["sigterm_to_exit_seconds"] = round(time.monotonic() - begin, 2)
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert "stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            for pid in _descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=10)
        with contextlib.suppress(subprocess.SubprocessError, AssertionError):
            buildah("rm", container)
