"""End-to-end fuzz: a vector scenario interleaved with hundreds of bad messages, through a real daemon.

A seeded corpus of bad deliveries (random bytes, truncated payloads, bit flips, fields deleted or
given wrong types, unknown enum values, huge numbers, bad timestamps, invalid UTF-8, deep
nesting, oversize bodies, wrong subjects, another trader's id, ...) is made from the scenario's own
payloads and published between its valid messages to a daemon on real nats-server and
redis-server. Afterwards:

- the daemon is still running, ready, and answers /healthz and /readyz with 200;
- the dead-letter stream holds exactly the bad messages, in order, each with its original body,
  its stream sequence and the reason the pure core (`Intake` + `Ledger`) gives for it;
- Redis holds exactly what the scenario alone stores: the same bytes under the same keys, and
  the state NautilusTrader computed (`expected`).

A mutant can still be a valid message (a changed `info` value, say). Each candidate is first
tried on the pure core at the state the scenario has reached there; only refused ones are sent,
and the others are counted as "turned out valid". Hypothesis is not used here: one daemon run
per example would be far too slow, so the corpus comes from one seeded `random.Random`.
"""

from __future__ import annotations

import asyncio
import collections
import random
import secrets
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack
import nats
import pytest
import redis
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.backends import Announce
from tests.integration.daemon_harness import (
    daemon_config,
    database,
    running_daemon,
    wait_for_checkpoint,
)
from tests.integration.test_cache_database import loaded_state
from tests.unit.test_decoder_fuzz import BYTE_LEVEL, STRUCTURAL, Mutator, delivery, pack
from tests.vectors.scenarios import SCENARIO_KINDS, Scenario, moved_to, replay_into_store, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.cache.plan import currency_fields
from tradecache.errors import EventRejected, RejectReason
from tradecache.ingest.intake import Intake, Refused
from tradecache.model import Collection
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.model.messages import Kind
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.limits import DecodeLimits
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

SERIALIZER = MsgPackSerializer(timestamps_as_str=True)
SEED = 20251126
MAX_PAYLOAD = 16 * 1024
FIELD_CAP = 2048  # ingest.max_field_bytes here: a free-form field over it is field_too_large
LIMITS = DecodeLimits.derive(max_field_bytes=FIELD_CAP)
BAD_PER_MESSAGE = 8  # bad deliveries published before each valid one
DEAD_STREAM = "TRADECACHE_DEAD"
# Made here rather than by the Mutator: they need a subject, a size limit or a valid payload.
EXTRA = ("wrong_subject", "oversize", "other_trader", "replayed_with_new_id", "big_free_form")
# Redis refusing a message's writes is not something a payload alone makes happen here: the
# integration tests of issue 16 (test_ingest_robustness.py) produce it. A conflicting duplicate
# needs a stored copy of its id, which the oracle (the pure ledger) does not compare:
# test_conflicting_duplicates.py produces it.
NOT_FROM_PAYLOADS = {RejectReason.STORE_REFUSED, RejectReason.CONFLICTING_DUPLICATE}
# The kinds of damage issue 7 asks for; each must have produced at least one dead letter.
REQUIRED = (
    "random_bytes",
    "truncated",
    "bit_flips",
    "deleted",
    "wrong_type",
    "unknown_enum",
    "huge_int",
    "bad_timestamp",
    "trader_changed",
    "not_utf8",
    "deep_nesting",
    *EXTRA,
)
OPERATIONS = (*BYTE_LEVEL, *STRUCTURAL, *EXTRA)


@dataclass(frozen=True)
class Planned:
    subject: str
    data: bytes
    how: str  # the operation that made it ("valid" for the scenario's own messages)
    expect: str  # "written", "duplicate", or the RejectReason the pure core gives


class Oracle:
    """What the daemon must do with each delivery, from the pure core at the same point of the stream."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.intake = Intake(Subjects("tradecache", scenario.trader_id), SERIALIZER, MAX_PAYLOAD, LIMITS)
        self.history: list[tuple[str, bytes]] = []  # deliveries applied so far
        self.ledger = Ledger(TraderId(scenario.trader_id))

    def _predict(self, subject: str, data: bytes, *, register_currency: bool) -> str:
        item = self.intake.check(delivery(subject, data))
        if isinstance(item, Refused):
            return item.error.reason.value
        if isinstance(item.message, Currency) and not register_currency:
            return "written"  # a Currency registers process-wide: never applied from a mutant
        try:
            outcome = self.ledger.apply(item.message)
        except EventRejected as error:
            return error.reason.value
        return "duplicate" if outcome.duplicate else "written"

    def take(self, subject: str, data: bytes) -> str:
        """Apply a delivery that will be published; returns what the daemon must do with it."""
        self.history.append((subject, data))
        return self._predict(subject, data, register_currency=True)

    def try_bad(self, subject: str, data: bytes) -> str | None:
        """The reason a candidate is refused for, or None when it is valid (then it is not sent)."""
        expect = self._predict(subject, data, register_currency=False)
        if expect in {"written", "duplicate"}:
            # It changed the ledger: start again from the deliveries actually published.
            self.ledger = Ledger(TraderId(self.scenario.trader_id))
            for old_subject, old_data in self.history:
                self._predict(old_subject, old_data, register_currency=False)
            return None
        self.history.append((subject, data))
        return expect


def plan_stream(scenario: Scenario, rng: random.Random) -> tuple[list[Planned], collections.Counter[str]]:
    """The scenario's messages with bad ones before each; also counts of what was tried."""
    subjects = Subjects("tradecache", scenario.trader_id)
    oracle = Oracle(scenario)
    mutator = Mutator(rng)
    valid = [(subjects.inbound_for(SCENARIO_KINDS[kind]), payload) for kind, _type, payload in scenario.messages]
    payloads = [payload for _subject, payload in valid]
    tried: collections.Counter[str] = collections.Counter()
    stream: list[Planned] = []
    turn = 0
    for subject, payload in valid:
        for _ in range(BAD_PER_MESSAGE):
            operation = OPERATIONS[turn % len(OPERATIONS)]
            turn += 1
            for _attempt in range(4):  # a mutant that turns out valid is replaced by another
                tried["inputs"] += 1
                bad_subject, data = _make(operation, rng.choice(valid), payloads, mutator, subjects, rng)
                expect = oracle.try_bad(bad_subject, data)
                if expect is not None:
                    stream.append(Planned(bad_subject, data, operation, expect))
                    break
                tried["turned out valid"] += 1
        stream.append(Planned(subject, payload, "valid", oracle.take(subject, payload)))
    return stream, tried


def _make(
    operation: str,
    seed: tuple[str, bytes],
    payloads: list[bytes],
    mutator: Mutator,
    subjects: Subjects,
    rng: random.Random,
) -> tuple[str, bytes]:
    subject, payload = seed
    if operation == "wrong_subject":
        kinds = [kind.value for kind in Kind if subjects.inbound_for(kind) != subject]
        # Only subjects the consumer's filter takes (`<prefix>.in.<trader>.>`): others never reach it.
        token = rng.choice([*kinds, "gossip", "order.extra", "Order"])
        data = payload if rng.random() < 0.7 else mutator.mutate(payload, payloads).data
        return f"tradecache.in.{subjects.trader_id}.{token}", data
    if operation in {"other_trader", "replayed_with_new_id"}:
        # A valid message of this scenario, for another trader or repeated under a new event id
        # (a repeated order event is mostly refused by the order's state machine).
        data = msgpack.unpackb(payload, raw=False)
        if "trader_id" not in data:
            data = msgpack.unpackb(rng.choice([p for p in payloads if b"trader_id" in p]), raw=False)
        if operation == "other_trader":
            data["trader_id"] = "OTHER-999"
        elif "event_id" in data:
            data["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return subject_of(data["type"], subjects), pack(data)
    if operation == "big_free_form":
        # A key the schema does not know (stored as received), larger than the free-form cap.
        data = msgpack.unpackb(payload, raw=False)
        return subject, pack({**data, "params": ["x" * 100] * (FIELD_CAP // 100 + 5)})
    if operation == "oversize":
        padding = "x" * (MAX_PAYLOAD + rng.randrange(1, 4096))
        return subject, payload[:-1] + pack(padding) if rng.random() < 0.3 else _pad(payload, padding)
    if operation in BYTE_LEVEL:
        return subject, mutator.apply(operation, seed=payload, others=payloads).data
    return subject, mutator.apply(operation, seed=payload).data


def subject_of(type_name: str, subjects: Subjects) -> str:
    if type_name.startswith("Order"):
        return subjects.inbound_for(Kind.ORDER)
    if type_name.startswith("Position"):
        return subjects.inbound_for(Kind.POSITION)
    return subjects.inbound_for(Kind.COMMAND)  # SubmitOrder, SubmitOrderList: the rest with a trader_id


def _pad(payload: bytes, padding: str) -> bytes:
    """A valid payload made oversize by one more key (valid in every other respect)."""
    return pack({**msgpack.unpackb(payload, raw=False), "padding": padding})


async def read_dead_letters(js: Any, subject: str, start_seq: int, expected: int) -> list[Any]:
    """Every dead letter on `subject` from stream sequence `start_seq` on (an ephemeral consumer)."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
    subscription = await js.pull_subscribe(subject, durable=None, stream=DEAD_STREAM, config=config)
    letters: list[Any] = []
    deadline = time.monotonic() + 15
    while len(letters) < expected and time.monotonic() < deadline:
        try:
            fetched = await subscription.fetch(min(256, expected - len(letters)), timeout=2)
        except nats.errors.TimeoutError:
            continue
        for letter in fetched:  # acked as read: past max_ack_pending (1,000) unacked, nothing comes
            await letter.ack()
        letters.extend(fetched)
    with pytest.raises(nats.errors.TimeoutError):  # and nothing more
        await subscription.fetch(1, timeout=0.5)
    await subscription.unsubscribe()
    return letters


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def assert_store_holds_exactly_the_scenario(redis_url: str, scenario: Scenario) -> None:
    """The scenario's own writes, byte for byte, and no key a bad message could have added."""
    expected_store = replay_into_store(scenario).store
    client = redis.Redis.from_url(redis_url)
    keys = Keys(scenario.trader_id)
    try:
        wanted = set()
        for (collection, key), payloads in expected_store.lists.items():
            wanted.add(keys.entity(collection, key))
            assert client.lrange(keys.entity(collection, key), 0, -1) == payloads, f"{collection}:{key}"
        for (collection, key), payload in expected_store.values.items():
            wanted.add(keys.entity(collection, key))
            if collection == Collection.CURRENCIES:
                currency = SERIALIZER.deserialize(payload)
                assert isinstance(currency, Currency)
                stored = {_text(k): _text(v) for k, v in client.hgetall(keys.entity(collection, key)).items()}
                assert stored == currency_fields(currency)
            else:
                assert client.get(keys.entity(collection, key)) == payload, f"{collection}:{key}"
        found = {_text(key) for key in client.scan_iter(match=keys.scan_pattern(), count=1000)}
        own = f"{keys.prefix}:tradecache:"
        assert {key for key in found if not key.startswith(own)} == wanted
    finally:
        client.close()


FUZZED = ("bracket_entry_tp_filled_sl_canceled", "position_inverse_xbtusd_bitmex")


@pytest.mark.parametrize("name", FUZZED)
async def test_bad_messages_between_a_scenarios_own_are_dead_lettered_and_the_scenario_is_stored(
    name: str, redis_server: Any, nats_server: Any, announce: Announce
) -> None:
    vector = Scenario.load(next(path for path in scenario_paths() if path.stem == name))
    scenario = moved_to(vector, f"FUZZ-{secrets.token_hex(4)}")
    stream, tried = plan_stream(scenario, random.Random(f"{SEED}-{name}"))
    bad = [planned for planned in stream if planned.how != "valid"]
    assert {planned.how for planned in bad} >= set(REQUIRED), "the corpus misses a kind of damage"
    assert {planned.expect for planned in bad} == set(RejectReason) - NOT_FROM_PAYLOADS, "the corpus misses a reason"
    subjects = Subjects("tradecache", scenario.trader_id)
    db = database(redis_server.url, scenario.trader_id)
    config = daemon_config(
        redis_server.url,
        nats_server.url,
        scenario.trader_id,
        ingest={"max_payload_bytes": MAX_PAYLOAD, "max_field_bytes": FIELD_CAP},
    )
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    started = time.monotonic()
    try:
        async with running_daemon(config) as daemon:
            dead_start = (await js.stream_info(DEAD_STREAM)).state.last_seq + 1
            sequences = []
            for planned in stream:
                sequences.append((await js.publish(planned.subject, planned.data)).seq)
            await wait_for_checkpoint(redis_server.url, scenario.trader_id, sequences[-1], timeout=30)
            # Still alive and well after all of it.
            assert daemon.is_ready()
            assert await asyncio.to_thread(http_status, daemon.health.port, "/healthz") == 200
            assert await asyncio.to_thread(http_status, daemon.health.port, "/readyz") == 200
            counted = {
                reason.value: daemon.metrics.registry.get_sample_value(
                    "tradecache_dead_letters_total", {"reason": reason.value}
                )
                for reason in RejectReason
            }
        expected_letters = [(planned, seq) for planned, seq in zip(stream, sequences, strict=True)
                            if planned.expect in set(RejectReason)]  # fmt: skip
        letters = await read_dead_letters(js, subjects.dead, dead_start, len(expected_letters))
    finally:
        await nc.close()

    reasons = collections.Counter(planned.expect for planned, _seq in expected_letters)
    announce(
        f"fuzz {name}: {tried['inputs']} inputs tried, {tried['turned out valid']} turned out valid (not sent), "
        f"{len(bad)} bad + {len(stream) - len(bad)} valid published, dead letters by reason {dict(reasons)}, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert len(letters) == len(expected_letters)
    for letter, (planned, seq) in zip(letters, expected_letters, strict=True):
        assert letter.headers["Tradecache-Reason"] == planned.expect, planned.how
        assert int(letter.headers["Tradecache-Stream-Seq"]) == seq
        assert letter.headers["Tradecache-Subject"] == planned.subject
        assert letter.headers["Tradecache-Error"]
        assert letter.data == planned.data
    assert {reason: int(count or 0) for reason, count in counted.items() if count} == dict(reasons)
    assert_store_holds_exactly_the_scenario(redis_server.url, scenario)
    assert loaded_state(db) == vector.expected
    db.flush()
