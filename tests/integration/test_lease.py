"""The one-writer lease against a real Redis: taken once, renewed while ours, released only if
ours, and a holder whose lease was taken over can no longer write (the fence)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio

from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall
from tradecache.errors import LeaseLost
from tradecache.ingest.lease import Lease
from tradecache.serialization import MsgPackSerializer

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
