# syntax=docker/dockerfile:1
# telemax worker image. Multi-stage: the build stage installs the wheels (pinned by
# constraints.txt) into a virtualenv; the runtime stage gets only that virtualenv, runs as an
# unprivileged user and has no compilers or build tools.
#
# BASE_IMAGE must provide python3 (3.11+) with the venv module: the official python image (the
# default) or a Debian-style image with python3 and python3-venv. Both stages use the same base
# so that the virtualenv's interpreter link stays valid.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Optional, for builds behind a package mirror or a TLS-inspecting proxy (a CA bundle mounted
# into the build); build arguments of this stage never reach the runtime image.
ARG PIP_INDEX_URL
ARG PIP_CERT
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/telemax
COPY pyproject.toml constraints.txt README.md ./
COPY consumer ./consumer
COPY producer ./producer
COPY kernel ./kernel
# Binary wheels only: a dependency that would need a compiler fails the build instead of
# dragging one in. pip compiles the bytecode, so a read-only root filesystem costs nothing.
RUN /opt/telemax/bin/pip install --no-cache-dir --only-binary=:all: -c constraints.txt . \
    && /opt/telemax/bin/python -m consumer --help > /dev/null

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="telemax" \
      org.opencontainers.image.description="Drains Kinesis into DynamoDB with KCL-style leased asyncio workers" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 telemax \
    && useradd --system --uid 10001 --gid telemax --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin telemax
COPY --from=build /opt/telemax /opt/telemax
ENV PATH=/opt/telemax/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TELEMAX_METRICS_PORT=9108
WORKDIR /tmp
# Numeric user: Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9108
# /healthz answers 200 while the event loop is responsive (the metrics server must be on).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/telemax/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TELEMAX_METRICS_PORT', '9108'), timeout=2)"]
STOPSIGNAL SIGTERM
# Exec form: SIGTERM reaches Python (PID 1), which drains, checkpoints and releases its leases
# within TELEMAX_SHUTDOWN_GRACE_S.
ENTRYPOINT ["/opt/telemax/bin/python", "-m", "consumer"]
CMD ["run"]
