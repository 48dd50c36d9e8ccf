"""The one-writer lease against a real Redis: taken once, renewed while ours, released only if
ours, and a holder whose lease was taken over can no longer write (the fence)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall
from tradecache.dev.demo import build_demo_feed
from tradecache.errors import LeaseLost
from tradecache.ingest.intake import Delivery, Intake
from tradecache.ingest.lease import Lease
from tradecache.ingest.pipeline import Pipeline
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

TRADER = "LEASE-001"


async def test_one_holder_at_a_time_and_a_stale_holder_is_fenced(redis_server: Any) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    keys = Keys(TRADER)
    await client.delete(keys.lease(), keys.checkpoint())
    old, new = Lease(client, keys, ttl=1.0, name="old"), Lease(client, keys, ttl=1.0, name="new")
    store = Store(client, keys, MsgPackSerializer())
    try:
        assert await old.acquire()
        assert not await new.acquire()
        holder = await new.holder()
        assert holder is not None and holder.name == "old" and 0 < holder.expires_in <= 1.0
        assert await old.renew()

        def fenced_call(lease: Lease, sequence: int) -> ScriptCall:
            call = ScriptCall()
            call.checkpoint(keys, sequence)
            assert lease.token is not None
            call.fence(keys, lease.token)
            return call

        assert await store.commit(fenced_call(old, 1)) == [1, 1]
        stale = fenced_call(old, 2)
        await asyncio.sleep(1.3)  # the old holder paused past its ttl
        assert await new.acquire()
        with pytest.raises(LeaseLost):
            await store.commit(stale)  # nothing written
        assert await client.get(keys.checkpoint()) == b"1"
        assert not await old.renew() and not old.held
        await old.release()  # not ours: the new holder keeps it
        assert (await new.holder()) is not None
        assert await store.commit(fenced_call(new, 3)) == [1, 1]
        await new.release()
        assert await new.holder() is None
        assert await old.acquire()  # free at once after a release
    finally:
        await client.delete(keys.lease(), keys.checkpoint())
        await client.aclose()


async def test_a_commit_whose_answer_was_lost_with_the_lease_is_settled_by_the_checkpoint(redis_server: Any) -> None:
    """A commit Redis made but whose answer timed out, retried after the lease expired: the retry
    is fenced, and the pipeline keeps the call as unconfirmed; the checkpoint read after the lease
    is taken again says it was made, so its messages are counted (they are skipped from then on)."""
    trader = "LEASE-002"
    client = redis.asyncio.Redis.from_url(redis_server.url)
    keys = Keys(trader)
    serializer = MsgPackSerializer(timestamps_as_str=True)
    subjects = Subjects("tradecache", trader)
    await client.delete(keys.lease(), keys.checkpoint())
    lease = Lease(client, keys, ttl=10.0, name="first")
    answers: list[str] = []

    async def losing_the_answer(what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """A caller whose first commit attempt is made but reported as a timeout, as `_retry_redis`
        sees it when Redis answers after the socket timeout; the lease expires before the retry."""
        if what != "commit batch" or answers:
            return await attempt()
        await attempt()
        answers.append("lost")
        await client.delete(keys.lease())  # expired while Redis was blocked
        return await attempt()  # the retry: fenced

    pipeline = Pipeline(
        Ledger(TraderId(trader)), Store(client, keys, serializer), keys, serializer.serialize,
        call=losing_the_answer, fence=lambda: lease.token, intake=Intake(subjects, serializer, 1 << 20),
    )  # fmt: skip
    feed = build_demo_feed(trader).payloads(serializer)[:5]
    deliveries = [
        Delivery(subjects.inbound_for(kind), payload, None, seq, seq, 0, 0, "") for seq, (kind, payload) in
        enumerate(feed, start=1)
    ]  # fmt: skip
    try:
        assert await lease.acquire()
        with pytest.raises(LeaseLost):
            await pipeline.run_deliveries(deliveries)
        assert pipeline.checkpoint == 0  # as far as the pipeline knows, nothing was committed
        stored = int(await client.get(keys.checkpoint()) or 0)
        assert stored == 5  # but Redis made the first attempt
        kept = pipeline.unconfirmed
        assert kept is not None
        assert pipeline.take_unconfirmed(stored - 1) is None  # a checkpoint below its end: not made
        pipeline.unconfirmed = kept
        settled = pipeline.take_unconfirmed(stored)
        assert settled is not None and [a.item.delivery.stream_seq for a in settled.result.applied] == [1, 2, 3, 4, 5]
        assert pipeline.take_unconfirmed(stored) is None  # taken once
    finally:
        await client.delete(keys.lease(), keys.checkpoint())
        await client.aclose()
