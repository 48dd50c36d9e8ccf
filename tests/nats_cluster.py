"""A NATS cluster of local `nats-server -js` processes, for the scale tests.

Each node is a `NatsServer` (client port, monitoring port, its own JetStream store folder) started
with a server name (`-n`), a cluster listener (`--cluster nats://127.0.0.1:<port>`), the cluster's
name (`--cluster_name`) and routes to every other node (`--routes`). A clustered node's `/healthz`
stays unhealthy until the JetStream meta group has a leader, which needs a quorum of nodes, so a
node counts as started once its monitoring port answers `/varz`; `NatsCluster.start()` then waits
until every running node names the same meta leader and sees all its peers (`/jsz`), after which
streams with replicas can be created. `kill(node)` is a SIGKILL; the node's port and store are kept,
so `node.start()` brings it back as the same server.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from tradecache.dev.stack import HOST, NatsServer, ServerFailed, find_binary, free_port


def monitor_get(port: int, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """The JSON a monitoring endpoint returns, or None when the server does not answer (or errs)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        data: dict[str, Any] = json.loads(body)
        return data
    except (OSError, ValueError):
        return None
    finally:
        connection.close()


class ClusterNode(NatsServer):
    """One node of a `NatsCluster`: a `NatsServer` with a name, a cluster port and routes."""

    def __init__(self, name: str, cluster_name: str, *, binary: Path | None = None) -> None:
        super().__init__(binary=binary)
        self.server_name = name
        self.cluster_name = cluster_name
        self.cluster_port = free_port()
        self.route_ports: list[int] = []

    @property
    def route_url(self) -> str:
        return f"nats://{HOST}:{self.cluster_port}"

    def command(self) -> list[str]:
        routes = ",".join(f"nats://{HOST}:{port}" for port in self.route_ports)
        cluster = ["-n", self.server_name, "--cluster_name", self.cluster_name, "--cluster", self.route_url]
        return [*super().command(), *cluster, "--routes", routes]

    def answers(self) -> bool:
        """The process is up (its monitoring port answers); JetStream may still wait for a quorum."""
        return monitor_get(self.monitor_port, "/varz") is not None

    def jsz(self) -> dict[str, Any] | None:
        return monitor_get(self.monitor_port, "/jsz") if self.running else None


class NatsCluster:
    """`size` clustered nats-server processes with JetStream, on loopback, free ports."""

    def __init__(self, size: int = 3, *, name: str = "tradecache-test", binary: Path | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        binary = binary or find_binary("nats-server")
        self.name = name
        while True:  # free_port() may hand out one port twice: every node port must be distinct
            self.nodes = [ClusterNode(f"{name}-n{index + 1}", name, binary=binary) for index in range(size)]
            ports = [port for node in self.nodes for port in (node.port, node.monitor_port, node.cluster_port)]
            if len(set(ports)) == len(ports):
                break
            for node in self.nodes:
                node.close()
        for node in self.nodes:
            node.route_ports = [other.cluster_port for other in self.nodes if other is not node]

    @property
    def binary(self) -> Path:
        return self.nodes[0].binary

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def node_for(self, url: object) -> ClusterNode:
        """The node whose client port is the port of `url` (a string or a parsed URL, as nats-py's)."""
        port = urlsplit(url).port if isinstance(url, str) else getattr(url, "port", None)
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of the cluster listens on {url!r}")

    def start(self, timeout: float = 30.0) -> None:
        """Start every node that is not running, then wait for a meta leader that knows them all."""
        for node in self.nodes:
            node.start(timeout)
        self.wait_for_meta_leader(timeout)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name, when every running node agrees on it and the
        leader sees every running node as a current peer; else None."""
        running = self.running_nodes
        reports = [node.jsz() for node in running]
        leaders = set()
        for report in reports:
            meta = (report or {}).get("meta_cluster") or {}
            leaders.add(meta.get("leader") or None)
        if len(leaders) != 1 or None in leaders:
            return None
        leader = leaders.pop()
        names = {node.server_name for node in running}
        for node, report in zip(running, reports, strict=True):
            if node.server_name == leader:
                meta = (report or {}).get("meta_cluster") or {}
                current = {peer["name"] for peer in meta.get("replicas") or [] if peer.get("current")}
                if current | {leader} != names:
                    return None
        return str(leader)

    def wait_for_meta_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            leader = self.meta_leader()
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                logs = "\n".join(f"-- {node.server_name}:\n{node.log()}" for node in self.nodes)
                raise ServerFailed(f"NATS cluster {self.name!r}: no JetStream meta leader after {timeout} s\n{logs}")
            time.sleep(0.05)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (as a crash); its port and store are kept for a restart."""
        node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


__all__ = ["ClusterNode", "NatsCluster", "monitor_get"]
