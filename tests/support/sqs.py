"""A local SQS-compatible server for tests: moto's standalone server (``moto[server]``, in the
dev extra), on 127.0.0.1, standing in for Amazon SQS. It keeps every queue in memory; each
test takes queues under a prefix of its own."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.support.ports import free_port, port_is_open
from tests.support.processes import ManagedProcess
from tests.support.waiting import wait_for

REGION = "eu-west-1"
# Credentials a test puts in the URL: moto accepts any; they must never be shown.
ACCESS_KEY = "AKIASQSEXPORTERTEST"
SECRET_KEY = "sqs/Secret+Key/NeverShown42"


class MotoSqsServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = Path(workdir) / "moto.log"
        self._proc: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, credentials: bool = True) -> str:
        """kombu's form: the endpoint is the URL's host; the secret URL-quoted."""
        userinfo = f"{ACCESS_KEY}:{quote(SECRET_KEY, safe='')}@" if credentials else ""
        return f"sqs://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._proc = ManagedProcess(argv, self.log_path, cwd=self.log_path.parent)
        self._proc.start()
        proc = self._proc
        wait_for(
            lambda: port_is_open(self.port),
            30.0,
            message=lambda: f"moto server did not listen:\n{proc.log_tail()}",
        )

    def enable_auth(self) -> None:
        """From now on moto checks every request against IAM (its users and policies).
        Requests made before this (creating users, queues) are not checked."""
        import urllib.request

        request = urllib.request.Request(
            self.endpoint + "/moto-api/reset-auth",
            data=b"0",  # the number of requests still let through unchecked
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(timeout=10.0)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"
