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
    encode_reply,
    error_body,
    id_request,
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
                value, headers = await self._answer(endpoint, request.data)
                body = encode_reply(value, as_msgpack)
                if len(body) > self._room():
                    raise ReplyTooLarge(self._too_large(endpoint, len(body)))
            if value is None or (endpoint.name == "strategy" and not value):
                outcome = "not_found"
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

    async def _answer(self, endpoint: Endpoint, data: bytes) -> tuple[Any, dict[str, str] | None]:
        collection = endpoint.collection
        if collection is None:
            page_request(data)  # `stats` takes no parameters, but refuses junk like the others
            return await self.stats(), None
        if endpoint.id_field is not None:
            return await self.loader.one(collection, id_request(data, endpoint.id_field)), None
        page = page_request(data)
        if page.limit is None:
            count = await self.loader.store.count(collection)
            if count * MIN_ITEM_BYTES > self._room():
                raise ReplyTooLarge(self._too_large(endpoint, count * MIN_ITEM_BYTES, count))
        items, last = await self.loader.page(collection, page)
        return items, None if last is None else {CURSOR_HEADER: encode_cursor(last)}

    def _room(self) -> int:
        return int(self.nc.max_payload) - HEADER_ROOM

    def _too_large(self, endpoint: Endpoint, size: int, count: int | None = None) -> str:
        what = f"{count} items" if count is not None else f"a reply of {size} bytes"
        return (
            f"{what} exceed the NATS max payload of {self.nc.max_payload} bytes; "
            f'page the request: {{"limit": 1000}}, then pass each {CURSOR_HEADER} header back as "cursor"'
            if endpoint.is_collection
            else f"{what} exceed the NATS max payload of {self.nc.max_payload} bytes"
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
