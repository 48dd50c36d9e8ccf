"""The NATS micro service `tradecache`: load requests answered from Redis (SPEC section 3).

Each endpoint listens on `<prefix>.load.<trader_id>.<name>`. nats.micro runs an endpoint's
handler as the callback of one subscription, so a handler that awaited Redis would serve one
request at a time (FIELD-NOTES); ours starts a task per request instead, bounded by a semaphore.
A request can fail only with a micro error reply (400 bad request, 413 too large, 503 Redis
unavailable, 500 anything else): the service itself never stops on a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from nats import micro
from nats.micro.request import Handler, Request
from nats.micro.service import Service

from tradecache import __version__
from tradecache.daemon.metrics import LoadOutcome, Metrics
from tradecache.daemon.subjects import Subjects
from tradecache.errors import StoreUnavailable
from tradecache.service.endpoints import ENDPOINTS, Endpoint, Loader, StatsSource
from tradecache.service.protocol import (
    CURSOR_HEADER,
    ReplyTooLarge,
    RequestRefused,
    encode_cursor,
    encode_entries,
    encode_reply,
    error_body,
    id_request,
    join_entries,
    joined_size,
    page_request,
    wants_msgpack,
)
from tradecache.service.tally import EndpointTally

SERVICE_NAME: Final = "tradecache"
MAX_IN_FLIGHT: Final = 64
# Room left in NATS's max payload for the reply's headers.
HEADER_ROOM: Final = 1024
# No reply item is smaller than this (in JSON or msgpack), so an unpaged collection with more
# items than max_payload / MIN_ITEM_BYTES cannot fit, and is refused before it is read.
MIN_ITEM_BYTES: Final = 64


class LoadService:
    """The request-reply side of the sidecar."""

    def __init__(
        self,
        nc: Any,
        subjects: Subjects,
        trader_id: str,
        loader: Loader,
        stats: StatsSource,
        metrics: Metrics,
        log: logging.Logger,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.trader_id = trader_id
        self.loader = loader
        self.stats = stats
        self.metrics = metrics
        self.log = log
        self.service: Service | None = None
        self._tally = EndpointTally()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.service = await micro.add_service(
            self.nc,
            name=SERVICE_NAME,
            version=__version__,
            description=f"tradecache load requests for trader {self.trader_id}",
            metadata={"trader_id": self.trader_id},
        )
        for endpoint in ENDPOINTS:
            await self.service.add_endpoint(
                name=endpoint.name, subject=self.subjects.load(endpoint.name), handler=self._handler(endpoint)
            )
            self._tally.track(endpoint.name, self.service)
        self.log.info("load service started", extra={"subject": self.subjects.load("*"), "endpoints": len(ENDPOINTS)})

    async def stop(self, timeout: float) -> None:
        """Stop taking requests, then let those in hand finish (up to `timeout` seconds)."""
        if self.service is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.service.stop(), timeout=timeout)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    def _handler(self, endpoint: Endpoint) -> Handler:
        async def handle(request: Request) -> None:
            task = asyncio.create_task(self._serve(endpoint, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handle

    async def _serve(self, endpoint: Endpoint, request: Request) -> None:
        started = time.perf_counter()
        as_msgpack = wants_msgpack(request.headers)
        outcome: LoadOutcome = "ok"
        try:
            async with self._slots:
                body, headers, found = await self._reply(endpoint, request.data, as_msgpack)
            outcome = "ok" if found else "not_found"
            await self._respond(request, body, headers)
        except RequestRefused as exc:
            outcome = "error"
            await self._refuse(endpoint, request, exc.code, exc.message, as_msgpack)
        except StoreUnavailable as exc:
            outcome = "error"
            await self._refuse(endpoint, request, "503", f"Redis is unavailable ({exc}); retry later", as_msgpack)
        except Exception as exc:  # a bug or bad stored data: answer 500, keep serving
            outcome = "error"
            self.log.exception("load request failed", extra={"endpoint": endpoint.name})
            await self._refuse(endpoint, request, "500", f"internal error: {type(exc).__name__}: {exc}", as_msgpack)
        elapsed = time.perf_counter() - started
        self._tally.finished(endpoint.name, elapsed)
        self.metrics.load_request(endpoint.name, outcome, elapsed)

    async def _reply(
        self, endpoint: Endpoint, data: bytes, as_msgpack: bool
    ) -> tuple[bytes, dict[str, str] | None, bool]:
        """The reply body, its headers, and whether something was found."""
        collection = endpoint.collection
        if collection is None:
            page_request(data)  # `stats` takes no parameters, but refuses junk like the others
            return self._fit(encode_reply(await self.stats(), as_msgpack)), None, True
        if endpoint.id_field is not None:
            body, found = await self.loader.one(collection, id_request(data, endpoint.id_field), as_msgpack)
            return self._fit(body), None, found
        page = page_request(data)
        if page.limit is None:
            count = await self.loader.store.count(collection)
            if count * MIN_ITEM_BYTES > self._room():
                raise ReplyTooLarge(self._page_hint(f"{count} items"))
        items, last = await self.loader.page(collection, page, as_msgpack, budget=self._room())
        parts = encode_entries(items, as_msgpack)
        if page.limit is None and last is not None:  # the loader stopped at the room: it cannot all fit
            raise ReplyTooLarge(self._page_hint(f"more than {self._room()} bytes of items"))
        if joined_size(parts, as_msgpack) > self._room():
            if page.limit is None:
                raise ReplyTooLarge(self._page_hint(f"a reply of {joined_size(parts, as_msgpack)} bytes"))
            # A page holds at most `limit` items: here fewer, as many as fit, and the cursor
            # continues after the last one sent.
            kept = self._fitting(parts)
            if kept == 0:
                raise ReplyTooLarge(f"item {items[0][0]!r} alone exceeds the NATS max payload")
            parts = parts[:kept]
            last = items[kept - 1][0]
        headers = None if last is None else {CURSOR_HEADER: encode_cursor(last)}
        return join_entries(parts, as_msgpack), headers, True

    def _fit(self, body: bytes) -> bytes:
        if len(body) > self._room():
            raise ReplyTooLarge(f"a reply of {len(body)} bytes exceeds the NATS max payload of {self._room()} bytes")
        return body

    def _fitting(self, parts: list[bytes]) -> int:
        room = self._room() - 8  # the map header / braces
        used = 0
        for kept, part in enumerate(parts):
            used += len(part) + 1  # a separator (JSON)
            if used > room:
                return kept
        return len(parts)

    def _room(self) -> int:
        return int(self.nc.max_payload) - HEADER_ROOM

    def _page_hint(self, what: str) -> str:
        return (
            f"{what} exceed the NATS max payload of {self._room()} bytes; page the request: "
            f'{{"limit": 1000}}, then pass each {CURSOR_HEADER} header back as "cursor"'
        )

    async def _respond(self, request: Request, body: bytes, headers: dict[str, str] | None) -> None:
        try:
            await request.respond(body, headers=headers)
        except ValueError:
            self.log.debug("a load request without a reply subject was ignored")

    async def _refuse(self, endpoint: Endpoint, request: Request, code: str, message: str, as_msgpack: bool) -> None:
        self._tally.error(endpoint.name, f"{code}: {message}")
        one_line = " ".join(message.split())  # a header value holds no line breaks
        with contextlib.suppress(Exception):
            await request.respond_error(code, one_line, data=error_body(code, one_line, as_msgpack))


__all__ = ["MAX_IN_FLIGHT", "SERVICE_NAME", "LoadService"]
