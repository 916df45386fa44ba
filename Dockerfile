# syntax=docker/dockerfile:1
# Multi-stage: build a venv with the wheels, copy it into a slim runtime with no compilers.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/telemax
COPY pyproject.toml constraints.txt README.md ./
COPY consumer ./consumer
COPY producer ./producer
RUN /opt/telemax/bin/pip install --no-cache-dir --disable-pip-version-check \
        -c constraints.txt .

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 telemax \
    && useradd --system --uid 10001 --gid telemax --no-create-home telemax
COPY --from=build /opt/telemax /opt/telemax
ENV PATH=/opt/telemax/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TELEMAX_METRICS_PORT=9108
USER 10001:10001
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2); sys.exit(0)"]
# Exec form: SIGTERM goes straight to Python, which drains, checkpoints and releases.
ENTRYPOINT ["python3", "-m", "consumer"]
CMD ["run"]
