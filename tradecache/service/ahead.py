"""The next page of a collection, built while the client receives the current one.

A client paging through a collection asks for page k+1 as soon as page k has arrived. For the
service, the time in between (page k on the wire, the client's turn, the next request on the
wire, the first Redis reads of page k+1) is idle: `load_bench.py` saw ~17 pages of 10,000 orders
each leave that gap. So when it has nothing else to do, the service starts building the page
after the one it is sending, and the request that asks for exactly that page (same collection,
cursor, limit, format and size budget) takes it instead of building it again.

Bounded: at most `max_pages` pages are held, each for at most `max_age` seconds from the start
of its build; an unclaimed one is then cancelled or dropped. Never stale: a page is served from
here only if the `version` it was started at (the daemon's count of commits) has not moved since,
so a request never misses a write committed before it arrived; under steady ingest the service
does not build ahead at all (`LoadService._build_next`). Writers in other processes are not
counted: their writes may show up to `max_age` seconds later than without building ahead, which
paging allows anyway (each page is read when it is built, never the whole collection at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, Generic, TypeVar

from tradecache.model.ledger import Collection
from tradecache.service.futures import retrieved

# Long enough for a client that asks for the next page at once (milliseconds), short enough
# that a page held for a client that went away frees its memory (up to one reply) soon.
MAX_AGE_SECONDS: Final = 0.25
MAX_PAGES: Final = 2

# Which page: collection, the id to continue after, the page's limit, msgpack or JSON, the
# reply's byte budget.
PageKey = tuple[Collection, str, int, bool, int]
T = TypeVar("T")


class PagesAhead(Generic[T]):
    """Builds started ahead of their request, each claimable once."""

    def __init__(
        self, version: Callable[[], int], max_pages: int = MAX_PAGES, max_age: float = MAX_AGE_SECONDS
    ) -> None:
        self.version = version
        self.max_pages = max_pages
        self.max_age = max_age
        self._pages: dict[PageKey, tuple[int, asyncio.Task[T]]] = {}

    def __len__(self) -> int:
        return len(self._pages)

    def start(self, key: PageKey, build: Callable[[], Coroutine[Any, Any, T]]) -> bool:
        """Start building the page `key` unless it is already held or `max_pages` are."""
        if key in self._pages or len(self._pages) >= self.max_pages:
            return False
        task = asyncio.ensure_future(build())
        task.add_done_callback(retrieved)  # a build whose taker was cancelled
        self._pages[key] = (self.version(), task)
        asyncio.get_running_loop().call_later(self.max_age, self._expire, key, task)
        return True

    async def take(self, key: PageKey) -> T | None:
        """The page `key` if it was built ahead (waiting for its build to end); None when it was
        not, something was committed since it began, or its build failed or was cancelled (the
        caller builds it, and meets any error itself)."""
        held = self._pages.pop(key, None)
        if held is None:
            return None
        version, task = held
        if version != self.version():
            task.cancel()
            return None
        await asyncio.wait({task})  # this request's cancellation propagates, the build's errors do not
        if task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def cancel_all(self) -> None:
        for _, task in self._pages.values():
            task.cancel()
        self._pages.clear()

    def _expire(self, key: PageKey, task: asyncio.Task[T]) -> None:
        held = self._pages.get(key)
        if held is not None and held[1] is task:
            del self._pages[key]
            task.cancel()


__all__ = ["MAX_AGE_SECONDS", "MAX_PAGES", "PageKey", "PagesAhead"]
