"""Checking the next batch while a commit is in flight (`Pipeline.while_committing`) against a real
Redis: the checks made ahead are the ones used, each delivery is checked once, and what is stored
is what the same batches store without working ahead. Applying the next batch ahead too
(`Pipeline.upcoming`): the batches applied ahead are the ones committed, and what is stored is
the same, also when the commit it was prepared behind is refused, when the batch grows after it
was settled, and when a retention purge takes the pipeline in between."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from tests.integration.redis_contents import trader_contents
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.dev.demo import build_demo_feed
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
from tradecache.ingest.pipeline import Pipeline
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger
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


async def run(
    client: Any,
    trader: str,
    feed: list[tuple[Any, bytes]],
    ahead: bool,
    *,
    apply_ahead: bool = False,
    settled_size: int = 10,
    poison: str | None = None,
    hold_after: int | None = None,
    pipelines: list[Pipeline] | None = None,
    assume_new: bool = True,
) -> tuple[CountingIntake, dict[bytes, Any]]:
    """The feed in batches of 10. `apply_ahead`: the next batch (its first `settled_size`
    deliveries) is applied ahead; `poison`: a key made a string first (a list write to it is
    refused); `hold_after`: the pipeline is taken as a retention purge takes it after that batch."""
    keys, serializer, subjects = Keys(trader), MsgPackSerializer(timestamps_as_str=True), Subjects("tradecache", trader)
    await client.delete(*[key async for key in client.scan_iter(match=f"trader-{trader}:*")] or ["none"])
    if poison is not None:
        await client.set(poison, b"not a list")
    intake = CountingIntake(subjects, serializer, 1 << 20)
    pipeline = Pipeline(Ledger(TraderId(trader)), Store(client, keys, serializer), keys, serializer.serialize,
                        intake=intake, assume_new=assume_new)  # fmt: skip
    intake.pipeline = pipeline
    if pipelines is not None:
        pipelines.append(pipeline)
    deliveries = [
        Delivery(subjects.inbound_for(kind), payload, None, seq, seq, 0, 0, f"r{seq}")
        for seq, (kind, payload) in enumerate(feed, start=1)
    ]
    batches = [deliveries[i : i + 10] for i in range(0, len(deliveries), 10)]
    for index, batch in enumerate(batches):
        following = batches[index + 1] if index + 1 < len(batches) else []
        if ahead:
            pipeline.while_committing = lambda following=following: pipeline.check_ahead(following, 20)
        if apply_ahead:
            pipeline.upcoming = lambda following=following: following[:settled_size] or None
        await pipeline.run_deliveries(batch)
        if hold_after == index:
            async with pipeline.lock:
                pass
    assert pipeline.checkpoint == len(deliveries)
    if poison is not None:
        await client.delete(poison)
    return intake, await trader_contents(client, trader)


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


async def test_batches_applied_while_a_commit_is_in_flight_are_committed_as_they_were(redis_server: Any) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pipelines: list[Pipeline] = []
    try:
        feed = build_demo_feed("AHEAD-002").payloads(MsgPackSerializer(timestamps_as_str=True))
        _, plain = await run(client, "AHEAD-002", feed, ahead=False)
        ahead_intake, ahead = await run(client, "AHEAD-002", feed, ahead=True, apply_ahead=True, pipelines=pipelines)
    finally:
        await client.aclose()
    batches = (len(feed) + 9) // 10
    assert batches > 3
    # Every batch after the first was applied while the one before it was committed.
    assert pipelines[0].prepared_used == batches - 1
    assert [seq for seq, _ in ahead_intake.checked] == list(range(1, len(feed) + 1))
    assert plain == ahead


async def test_a_batch_that_grew_after_it_was_settled_commits_its_prefix_then_the_rest(redis_server: Any) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pipelines: list[Pipeline] = []
    try:
        feed = build_demo_feed("AHEAD-003").payloads(MsgPackSerializer(timestamps_as_str=True))
        _, plain = await run(client, "AHEAD-003", feed, ahead=False)
        _, ahead = await run(client, "AHEAD-003", feed, ahead=True, apply_ahead=True, settled_size=4,
                             pipelines=pipelines)  # fmt: skip
    finally:
        await client.aclose()
    assert pipelines[0].prepared_used == (len(feed) + 9) // 10 - 1
    assert plain == ahead


@pytest.mark.parametrize("assume_new", [False, True], ids=["orders read", "orders taken for new"])
async def test_a_refused_commit_drops_what_was_applied_behind_it(redis_server: Any, assume_new: bool) -> None:
    """The third batch's first order cannot be written (its key holds a string): that batch is
    refused (reading the order; or, the order taken for new, its commit, by the append's WRONGTYPE,
    checked before the order's absence), what was applied ahead behind it is dropped with the
    ledger's memory, and the end is what the same poison gives without working ahead."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pipelines: list[Pipeline] = []
    serializer = MsgPackSerializer(timestamps_as_str=True)
    try:
        feed = build_demo_feed("AHEAD-004").payloads(serializer)
        inits = [serializer.deserialize(payload) for _, payload in feed[20:30]]
        order_id = next(str(m.client_order_id) for m in inits if type(m).__name__ == "OrderInitialized")
        poison = Keys("AHEAD-004").entity(Collection.ORDERS, order_id)
        _, plain = await run(client, "AHEAD-004", feed, ahead=False, poison=poison, assume_new=assume_new)
        _, ahead = await run(client, "AHEAD-004", feed, ahead=True, apply_ahead=True, poison=poison,
                             pipelines=pipelines, assume_new=assume_new)  # fmt: skip
    finally:
        await client.aclose()
    pipeline = pipelines[0]
    assert pipeline.pinned >= 1
    if assume_new:
        assert pipeline.assumptions_failed == 0  # WRONGTYPE: pinned by halves, as when read
    else:
        assert pipeline.prepared_used < (len(feed) + 9) // 10 - 1
    assert plain == ahead


async def test_a_purge_taking_the_pipeline_drops_what_was_applied_ahead(redis_server: Any) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    pipelines: list[Pipeline] = []
    try:
        feed = build_demo_feed("AHEAD-005").payloads(MsgPackSerializer(timestamps_as_str=True))
        _, plain = await run(client, "AHEAD-005", feed, ahead=False)
        _, ahead = await run(client, "AHEAD-005", feed, ahead=True, apply_ahead=True, hold_after=1,
                             pipelines=pipelines)  # fmt: skip
    finally:
        await client.aclose()
    pipeline = pipelines[0]
    # The batch prepared behind the second commit was dropped when the pipeline was taken.
    assert pipeline.prepared_used == (len(feed) + 9) // 10 - 2
    assert plain == ahead
