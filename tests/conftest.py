"""Session-wide Redis, NATS and Redis Cluster for the tests, and clean per-test clients.

`tests/backends.py` picks each server (a URL from the environment, a Docker container, or a local
process from `tests/servers.py`) and the choice is printed. A missing binary is an error, never a
skip; under CI (CI=true) it stops the run before the first test.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import redis
from nats.aio.client import Client as NatsClient

from tests.backends import Announce, Server, open_server
from tests.cluster import RedisCluster
from tests.servers import BinaryNotFound, find_binary


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _in_ci():
        return
    problems = []
    for name in ("redis-server", "nats-server"):
        try:
            find_binary(name)
        except BinaryNotFound as exc:
            problems.append(str(exc))
    if problems:
        pytest.exit("CI must test against real servers:\n" + "\n".join(problems), returncode=1)


@pytest.fixture(scope="session")
def announce(pytestconfig: pytest.Config) -> Announce:
    """Print a line to stderr that shows even under -q and output capture."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def write(text: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\ntradecache tests: {text}", file=sys.stderr, flush=True)

    return write


@pytest.fixture(scope="session")
def redis_server(announce: Announce) -> Iterator[Server]:
    server = open_server("redis", announce)
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_server(announce: Announce) -> Iterator[Server]:
    server = open_server("nats", announce)
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster(announce: Announce) -> Iterator[RedisCluster]:
    """Three local master processes (always local: cluster nodes must reach each other by address)."""
    with RedisCluster(3) as cluster:
        ports = ", ".join(str(node.port) for node in cluster.nodes)
        announce(f"Redis Cluster of 3 masters, local {cluster.binary} on ports {ports}")
        yield cluster


@pytest.fixture
def redis_client(redis_server: Server) -> Iterator[redis.Redis]:
    """A client of the session's Redis; its database is flushed before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
async def nats_client(nats_server: Server) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()
