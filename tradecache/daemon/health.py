"""A tiny HTTP/1.1 server for /metrics, /healthz and /readyz (asyncio, no extra dependency).

`/healthz` is 200 while the process runs: it never asks Redis or NATS, since a liveness probe
must not restart a pod because a dependency is down. `/readyz` is 200 only when `ready()` says
so. `/metrics` renders the daemon's own registry; a scrape never reaches Redis.

Each connection carries one request and gets one response, then is closed (`Connection: close`).
Only the request line and headers are read, at most `MAX_HEADER_BYTES` of them, and the whole
exchange must finish within `timeout` seconds: a client that is slow, silent or sends too much is
dropped without holding anything else up. An error in one connection is logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

from tradecache.daemon.metrics import Metrics

MAX_HEADER_BYTES: Final = 16 * 1024
TIMEOUT: Final = 5.0
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
ALLOWED_METHODS: Final = ("GET", "HEAD")

log = logging.getLogger("tradecache.http")


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = TEXT_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def text(cls, status: HTTPStatus, text: str, *headers: tuple[str, str]) -> Response:
        return cls(status, text.encode() + b"\n", TEXT_CONTENT_TYPE, headers)

    def encode(self, with_body: bool) -> bytes:
        """The status line, headers and (unless `with_body` is false, for HEAD) the body."""
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + self.body if with_body else head


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """`(method, path)` from the request head (query dropped), or None if it is not HTTP/1.x."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].startswith("HTTP/1."):
        return None
    method, target, _ = parts
    try:
        path = urlsplit(target).path  # origin form `/readyz?x=1` or absolute form `http://h/readyz`
    except ValueError:
        return None
    return method, path


class HealthServer:
    """Serves `/metrics`, `/healthz` and `/readyz` on `host:port` (port 0: any free port).

    `host` may be an IPv4 or IPv6 address, bracketed or not (`::1`, `[::1]`, `::`); an empty
    host binds every interface. `ready` is called on each `/readyz` and must not block.
    """

    def __init__(
        self,
        metrics: Metrics,
        ready: Callable[[], bool],
        host: str,
        port: int,
        *,
        timeout: float = TIMEOUT,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.host = host
        self.timeout = timeout
        self.max_header_bytes = max_header_bytes
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port once started (the one chosen when 0 was asked), else the configured one."""
        if self._server is not None and self._server.sockets:
            bound: int = self._server.sockets[0].getsockname()[1]
            return bound
        return self._port

    async def start(self) -> None:
        """Bind and start accepting. Raises OSError if the address cannot be bound."""
        host = self.host.strip("[]") or None
        self._server = await asyncio.start_server(self._handle, host, self._port, limit=self.max_header_bytes)

    async def stop(self) -> None:
        """Stop accepting, drop open connections and wait for their handlers to end."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=self.timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            async with asyncio.timeout(self.timeout):
                await self._exchange(reader, writer)
        except TimeoutError:
            log.debug("health client too slow: dropped", extra={"peer": writer.get_extra_info("peername")})
            writer.transport.abort()
        except ConnectionError:
            pass  # the client went away: nothing to answer
        except Exception:  # one bad connection must never stop the server
            log.exception("health server connection failed")
            writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=self.timeout)
            if task is not None:
                self._connections.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request head, write one response."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # closed before the end of the headers
        except asyncio.LimitOverrunError:
            response, with_body = Response.text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large"), True
        else:
            request = parse_request_line(head)
            if request is None:
                response, with_body = Response.text(HTTPStatus.BAD_REQUEST, "bad request"), True
            else:
                method, path = request
                response, with_body = self._answer(method, path), method != "HEAD"
        writer.write(response.encode(with_body))
        await writer.drain()

    def _answer(self, method: str, path: str) -> Response:
        try:
            return self.route(method, path)
        except Exception:
            log.exception("health server could not answer", extra={"method": method, "path": path})
            return Response.text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def route(self, method: str, path: str) -> Response:
        """The response to `method path`; raises whatever `ready()` or rendering the metrics raise."""
        if method not in ALLOWED_METHODS:
            allow = ("Allow", ", ".join(ALLOWED_METHODS))
            return Response.text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", allow)
        if path == "/metrics":
            return Response(HTTPStatus.OK, self.metrics.render(), METRICS_CONTENT_TYPE)
        if path == "/healthz":
            return Response.text(HTTPStatus.OK, "ok")
        if path == "/readyz":
            if self.ready():
                return Response.text(HTTPStatus.OK, "ready")
            return Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "not ready")
        return Response.text(HTTPStatus.NOT_FOUND, "not found")


__all__ = ["METRICS_CONTENT_TYPE", "HealthServer", "Response", "parse_request_line"]
