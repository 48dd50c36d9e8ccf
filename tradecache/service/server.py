"""The NATS micro service `tradecache`: load requests answered from Redis (SPEC section 3).

Each endpoint listens on `<prefix>.load.<trader_id>.<name>`. nats.micro runs an endpoint's
handler as the callback of one subscription, so a handler that awaited Redis would serve one
request at a time (FIELD-NOTES); ours checks the request at once and starts a task for it.
Everything a request may cost is bounded (`service/limits.py`): a request without a reply
subject is dropped unread, an oversized body refused unread, one beyond `max_in_flight`
answered 429 "busy" at once; collection requests build `max_page_builds` at a time, within one
reply's bytes. A request can fail only with a micro error reply (400 bad request, 413 too
large, 429 busy, 503 Redis unavailable, 500 anything else): the service itself never stops.
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
from tradecache.errors import StoreUnavailable
from tradecache.model.ledger import Collection
from tradecache.serialization.codecs import shown
from tradecache.service import egress
from tradecache.service.ahead import PageKey, PagesAhead
from tradecache.service.endpoints import ENDPOINTS, Built, Endpoint, Loader, StatsSource
from tradecache.service.limits import (
    ADMIT_BATCH,
    COUNT_TTL_SECONDS,
    MAX_ERROR_CHARS,
    ServiceLimits,
    min_entry_bytes,
)
from tradecache.service.ports import LoadMetrics, LoadOutcome
from tradecache.service.protocol import (
    BadRequest,
    Busy,
    PageRequest,
    ReplyTooLarge,
    RequestRefused,
    Unavailable,
    encode_cursor,
    encode_reply,
    error_body,
    id_request,
    page_request,
    reply_parts,
    wants_msgpack,
)
from tradecache.service.tally import EndpointTally, has_reply
from tradecache.wire import CURSOR_HEADER, Subjects

SERVICE_NAME: Final = "tradecache"
# Room left in NATS's max payload for the reply's headers.
HEADER_ROOM: Final = 1024
# What makes an entity too large for one reply fit (an account's states, a position's fills
# accumulate: ~2,800 account states make 1 MB of JSON); the Python API reads it from Redis.
_TOO_LARGE_HINT: Final = "a larger NATS max_payload makes it fit, or retention of its history (PROTOCOL.md section 9)"
# Bytes of requests waiting in one endpoint's subscription before nats-py drops more (its
# default is 128 MB per subscription): requests are small, and the handler drains them at once.
PENDING_BYTES: Final = 8 * 1024 * 1024


class LoadService:
    """The request-reply side of the sidecar."""

    def __init__(
        self,
        nc: Any,
        subjects: Subjects,
        trader_id: str,
        loader: Loader,
        stats: StatsSource,
        metrics: LoadMetrics,
        log: logging.Logger,
        limits: ServiceLimits | None = None,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.trader_id = trader_id
        self.loader = loader
        self.stats = stats
        self.metrics = metrics
        self.log = log
        self.limits = limits or ServiceLimits()
        self.service: Service | None = None
        self._tally = EndpointTally()
        self._page_builds = asyncio.Semaphore(self.limits.max_page_builds)
        self._ahead: PagesAhead[Built] = PagesAhead(lambda: self.loader.store.commits)
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._handled = 0
        # Index sizes lately read (collection -> (monotonic time, ZCARD)), for `_refused_at_once`.
        self._counts: dict[Collection, tuple[float, int]] = {}

    @property
    def pages_ahead(self) -> int:
        """Pages built (or being built) ahead of their request (`service/ahead.py`)."""
        return len(self._ahead)

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
            self._tally.track(endpoint.name, self.service, PENDING_BYTES)
        self.log.info("load service started", extra={"subject": self.subjects.load("*"), "endpoints": len(ENDPOINTS)})

    async def stop(self, timeout: float) -> None:
        """Stop taking requests, then let those in hand finish: both within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopping = True
        self._ahead.cancel_all()
        if self.service is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.service.stop(), timeout=timeout)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(0.0, deadline - loop.time()))

    def _handler(self, endpoint: Endpoint) -> Handler:
        async def handle(request: Request) -> None:
            """Admit the request (a task of its own) or answer it at once; then, every few
            requests, give the loop back: micro's subscription task would otherwise run through
            every queued request (none of them waits) while ingest waits for its turn."""
            await self._admit(endpoint, request)
            self._handled += 1
            if self._handled % ADMIT_BATCH == 0:
                await asyncio.sleep(0)

        return handle

    async def _admit(self, endpoint: Endpoint, request: Request) -> None:
        """Start the request's task, or answer it at once (never waiting for anything)."""
        if not has_reply(request):  # nobody to answer: doing the work would be for nothing
            self.metrics.load_shed(endpoint.name, "no_reply")
            return
        as_msgpack = wants_msgpack(request.headers)
        refused = self._refused_at_once(endpoint, request.data)
        if refused is not None:
            await self._refuse(endpoint, request, refused, as_msgpack)
            self.metrics.load_request(endpoint.name, "error", 0.0)
            return
        if len(self._tasks) >= self.limits.max_in_flight:
            busy = f"busy: {len(self._tasks)} load requests in flight (load.max_in_flight); retry in a moment"
            await self._refuse(endpoint, request, Busy(busy), as_msgpack)
            self.metrics.load_shed(endpoint.name, "busy")
            return
        task = asyncio.create_task(self._serve(endpoint, request, as_msgpack))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refused_at_once(self, endpoint: Endpoint, data: bytes) -> RequestRefused | None:
        """A refusal known without Redis: a body over the cap, a bad page request, or an unpaged
        collection whose index (counted less than COUNT_TTL_SECONDS ago) is too big."""
        if len(data) > self.limits.max_request_bytes:
            return BadRequest(
                f"the request body has {len(data)} bytes, more than the "
                f"{self.limits.max_request_bytes} a load request may have (load.max_request_bytes)"
            )
        if not endpoint.is_collection:
            return None
        assert endpoint.collection is not None
        try:
            page = page_request(data)
        except RequestRefused as exc:
            return exc
        counted = self._counts.get(endpoint.collection)
        if page.limit is None and counted is not None and time.monotonic() - counted[0] < COUNT_TTL_SECONDS:
            return self._too_many(endpoint.collection, counted[1])
        return None

    def _too_many(self, collection: Collection, count: int) -> ReplyTooLarge | None:
        if count * min_entry_bytes(collection) > self._room():
            return ReplyTooLarge(self._page_hint(f"{count} items"))
        return None

    async def _serve(self, endpoint: Endpoint, request: Request, as_msgpack: bool) -> None:
        started = time.perf_counter()
        outcome: LoadOutcome = "ok"
        try:
            parts, headers, found = await self._reply(endpoint, request.data, as_msgpack)
            outcome = "ok" if found else "not_found"
            await self._respond(request, parts, headers)
        except RequestRefused as exc:
            outcome = "error"
            await self._refuse(endpoint, request, exc, as_msgpack)
        except StoreUnavailable as exc:
            outcome = "error"
            await self._refuse(endpoint, request, Unavailable(f"Redis is unavailable ({exc}); retry later"), as_msgpack)
        except Exception as exc:  # a bug or bad stored data: answer 500, keep serving
            outcome = "error"
            self.log.exception("load request failed", extra={"endpoint": endpoint.name})
            await self._refuse(
                endpoint, request, RequestRefused(f"internal error: {type(exc).__name__}: {exc}"), as_msgpack
            )
        elapsed = time.perf_counter() - started
        self._tally.finished(endpoint.name, elapsed)
        self.metrics.load_request(endpoint.name, outcome, elapsed)

    async def _reply(
        self, endpoint: Endpoint, data: bytes, as_msgpack: bool
    ) -> tuple[list[bytes], dict[str, str] | None, bool]:
        """The reply body (as parts to join), its headers, and whether something was found."""
        collection = endpoint.collection
        if collection is None:
            page_request(data)  # `stats` takes no parameters, but refuses junk like the others
            return [self._fit(encode_reply(await self.stats(), as_msgpack))], None, True
        if endpoint.id_field is not None:
            body, found = await self.loader.one(collection, id_request(data, endpoint.id_field), as_msgpack)
            return [self._fit(body)], None, found
        page = page_request(data)
        if page.limit is None:  # refused from the index's size alone, before anything is read
            count = await self.loader.store.count(collection)
            self._counts[collection] = (time.monotonic(), count)
            too_many = self._too_many(collection, count)
            if too_many is not None:
                raise too_many
        return await self._page(endpoint, page, as_msgpack)

    async def _page(
        self, endpoint: Endpoint, page: PageRequest, as_msgpack: bool
    ) -> tuple[list[bytes], dict[str, str] | None, bool]:
        collection = endpoint.collection
        assert collection is not None
        budget = self._room()
        commits = self.loader.store.commits
        built = None
        if page.limit is not None and page.after is not None:
            built = await self._ahead.take((collection, page.after, page.limit, as_msgpack, budget))
        if built is None:
            built = await self._build(collection, page, as_msgpack, budget)
        if built.full and page.limit is None:
            raise ReplyTooLarge(self._page_hint(f"more than {budget} bytes of items"))
        if built.overflow is not None and not built.entries:
            # The page cannot hold it: a paging client would ask for it again and again. The
            # error's cursor goes on after it (the client decides whether to; `CacheClient` does not).
            paged = page.limit is not None
            raise ReplyTooLarge(
                f"item {shown(built.overflow)} alone exceeds the NATS max payload of {budget} bytes"
                + (f"; this error's {CURSOR_HEADER} header continues after it" if paged else "")
                + f"; {_TOO_LARGE_HINT}",
                cursor=encode_cursor(built.overflow) if paged else None,
            )
        if built.last is not None and page.limit is not None and self.loader.store.commits == commits:
            self._build_next(collection, PageRequest(after=built.last, limit=page.limit), as_msgpack, budget)
        parts = reply_parts(built.entries, as_msgpack)
        # A page holds at most `limit` items: fewer when they do not all fit, and the cursor
        # continues after the last one sent.
        headers = None if built.last is None else {CURSOR_HEADER: encode_cursor(built.last)}
        return parts, headers, True

    async def _build(self, collection: Collection, page: PageRequest, as_msgpack: bool, budget: int) -> Built:
        async with self._page_builds:  # CPU and memory: a few pages at a time, the rest wait
            return await self.loader.build(collection, page, as_msgpack, budget=budget)

    def _build_next(self, collection: Collection, page: PageRequest, as_msgpack: bool, budget: int) -> None:
        """Start building the page a paging client will ask for next (`service/ahead.py`), when
        this request is the only one in hand and nothing was committed while it was built: never
        at the expense of another request, nor for nothing under steady ingest."""
        if self._stopping or len(self._tasks) > 1:
            return
        assert page.after is not None and page.limit is not None
        key: PageKey = (collection, page.after, page.limit, as_msgpack, budget)
        self._ahead.start(key, lambda: self._build(collection, page, as_msgpack, budget))

    def _fit(self, body: bytes) -> bytes:
        if len(body) > self._room():
            raise ReplyTooLarge(
                f"a reply of {len(body)} bytes exceeds the NATS max payload of {self._room()} bytes; {_TOO_LARGE_HINT}"
            )
        return body

    def _room(self) -> int:
        return int(self.nc.max_payload) - HEADER_ROOM

    def _page_hint(self, what: str) -> str:
        return (
            f"{what} exceed the NATS max payload of {self._room()} bytes; page the request: "
            f'{{"limit": 1000}}, then pass each {CURSOR_HEADER} header back as "cursor"'
        )

    async def _respond(self, request: Request, parts: list[bytes], headers: dict[str, str] | None) -> None:
        reply = request._msg.reply  # as `Request.respond` reads it (`has_reply` admitted only those with one)
        if not reply:
            self.log.debug("a load request without a reply subject was ignored")
            return
        await egress.send(self.nc, reply, parts, headers)

    async def _refuse(self, endpoint: Endpoint, request: Request, refused: RequestRefused, as_msgpack: bool) -> None:
        # A header value holds no line breaks; and an error never echoes much of what it was sent.
        code = refused.code
        one_line = " ".join(refused.message[: MAX_ERROR_CHARS * 2].split())
        if len(one_line) > MAX_ERROR_CHARS:
            one_line = one_line[: MAX_ERROR_CHARS - 3] + "..."
        self._tally.error(endpoint.name, f"{code}: {one_line}")
        cursor = refused.cursor if isinstance(refused, ReplyTooLarge) else None
        headers = {CURSOR_HEADER: cursor} if cursor else None
        with contextlib.suppress(Exception):
            await request.respond_error(code, one_line, data=error_body(code, one_line, as_msgpack), headers=headers)


__all__ = ["HEADER_ROOM", "SERVICE_NAME", "LoadService"]
