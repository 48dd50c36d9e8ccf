"""Checking the next batch while a commit is in flight (`Pipeline.while_committing`) against a real
Redis: the checks made ahead are the ones used, each delivery is checked once, and what is stored
is what the same batches store without working ahead."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.dev.demo import build_demo_feed
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
from tradecache.ingest.pipeline import Pipeline
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration


class CountingIntake(Intake):
    """Records each check: the delivery's sequence and the pipeline's checkpoint at the time."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.checked: list[tuple[int, int]] = []
        self.pipeline: Pipeline | None = None

    def check(self, delivery: Delivery) -> Accepted | Refused:
        assert self.pipeline is not None
        self.checked.append((delivery.stream_seq, self.pipeline.checkpoint))
        return super().check(delivery)


async def stored(client: Any, trader: str) -> dict[bytes, Any]:
    """Every key of the trader with its value (lists, strings, hashes, sorted sets)."""
    found: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"trader-{trader}:*"):
        kind = await client.type(key)
        if kind == b"list":
            found[key] = await client.lrange(key, 0, -1)
        elif kind == b"string":
            found[key] = await client.get(key)
        elif kind == b"hash":
            found[key] = await client.hgetall(key)
        elif kind == b"zset":
            found[key] = await client.zrange(key, 0, -1)
    return found


async def run(
    client: Any, trader: str, feed: list[tuple[Any, bytes]], ahead: bool
) -> tuple[CountingIntake, dict[bytes, Any]]:
    keys, serializer, subjects = Keys(trader), MsgPackSerializer(timestamps_as_str=True), Subjects("tradecache", trader)
    await client.delete(*[key async for key in client.scan_iter(match=f"trader-{trader}:*")] or ["none"])
    intake = CountingIntake(subjects, serializer, 1 << 20)
    pipeline = Pipeline(Ledger(TraderId(trader)), Store(client, keys, serializer), keys, serializer.serialize,
                        intake=intake)  # fmt: skip
    intake.pipeline = pipeline
    deliveries = [
        Delivery(subjects.inbound_for(kind), payload, None, seq, seq, 0, 0, f"r{seq}")
        for seq, (kind, payload) in enumerate(feed, start=1)
    ]
    batches = [deliveries[i : i + 10] for i in range(0, len(deliveries), 10)]
    for index, batch in enumerate(batches):
        following = batches[index + 1] if index + 1 < len(batches) else []
        if ahead:
            pipeline.while_committing = lambda following=following: pipeline.check_ahead(following, 20)
        await pipeline.run_deliveries(batch)
    assert pipeline.checkpoint == len(deliveries)
    return intake, await stored(client, trader)


async def test_checks_made_while_a_commit_is_in_flight_are_used_and_change_nothing(redis_server: Any) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        feed = build_demo_feed("AHEAD-001").payloads(MsgPackSerializer(timestamps_as_str=True))
        plain_intake, plain = await run(client, "AHEAD-001", feed, ahead=False)
        ahead_intake, ahead = await run(client, "AHEAD-001", feed, ahead=True)
    finally:
        await client.aclose()
    count = len(plain_intake.checked)
    assert count > 20
    # Each delivery checked once either way.
    assert [seq for seq, _ in ahead_intake.checked] == [seq for seq, _ in plain_intake.checked]
    assert [seq for seq, _ in plain_intake.checked] == list(range(1, count + 1))
    # Without work ahead, batch k is checked once batch k-1 is committed; with it, while batch
    # k-1's commit was in flight (the checkpoint still at batch k-2's end).
    assert all(checkpoint == (seq - 1) // 10 * 10 for seq, checkpoint in plain_intake.checked)
    assert all(checkpoint == max(0, ((seq - 1) // 10 - 1) * 10) for seq, checkpoint in ahead_intake.checked)
    assert plain == ahead
