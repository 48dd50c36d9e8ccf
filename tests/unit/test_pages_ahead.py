"""PagesAhead: a page built ahead is served once, never after a commit, never held for long."""

from __future__ import annotations

import asyncio
import gc

from tradecache.model.ledger import Collection
from tradecache.service.ahead import PageKey, PagesAhead

KEY: PageKey = (Collection.ORDERS, "O-00099", 100, True, 1000)
OTHER: PageKey = (Collection.ORDERS, "O-00199", 100, True, 1000)


class Commits:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


async def page(value: str, started: list[str] | None = None, delay: float = 0.0) -> str:
    if started is not None:
        started.append(value)
    await asyncio.sleep(delay)
    return value


async def test_a_page_built_ahead_is_taken_once_and_others_are_not_there() -> None:
    started: list[str] = []
    ahead: PagesAhead[str] = PagesAhead(Commits())
    assert ahead.start(KEY, lambda: page("page 2", started))
    assert await ahead.take(OTHER) is None  # not built ahead: the caller builds it
    assert await ahead.take(KEY) == "page 2"
    assert await ahead.take(KEY) is None and len(ahead) == 0
    assert started == ["page 2"]


async def test_taking_a_page_still_being_built_waits_for_it() -> None:
    ahead: PagesAhead[str] = PagesAhead(Commits())
    ahead.start(KEY, lambda: page("page 2", delay=0.05))
    assert await ahead.take(KEY) == "page 2"


async def test_a_commit_since_the_build_began_means_the_page_is_built_again() -> None:
    commits = Commits()
    ahead: PagesAhead[str] = PagesAhead(commits)
    ahead.start(KEY, lambda: page("before the commit", delay=0.05))
    commits.count += 1
    assert await ahead.take(KEY) is None
    await asyncio.sleep(0)
    assert len(ahead) == 0


async def test_at_most_max_pages_are_held_and_a_page_is_started_once() -> None:
    started: list[str] = []
    ahead: PagesAhead[str] = PagesAhead(Commits(), max_pages=1)
    assert ahead.start(KEY, lambda: page("a", started))
    assert not ahead.start(KEY, lambda: page("again", started))
    assert not ahead.start(OTHER, lambda: page("b", started))
    await asyncio.sleep(0.01)
    assert started == ["a"] and len(ahead) == 1


async def test_an_unclaimed_page_is_dropped_and_its_build_cancelled_after_max_age() -> None:
    ahead: PagesAhead[str] = PagesAhead(Commits(), max_age=0.02)
    ahead.start(KEY, lambda: page("slow", delay=10))
    ahead.start(OTHER, lambda: page("fast"))
    [slow, fast] = [task for _, task in ahead._pages.values()]
    await asyncio.sleep(0.05)
    assert len(ahead) == 0
    assert slow.cancelled() and fast.result() == "fast"
    assert await ahead.take(KEY) is None and await ahead.take(OTHER) is None


async def test_a_failed_build_is_none_for_the_taker_and_no_error_is_left_unretrieved() -> None:
    unretrieved: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))

    async def broken() -> str:
        raise ConnectionError("Redis went away")

    ahead: PagesAhead[str] = PagesAhead(Commits(), max_age=0.01)
    ahead.start(KEY, broken)
    assert await ahead.take(KEY) is None
    ahead.start(OTHER, broken)  # never taken
    await asyncio.sleep(0.03)
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []


async def test_cancel_all_stops_every_build() -> None:
    ahead: PagesAhead[str] = PagesAhead(Commits())
    ahead.start(KEY, lambda: page("a", delay=10))
    ahead.start(OTHER, lambda: page("b", delay=10))
    tasks = [task for _, task in ahead._pages.values()]
    ahead.cancel_all()
    await asyncio.sleep(0)
    assert len(ahead) == 0 and all(task.cancelled() for task in tasks)
