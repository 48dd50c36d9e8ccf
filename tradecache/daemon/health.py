"""A tiny HTTP server for /metrics, /healthz and /readyz (asyncio, no extra dependency).

`/healthz` is 200 while the process runs (it never asks Redis or NATS: a liveness probe must
not restart a pod because a dependency is down); `/readyz` is 200 only when `ready()` says so.
Each connection gets one response and is closed; slow or oversized requests are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tradecache.daemon.metrics import Metrics

MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 5.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger("tradecache.http")


class HealthServer:
    def __init__(self, metrics: Metrics, ready: Callable[[], bool], host: str, port: int) -> None:
        self.metrics = metrics
        self.ready = ready
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            bound: int = self._server.sockets[0].getsockname()[1]
            return bound
        return self._port

    async def start(self) -> None:
        host = self.host.strip("[]") or None
        self._server = await asyncio.start_server(self._handle, host, self._port, limit=MAX_HEADER_BYTES)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, body = self._route(method, path)
            header = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(header.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # slow, truncated or oversized request: drop it
        except Exception:  # one bad connection must never stop the server
            log.exception("health server request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return "200 OK", METRICS_CONTENT_TYPE, self.metrics.render()
        if path == "/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            if self.ready():
                return "200 OK", "text/plain", b"ready\n"
            return "503 Service Unavailable", "text/plain", b"not ready\n"
        return "404 Not Found", "text/plain", b"not found\n"


__all__ = ["HealthServer"]
