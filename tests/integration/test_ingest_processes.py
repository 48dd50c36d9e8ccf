"""Ingest never stops (issue 16), with the daemon as a real process:

- peak memory (VmHWM from /proc) stays under 200 MB on a stream where every message is a
  worst-case payload at NATS' max_payload, accepted or refused;
- two daemons for one trader: one writes, the other waits not ready and pulls nothing; the
  holder killed mid-stream, the other takes over within the lease's time to live, and after a
  graceful stop at once; Redis ends equal to a clean run;
- killed after committing a flipping fill and before the PositionClosed that follows, the
  restarted daemon counts no divergence;
- acks left pending below the ack floor by a nats-server SIGKILL are found and cleared, on the
  pip nats-server and the one on PATH (2.9.10, which leaves them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
import redis

from tests.backends import Announce
from tests.chaos import (
    ChaosFeed,
    Daemon,
    Publisher,
    clean_state,
    compare_with_clean_run,
    consumer_state,
    create_stream,
    daemon_config,
    durable_redis,
    http_get,
    metric_value,
    read_checkpoint,
    wait_until,
)
from tests.lines import ServerLine
from tests.unit.factories import OrderEvents, currency_pair, position_event
from tests.worst_case import bombs, peak_rss
from tradecache.cache.keys import Keys
from tradecache.dev.stack import NatsServer, RedisServer
from tradecache.model.enums import OrderSide, OrderType
from tradecache.model.events import OrderFilled, PositionClosed, PositionOpened
from tradecache.model.ledger import Collection
from tradecache.model.positions import Position, split_flip
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

SERIALIZER = MsgPackSerializer()
PEAK_RSS_LIMIT = 200 * 1024 * 1024


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


@dataclass
class Stack:
    redis: RedisServer
    nats: NatsServer


@contextlib.asynccontextmanager
async def private_stack(nats_binary: Path | None = None) -> AsyncIterator[Stack]:
    redis_server = durable_redis()
    nats_server = NatsServer(binary=nats_binary) if nats_binary else NatsServer()
    try:
        await asyncio.to_thread(redis_server.start)
        await asyncio.to_thread(nats_server.start)
        await create_stream(nats_server.url)
        yield Stack(redis_server, nats_server)
    finally:
        redis_server.close()
        nats_server.close()


def metric_sum(port: int, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(port, "/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def wait_ready(daemon: Daemon, timeout: float = 60) -> None:
    await wait_until(lambda: asyncio.to_thread(lambda: http_get(daemon.port, "/readyz")[0] == 200), timeout, "ready")


# -- memory ------------------------------------------------------------------------------------


async def test_peak_memory_stays_under_200_mb_on_a_stream_of_worst_case_payloads(announce: Announce) -> None:
    trader = "BOMB-001"
    rounds = 6
    async with private_stack() as stack:
        daemon = Daemon(daemon_config(stack.redis.url, stack.nats.url, trader, logging={"level": "WARNING"}))
        daemon.start()
        try:
            await wait_ready(daemon)
            baseline = peak_rss(daemon.process.process.pid if daemon.process.process else None)
            nc = await nats.connect(stack.nats.url)
            max_payload = int(nc.max_payload)
            kinds = bombs(trader, max_payload - 512)
            subjects = Subjects("tradecache", trader)
            js = nc.jetstream(timeout=30)
            last = 0
            for _ in range(rounds):
                for name, (kind, payload, _expect) in kinds.items():
                    assert len(payload) <= max_payload - 256, name
                    last = (await js.publish(subjects.inbound_for_name(kind), payload)).seq
            await nc.close()
            await wait_until(lambda: read_checkpoint(stack.redis.url, trader) >= last, 300, "all processed")
            total = rounds * len(kinds)
            await wait_until(lambda: metric_sum(daemon.port, "tradecache_events_total") == total, 30, "all counted")
            peak = peak_rss(daemon.process.process.pid if daemon.process.process else None)
            assert daemon.alive()
            for reason in {expect for _k, _p, expect in kinds.values() if expect != "written"}:
                wanted = rounds * sum(1 for _k, _p, expect in kinds.values() if expect == reason)
                counted = await asyncio.to_thread(metric_sum, daemon.port, "tradecache_dead_letters_total",
                                                  reason=reason)  # fmt: skip
                assert counted == wanted, reason
            written = await asyncio.to_thread(metric_sum, daemon.port, "tradecache_events_total", outcome="written")
            duplicate = await asyncio.to_thread(metric_sum, daemon.port, "tradecache_events_total",
                                                outcome="duplicate")  # fmt: skip
            assert written + duplicate == rounds * sum(1 for _k, _p, e in kinds.values() if e == "written")
        finally:
            daemon.close()
    announce(
        f"worst-case stream: {rounds * len(kinds)} payloads of ~{max_payload // 1024} KiB ({', '.join(kinds)}): "
        f"peak RSS {peak / 2**20:.0f} MiB (after start {baseline / 2**20:.0f} MiB)"
    )
    assert peak <= PEAK_RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"


# -- one writer per trader -------------------------------------------------------------------------


async def test_two_daemons_one_writes_the_other_waits_and_takes_over(announce: Announce) -> None:
    trader = "TWO-001"
    ttl = 2.0
    messages = ChaosFeed(161, trader).messages(3000)
    async with private_stack() as stack:
        config = daemon_config(stack.redis.url, stack.nats.url, trader, ingest={"lease_ttl": ttl})
        first, second = Daemon(config), Daemon(config)
        try:
            first.start()
            await wait_ready(first)
            second.start()
            await wait_until(lambda: "another sidecar holds this trader" in second.log(), 30, "second waits")
            assert http_get(second.port, "/readyz")[0] == 503
            assert metric_value(http_get(second.port, "/metrics")[1], "tradecache_standby") == 1
            publisher = Publisher(stack.nats.url, trader, messages, rate=400)
            publishing = asyncio.create_task(publisher.run())
            await wait_until(lambda: publisher.published >= 1000, 60, "a third published")
            # The standby pulled nothing, wrote nothing.
            assert await asyncio.to_thread(metric_sum, second.port, "tradecache_events_total") == 0
            assert "ingest started" not in second.log()
            first.kill()  # the holder dies mid-stream
            killed = time.monotonic()
            await wait_ready(second, timeout=ttl + 10)
            takeover = time.monotonic() - killed
            first.start()  # back, now the standby
            await wait_until(lambda: "another sidecar holds this trader" in first.log_since_start(), 30, "waits")
            await wait_until(lambda: publisher.published >= 2000, 60, "two thirds published")
            stopped = time.monotonic()
            assert await asyncio.to_thread(second.stop) == 0  # a graceful stop hands over at once
            await wait_ready(first, timeout=10)
            handover = time.monotonic() - stopped
            await publishing
            last = publisher.sequences[-1]
            await wait_until(lambda: read_checkpoint(stack.redis.url, trader) >= last, 60, "everything written")

            async def acked() -> bool:
                floor, undelivered, unacked = await consumer_state(stack.nats.url, trader)
                return floor == last and undelivered == 0 and unacked == 0

            await wait_until(acked, 60, "everything acked")
            assert await asyncio.to_thread(first.stop) == 0
        finally:
            first.close()
            second.close()
        client = redis.Redis.from_url(stack.redis.url)
        try:
            comparison = compare_with_clean_run(client, trader, clean_state(trader, messages), last)
        finally:
            client.close()
    announce(f"two daemons: takeover {takeover:.1f} s after a SIGKILL (lease ttl {ttl} s), "
             f"{handover:.1f} s after a SIGTERM (stop and hand over)")  # fmt: skip
    assert comparison.duplicates == 0 and comparison.lost == 0
    assert comparison.equal, comparison.problems()
    assert takeover <= ttl + 3.0
    assert handover <= 3.0


# -- no divergence a restart caused ---------------------------------------------------------------------


def flip_feed(
    trader: str, netting: str = "EUR/USD.SIM-Tester-001", new_id: str | None = None
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """A position opened by a buy and flipped by a larger sell: the messages up to the flipping
    fill, then the PositionClosed and PositionOpened the node publishes after it. NETTING keeps
    the id; with `new_id` (HEDGING, `P-` ids) the PositionOpened names the new side's id."""
    instrument = currency_pair()
    buy, sell = OrderEvents("O-1", trader_id=trader), OrderEvents("O-2", trader_id=trader)

    def fill(events: OrderEvents, side: OrderSide, qty: str, px: str) -> OrderFilled:
        return events.filled(qty, px, side=side, order_type=OrderType.MARKET, commission="2.00 USD",
                             position_id=netting, venue_order_id=f"V-{events.client_order_id}")  # fmt: skip

    opening = fill(buy, OrderSide.BUY, "100000", "1.10000")
    flipping = fill(sell, OrderSide.SELL, "150000", "1.10100")
    before: list[tuple[str, Any]] = [("instrument", instrument)]
    for events, side, last in ((buy, OrderSide.BUY, opening), (sell, OrderSide.SELL, flipping)):
        quantity = "100000" if side == OrderSide.BUY else "150000"
        before += [("order", events.initialized(OrderType.MARKET, side, quantity)), ("order", events.submitted()),
                   ("order", events.accepted(f"V-{events.client_order_id}")), ("order", last)]  # fmt: skip
    position = Position(instrument, opening)
    closing_half, opening_half = split_flip(position, flipping)
    assert opening_half is not None
    position.apply(closing_half)
    closed = position_event(PositionClosed, position)
    position.apply(opening_half)
    opened = position_event(PositionOpened, position, position_id=new_id)
    encoded = [(kind, SERIALIZER.serialize(message)) for kind, message in before]
    return encoded, [("position", SERIALIZER.serialize(closed)), ("position", SERIALIZER.serialize(opened))]


@contextlib.asynccontextmanager
async def restarted_after_the_flip(
    trader: str, before: list[tuple[str, bytes]], after: list[tuple[str, bytes]]
) -> AsyncIterator[tuple[Stack, Daemon]]:
    """A daemon killed after committing the flipping fill (before its ack), started again, and
    given the position events that follow; yields once they are committed and counted."""
    subjects = Subjects("tradecache", trader)
    async with private_stack() as stack:
        daemon = Daemon(daemon_config(stack.redis.url, stack.nats.url, trader))
        nc = await nats.connect(stack.nats.url)
        js = nc.jetstream()
        try:
            # One message per commit, so that commit N is message N; paused after the flip's.
            daemon.start(pause_after=len(before))
            await wait_ready(daemon)
            for kind, payload in before:
                seq = (await js.publish(subjects.inbound_for_name(kind), payload)).seq
                await wait_until(lambda seq=seq: read_checkpoint(stack.redis.url, trader) >= seq, 30, "committed")
            await wait_until(daemon.paused, 30, "paused after the flip's commit, before its ack")
            daemon.kill()
            daemon.start()
            for kind, payload in after:
                seq = (await js.publish(subjects.inbound_for_name(kind), payload)).seq
            await wait_until(lambda: read_checkpoint(stack.redis.url, trader) >= seq, 30, "position events read")
            await wait_until(lambda: metric_sum(daemon.port, "tradecache_events_total",
                                                       kind="position") == 2, 30, "counted")  # fmt: skip
            yield stack, daemon
        finally:
            await nc.close()
            daemon.close()


async def test_a_restart_between_a_flipping_fill_and_its_position_closed_counts_no_divergence() -> None:
    trader = f"FLIP-{uuid.uuid4().hex[:6]}"
    async with restarted_after_the_flip(trader, *flip_feed(trader)) as (_, daemon):
        assert await asyncio.to_thread(metric_sum, daemon.port, "tradecache_position_divergence_total") == 0
        assert "position divergence" not in daemon.log_since_start()


async def test_a_restart_between_a_hedging_flip_and_its_position_opened_keeps_the_opening_half() -> None:
    # The opening half waits for the PositionOpened that names its position; it is stored with
    # the flipping fill, so a daemon killed in between stores it under the new id all the same.
    trader = f"HEDGE-{uuid.uuid4().hex[:6]}"
    feed = flip_feed(trader, "P-20261205-001", new_id="P-20261205-002")
    async with restarted_after_the_flip(trader, *feed) as (stack, daemon):
        keys = Keys(trader)
        with contextlib.closing(redis.Redis.from_url(stack.redis.url)) as client:
            new_side = client.lrange(keys.entity(Collection.POSITIONS, "P-20261205-002"), 0, -1)
            assert len(new_side) == 1  # the opening half, read back from Redis after the restart
            half = SERIALIZER.deserialize(new_side[0])
            assert isinstance(half, OrderFilled) and str(half.last_qty) == "50000"
            assert client.hlen(keys.pending_openings()) == 0  # released with the PositionOpened
        assert await asyncio.to_thread(metric_sum, daemon.port, "tradecache_position_divergence_total") == 0


# -- no blind spots: stuck acks -----------------------------------------------------------------------


async def test_acks_stuck_after_a_nats_sigkill_are_found_and_cleared(nats_line: ServerLine, announce: Announce) -> None:
    trader = "STUCK-001"
    messages = ChaosFeed(7, trader).messages(9000)
    async with private_stack(nats_line.binary) as stack:
        daemon = Daemon(daemon_config(stack.redis.url, stack.nats.url, trader, ingest={"stall_seconds": 6.0}))
        daemon.start()
        try:
            await wait_ready(daemon)
            publisher = Publisher(stack.nats.url, trader, messages)
            publishing = asyncio.create_task(publisher.run())
            for k in (1, 2, 3):  # SIGKILLs of nats-server during the surge
                await wait_until(lambda k=k: publisher.published >= k * len(messages) // 4, 120, "surge")
                await asyncio.to_thread(stack.nats.kill)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(stack.nats.start)
            await publishing
            last = publisher.sequences[-1]
            await wait_until(lambda: read_checkpoint(stack.redis.url, trader) >= last, 120, "everything written")

            async def settled() -> bool:
                floor, undelivered, unacked = await consumer_state(stack.nats.url, trader)
                return floor == last and undelivered == 0 and unacked == 0

            await wait_until(settled, 60, "no ack pending at the server")

            def gauge() -> float | None:
                return metric_value(http_get(daemon.port, "/metrics")[1], "tradecache_consumer_ack_pending_messages")

            await wait_until(lambda: gauge() == 0, 30, "gauge 0")
            log = daemon.log()
            seen, cleared = log.count("acks stuck at the server"), log.count("stuck acks cleared")
            assert seen == cleared
            assert daemon.alive()
        finally:
            daemon.close()
    announce(f"{nats_line.id} ({nats_line.binary}): stuck acks seen and cleared {cleared} time(s) after 3 SIGKILLs")
