# syntax=docker/dockerfile:1
# tradecache image: `docker build -t tradecache:0.1.0 .` (BuildKit, Docker >= 23).
# Stage 1 builds the wheels (tradecache's, with its compiled modules, and its dependencies');
# the final stage installs them from a bind mount, so neither the wheels, a compiler nor a pip
# cache ends up in the image.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY tradecache ./tradecache
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tradecache" \
      org.opencontainers.image.description="State-persistence sidecar for trading nodes: NATS JetStream in, Redis (NautilusTrader layout) out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels /wheels/tradecache-*.whl \
    && useradd --system --no-log-init --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tradecache
COPY config/tradecache.example.yaml /etc/tradecache/tradecache.yaml
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["tradecache", "run"]
CMD ["--config", "/etc/tradecache/tradecache.yaml"]
