"""Every dead-letter reason, produced by a real bad message, found on the dead-letter subject."""

from __future__ import annotations

import base64
import contextlib
import logging
import uuid
from typing import Any

import msgpack
import nats
import pytest

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.model.identifiers import ClientOrderId
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

TRADER = "DEADLETTER-001"


def _scenario_payloads() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An instrument, an OrderInitialized and its OrderFilled from a real scenario, as maps."""
    scenario = Scenario.load(next(p for p in scenario_paths() if p.stem == "market_order_single_fill_fx"))
    maps = [msgpack.unpackb(payload, raw=False) for _, _, payload in scenario.messages]
    instrument = next(m for m in maps if m["type"] == "CurrencyPair")
    init = next(m for m in maps if m["type"] == "OrderInitialized")
    fill = next(m for m in maps if m["type"] == "OrderFilled")
    for event in (init, fill):
        event["trader_id"] = TRADER
    return instrument, init, fill


def pack(data: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


async def test_each_reject_reason_is_dead_lettered_and_the_good_messages_around_it_are_written(
    redis_server: Any, nats_server: Any
) -> None:
    subjects = Subjects("tradecache", TRADER)
    instrument, init, fill = _scenario_payloads()
    other_trader = {**init, "trader_id": "OTHER-002", "event_id": str(uuid.uuid4())}
    unknown_order = {**fill, "client_order_id": "O-NEVER-INITIALIZED", "event_id": str(uuid.uuid4())}
    bad_quantity = {**init, "client_order_id": "O-BAD-QTY", "quantity": "12x", "event_id": str(uuid.uuid4())}
    bad = [
        ("malformed", subjects.inbound_for_name("order"), b"\xc1\x00 not msgpack"),
        ("unknown_type", subjects.inbound_for_name("order"), pack({"type": "OrderTeleported", "x": 1})),
        ("wrong_subject", subjects.inbound_for_name("account"), pack(init)),
        ("wrong_subject", f"tradecache.in.{TRADER}.gossip", pack(init)),
        ("trader_mismatch", subjects.inbound_for_name("order"), pack(other_trader)),
        ("invalid_transition", subjects.inbound_for_name("order"), pack(fill)),  # INITIALIZED -> FILLED
        ("unknown_order", subjects.inbound_for_name("order"), pack(unknown_order)),
        ("invalid_field", subjects.inbound_for_name("order"), pack(bad_quantity)),
        ("oversize", subjects.inbound_for_name("order"), pack({**init, "padding": "x" * 5000})),
    ]
    db = database(redis_server.url, TRADER)
    db.flush()
    config = daemon_config(redis_server.url, nats_server.url, TRADER, ingest={"max_payload_bytes": 4096})
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    async with running_daemon(config) as daemon:
        # good, bad..., good: the valid messages on both sides must be stored.
        await js.publish(subjects.inbound_for_name("instrument"), pack(instrument))
        await js.publish(subjects.inbound_for_name("order"), pack(init))
        for _reason, subject, payload in bad:
            await js.publish(subject, payload, headers={"Producer": "tests"})
        last = await js.publish(subjects.inbound_for_name("order"), base64.b64decode(_submitted_b64(init)))
        await wait_for_checkpoint(redis_server.url, TRADER, last.seq)
        metrics = daemon.metrics
        for reason in {reason for reason, _, _ in bad}:
            expected = sum(1 for r, _, _ in bad if r == reason)
            assert metrics.registry.get_sample_value("tradecache_dead_letters_total", {"reason": reason}) == expected

    dead = await js.pull_subscribe(subjects.dead, durable=None, stream="TRADECACHE_DEAD")
    letters = await dead.fetch(len(bad), timeout=5)
    await nc.close()
    assert [m.headers["Tradecache-Reason"] for m in letters] == [reason for reason, _, _ in bad]
    for letter, (_reason, subject, payload) in zip(letters, bad, strict=True):
        assert letter.data == payload
        assert letter.headers["Tradecache-Subject"] == subject
        assert int(letter.headers["Tradecache-Stream-Seq"]) > 0
        assert letter.headers["Tradecache-Error"]
        assert letter.headers["Producer"] == "tests"
    order = db.load_order(ClientOrderId(init["client_order_id"]))
    assert order is not None and order.event_count == 2  # OrderInitialized + OrderSubmitted
    assert db.load_order(ClientOrderId("O-NEVER-INITIALIZED")) is None
    db.flush()


def _submitted_b64(init: dict[str, Any]) -> str:
    submitted = {
        "type": "OrderSubmitted",
        "trader_id": TRADER,
        "strategy_id": init["strategy_id"],
        "instrument_id": init["instrument_id"],
        "client_order_id": init["client_order_id"],
        "account_id": "SIM-001",
        "event_id": str(uuid.uuid4()),
        "ts_event": str(int(init["ts_event"]) + 1),
        "ts_init": str(int(init["ts_event"]) + 2),
    }
    return base64.b64encode(pack(submitted)).decode()


async def test_a_run_of_bad_messages_is_dead_lettered_once_each_in_stream_order(
    redis_server: Any, nats_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # 300 refusals in one stream run: their letters go out 64 at a time (acks awaited together,
    # `Pipeline._dead_letters`), each once, in the order of the stream; 20 of them are logged
    # one by one (`LineBudget`: the rest are told in a summary once its 10 s window is over).
    caplog.set_level(logging.WARNING, logger="tradecache")
    trader = f"DEADRUN-{uuid.uuid4().hex[:6]}"
    subjects = Subjects("tradecache", trader)
    database(redis_server.url, trader).flush()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
        for n in range(300):
            await nc.publish(subjects.inbound_for_name("order"), b"\xc1 bad %d" % n)
        _, init, _ = _scenario_payloads()
        last = await js.publish(subjects.inbound_for_name("order"), pack({**init, "trader_id": trader}))
        await wait_for_checkpoint(redis_server.url, trader, last.seq)
        reason = {"reason": "malformed"}
        # Metrics are recorded just after the commit the checkpoint shows.
        await wait_for(lambda: daemon.metrics.registry.get_sample_value("tradecache_dead_letters_total", reason) == 300)
    dead = await js.pull_subscribe(subjects.dead, durable=None, stream="TRADECACHE_DEAD")
    letters = []
    while len(letters) < 300:
        letters += await dead.fetch(300 - len(letters), timeout=5)
    extra: list[Any] = []
    with contextlib.suppress(nats.errors.TimeoutError):
        extra = await dead.fetch(1, timeout=0.5)
    await nc.close()
    assert extra == []
    assert [m.data for m in letters] == [b"\xc1 bad %d" % n for n in range(300)]
    sequences = [int(m.headers["Tradecache-Stream-Seq"]) for m in letters]
    assert sequences == sorted(sequences) and len(set(sequences)) == 300
    assert sum(1 for record in caplog.records if record.getMessage() == "dead-lettered") == 20
    database(redis_server.url, trader).flush()
