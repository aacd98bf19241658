# syntax=docker/dockerfile:1
# Celery metrics exporter. Build:  docker build -t celery-metrics-exporter .
# Any Debian-like base with python3 (3.10+) and its venv module works:
#   --build-arg BASE_IMAGE=debian-with-python3-venv   (tests/image builds that way)
# The runtime dependencies are pinned in requirements.lock (deploy/lock_requirements.py).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# A venv, not the system site-packages: the same layout on python:*-slim (/usr/local) and on
# Debian's python3 (/usr/bin/python3, PEP 668 "externally managed").
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock requirements-build.lock ./
# Optional build secret "pip_cert": a CA bundle for a TLS-intercepting proxy or a private index
# (--secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt). Used at build time only.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --no-deps --only-binary=:all: -r requirements.lock \
    && pip install --no-deps --only-binary=:all: -r requirements-build.lock
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
# --no-build-isolation: build with the pinned setuptools above, nothing fetched unpinned.
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && pip uninstall --yes setuptools pip

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="celery-metrics-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Celery: task, worker and broker metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed UID/GID so Kubernetes runAsUser / file ownership can be stated without a lookup.
RUN groupadd --gid 10001 exporter \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 9808
# Liveness only (/healthz): a broker outage is /readyz's business, not a reason to restart.
# Follows CELERY_EXPORTER_LISTEN_ADDRESS when the port is changed that way (not --listen-address).
# Any HTTP answer below 500 means alive: with --web-config-file the port may speak TLS (plain
# HTTP gets a 400) or want a password (401), and the check needs neither certificate nor secret.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, http.client; port = os.environ.get('CELERY_EXPORTER_LISTEN_ADDRESS', ':9808').rsplit(':', 1)[1]; c = http.client.HTTPConnection('127.0.0.1', int(port), timeout=4); c.request('GET', '/healthz'); raise SystemExit(c.getresponse().status >= 500)"]
# Exec form: the exporter is PID 1 and gets SIGTERM itself (it stops within 2 s).
ENTRYPOINT ["celery-metrics-exporter"]
