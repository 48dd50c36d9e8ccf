"""The test servers themselves: real Redis, NATS JetStream and Redis Cluster, restartable, found on any machine."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socketserver
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import nats
import pytest
import redis
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from tests.backends import NotRestartable, Server, docker_answers, open_server
from tests.cluster import RedisCluster
from tests.servers import (
    BINARY_ENV,
    BinaryNotFound,
    NatsServer,
    RedisServer,
    ServerName,
    find_binary,
    packaged_binary,
    redis_answers,
)

integration = pytest.mark.integration
SERVER_NAMES: list[ServerName] = ["redis-server", "nats-server"]


def address(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@integration
def test_redis_answers_ping_and_returns_what_was_set(redis_client: redis.Redis) -> None:
    assert redis_client.ping() is True
    redis_client.set("tradecache-test:greeting", b"hello")
    assert redis_client.get("tradecache-test:greeting") == b"hello"


@integration
def test_redis_stopped_then_started_is_back_on_its_port_with_its_data(
    redis_server: Server, redis_client: redis.Redis
) -> None:
    redis_client.set("tradecache-test:kept", b"across a restart")
    before = address(redis_server)
    redis_server.stop()
    assert not redis_answers(*before)
    redis_server.start()
    assert address(redis_server) == before
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.get("tradecache-test:kept") == b"across a restart"


@integration
def test_redis_killed_keeps_every_acknowledged_write(redis_server: Server, redis_client: redis.Redis) -> None:
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(1000):
            pipe.rpush("tradecache-test:events", n)
        pipe.execute()
    redis_server.kill()
    redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.llen("tradecache-test:events") == 1000


@integration
def test_redis_without_appendonly_forgets_its_data_on_restart() -> None:
    with RedisServer(appendonly=False) as server:
        with server.client() as client:
            client.set("tradecache-test:lost", b"1")
        server.stop()
        server.start()
        with server.client() as client:
            assert client.get("tradecache-test:lost") is None


@integration
async def test_jetstream_stores_a_publish_and_a_pull_consumer_fetches_it(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream("SERVERS_PULL")
    await js.add_stream(name="SERVERS_PULL", subjects=["servers-test.pull.>"])
    ack = await js.publish("servers-test.pull.one", b"hello")
    assert (ack.stream, ack.seq) == ("SERVERS_PULL", 1)
    subscription = await js.pull_subscribe("servers-test.pull.>", durable="servers-pull")
    [message] = await subscription.fetch(1, timeout=5)
    assert message.data == b"hello"
    await message.ack_sync()
    consumer = await js.consumer_info("SERVERS_PULL", "servers-pull")
    assert (consumer.num_ack_pending, consumer.num_pending) == (0, 0)
    await js.delete_stream("SERVERS_PULL")


@integration
async def test_jetstream_keeps_a_stream_and_its_messages_across_a_nats_restart(nats_server: Server) -> None:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream("SERVERS_RESTART")
    await js.add_stream(name="SERVERS_RESTART", subjects=["servers-test.restart.>"])
    for n in range(3):
        await js.publish("servers-test.restart.event", str(n).encode())
    await client.close()

    nats_server.stop()
    nats_server.start()

    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    info = await js.stream_info("SERVERS_RESTART")
    assert (info.state.messages, info.state.last_seq) == (3, 3)
    await js.delete_stream("SERVERS_RESTART")
    await client.close()


@integration
def test_redis_cluster_has_three_masters_serving_every_slot(redis_line_cluster: RedisCluster) -> None:
    for node in redis_line_cluster.nodes:
        with node.client() as client:
            info = client.cluster("INFO")
        assert (info["cluster_state"], info["cluster_slots_ok"], info["cluster_size"]) == ("ok", "16384", "3")
    with redis.RedisCluster.from_url(redis_line_cluster.url) as cluster:
        masters = {(node.host, node.port) for node in cluster.get_primaries()}
    assert masters == {("127.0.0.1", node.port) for node in redis_line_cluster.nodes}


@integration
def test_hash_tagged_keys_share_one_slot_and_live_on_one_node(redis_line_cluster: RedisCluster) -> None:
    keys = ["trader-{TESTER-1}:orders:O-1", "trader-{TESTER-1}:positions:P-1"]
    with redis.RedisCluster.from_url(redis_line_cluster.url) as cluster:
        assert cluster.keyslot(keys[0]) == cluster.keyslot(keys[1])
        assert cluster.keyslot("trader-TESTER-1:orders:O-1") != cluster.keyslot("trader-TESTER-1:positions:P-1")
        cluster.mset(dict.fromkeys(keys, b"x"))  # refused if the keys mapped to two slots
        owner = cluster.get_node_from_key(keys[0])
        with redis.Redis(host=owner.host, port=owner.port) as direct:
            assert direct.exists(*keys) == 2
        cluster.delete(*keys)


@pytest.fixture
def dir_on_path(tmp_path: Path) -> Path:
    """A folder holding links named redis-server and nats-server to the pip packages' binaries."""
    for name in SERVER_NAMES:
        target = packaged_binary(name)
        assert target is not None, f"the test extra should have installed {name}"
        (tmp_path / name).symlink_to(target)
    return tmp_path


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_binary_named_by_the_environment_wins_over_path(name: ServerName, dir_on_path: Path) -> None:
    explicit = packaged_binary(name)
    environ = {BINARY_ENV[name]: str(explicit), "PATH": str(dir_on_path)}
    assert find_binary(name, environ) == explicit


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_binary_on_path_comes_before_the_pip_package(name: ServerName, dir_on_path: Path) -> None:
    assert find_binary(name, {"PATH": str(dir_on_path)}) == dir_on_path / name


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_binary_missing_from_path_comes_from_its_pip_package(name: ServerName, tmp_path: Path) -> None:
    found = find_binary(name, {"PATH": str(tmp_path)})
    assert found == packaged_binary(name)
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True, timeout=10)
    assert ("Redis server v=" if name == "redis-server" else "nats-server: v") in version.stdout


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_an_explicit_binary_that_is_not_there_is_an_error_not_a_fallback(name: ServerName, tmp_path: Path) -> None:
    with pytest.raises(BinaryNotFound, match=BINARY_ENV[name]):
        find_binary(name, {BINARY_ENV[name]: str(tmp_path / "missing"), "PATH": os.defpath})


@integration
def test_pip_packaged_binaries_run_real_servers() -> None:
    redis_binary, nats_binary = packaged_binary("redis-server"), packaged_binary("nats-server")
    assert redis_binary is not None and nats_binary is not None
    with RedisServer(binary=redis_binary) as redis_server, redis_server.client() as client:
        assert client.info("server")["redis_version"].startswith("6.2")
    with NatsServer(binary=nats_binary) as nats_server:
        assert nats_server.answers()


@integration
def test_a_url_from_the_environment_is_used_as_it_is_and_never_restarted(redis_server: Server) -> None:
    said: list[str] = []
    server = open_server("redis", said.append, {"TRADECACHE_TEST_REDIS_URL": redis_server.url})
    assert server.url == redis_server.url
    assert "TRADECACHE_TEST_REDIS_URL" in said[0]
    with pytest.raises(NotRestartable):
        server.stop()


@integration
def test_the_chosen_backend_is_announced_with_its_address() -> None:
    said: list[str] = []
    server = open_server("nats", said.append, {})
    try:
        assert len(said) == 1
        assert f":{address(server)[1]}" in said[0]
    finally:
        server.close()


class PingHandler(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/_ping" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="tc-sock-"))  # short: a unix socket path has ~100 bytes at most
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def http_on_unix_socket(path: Path, status: int) -> Iterator[None]:
    handler = type("Handler", (PingHandler,), {"status": status})
    with socketserver.UnixStreamServer(str(path), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            thread.join()


def test_docker_counts_as_there_only_when_its_socket_answers_the_ping(socket_dir: Path) -> None:
    sock = socket_dir / "docker.sock"
    assert docker_answers(f"unix://{sock}") is False  # no socket at all
    with http_on_unix_socket(sock, 200):
        assert docker_answers(f"unix://{sock}") is True
    sock.unlink()
    with http_on_unix_socket(sock, 500):
        assert docker_answers(f"unix://{sock}") is False
    assert docker_answers("ssh://somewhere") is False
