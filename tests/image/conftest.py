"""Fixtures of the container image tests (``make test-image``; not part of ``make test``).

The image is built for real with Debian's buildah from the repository's Dockerfile, on a base
image the tests make themselves with debootstrap (no registry is needed). Everything buildah
stores lives in a directory of the test session, removed at the end: the machine's own
container storage is never touched. The debootstrapped root file system is cached as a tarball
(``CME_IMAGE_TEST_CACHE``, default ``<repo>/.cache/image-test``) so only the first run pays for
debootstrap.

Needs root (debootstrap, buildah's chroot isolation), and the Debian packages buildah,
debootstrap and redis-server (``make test-image`` installs them). A missing tool fails the
tests with a message: never a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CME_IMAGE_TEST_CACHE", REPO / ".cache" / "image-test"))
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_IMAGE = f"localhost/cme-test-base:{SUITE}"
IMAGE = "localhost/celery-metrics-exporter:test"
# Measurements of the session, also written to CACHE/last-run.json.
TIMINGS: dict[str, Any] = {}


def require_tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: run `make test-image`, which installs buildah, "
            "debootstrap and redis-server (Debian packages)",
            pytrace=False,
        )
    return path


def _run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc


def debian_mirror() -> str:
    """The Debian mirror apt uses here (``CME_DEBIAN_MIRROR`` overrides)."""
    if os.environ.get("CME_DEBIAN_MIRROR"):
        return os.environ["CME_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        # deb822 stanzas (*.sources)
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(
                (m.group(1).lower(), m.group(2).strip())
                for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M)
            )
            suites = fields.get("suites", "").split()
            if "deb" in fields.get("types", "").split() and SUITE in suites:
                return fields["uris"].split()[0]
        # one-line format
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                uri, suite = (parts[2], parts[3]) if parts[1].startswith("[") else parts[1:3]
                if suite == SUITE:
                    return uri
    return "http://deb.debian.org/debian"


def base_rootfs_tarball() -> Path:
    """The debootstrapped root file system as a .tar.gz, made once and cached."""
    key = "-".join([SUITE, "minbase", *BASE_PACKAGES])
    tarball = CACHE / f"rootfs-{key}.tar.gz"
    if tarball.exists():
        TIMINGS["debootstrap_seconds"] = 0.0
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"rootfs-{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    begin = time.monotonic()
    _run(
        [
            require_tool("debootstrap"),
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(work),
            debian_mirror(),
        ],
        timeout=1800,
    )
    TIMINGS["debootstrap_seconds"] = round(time.monotonic() - begin, 1)
    # What an image does not need: downloaded .debs and apt lists.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (work / junk).glob("*"):
            if entry.is_file():
                entry.unlink()
    partial = tarball.with_suffix(".partial")
    _run(["tar", "-C", str(work), "--numeric-owner", "-czf", str(partial), "."], timeout=600)
    partial.rename(tarball)
    shutil.rmtree(work)
    return tarball


@dataclass
class Buildah:
    """buildah with private storage (vfs: works without overlay support in a container)."""

    root: Path
    binary: str = field(default_factory=lambda: require_tool("buildah"))

    def argv(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        # No storage.conf or registries of the machine's: everything from the flags above.
        env = dict(os.environ)
        env["BUILDAH_ISOLATION"] = "chroot"
        env["CONTAINERS_STORAGE_CONF"] = str(self.root / "storage.conf")
        return env

    def __call__(self, *args: str, timeout: float = 300) -> str:
        return _run(self.argv(*args), timeout=timeout, env=self.env).stdout

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.argv(*args), stdout=out, stderr=subprocess.STDOUT, env=self.env
            )

    def inspect_image(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self("inspect", "--type", "image", name))
        return data


def _host_ca_bundle() -> str | None:
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (debootstrap, buildah chroot)", pytrace=False)
    root = tmp_path_factory.mktemp("buildah")
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{root / "run"}"\ngraphroot = "{root / "storage"}"\n'
    )
    tool = Buildah(root)
    try:
        yield tool
    finally:
        subprocess.run(tool.argv("rm", "--all"), env=tool.env, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "last-run.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


@pytest.fixture(scope="session")
def image(buildah: Buildah) -> str:
    """The Dockerfile built on the debootstrapped base; returns the image name."""
    tarball = base_rootfs_tarball()
    begin = time.monotonic()
    container = buildah("from", "--name", "cme-test-base-wc", "scratch").strip()
    buildah("add", container, str(tarball), "/", timeout=600)
    buildah(
        "config",
        "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--env", "LANG=C.UTF-8",
        "--cmd", "/bin/bash",
        container,
    )  # fmt: skip
    buildah("commit", "--rm", container, BASE_IMAGE, timeout=600)
    TIMINGS["base_import_seconds"] = round(time.monotonic() - begin, 1)

    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    args = [
        "bud",
        "--isolation=chroot",
        "--format=docker",  # OCI image configs have no HEALTHCHECK
        "--layers=false",
        "--pull=never",
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg", f"REVISION={revision or 'unknown'}",
        "--tag", IMAGE,
    ]  # fmt: skip
    ca = _host_ca_bundle()
    if ca:  # a TLS-intercepting proxy's CA must reach pip; build-time only
        args += ["--secret", f"id=pip_cert,src={ca}"]
    begin = time.monotonic()
    buildah(*args, "--file", str(REPO / "Dockerfile"), str(REPO), timeout=1800)
    TIMINGS["build_seconds"] = round(time.monotonic() - begin, 1)
    sizes = buildah("images", "--format", "{{.Name}}:{{.Tag}} {{.Size}}").splitlines()
    TIMINGS["image_sizes"] = sizes
    return IMAGE
