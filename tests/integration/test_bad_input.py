"""Targeted bad input through a real daemon: each bad message is dead-lettered with the right
`Tradecache-Reason`, and the daemon goes on ingesting the valid messages published after it.

Covers what `test_daemon_dead_letters.py` (one message per reason) and the unit tests (decoder
level) do not: the size limit at its boundary, nesting beyond msgpack's limit and just inside it,
a wrong-typed value in every field of real OrderInitialized / OrderFilled / AccountState
payloads, unknown enum values in every enum field, 19-digit and out-of-range timestamps, and
identifiers that are not UTF-8, all end to end. Every run publishes a valid order before the bad
messages and its next events after them; the order must end FILLED with all its events stored.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import nats
import pytest
import redis

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for_checkpoint
from tests.integration.test_fuzz_ingest import DEAD_STREAM, read_dead_letters
from tests.vectors.scenarios import vectors_dir
from tradecache.cache.keys import Keys
from tradecache.model import Collection
from tradecache.model.identifiers import ClientOrderId, PositionId
from tradecache.serialization.limits import FREE_FORM_DEPTH
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

# A trader no other test uses, so no earlier test's messages or checkpoint are in the way. The
# tests share it without flushing in between (a daemon that found its checkpoint gone would replay
# the earlier tests' messages); each test makes its own order (`fresh_order`).
TRADER = f"BADINPUT-{secrets.token_hex(4)}"
SUBJECTS = Subjects("tradecache", TRADER)
ORDER = SUBJECTS.inbound_for_name("order")
ACCOUNT = SUBJECTS.inbound_for_name("account")
INSTRUMENT = SUBJECTS.inbound_for_name("instrument")
CURRENCY = SUBJECTS.inbound_for_name("currency")

Bad = tuple[str, bytes, str]  # subject, payload, expected Tradecache-Reason


@pytest.fixture(autouse=True, scope="module")
def remove_the_traders_keys_afterwards(redis_server: Any) -> Iterator[None]:
    yield
    database(redis_server.url, TRADER).flush()


def pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def vector_map(scenario: str, type_name: str, nth: int = 0) -> dict[str, Any]:
    """The nth `type_name` payload of a vector scenario as a map, moved to this test's trader."""
    data = json.loads((vectors_dir() / f"{scenario}.json").read_text())
    found = [msgpack.unpackb(base64.b64decode(m["payload_b64"]), raw=False) for m in data["messages"]]
    message: dict[str, Any] = [m for m in found if m["type"] == type_name][nth]
    if "trader_id" in message:
        message["trader_id"] = TRADER
    return message


SCENARIO = "market_order_single_fill_fx"
INSTRUMENT_MAP = vector_map(SCENARIO, "CurrencyPair")
INIT = vector_map(SCENARIO, "OrderInitialized")
AFTER = [vector_map(SCENARIO, name) for name in ("OrderSubmitted", "OrderAccepted", "OrderFilled")]
FILL = AFTER[-1]
ACCOUNT_STATE = vector_map(SCENARIO, "AccountState", nth=1)  # the one with a margin
LIMIT_INIT = vector_map("limit_modified_then_filled", "OrderInitialized")  # options with a price
_ORDERS = itertools.count(1)


def fresh_order() -> list[dict[str, Any]]:
    """The scenario's order (Initialized, Submitted, Accepted, Filled) under new ids."""
    number = next(_ORDERS)
    events = [
        {**event, "client_order_id": f"O-BAD-{number}", "event_id": str(uuid.uuid4())} for event in (INIT, *AFTER)
    ]
    events[-1].update(trade_id=f"T-BAD-{number}", position_id=f"P-BAD-{number}")
    return events


def with_raw(data: dict[str, Any], path: tuple[Any, ...], raw: bytes) -> bytes:
    """`data` packed with the value at `path` replaced by raw msgpack bytes (what `packb` cannot
    make: strings that are not UTF-8, nesting beyond its limit)."""
    mark = "\x01RAW-VALUE\x01"
    copy = msgpack.unpackb(pack(data), raw=False)
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = mark
    packed = pack(copy)
    assert packed.count(pack(mark)) == 1
    return packed.replace(pack(mark), raw)


def raw_str(body: bytes) -> bytes:
    """A msgpack str holding `body` as it is (valid UTF-8 or not)."""
    assert len(body) < 256
    return b"\xd9" + bytes([len(body)]) + body


def nested(depth: int, leaf: Any = 1) -> bytes:
    """`depth` arrays of one element around `leaf`, as raw msgpack."""
    return b"\x91" * depth + pack(leaf)


async def through_daemon(
    redis_server: Any, nats_server: Any, bad: list[Bad], order: list[dict[str, Any]] | None = None, **ingest: Any
) -> list[Any]:
    """Publish a valid order's first event, the bad deliveries, then the order's next events.

    Checks that every bad delivery is on the dead-letter stream in order, with its original body
    and subject and the expected reason, that the daemon is still ready, and that the order's
    events published after the bad ones were all stored. Returns the dead letters.
    """
    order = order or fresh_order()
    db = database(redis_server.url, TRADER)
    config = daemon_config(redis_server.url, nats_server.url, TRADER, ingest=ingest)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        async with running_daemon(config) as daemon:
            start = (await js.stream_info(DEAD_STREAM)).state.last_seq + 1
            await js.publish(INSTRUMENT, pack(INSTRUMENT_MAP))
            await js.publish(ORDER, pack(order[0]))
            sequences = [(await js.publish(subject, payload)).seq for subject, payload, _reason in bad]
            for event in order[1:]:
                last = await js.publish(ORDER, pack(event))
            await wait_for_checkpoint(redis_server.url, TRADER, last.seq)
            assert daemon.is_ready()
        letters = await read_dead_letters(js, SUBJECTS.dead, start, len(bad))
    finally:
        await nc.close()
    assert len(letters) == len(bad)
    for letter, (subject, payload, reason), seq in zip(letters, bad, sequences, strict=True):
        assert letter.headers["Tradecache-Reason"] == reason, f"seq {seq}: {letter.headers['Tradecache-Error']}"
        assert int(letter.headers["Tradecache-Stream-Seq"]) == seq
        assert letter.headers["Tradecache-Subject"] == subject
        assert letter.data == payload
    loaded = db.load_order(ClientOrderId(order[0]["client_order_id"]))
    assert loaded is not None
    assert (loaded.status.name, loaded.event_count) == ("FILLED", 4)
    return letters


def errors_by_reason(letters: list[Any]) -> list[tuple[str, str]]:
    return [(letter.headers["Tradecache-Reason"], letter.headers["Tradecache-Error"]) for letter in letters]


# -- size ----------------------------------------------------------------------------------------

LIMIT = 4096


def padded_to(data: dict[str, Any], size: int) -> bytes:
    """`data` with a `padding` key making it exactly `size` bytes of msgpack."""
    padding = size - len(pack({**data, "padding": ""}))
    for extra in range(padding, padding - 4, -1):  # the str header grows with the length
        payload = pack({**data, "padding": "p" * extra})
        if len(payload) == size:
            return payload
    raise AssertionError(f"cannot pad to {size} bytes")


async def test_the_size_limit_refuses_one_byte_over_it_and_before_any_other_check(
    redis_server: Any, nats_server: Any
) -> None:
    over = padded_to({**INIT, "client_order_id": "O-OVER-LIMIT"}, LIMIT + 1)
    bad: list[Bad] = [
        (ORDER, over, "oversize"),
        (ORDER, b"\xc1" * (LIMIT + 1), "oversize"),  # not msgpack either: size is checked first
        (f"tradecache.in.{TRADER}.gossip", over, "oversize"),  # a wrong subject too
        (ORDER, pack({**INIT, "padding": "x" * 600_000}), "oversize"),  # far over, under NATS' own limit
    ]
    letters = await through_daemon(redis_server, nats_server, bad, max_payload_bytes=LIMIT)
    assert all(f"exceeds the limit of {LIMIT}" in error for _reason, error in errors_by_reason(letters))


async def test_a_message_exactly_at_the_size_limit_is_written(redis_server: Any, nats_server: Any) -> None:
    init = fresh_order()[0]
    at_limit = padded_to(init, LIMIT)
    db = database(redis_server.url, TRADER)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        config = daemon_config(redis_server.url, nats_server.url, TRADER, ingest={"max_payload_bytes": LIMIT})
        async with running_daemon(config):
            last = await js.publish(ORDER, at_limit)
            await wait_for_checkpoint(redis_server.url, TRADER, last.seq)
    finally:
        await nc.close()
    assert db.load_order(ClientOrderId(init["client_order_id"])) is not None


# -- nesting ---------------------------------------------------------------------------------------


async def test_deep_nesting_is_refused_as_over_the_decode_limit_without_a_recursion_error(
    redis_server: Any, nats_server: Any
) -> None:
    """Nesting beyond the schemas' own plus `FREE_FORM_DEPTH` is refused while unpacking
    (`limit_exceeded`), whether msgpack itself could unpack it (1,000 deep) or not (10,000)."""
    bad: list[Bad] = [
        (ORDER, nested(10_000), "limit_exceeded"),  # the whole payload: 10,000 arrays deep
        (ORDER, b"\x81\xa1a" * 10_000 + pack(1), "limit_exceeded"),  # 10,000 maps deep
        (ORDER, with_raw(FILL, ("info",), nested(10_000)), "limit_exceeded"),
        (ORDER, with_raw(FILL, ("info",), b"\x81\xa1k" * 2000 + pack(1)), "limit_exceeded"),  # maps in the info map
        # Inside msgpack's limit but deeper than Python's repr can go (it used to raise
        # RecursionError and stop the daemon), and deeper than a JSON reply can carry.
        (ORDER, with_raw(INIT, ("order_side",), nested(1000)), "limit_exceeded"),
        (ORDER, with_raw(INIT, ("options", "price"), nested(1020)), "limit_exceeded"),
        (ACCOUNT, with_raw(ACCOUNT_STATE, ("account_type",), nested(1000, "MARGIN")), "limit_exceeded"),
        (ORDER, with_raw(FILL, ("info",), b"\x81\xa1k" + nested(FREE_FORM_DEPTH + 4)), "limit_exceeded"),
    ]
    letters = await through_daemon(redis_server, nats_server, bad)
    assert [reason for reason, _error in errors_by_reason(letters)] == [reason for _s, _p, reason in bad]
    assert all("nesting deeper than" in letter.headers["Tradecache-Error"] for letter in letters)


async def test_a_fill_whose_info_nests_as_deep_as_allowed_is_stored_byte_for_byte(
    redis_server: Any, nats_server: Any
) -> None:
    order = fresh_order()
    deep_fill = with_raw(order[-1], ("info",), b"\x81\xa1k" + nested(FREE_FORM_DEPTH))
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)):
            await js.publish(INSTRUMENT, pack(INSTRUMENT_MAP))
            for payload in (*map(pack, order[:-1]), deep_fill):
                last = await js.publish(ORDER, payload)
            await wait_for_checkpoint(redis_server.url, TRADER, last.seq)
    finally:
        await nc.close()
    client = redis.Redis.from_url(redis_server.url)
    stored = client.lrange(Keys(TRADER).entity(Collection.ORDERS, order[0]["client_order_id"]), 0, -1)
    client.close()
    assert stored[-1] == deep_fill


# -- a wrong type in every field -------------------------------------------------------------------


def wrong_type(path: tuple[Any, ...], value: Any) -> Any:
    """A value of another msgpack type than `value`. Not an integer for a timestamp (integer
    nanoseconds are valid), nor a string for a list of strings (read as a comma-joined list)."""
    if isinstance(value, bool):
        return "true"
    if isinstance(value, str):
        return [value] if str(path[-1]).startswith("ts_") else 7
    if isinstance(value, (int, float)):
        return "7"
    if isinstance(value, dict):
        return "not a map"
    if isinstance(value, list):
        return {"not": "a list"}
    return 7  # nil: an optional field given a number


def field_paths(data: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """Every key, and the keys of the nested maps the decoder checks (`options`, balances, margins).

    A nested map's own `type` key ("AccountBalance") is not read by the decoder, so it is left out.
    """
    for key, value in data.items():
        yield (key,)
        if key == "options" and isinstance(value, dict):
            yield from ((key, inner) for inner in value)
        if key in {"balances", "margins"}:
            for index, item in enumerate(value):
                yield from ((key, index, inner) for inner in item if inner != "type")


def with_value(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = msgpack.unpackb(pack(data), raw=False)
    node: Any = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def shown_path(path: tuple[Any, ...]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


MESSAGES = {
    "OrderInitialized": (LIMIT_INIT, ORDER),
    "OrderFilled": (FILL, ORDER),
    "AccountState": (ACCOUNT_STATE, ACCOUNT),
}


@pytest.mark.parametrize("type_name", list(MESSAGES))
async def test_a_wrong_type_in_any_field_is_dead_lettered_naming_the_field(
    type_name: str, redis_server: Any, nats_server: Any
) -> None:
    data, subject = MESSAGES[type_name]
    paths = list(field_paths(data))
    assert len(paths) >= 10
    bad: list[Bad] = [
        (subject, pack(with_value(data, path, wrong_type(path, _get(data, path)))),
         "malformed" if path == ("type",) else "invalid_field")
        for path in paths
    ]  # fmt: skip
    letters = await through_daemon(redis_server, nats_server, bad)
    for path, (reason, error) in zip(paths, errors_by_reason(letters), strict=True):
        field = "type" if path == ("type",) else shown_path(path)
        assert f"field '{field}'" in error, (path, reason, error)


def _get(data: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = data
    for key in path:
        node = node[key]
    return node


# -- unknown enum values ---------------------------------------------------------------------------

ENUM_FIELDS: list[tuple[dict[str, Any], str, tuple[Any, ...]]] = [
    (INIT, ORDER, ("order_side",)),
    (INIT, ORDER, ("order_type",)),
    (INIT, ORDER, ("time_in_force",)),
    (INIT, ORDER, ("emulation_trigger",)),
    (INIT, ORDER, ("contingency_type",)),
    (FILL, ORDER, ("order_side",)),
    (FILL, ORDER, ("order_type",)),
    (FILL, ORDER, ("liquidity_side",)),
    (ACCOUNT_STATE, ACCOUNT, ("account_type",)),
]


async def test_an_unknown_enum_value_is_invalid_field_naming_the_field_and_the_value(
    redis_server: Any, nats_server: Any
) -> None:
    stop_limit = {**LIMIT_INIT, "client_order_id": "O-SL", "order_type": "STOP_LIMIT",
                  "options": {"price": "0.65432", "trigger_price": "0.65400", "trigger_type": "SIDEWAYS",
                              "expire_time_ns": 0, "display_qty": None}}  # fmt: skip
    currency = {"type": "Currency", "code": "ZZZ", "precision": 2, "iso4217": 0, "name": "Zed", "currency_type": "FIAT"}
    bad: list[Bad] = []
    for data, subject, path in ENUM_FIELDS:
        for value in ("SIDEWAYS", str(_get(data, path)).lower(), 1):  # unknown, lower case, the enum's int
            bad.append((subject, pack(with_value(data, path, value)), "invalid_field"))
    bad.append((ORDER, pack(stop_limit), "invalid_field"))
    bad.append((CURRENCY, pack({**currency, "currency_type": "SHELLS"}), "invalid_field"))
    letters = await through_daemon(redis_server, nats_server, bad)
    errors = [error for _reason, error in errors_by_reason(letters)]
    assert "field 'order_side': 'SIDEWAYS' is not a OrderSide" in errors[0]
    assert "field 'options.trigger_type'" in errors[-2]
    assert "field 'currency_type'" in errors[-1]


# -- timestamps ------------------------------------------------------------------------------------

BAD_TIMESTAMPS = [
    -1,
    -(2**63),
    "-1",
    "18446744073709551616",  # 2^64: one past uint64 (msgpack itself cannot carry it as an int)
    "9" * 25,
    "1" + "0" * 5000,  # more digits than Python converts to int
    "0" * 4400,
    "12a",
    "",
    " 1764112094914872368",
    "\u0661\u0667\u0666\u0664",  # digits, but not ASCII ones
    "2025-11-26T00:00:00Z",
    1.5,
    True,
    None,
    [1764112094914872368],
]


async def test_an_out_of_range_or_non_numeric_timestamp_is_invalid_field(redis_server: Any, nats_server: Any) -> None:
    bad: list[Bad] = []
    for key in ("ts_event", "ts_init"):
        for value in BAD_TIMESTAMPS:
            bad.append((ORDER, pack({**FILL, key: value}), "invalid_field"))
    bad.append((ACCOUNT, pack({**ACCOUNT_STATE, "ts_event": "-5"}), "invalid_field"))
    letters = await through_daemon(redis_server, nats_server, bad)
    keys = [key for key in ("ts_event", "ts_init") for _value in BAD_TIMESTAMPS] + ["ts_event"]
    for key, (_reason, error) in zip(keys, errors_by_reason(letters), strict=True):
        assert f"field '{key}'" in error
        assert len(error) < 400  # a 5,000-digit value is not copied into the message


async def test_19_digit_and_uint64_timestamps_are_stored_exactly_as_strings(
    redis_server: Any, nats_server: Any
) -> None:
    """Top-level timestamps arrive as strings (stored byte for byte) or as msgpack integers
    (stored re-encoded, as the same digits in a string); the largest uint64 is kept exact."""
    as_strings = fresh_order()[0]
    first, second, *_rest = fresh_order()
    as_ints = {**first, "ts_event": int(INIT["ts_event"]), "ts_init": 2**64 - 1}
    submitted = {**second, "ts_event": 10**18}
    db = database(redis_server.url, TRADER)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)):
            for data in (as_strings, as_ints, submitted):
                last = await js.publish(ORDER, pack(data))
            await wait_for_checkpoint(redis_server.url, TRADER, last.seq)
    finally:
        await nc.close()
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(TRADER)
    strings = client.lrange(keys.entity(Collection.ORDERS, as_strings["client_order_id"]), 0, -1)
    stored = client.lrange(keys.entity(Collection.ORDERS, as_ints["client_order_id"]), 0, -1)
    ints = [msgpack.unpackb(raw, raw=False) for raw in stored]
    client.close()
    assert strings == [pack(as_strings)]
    assert ints[0]["ts_event"] == INIT["ts_event"] and len(ints[0]["ts_event"]) == 19
    assert ints[0]["ts_init"] == "18446744073709551615"
    assert ints[1]["ts_event"] == "1000000000000000000"
    assert ints[1]["ts_init"] == AFTER[0]["ts_init"]
    order = db.load_order(ClientOrderId(as_ints["client_order_id"]))
    assert order is not None and order.ts_init == 2**64 - 1 and order.event_count == 2


# -- identifiers that are not UTF-8 ------------------------------------------------------------------


async def test_identifiers_that_are_not_utf8_are_malformed_as_str_and_invalid_field_as_bin(
    redis_server: Any, nats_server: Any
) -> None:
    bad: list[Bad] = []
    for key in ("client_order_id", "trader_id", "instrument_id", "strategy_id"):
        text = INIT[key].encode()
        for junk in (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf"):  # stray, cut, surrogate, overlong
            bad.append((ORDER, with_raw(INIT, (key,), raw_str(text[:3] + junk + text[3:])), "malformed"))
        bad.append((ORDER, pack({**INIT, key: text[:3] + b"\xff" + text[3:]}), "invalid_field"))  # bin, not str
        bad.append((ORDER, pack({**INIT, key: text}), "invalid_field"))  # bin even though it is UTF-8
    bad.append((ORDER, with_raw(FILL, ("trade_id",), raw_str(b"T-\xfe\xff")), "malformed"))
    bad.append((ACCOUNT, with_raw(ACCOUNT_STATE, ("account_id",), raw_str(b"IB-\x80")), "malformed"))
    # A key that is not UTF-8, and a key that is bin rather than str.
    head = 1 if len(INIT) < 16 else 3
    assert pack(INIT)[head : head + 5] == pack("type")
    bad.append((ORDER, pack(INIT)[:head] + raw_str(b"ty\xffpe") + pack(INIT)[head + 5 :], "malformed"))
    bad.append((ORDER, _with_bin_key(INIT), "malformed"))
    letters = await through_daemon(redis_server, nats_server, bad)
    bin_errors = [error for reason, error in errors_by_reason(letters) if reason == "invalid_field"]
    assert all("expected a string, got bytes" in error for error in bin_errors)


def _with_bin_key(data: dict[str, Any]) -> bytes:
    """The map with one more entry whose key is msgpack bin (b"ts_extra")."""
    packed = pack(data)
    size = len(data) + 1
    head = bytes([0x80 | size]) if size < 16 else b"\xde" + size.to_bytes(2, "big")
    skip = 1 if len(data) < 16 else 3
    return head + pack(b"ts_extra") + pack(1) + packed[skip:]


# -- numbers beyond what a node can hold, and instruments a position could not use ------------------


async def test_numbers_a_node_cannot_hold_are_invalid_field_and_refused_at_once(
    redis_server: Any, nats_server: Any
) -> None:
    """NautilusTrader holds values as value x 10^16 in 128 bits. Larger ones used to get through:
    "1e300" then overflowed the binary64 arithmetic of the fill (OverflowError, the daemon
    stopped), "1e9999999" raised decimal.Overflow while decoding, and "1e999900" took half a
    minute of CPU to expand. Digits of other scripts ("١٢٣") were read as 123 and stored as sent."""
    bad: list[Bad] = [
        (ORDER, pack({**FILL, "last_qty": "1e300"}), "invalid_field"),
        (ORDER, pack({**FILL, "last_px": "1e300"}), "invalid_field"),
        (ORDER, pack({**FILL, "commission": "1e300 USD"}), "invalid_field"),
        (ORDER, pack({**FILL, "last_px": "1e9999999"}), "invalid_field"),
        (ORDER, pack({**FILL, "last_px": "-1e999900"}), "invalid_field"),
        (ORDER, pack({**FILL, "last_qty": "1" * 30}), "invalid_field"),
        (ORDER, pack({**FILL, "last_qty": "1" + "0" * 5000}), "invalid_field"),
        (ORDER, pack({**FILL, "last_qty": "\u0661\u0662\u0663"}), "invalid_field"),  # digits, not ASCII ones
        (ORDER, pack(with_value(LIMIT_INIT, ("options", "price"), "1E+23")), "invalid_field"),
        (ACCOUNT, pack(with_value(ACCOUNT_STATE, ("balances", 0, "total"), "1e999900")), "invalid_field"),
        (INSTRUMENT, pack({**INSTRUMENT_MAP, "multiplier": "1e9999999"}), "invalid_field"),
    ]
    started = time.monotonic()
    letters = await through_daemon(redis_server, nats_server, bad)
    assert time.monotonic() - started < 10
    fields = ["last_qty", "last_px", "commission", "last_px", "last_px", "last_qty", "last_qty", "last_qty",
              "options.price", "balances[0].total", "multiplier"]  # fmt: skip
    for field, (_reason, error) in zip(fields, errors_by_reason(letters), strict=True):
        assert f"field '{field}'" in error


async def test_an_instrument_a_position_could_not_book_in_is_refused_before_a_fill_needs_it(
    redis_server: Any, nats_server: Any
) -> None:
    """An instrument whose quote (or, inverse, base) currency is unusable used to be stored, and the
    first fill of a position on it raised ValueError half-way through (the daemon stopped, and
    stopped again on the same message after every restart). The fill published after these bad
    instruments opens its position on the good instrument published before them."""
    generic = {key: INSTRUMENT_MAP[key] for key in ("id", "raw_symbol", "price_precision", "price_increment")}
    other_type = {**generic, "type": "SomeNewInstrument"}
    bad: list[Bad] = [
        (INSTRUMENT, pack({**INSTRUMENT_MAP, "quote_currency": 7}), "invalid_field"),
        (INSTRUMENT, pack({**INSTRUMENT_MAP, "quote_currency": ""}), "invalid_field"),
        (INSTRUMENT, pack({**INSTRUMENT_MAP, "quote_currency": None}), "invalid_field"),
        (INSTRUMENT, pack({k: v for k, v in INSTRUMENT_MAP.items() if k != "quote_currency"}), "malformed"),
        (INSTRUMENT, pack({**INSTRUMENT_MAP, "is_inverse": True, "base_currency": None}), "invalid_field"),
        (INSTRUMENT, pack({**other_type, "quote_currency": 7}), "invalid_field"),  # a type we do not know
        (INSTRUMENT, pack({**other_type, "currency": ""}), "invalid_field"),
    ]
    order = fresh_order()
    letters = await through_daemon(redis_server, nats_server, bad, order)
    assert "quote_currency" in letters[0].headers["Tradecache-Error"]
    position = database(redis_server.url, TRADER).load_position(PositionId(order[-1]["position_id"]))
    assert position is not None and str(position.quantity) == FILL["last_qty"]
