"""Ingest never stops (issue 16), with the daemon in-process against real servers.

- a refused message whose dead letter would exceed NATS' max_payload, and one whose headers
  NATS cannot carry or JetStream would act on, are dead-lettered (reduced / sanitized) and the
  stream goes on, on the same connection;
- a StrategyState of 100,000 fields is written, on every Redis line (`redis_line`);
- a message whose writes Redis refuses (WRONGTYPE) is pinned and dead-lettered as
  `store_refused` while the rest of its batch is written;
- a stall (the dead-letter stream gone) turns readiness false and `tradecache_ingest_stalled`
  to 1 with the reason in the log, and both come back when it is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import nats
import pytest
import redis

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.lines import ServerLine
from tests.unit.factories import OrderEvents, currency_pair
from tradecache.cache.keys import Keys
from tradecache.daemon.app import Daemon
from tradecache.dev.stack import RedisServer
from tradecache.model.identifiers import ClientOrderId, StrategyId
from tradecache.model.ledger import Collection
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

SERIALIZER = MsgPackSerializer()
DEAD_STREAM = "TRADECACHE_DEAD"


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def order_payloads(trader_id: str, client_order_id: str) -> list[bytes]:
    events = OrderEvents(client_order_id, trader_id=trader_id)
    return [SERIALIZER.serialize(events.initialized()), SERIALIZER.serialize(events.submitted())]


def sample(daemon: Daemon, name: str, labels: dict[str, str] | None = None) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def dead_letters(nats_url: str, subject: str, after: int) -> list[Any]:
    """Dead letters on `subject` with a stream sequence above `after`."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subscription = await js.pull_subscribe(subject, durable=None, stream=DEAD_STREAM)
        letters = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                for letter in await subscription.fetch(16, timeout=1):
                    if letter.metadata.sequence.stream > after:
                        letters.append(letter)
        return letters
    finally:
        await nc.close()


async def dead_stream_last_seq(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        try:
            return int((await nc.jetstream().stream_info(DEAD_STREAM)).state.last_seq)
        except nats.js.errors.NotFoundError:
            return 0
    finally:
        await nc.close()


def raw_publish(nats_url: str, subject: str, headers: list[tuple[str, str]], payload: bytes, reply: str) -> None:
    """HPUB straight on a socket: headers nats-py would refuse to send (a name like `a/b`) reach the server."""
    address = urlsplit(nats_url)
    head = "NATS/1.0\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    header_bytes = head.encode()
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 4222), timeout=5) as sock:
        sock.recv(65536)  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n')
        command = f"HPUB {subject} {reply} {len(header_bytes)} {len(header_bytes) + len(payload)}\r\n".encode()
        sock.sendall(command + header_bytes + payload + b"\r\nPING\r\n")
        answer = b""
        while b"PONG" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            answer += chunk
        assert b"-ERR" not in answer, answer


# -- dead letters that cannot block ---------------------------------------------------------------


async def test_a_refused_message_near_max_payload_is_dead_lettered_reduced_and_ingest_goes_on(
    redis_server: Any, nats_server: Any
) -> None:
    trader = f"DLSIZE-{uuid.uuid4().hex[:6]}"
    subjects = Subjects("tradecache", trader)
    before = await dead_stream_last_seq(nats_server.url)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
        max_payload = int(daemon.nc.max_payload)
        # Not msgpack, 200 bytes under the server's limit: the dead letter's own headers would not fit.
        body = b"\xc1" * (max_payload - 200)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        refused = await js.publish(subjects.inbound_for_name("order"), body, headers={"Producer": "tests"})
        good = [await js.publish(subjects.inbound_for_name("order"), p) for p in order_payloads(trader, "O-1")]
        await nc.close()
        await wait_for_checkpoint(redis_server.url, trader, good[-1].seq, timeout=20)
        assert daemon.is_ready()
        assert daemon.nc.stats["reconnects"] == 0  # the connection was never lost
        assert sample(daemon, "tradecache_dead_letters_total", {"reason": "malformed"}) == 1
    letters = await dead_letters(nats_server.url, subjects.dead, before)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.headers["Tradecache-Reason"] == "malformed"
    assert letter.headers["Tradecache-Stream-Seq"] == str(refused.seq)
    assert letter.headers["Tradecache-Stream"] == "TRADECACHE"
    assert letter.headers["Tradecache-Original-Size"] == str(len(body))
    assert letter.headers["Tradecache-Digest"] == "sha256=" + hashlib.sha256(body).hexdigest()
    assert 0 < len(letter.data) < len(body) and body.startswith(letter.data)
    order = database(redis_server.url, trader).load_order(ClientOrderId("O-1"))
    assert order is not None and order.event_count == 2


async def test_headers_nats_cannot_carry_or_jetstream_acts_on_do_not_block_the_dead_letter(
    redis_server: Any, nats_server: Any
) -> None:
    trader = f"DLHDR-{uuid.uuid4().hex[:6]}"
    subjects = Subjects("tradecache", trader)
    before = await dead_stream_last_seq(nats_server.url)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
        headers = [("a/b", "slash"), ("Nats-Expected-Stream", "TRADECACHE"), ("Producer", "tests")]
        # Malformed, with a header name nats-py refuses to send and one that makes JetStream
        # refuse a publish to any other stream (the dead-letter stream is one).
        await asyncio.to_thread(
            raw_publish, nats_server.url, subjects.inbound_for_name("order"), headers, b"\xc1 bad", ""
        )
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        good = [await js.publish(subjects.inbound_for_name("order"), p) for p in order_payloads(trader, "O-1")]
        await nc.close()
        await wait_for_checkpoint(redis_server.url, trader, good[-1].seq, timeout=20)
        assert daemon.is_ready()
    letters = await dead_letters(nats_server.url, subjects.dead, before)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.data == b"\xc1 bad"
    assert letter.headers["Tradecache-Dropped-Headers"] == "a%2Fb"
    assert letter.headers["Tradecache-Original-Expected-Stream"] == "TRADECACHE"
    assert letter.headers["Nats-Expected-Stream"] == DEAD_STREAM  # ours, not the producer's
    assert letter.headers["Producer"] == "tests"


# -- Redis refusals -----------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis(binary: Path) -> Iterator[RedisServer]:
    with RedisServer(binary=binary, appendonly=False) as server:
        yield server


async def test_a_strategy_state_of_100000_fields_is_written(redis_line: ServerLine, nats_server: Any) -> None:
    trader = f"STATE-{uuid.uuid4().hex[:6]}"
    state = {f"{n:05x}": bytes([n % 256]) for n in range(100_000)}
    payload = pack({"type": "StrategyState", "trader_id": trader, "strategy_id": "S-001", "state": state,
                    "ts_event": "1764112094914872368"})  # fmt: skip
    with private_redis(redis_line.binary) as server:
        async with running_daemon(daemon_config(server.url, nats_server.url, trader)) as daemon:
            nc = await nats.connect(nats_server.url)
            ack = await nc.jetstream().publish(Subjects("tradecache", trader).inbound_for_name("strategy"), payload)
            await nc.close()
            await wait_for_checkpoint(server.url, trader, ack.seq, timeout=30)
            labels = {"kind": "strategy", "type": "StrategyState", "outcome": "written"}
            await wait_for(lambda: sample(daemon, "tradecache_events_total", labels) == 1)  # counted after the commit
            assert daemon.is_ready()
        stored = database(server.url, trader).load_strategy(StrategyId("S-001"))
        assert len(stored) == 100_000 and stored == state


async def test_an_order_larger_than_the_memory_budget_is_stored_whole_and_the_log_says_so(
    redis_server: Any, nats_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # 300 partial fills make the order ~120 KB estimated, six times a 20 KB budget: it is kept while
    # batches use it (`MemoryBudget`), and one line says the budget is too small, naming it.
    caplog.set_level(logging.WARNING, logger="tradecache")
    trader = f"BUDGET-{uuid.uuid4().hex[:6]}"
    subjects = Subjects("tradecache", trader)
    make = OrderEvents("O-BIG", trader_id=trader)
    events = [make.initialized(quantity="300"), make.submitted(), make.accepted()]
    events += [make.filled("1", trade_id=f"T-{n}", position_id="P-BIG") for n in range(300)]
    config = daemon_config(redis_server.url, nats_server.url, trader, ingest={"memory_budget_bytes": 20_000})
    async with running_daemon(config) as daemon:
        nc = await nats.connect(nats_server.url)
        for event in events[:-1]:
            await nc.publish(subjects.inbound_for_name("order"), SERIALIZER.serialize(event))
        ack = await nc.jetstream().publish(subjects.inbound_for_name("order"), SERIALIZER.serialize(events[-1]))
        await nc.close()
        await wait_for_checkpoint(redis_server.url, trader, ack.seq, timeout=30)
        assert sample(daemon, "tradecache_dead_letters_total", {"reason": "invalid_transition"}) == 0
    order = database(redis_server.url, trader).load_order(ClientOrderId("O-BIG"))
    assert order is not None and order.event_count == 303 and str(order.filled_qty) == "300"
    said = [r for r in caplog.records if r.getMessage().startswith("entities in use exceed ingest.memory_budget_bytes")]
    assert len(said) == 1 and said[0].largest == "orders:O-BIG"  # type: ignore[attr-defined]
    database(redis_server.url, trader).flush()


async def test_a_message_redis_refuses_is_pinned_and_dead_lettered_and_the_rest_of_its_batch_written(
    redis_line: ServerLine, nats_server: Any
) -> None:
    trader = f"PIN-{uuid.uuid4().hex[:6]}"
    subjects = Subjects("tradecache", trader)
    before = await dead_stream_last_seq(nats_server.url)
    with private_redis(redis_line.binary) as server:
        client = redis.Redis.from_url(server.url)
        # Someone else's string where order O-07's list goes: Redis refuses its writes (WRONGTYPE).
        client.set(Keys(trader).entity(Collection.ORDERS, "O-07"), "not a list")
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.publish(subjects.inbound_for_name("instrument"), SERIALIZER.serialize(currency_pair()))
        sent: dict[str, list[int]] = {}
        for n in range(20):  # published before the daemon starts: one batch
            coid = f"O-{n:02d}"
            sent[coid] = [(await js.publish(subjects.inbound_for_name("order"), p)).seq
                          for p in order_payloads(trader, coid)]  # fmt: skip
        await nc.close()
        last = max(max(seqs) for seqs in sent.values())
        config = daemon_config(server.url, nats_server.url, trader, ingest={"batch_size": 256})
        async with running_daemon(config) as daemon:
            await wait_for_checkpoint(server.url, trader, last, timeout=30)
            refused = {"reason": "store_refused"}
            await wait_for(lambda: sample(daemon, "tradecache_dead_letters_total", refused) == 2, timeout=10)
            await wait_for(daemon.is_ready, timeout=10)
        db = database(server.url, trader)
        for coid in sent:
            if coid != "O-07":
                order = db.load_order(ClientOrderId(coid))
                assert order is not None and order.event_count == 2, coid
        assert client.get(Keys(trader).entity(Collection.ORDERS, "O-07")) == b"not a list"
        client.close()
    letters = await dead_letters(nats_server.url, subjects.dead, before)
    assert [int(letter.headers["Tradecache-Stream-Seq"]) for letter in letters] == sent["O-07"]
    assert {letter.headers["Tradecache-Reason"] for letter in letters} == {"store_refused"}
    assert all("WRONGTYPE" in letter.headers["Tradecache-Error"] for letter in letters)


# -- stalls are never silent -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def without_dead_letter_stream(nats_url: str) -> AsyncIterator[None]:
    """The dead-letter stream deleted (an operator's mistake), then made again."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    info = await js.stream_info(DEAD_STREAM)
    await js.delete_stream(DEAD_STREAM)
    try:
        yield
    finally:
        await js.add_stream(info.config)
        await nc.close()


async def test_a_stall_turns_readiness_false_sets_the_gauge_and_says_why(
    redis_server: Any, nats_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    trader = f"STALL-{uuid.uuid4().hex[:6]}"
    subjects = Subjects("tradecache", trader)
    config = daemon_config(redis_server.url, nats_server.url, trader, ingest={"stall_seconds": 2.0})
    caplog.set_level(logging.INFO, logger="tradecache")
    async with running_daemon(config) as daemon:
        assert sample(daemon, "tradecache_ingest_stalled") == 0
        async with without_dead_letter_stream(nats_server.url):
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            await js.publish(subjects.inbound_for_name("order"), b"\xc1 cannot be dead-lettered now")
            good = [await js.publish(subjects.inbound_for_name("order"), p) for p in order_payloads(trader, "O-1")]
            await nc.close()
            await wait_for(lambda: sample(daemon, "tradecache_ingest_stalled") == 1, timeout=15)
            assert not daemon.is_ready()

            def stalls() -> list[logging.LogRecord]:
                said = "ingest stalled: messages are waiting and nothing was committed"
                return [record for record in caplog.records if record.getMessage() == said]

            await wait_for(stalls, timeout=10)  # the log says so (at the watcher's next look)
            assert "dead letter" in stalls()[0].__dict__["doing"]
        await wait_for_checkpoint(redis_server.url, trader, good[-1].seq, timeout=20)
        await wait_for(daemon.is_ready, timeout=15)
        assert sample(daemon, "tradecache_ingest_stalled") == 0
