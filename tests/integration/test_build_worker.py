"""`service/build_worker.py`: pages rebuilt half by a helper process are the loop's pages byte for
byte, and nothing the worker does (dying, hanging, failing on an entity) changes a page or its
error; the daemon starts it only when asked and usable CPUs allow, and stops it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis
import redis.asyncio

from tests.integration.daemon_harness import daemon_config, database, running_daemon
from tests.unit.factories import OrderEvents
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.model import values
from tradecache.model.enums import CurrencyType, OrderType
from tradecache.model.ledger import Collection
from tradecache.model.orders import Order
from tradecache.model.values import Currency
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service import build_worker
from tradecache.service.build_worker import COULD_NOT_BUILD, BuildWorker, serve, usable_cpus
from tradecache.service.endpoints import Built, Loader
from tradecache.service.items import rebuilt_entry
from tradecache.service.protocol import PageRequest
from tradecache.service.reply_cache import ReplyCache

pytestmark = pytest.mark.integration

TRADER = "WORKER-001"
SERIALIZER = MsgPackSerializer()
PAGE_BYTES = 200_000  # several pages, each of several chunks


def order_events(client_order_id: str, fills: int) -> list[Any]:
    make = OrderEvents(client_order_id, trader_id=TRADER)
    events = [make.initialized(OrderType.LIMIT, quantity="1000", options={"price": "1.10000", "display_qty": None,
                                                                           "expire_time_ns": 0}),
              make.submitted(), make.accepted()]  # fmt: skip
    events += [make.filled("100", order_type=OrderType.LIMIT) for _ in range(fills)]
    return events


@pytest.fixture(scope="module")
def stored(redis_server: Any) -> Any:
    """400 orders of 3 to 7 events."""
    db = database(redis_server.url, TRADER)
    db.flush()
    with db.batch():
        for n in range(400):
            events = order_events(f"O-{n:05d}", n % 5)
            order = Order(events[0])
            db.add_order(order)
            for event in events[1:]:
                order.apply(event)
                db.update_order(order)
    yield redis_server
    db.flush()


@pytest.fixture
async def store(stored: Any) -> AsyncIterator[Store]:
    client = redis.asyncio.Redis.from_url(stored.url)
    yield Store(client, Keys(TRADER), SERIALIZER)
    await client.aclose()


@pytest.fixture
async def worker() -> AsyncIterator[BuildWorker]:
    started = BuildWorker(restart_seconds=0.05)
    await started.start()
    await until(lambda: started.available)
    yield started
    await started.stop()


async def until(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def pages(loader: Loader, as_msgpack: bool = True, budget: int = PAGE_BYTES) -> list[bytes]:
    after, found = None, []
    while True:
        built: Built = await loader.build(Collection.ORDERS, PageRequest(after=after, limit=1000), as_msgpack, budget)
        found.append(b"".join(built.entries))
        if built.last is None:
            return found
        after = built.last


@pytest.mark.parametrize("as_msgpack", [True, False], ids=["msgpack", "json"])
async def test_pages_built_beside_the_worker_are_the_loops(store: Store, worker: BuildWorker, as_msgpack: bool) -> None:
    alone = await pages(Loader(store, SERIALIZER, ReplyCache()), as_msgpack)
    beside = await pages(Loader(store, SERIALIZER, ReplyCache(), worker), as_msgpack)
    assert len(alone) > 2
    assert beside == alone
    assert worker.jobs > 0  # chunks were shared (not all: a page's overflow is cached for the next)
    assert worker.failures == 0


async def test_a_worker_killed_or_hung_changes_no_page_and_another_starts(store: Store, worker: BuildWorker) -> None:
    alone = await pages(Loader(store, SERIALIZER, ReplyCache()))
    loader = Loader(store, SERIALIZER, ReplyCache(max_bytes=0), worker)  # no cache: every page rebuilt
    for stop in (signal.SIGKILL, signal.SIGSTOP):
        process = worker._process
        assert process is not None
        os.kill(process.pid, stop)
        assert await pages(loader) == alone  # its half rebuilt by the loop (a hung one after its timeout)
        assert worker._process is not process and process.returncode is not None  # killed, not left behind
        await until(lambda: worker.available)  # another started
        jobs = worker.jobs
        assert await pages(loader) == alone
        assert worker.jobs > jobs
    assert worker.failures == 2 and worker.starts == 3


async def test_after_its_last_start_the_loop_builds_alone(store: Store) -> None:
    worker = BuildWorker(restart_seconds=0.01, max_starts=1)
    await worker.start()
    await until(lambda: worker.available)
    assert worker._process is not None
    os.kill(worker._process.pid, signal.SIGKILL)
    loader = Loader(store, SERIALIZER, ReplyCache(), worker)
    assert await pages(loader) == await pages(Loader(store, SERIALIZER, ReplyCache()))
    await asyncio.sleep(0.1)
    assert not worker.available and worker.starts == 1 and worker._process is None
    await worker.stop()


@pytest.mark.parametrize(("first_page_bytes", "half"), [(150_000, range(100)), (300_000, range(100, 200))],
                         ids=["in the loop's half", "in the worker's half"])  # fmt: skip
async def test_an_entity_that_cannot_be_rebuilt_fails_a_page_only_as_it_does_without_the_worker(
    stored: Any, store: Store, worker: BuildWorker, first_page_bytes: int, half: range
) -> None:
    first = await Loader(store, SERIALIZER, ReplyCache()).build(
        Collection.ORDERS, PageRequest(after=None, limit=1000), True, first_page_bytes
    )
    assert first.last is not None
    bad = f"O-{int(first.last[2:]) + 2:05d}"  # past the first page's cut: the first chunk's misses are 0-199
    assert int(bad[2:]) in half
    client = redis.Redis.from_url(stored.url)
    key = Keys(TRADER).entity(Collection.ORDERS, bad)
    saved = client.lrange(key, 0, -1)
    client.rpush(key, b"\x81\xa4type\xa8Nonsense")
    try:
        # The first page never reaches it: answered the same with the worker, which failed on it.
        beside = await Loader(store, SERIALIZER, ReplyCache(), worker).build(
            Collection.ORDERS, PageRequest(after=None, limit=1000), True, first_page_bytes
        )
        assert (beside.entries, beside.last) == (first.entries, first.last)
        # A page that reaches it fails with the same error either way: the next one, or one page
        # of all the orders (then the worker's own try at it is what the page reaches).
        for budget in (PAGE_BYTES, 4 * 1024 * 1024):
            errors = []
            for loader in (Loader(store, SERIALIZER, ReplyCache()), Loader(store, SERIALIZER, ReplyCache(), worker)):
                with pytest.raises(Exception) as raised:
                    await pages(loader, budget=budget)
                errors.append((type(raised.value), str(raised.value)))
            assert errors[0] == errors[1]
        assert worker.failures == 0  # an entity it cannot build is not the worker failing
    finally:
        client.delete(key)
        client.rpush(key, *saved)
        client.close()


def test_the_worker_registers_the_currencies_sent_and_marks_what_it_cannot_build() -> None:
    raw = [SERIALIZER.serialize(event) for event in order_events("O-1", 2)]
    job = [7, Collection.ORDERS.value, True, [["XYZ", 3, 0, "Xyz coin", CurrencyType.CRYPTO.value]],
           [[raw, None], [[b"\xc1"], None], [[], None]]]  # fmt: skip
    body = msgpack.packb(job, use_bin_type=True)
    answers = io.BytesIO()
    assert serve(io.BytesIO(len(body).to_bytes(4, "big") + body), answers) == 0  # stops at the end of its input
    frames = answers.getvalue()
    ready_size = int.from_bytes(frames[:4], "big")
    assert msgpack.unpackb(frames[4 : 4 + ready_size]) == [0, build_worker.READY]
    job_id, items = msgpack.unpackb(frames[8 + ready_size :], raw=False)
    assert job_id == 7
    assert items == [rebuilt_entry(SERIALIZER, Collection.ORDERS, raw, None, True), COULD_NOT_BUILD, None]
    assert values.currency_registry()["XYZ"] == Currency("XYZ", 3, 0, "Xyz coin", CurrencyType.CRYPTO)


def test_usable_cpus_are_at_most_the_affinity() -> None:
    assert 0 < usable_cpus() <= len(os.sched_getaffinity(0))


def metric(daemon: Any, name: str) -> float:
    """The value of an unlabelled metric in the daemon's /metrics text."""
    for line in daemon.metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
async def test_the_daemon_starts_the_worker_when_asked_and_stops_it(
    redis_server: Any, nats_server: Any, enabled: bool
) -> None:
    config = daemon_config(redis_server.url, nats_server.url, "WORKER-002", load={"build_worker": enabled})
    async with running_daemon(config) as daemon:
        if not enabled or usable_cpus() < build_worker.MIN_CPUS:
            assert daemon.build_worker is None
            assert metric(daemon, "tradecache_load_build_worker_up") == 0.0
            assert metric(daemon, "tradecache_load_build_worker_share") == 0.0
            return
        worker = daemon.build_worker
        assert worker is not None
        await until(lambda: worker.available)
        assert metric(daemon, "tradecache_load_build_worker_up") == 1.0
        assert metric(daemon, "tradecache_load_build_worker_failures_total") == 0.0
        assert metric(daemon, "tradecache_load_build_worker_share") == build_worker.FIRST_SHARE
        worker.share = 0.75  # read at each scrape
        assert metric(daemon, "tradecache_load_build_worker_share") == 0.75
        process = worker._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)  # seen by its reader at once; another starts 10 s later
        await until(lambda: metric(daemon, "tradecache_load_build_worker_failures_total") == 1.0)
        assert metric(daemon, "tradecache_load_build_worker_up") == 0.0
        await until(lambda: worker.available)  # the next one
        process = worker._process
        assert process is not None and metric(daemon, "tradecache_load_build_worker_up") == 1.0
    assert process.returncode is not None  # ended with the daemon


async def test_a_cancelled_build_leaves_the_worker_answering_the_next(store: Store, worker: BuildWorker) -> None:
    alone = await pages(Loader(store, SERIALIZER, ReplyCache()))
    for delay in (0.0, 0.001, 0.003, 0.006, 0.01):  # cancelled at different points of a job
        loader = Loader(store, SERIALIZER, ReplyCache(max_bytes=0), worker)
        task = asyncio.ensure_future(pages(loader))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await until(lambda: worker.available and not worker._waiting)  # its jobs answered and dropped
        assert await pages(loader) == alone
    assert worker.failures == 0 and worker.starts == 1


async def test_items_far_larger_in_json_than_stored_come_back_from_the_worker(
    redis_server: Any, worker: BuildWorker
) -> None:
    """A stored string of control characters is six times its size in JSON (`\\u0001`): the
    answer's bound leaves room for that, so the worker is not taken for a broken one."""
    trader = "WORKER-003"
    db = database(redis_server.url, trader)
    db.flush()
    with db.batch():
        for n in range(40):
            make = OrderEvents(f"T-{n:03d}", trader_id=trader)
            order = Order(dataclasses.replace(make.initialized(OrderType.MARKET, options={}), tags=("\x01" * 60_000,)))
            db.add_order(order)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        store = Store(client, Keys(trader), SERIALIZER)
        loaders = [Loader(store, SERIALIZER, ReplyCache()), Loader(store, SERIALIZER, ReplyCache(), worker)]
        alone, beside = [
            await loader.build(Collection.ORDERS, PageRequest(after=None, limit=1000), False, 16 * 1024 * 1024)
            for loader in loaders
        ]
        assert beside.entries == alone.entries and len(alone.entries) == 40
        assert len(b"".join(alone.entries)) > 6 * 40 * 60_000  # JSON: six bytes a character
        assert worker.jobs == 1 and worker.failures == 0
    finally:
        await client.aclose()
        db.flush()


def jobs_of(raws: list[list[bytes]]) -> list[tuple[list[bytes], None]]:
    return [(raw, None) for raw in raws]


async def test_two_jobs_may_be_out_at_once_a_third_is_refused_and_each_comes_back_whole(
    worker: BuildWorker,
) -> None:
    raws = [[SERIALIZER.serialize(event) for event in order_events(f"S-{n}", n % 3)] for n in range(60)]
    expected = [rebuilt_entry(SERIALIZER, Collection.ORDERS, raw, None, True) for raw in raws]
    first = worker.submit(Collection.ORDERS, True, jobs_of(raws[:30]))
    second = worker.submit(Collection.ORDERS, True, jobs_of(raws[30:]))
    assert first is not None and second is not None
    assert not worker.available and build_worker.MAX_OUTSTANDING == 2
    assert worker.submit(Collection.ORDERS, True, jobs_of(raws[:1])) is None  # the caller builds it
    assert await worker.collect(second) == expected[30:]  # in any order
    assert await worker.collect(first) == expected[:30]
    assert worker.available and worker.jobs == 2 and worker.failures == 0


async def test_the_workers_share_grows_while_it_is_ahead_and_shrinks_when_the_loop_waits(
    worker: BuildWorker,
) -> None:
    raws = [[SERIALIZER.serialize(event) for event in order_events(f"S-{n}", 2)] for n in range(200)]
    assert worker.share == build_worker.FIRST_SHARE
    for _ in range(12):  # answered before it is asked for: up, to its bound
        submitted = worker.submit(Collection.ORDERS, True, jobs_of(raws[:2]))
        assert submitted is not None
        await until(submitted.answer.done)
        await worker.collect(submitted)
    assert worker.share == pytest.approx(build_worker.MAX_SHARE)
    for _ in range(16):  # asked for at once, 200 orders out: the loop waits, down to its bound
        submitted = worker.submit(Collection.ORDERS, True, jobs_of(raws))
        assert submitted is not None and not submitted.answer.done()
        await worker.collect(submitted)
    assert worker.share == pytest.approx(build_worker.MIN_SHARE)


@pytest.mark.parametrize("share", [0.2, 0.9])
async def test_a_chunk_is_shared_as_the_worker_share_says(
    store: Store, worker: BuildWorker, share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    submit = worker.submit

    def counted(collection: Collection, as_msgpack: bool, jobs: Any) -> Any:
        sent.append(len(jobs))
        worker.share = share  # held where the test put it, whatever the answers say
        return submit(collection, as_msgpack, jobs)

    monkeypatch.setattr(worker, "submit", counted)
    worker.share = share
    built = await Loader(store, SERIALIZER, ReplyCache(), worker).build(
        Collection.ORDERS, PageRequest(after=None, limit=200), True, 16 * 1024 * 1024
    )
    assert len(built.entries) == 200
    assert sent == [round(200 * share)]


async def test_a_page_reads_its_ids_once_and_each_chunk_in_one_round_trip(stored: Any, store: Store) -> None:
    client = redis.Redis.from_url(stored.url)

    def calls(command: str) -> int:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    try:
        await store.ensure_indexes()
        before = calls("zrangebylex"), calls("lrange")
        built = await Loader(store, SERIALIZER, ReplyCache()).build(
            Collection.ORDERS, PageRequest(after=None, limit=1000), True, 16 * 1024 * 1024
        )
        assert len(built.entries) == 400 and built.last is None
        assert (calls("zrangebylex") - before[0], calls("lrange") - before[1]) == (1, 400)  # 2 chunks, 1 index read
    finally:
        client.close()


@pytest.mark.parametrize("id_batch", [1, 7, 199, 1000])
async def test_pages_of_ids_read_in_batches_hold_every_entity_once_in_order(
    stored: Any, store: Store, worker: BuildWorker, id_batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the batch, the limit and the budget: the pages, joined, are every order's entry in
    index order, each page within its limit and budget, its cursor its last entry's id."""
    from tradecache.service import endpoints
    from tradecache.service.protocol import encode_entry

    client = redis.Redis.from_url(stored.url)
    ids = [raw.decode() for raw in client.zrange(Keys(TRADER).index(Collection.ORDERS), 0, -1)]
    client.close()
    assert len(ids) == 400 and ids == sorted(ids)
    reference = Loader(store, SERIALIZER, ReplyCache())
    entries = [encode_entry(oid, (await reference.one(Collection.ORDERS, oid, True))[0], True) for oid in ids]
    monkeypatch.setattr(endpoints, "ID_BATCH", id_batch)
    for limit, budget in [(1, PAGE_BYTES), (5, PAGE_BYTES), (199, PAGE_BYTES), (201, 60_000), (1000, PAGE_BYTES)]:
        for loader in (Loader(store, SERIALIZER, ReplyCache()), Loader(store, SERIALIZER, ReplyCache(), worker)):
            after, found = None, []
            while True:
                built = await loader.build(Collection.ORDERS, PageRequest(after=after, limit=limit), True, budget)
                assert 0 < len(built.entries) <= limit and built.size <= budget
                found += built.entries
                if built.last is None:
                    break
                assert built.entries[-1] == entries[ids.index(built.last)]
                after = built.last
            assert found == entries


async def test_a_worker_hung_on_jobs_their_requests_gave_up_is_replaced(
    store: Store, worker: BuildWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No one awaits a dropped job, so no timeout catches a worker hung on it; two of them would
    keep it unavailable for good. Past STALE_SECONDS the next page gives it up and another starts."""
    monkeypatch.setattr(build_worker, "STALE_SECONDS", 0.3)
    raws = [[SERIALIZER.serialize(event) for event in order_events(f"H-{n}", 1)] for n in range(10)]
    process = worker._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    for _ in range(build_worker.MAX_OUTSTANDING):
        submitted = worker.submit(Collection.ORDERS, True, jobs_of(raws))
        assert submitted is not None
        worker.drop(submitted)  # its request went away
    assert not worker.available and worker.usable() is False  # not stale yet: only busy
    assert worker.failures == 0
    await asyncio.sleep(0.4)
    alone = await pages(Loader(store, SERIALIZER, ReplyCache()))
    assert await pages(Loader(store, SERIALIZER, ReplyCache(), worker)) == alone  # given up on the way
    assert worker.failures == 1 and worker._process is not process
    await until(lambda: worker.available)  # another started, answering
    jobs = worker.jobs
    assert await pages(Loader(store, SERIALIZER, ReplyCache(max_bytes=0), worker)) == alone
    assert worker.jobs > jobs
    await until(lambda: process.returncode is not None)  # the hung one was killed, not left behind
