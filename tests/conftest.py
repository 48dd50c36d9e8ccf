"""Session-wide real servers: redis-server and nats-server started by the tests on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import ExternalServer, RedisClusterOnLoopback, TestNats, TestRedis, announce, docker_answers
from tradecache.daemon.devstack import BinaryNotFound, find_binary


def _local(name: str) -> None:
    """Make sure the binary is there; in CI its absence fails the run instead of skipping."""
    try:
        path = find_binary(name)
    except BinaryNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {name}: {exc}")
        raise
    announce(f"using local {name} at {path}")


def _backend_note() -> None:
    if docker_answers():
        # Local processes are still preferred here: fault tests need to kill and restart servers,
        # which testcontainers' fixed-port mapping makes awkward. Say so instead of staying silent.
        announce("a Docker engine answers, but fault tests need restartable servers: using local processes")
    else:
        announce("no Docker engine reachable (ping on /var/run/docker.sock failed): using local processes")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    url = os.environ.get("TRADECACHE_TEST_REDIS_URL")
    if url:
        announce(f"using external Redis {url}")
        yield ExternalServer(url)
        return
    _backend_note()
    _local("redis-server")
    server = TestRedis()
    server.start()
    announce(f"redis-server on 127.0.0.1:{server.port}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Any]:
    url = os.environ.get("TRADECACHE_TEST_NATS_URL")
    if url:
        announce(f"using external NATS {url}")
        yield ExternalServer(url)
        return
    _local("nats-server")
    server = TestNats()
    server.start()
    announce(f"nats-server -js on 127.0.0.1:{server.port}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterOnLoopback]:
    _local("redis-server")
    cluster = RedisClusterOnLoopback(3)
    cluster.start()
    announce(f"redis cluster of 3 masters on ports {[node.port for node in cluster.nodes]}")
    yield cluster
    cluster.stop()
