"""Opening halves held for their PositionOpened, read back from a real Redis (each Redis line).

The ledger keeps at most `MAX_PENDING_OPENINGS` in memory; past it, and after a start that found
more than that in the store (which Redis then does not send: READ_SCRIPT's bounded HGETALL), a
PositionOpened whose half memory lacks reads that one field of the
trader's pending hash (`StateRequest.pending_ids`), in the same read as the entities. Here the
halves are held by the apply script as the daemon holds them, a restarted ledger with a bound of
two reads them back by id, and each PositionOpened releases its own.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from tests.unit.factories import SERIALIZER
from tests.unit.test_ledger import _flip, new_ledger
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall
from tradecache.model import ledger as ledger_module
from tradecache.model.ledger import StateRequest

pytestmark = pytest.mark.integration


async def test_halves_past_the_bound_are_read_back_by_id(
    redis_line_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "MAX_PENDING_OPENINGS", 2)
    client = redis.asyncio.Redis.from_url(redis_line_server.url)
    keys = Keys("TESTER-001")
    store = Store(client, keys, SERIALIZER)
    try:
        await client.delete(keys.pending_openings())
        made = new_ledger()
        flips = [_flip(made, index) for index in range(4)]
        call = ScriptCall()
        for held, opened in flips:
            call.hold_opening(keys, str(opened.opening_order_id), SERIALIZER.serialize(held))
        call.checkpoint(keys, 1)
        await store.commit(call)
        assert await client.hlen(keys.pending_openings()) == 4

        restarted = new_ledger()
        first = restarted.missing([flips[0][1]])
        assert first.pending_openings and first.pending_limit == 2  # the whole hash, once, if small
        stored = await store.read_state(first)
        assert stored.pending_openings is None and stored.pending_openings_over  # 4 > 2: Redis kept them
        restarted.hydrate(stored)
        assert restarted.pending_openings == {}
        wanted = restarted.missing([flips[0][1], flips[2][1]])
        assert wanted.pending_ids == {"O-S0", "O-S2"} and not wanted.pending_openings
        both = await store.read_state(StateRequest(positions=set(wanted.positions), pending_ids=wanted.pending_ids))
        assert sorted(str(half.client_order_id) for half in both.pending_by_id) == ["O-S0", "O-S2"]
        assert (await store.read_state(StateRequest(pending_ids={"O-NONE"}))).pending_by_id == []  # absent
        restarted.hydrate(both)
        for held, opened in (flips[0], flips[2]):
            released = restarted.apply(opened)
            assert released.released == [str(opened.opening_order_id)]
            assert released.writes[0].value.last_qty == held.last_qty
        # The whole hash and fields of it in one read: each answer where it belongs.
        mixed = await store.read_state(StateRequest(pending_openings=True, pending_limit=4, pending_ids={"O-S1"}))
        assert mixed.pending_openings is not None and len(mixed.pending_openings) == 4  # within the limit
        assert not mixed.pending_openings_over
        assert [str(half.client_order_id) for half in mixed.pending_by_id] == ["O-S1"]
        assert keys.pending_openings() in store.keys_read(StateRequest(pending_ids={"O-S1"}))
    finally:
        await client.delete(keys.pending_openings(), keys.checkpoint())
        await client.aclose()
