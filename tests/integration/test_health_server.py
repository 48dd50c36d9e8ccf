"""The health/metrics HTTP server over real sockets: routes, methods, slow and oversized clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.test_metrics import SPEC_METRICS, exposed_metrics
from tradecache.daemon.health import METRICS_CONTENT_TYPE, HealthServer
from tradecache.daemon.metrics import Metrics

SHORT_TIMEOUT = 0.3


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Running:
    server: HealthServer
    metrics: Metrics
    ready: bool = False

    @property
    def port(self) -> int:
        return self.server.port


def http_get(port: int, path: str, method: str = "GET", host: str = "127.0.0.1") -> Reply:
    """A blocking request with urllib (run it in a thread); 4xx/5xx are returned, not raised."""
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


async def exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> Reply:
    """Send `raw` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return Reply(int(status_line.split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body)


async def started(host: str = "127.0.0.1", timeout: float = 5.0) -> Running:
    metrics = Metrics(CollectorRegistry(), version="9.9.9")
    running = Running(HealthServer(metrics, lambda: False, host, 0, timeout=timeout), metrics)
    running.server.ready = lambda: running.ready
    await running.server.start()
    return running


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    running = await started(timeout=SHORT_TIMEOUT)
    yield running
    await running.server.stop()


async def test_port_zero_binds_a_free_port(running: Running) -> None:
    assert running.port > 0


async def test_healthz_is_ok_even_when_not_ready(running: Running) -> None:
    reply = await asyncio.to_thread(http_get, running.port, "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")
    assert reply.headers["content-type"].startswith("text/plain")


async def test_readyz_follows_the_ready_callback(running: Running) -> None:
    reply = await asyncio.to_thread(http_get, running.port, "/readyz")
    assert (reply.status, reply.body) == (503, b"not ready\n")
    running.ready = True
    reply = await asyncio.to_thread(http_get, running.port, "/readyz")
    assert (reply.status, reply.body) == (200, b"ready\n")
    running.ready = False
    assert (await asyncio.to_thread(http_get, running.port, "/readyz")).status == 503


async def test_metrics_serves_every_spec_metric_in_prometheus_text(running: Running) -> None:
    running.metrics.divergence()
    reply = await asyncio.to_thread(http_get, running.port, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == METRICS_CONTENT_TYPE
    text = reply.body.decode()
    exposed = exposed_metrics(text)
    for name, (kind, _) in SPEC_METRICS.items():
        assert exposed.get(name, (None,))[0] == kind, name
    assert "tradecache_position_divergence_total 1.0" in text.splitlines()
    assert 'tradecache_build_info{version="9.9.9"} 1.0' in text.splitlines()


async def test_a_query_string_does_not_change_the_route(running: Running) -> None:
    reply = await exchange(running.port, b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (reply.status, reply.body) == (200, b"ok\n")


async def test_every_response_closes_the_connection(running: Running) -> None:
    reply = await exchange(running.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.headers["connection"] == "close"
    assert reply.headers["content-length"] == str(len(reply.body))


async def test_an_unknown_path_is_404(running: Running) -> None:
    reply = await asyncio.to_thread(http_get, running.port, "/nothing-here")
    assert reply.status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_a_method_other_than_get_or_head_is_405(running: Running, method: str) -> None:
    reply = await asyncio.to_thread(http_get, running.port, "/healthz", method)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_head_answers_like_get_without_a_body(running: Running, path: str) -> None:
    got = await exchange(running.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await exchange(running.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert head.status == got.status
    assert head.body == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert int(head.headers["content-length"]) == len(got.body) > 0


async def test_a_malformed_request_line_is_400(running: Running) -> None:
    reply = await exchange(running.port, b"HELLO\r\n\r\n")
    assert reply.status == 400


async def test_oversized_headers_are_refused_and_the_server_goes_on(running: Running) -> None:
    raw = b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * (20 * 1024)
    try:
        reply = await exchange(running.port, raw)
        assert reply.status == 431
    except ConnectionResetError:
        pass  # also acceptable: the server dropped the connection
    assert (await exchange(running.port, b"GET /healthz HTTP/1.1\r\n\r\n")).status == 200


async def test_a_silent_client_is_dropped_after_the_timeout_while_others_are_answered(running: Running) -> None:
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", running.port)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", running.port)
    slow_writer.write(b"GET /healthz HTTP/1.1\r\n")  # never finishes its headers
    began = time.monotonic()
    try:
        reply = await asyncio.to_thread(http_get, running.port, "/healthz")
        assert reply.status == 200
        for reader in (silent_reader, slow_reader):
            with contextlib.suppress(ConnectionResetError):  # an abort may reach the client as a reset
                assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        assert SHORT_TIMEOUT * 0.8 <= time.monotonic() - began < 3
    finally:
        for writer in (silent_writer, slow_writer):
            writer.close()
    assert (await asyncio.to_thread(http_get, running.port, "/readyz")).status == 503


async def test_an_error_in_the_ready_callback_is_500_and_the_server_goes_on(running: Running) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    running.server.ready = broken
    assert (await asyncio.to_thread(http_get, running.port, "/readyz")).status == 500
    assert (await asyncio.to_thread(http_get, running.port, "/healthz")).status == 200


async def test_a_client_that_disconnects_mid_request_does_not_stop_the_server(running: Running) -> None:
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"GET /metr")
        writer.transport.abort()
    assert (await asyncio.to_thread(http_get, running.port, "/healthz")).status == 200


async def test_stop_drops_idle_connections_and_closes_the_port() -> None:
    running = await started(timeout=30)
    port = running.port
    _, idle = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    await running.server.stop()
    assert time.monotonic() - began < 2
    idle.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["::1", "[::1]", "::"])
async def test_an_ipv6_host_is_served(host: str) -> None:
    running = await started(host)
    try:
        reply = await asyncio.to_thread(http_get, running.port, "/healthz", "GET", "[::1]")
        assert (reply.status, reply.body) == (200, b"ok\n")
    finally:
        await running.server.stop()
