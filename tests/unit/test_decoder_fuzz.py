"""Fuzzing the decoder and the pure core: random and mutated payloads never crash them.

`MsgPackSerializer.deserialize` on any bytes returns a message or raises `PayloadError` whose
reason is one of the decoder's (`malformed`, `unknown_type`, `invalid_field`); the daemon's
`Intake` turns any delivery into `Accepted` or `Refused` with a SPEC reason; and a decoded message
applied to a `Ledger` holding a real scenario's state gives an `Outcome` or an `EventRejected`.
Nothing else may escape: in the daemon any other exception would stop the ingest loop, and the
same message would stop it again after a restart.

The mutations start from the NautilusTrader-made vector payloads. `Mutator` is also used by the
end-to-end fuzz test (`tests/integration/test_fuzz_ingest.py`) and by `scripts/fuzz_ingest.py`.
"""

from __future__ import annotations

import copy
import math
import random
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vectors.scenarios import SCENARIO_KINDS, Scenario, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall, plan_writes
from tradecache.errors import EventRejected, PayloadError, RejectReason
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
from tradecache.model import values
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.model.messages import Kind, Message
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.schemas import (
    ACCOUNT_STATE_FIELDS,
    CURRENCY_FIELDS,
    ORDER_SCHEMAS,
    POSITION_SCHEMAS,
    SUBMIT_ORDER_FIELDS,
    SUBMIT_ORDER_LIST_FIELDS,
)
from tradecache.wire import Subjects

SERIALIZER = MsgPackSerializer(timestamps_as_str=True)
DECODER_REASONS = frozenset({RejectReason.MALFORMED, RejectReason.UNKNOWN_TYPE, RejectReason.INVALID_FIELD})
SPEC_REASONS = frozenset(RejectReason)

# -- the mutation engine -------------------------------------------------------------------------

KNOWN_TYPES = (
    *ORDER_SCHEMAS,
    *POSITION_SCHEMAS,
    "AccountState",
    "SubmitOrder",
    "SubmitOrderList",
    "StrategyState",
    "StrategyDeleted",
    "Currency",
    "CurrencyPair",
    "Equity",
    "CryptoPerpetual",
    "FuturesContract",
    "BettingInstrument",
    "SomethingElse",
)
HUGE_INTS: tuple[int, ...] = (2**64 - 1, 2**63, 2**63 - 1, -(2**63), -1, 10**19, 2**53 + 1)
# Strings that are numbers in some reading (exponents, unicode digits, signs, white space...).
NUMBER_STRINGS = (
    "1e9999999",
    "-1e9999999",
    "1e300",
    "1E+30",
    "1e-17",
    "0.00000000000000001",
    "1" + "0" * 5000,
    "1" * 40,
    "\u0661\u0662\u0663",
    "1_000",
    " 1",
    "+1",
    "0x10",
    "Infinity",
    "NaN",
    "-0",
    "-1",
    "0",
    "18446744073709551616",
    "-1764112094914872368",
    "1764112094914872368",
    "2025-11-26T00:00:00Z",
    "1e300 USD",
    "1 US D",
    "2.00 ",
)
WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    "SIDEWAYS",
    "EXTERNAL",
    "A-B",
    "X.Y",
    b"",
    b"\xff\xfe",
    [],
    [1, "a"],
    {},
    {"k": 1},
    {"type": "OrderInitialized"},
    *HUGE_INTS,
    *NUMBER_STRINGS,
)
DEEP_LEVELS = (100, 900, 985, 995, 1000, 1010, 1020, 1023, 1030, 10_000)
BAD_TIMESTAMPS: tuple[Any, ...] = (
    -1,
    -(2**63),
    "18446744073709551616",
    "-5",
    "12a",
    "",
    "1.5",
    1.5,
    "\u0663" * 19,
    " 1764112094914872368",
    "1" + "0" * 5000,
)
NOT_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc0\xaf")

Location = tuple[Any, Any]  # (container, key or index)
RawPatch = tuple[Location, bytes]  # a location whose value is packed as these raw bytes

BYTE_LEVEL = ("random_bytes", "truncated", "bit_flips", "bytes_inserted", "bytes_deleted", "spliced")
STRUCTURAL = (
    "deleted",
    "wrong_type",
    "unknown_enum",
    "huge_int",
    "bad_timestamp",
    "number_string",
    "type_swapped",
    "trader_changed",
    "key_added",
    "deep_nesting",
    "not_utf8",
    "bytes_for_str",
    "timestamps_as_ints",
    "wrapped",
)
OPERATIONS = BYTE_LEVEL + STRUCTURAL


@dataclass(frozen=True)
class Mutant:
    """A mutated payload and how it was made (for reports)."""

    how: str
    data: bytes


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _locations(tree: Any) -> list[Location]:
    """Every (container, key) in a decoded msgpack tree, maps and arrays alike."""
    found: list[Location] = []
    stack = [tree]
    while stack and len(found) < 2000:
        node = stack.pop()
        items: list[tuple[Any, Any]]
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        for key, value in items:
            found.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return found


def _wrong_value(rng: random.Random) -> Any:
    """A copy of one of WRONG_VALUES: its lists and maps are put into a tree that later operations
    change in place, and a shared one changed there would change every later example's inputs
    (hypothesis then reports the test as flaky, or a failure cannot be replayed)."""
    return copy.deepcopy(rng.choice(WRONG_VALUES))


def _value_at(location: Location) -> Any:
    container, key = location
    return container[key]


class Mutator:
    """Seeded mutations of msgpack payloads: byte-level damage and structural field changes.

    Every choice is drawn from `rng`, so a seed reproduces the same corpus.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def mutate(self, seed: bytes, others: Sequence[bytes] = ()) -> Mutant:
        """A byte-level mutant one time in three, else one to three stacked structural changes."""
        if self.rng.random() < 1 / 3:
            return self.apply(self.rng.choice(BYTE_LEVEL), seed=seed, others=others)
        return self.apply(*self.rng.choices(STRUCTURAL, k=self.rng.choice((1, 1, 1, 2, 3))), seed=seed)

    def apply(self, *operations: str, seed: bytes, others: Sequence[bytes] = ()) -> Mutant:
        """`seed` changed by the named operations (byte-level ones take the first only)."""
        if operations[0] in BYTE_LEVEL:
            return Mutant(operations[0], self._damage(operations[0], seed, others))
        tree = msgpack.unpackb(seed, raw=False)
        patch: RawPatch | None = None
        hows = []
        for operation in operations:
            how, new_patch = self._change(operation, tree)
            hows.append(how)
            patch = new_patch or patch
        return Mutant("+".join(hows), self._pack(tree, patch))

    # -- byte level --------------------------------------------------------------------------

    def _damage(self, operation: str, seed: bytes, others: Sequence[bytes]) -> bytes:
        rng = self.rng
        data = bytearray(seed)
        if operation == "random_bytes":
            return rng.randbytes(rng.randrange(0, 300))
        if operation == "truncated":
            return seed[: rng.randrange(0, max(1, len(seed)))]
        if operation == "bit_flips":
            for _ in range(rng.randint(1, 8)):
                if data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if operation == "bytes_inserted":
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 16))
            return bytes(data)
        if operation == "bytes_deleted":
            at = rng.randrange(max(1, len(data)))
            del data[at : at + rng.randint(1, 16)]
            return bytes(data)
        other = rng.choice(others) if others else seed
        return seed[: rng.randrange(len(seed) + 1)] + other[rng.randrange(len(other) + 1) :]

    # -- structural ----------------------------------------------------------------------------

    def _pick(self, locations: list[Location], wanted: Callable[[Location], bool]) -> Location:
        matching = [location for location in locations if wanted(location)]
        return self.rng.choice(matching or locations)

    def _change(self, operation: str, tree: Any) -> tuple[str, RawPatch | None]:
        """Apply one structural operation to `tree` in place; a raw patch is applied when packing."""
        rng = self.rng
        locations = _locations(tree)
        if not isinstance(tree, dict) or not locations:
            return "not_a_map", None
        where = rng.choice(locations)
        container, key = where
        if operation == "deleted":
            if isinstance(container, dict):
                del container[key]
            else:
                container.pop(key)
        elif operation == "wrong_type":
            container[key] = _wrong_value(rng)
        elif operation == "unknown_enum":
            container, key = self._pick(locations, lambda loc: _looks_like_enum(_value_at(loc)))
            suffix = "".join(rng.choices(string.ascii_uppercase, k=rng.randrange(3)))
            container[key] = rng.choice(("SIDEWAYS", "buy", "NONE", "", "BUY ", "ORDER_SIDE")) + suffix
        elif operation == "huge_int":
            container[key] = rng.choice(HUGE_INTS)
        elif operation == "bad_timestamp":
            container, key = self._pick(locations, lambda loc: str(loc[1]).startswith("ts_"))
            container[key] = rng.choice(BAD_TIMESTAMPS)
        elif operation == "number_string":
            container, key = self._pick(locations, lambda loc: isinstance(_value_at(loc), str))
            container[key] = rng.choice(NUMBER_STRINGS)
        elif operation == "type_swapped":
            tree["type"] = rng.choice(KNOWN_TYPES)
            key = "type"
        elif operation == "trader_changed":
            tree["trader_id"] = rng.choice(("OTHER-999", "OTHER-999", "NODASH", "", 7))
            key = "trader_id"
        elif operation == "key_added":
            key = rng.choice(("ts_extra", "unknown_key", b"ts_extra", b"type", 5))
            if isinstance(key, int):
                return f"{operation}:{key}", (("", "x"), b"")  # packed below as an int key
            tree[key] = _wrong_value(rng)
        elif operation == "deep_nesting":
            depth = rng.choice(DEEP_LEVELS)
            return f"{operation}_{depth}:{key}", (where, b"\x91" * depth + pack(rng.choice((1, "x", {}))))
        elif operation == "not_utf8":
            container, key = self._pick(locations, lambda loc: isinstance(_value_at(loc), str))
            value = container[key]
            text = value.encode() if isinstance(value, str) else b"A"
            cut = rng.randrange(len(text) + 1)
            body = text[:cut] + rng.choice(NOT_UTF8) + text[cut:]
            if len(body) < 256:
                return f"{operation}:{key}", ((container, key), b"\xd9" + bytes([len(body)]) + body)
        elif operation == "bytes_for_str":
            container, key = self._pick(locations, lambda loc: isinstance(_value_at(loc), str))
            value = container[key]
            container[key] = value.encode() if isinstance(value, str) else b"\xff"
        elif operation == "timestamps_as_ints":
            for name, value in list(tree.items()):
                if str(name).startswith("ts_") and isinstance(value, str) and value.isdigit() and len(value) <= 20:
                    tree[name] = int(value)
            key = "ts_*"
        elif operation == "wrapped":
            container[key] = [container[key]] if rng.random() < 0.5 else {"v": container[key]}
        else:
            raise ValueError(f"unknown operation {operation!r}")
        return f"{operation}:{key}", None

    # -- packing with raw patches --------------------------------------------------------------

    def _pack(self, tree: Any, patch: RawPatch | None) -> bytes:
        """Pack `tree`; with a patch, the value at its location is replaced by its raw bytes
        (msgpack that `packb` cannot make: invalid UTF-8, nesting beyond its limit, int keys)."""
        if patch is None:
            return _pack_or_placeholder(tree)
        (container, key), raw = patch
        if container == "":  # an int key added to the top-level map
            packed = _pack_or_placeholder(tree)
            return _with_int_key(packed, self.rng.randrange(-5, 2**32))
        if isinstance(container, list) and not 0 <= key < len(container):
            return _pack_or_placeholder(tree)  # a later operation removed the patched place
        mark = f"\x01MARK:{self.rng.getrandbits(64):016x}\x01"
        container[key] = mark
        packed = _pack_or_placeholder(tree)
        marked = pack(mark)
        if packed.count(marked) != 1:
            return packed
        return packed.replace(marked, raw)


def _pack_or_placeholder(tree: Any) -> bytes:
    try:
        return pack(tree)
    except (ValueError, OverflowError, TypeError):  # e.g. nested beyond msgpack's own limit
        return pack({"type": "Unpackable"})


def _with_int_key(packed: bytes, number: int) -> bytes:
    """A packed map with one more entry whose key is an integer (msgpack allows any key type)."""
    first = packed[0]
    if first & 0xF0 == 0x80:
        size, header = first & 0x0F, 1
    elif first == 0xDE:
        size, header = int.from_bytes(packed[1:3], "big"), 3
    else:
        size, header = int.from_bytes(packed[1:5], "big"), 5
    size += 1
    if size < 16:
        head = bytes([0x80 | size])
    elif size < 2**16:
        head = b"\xde" + size.to_bytes(2, "big")
    else:
        head = b"\xdf" + size.to_bytes(4, "big")
    return head + pack(number) + pack("int key") + packed[header:]


def _looks_like_enum(value: Any) -> bool:
    return isinstance(value, str) and value.isupper() and value.replace("_", "").isalpha()


# -- shared checks ---------------------------------------------------------------------------------


def vector_payloads() -> list[tuple[str, Kind, bytes]]:
    """(scenario name, subject kind, payload) of every message of every vector scenario."""
    found = []
    for path in scenario_paths():
        scenario = Scenario.load(path)
        for kind, _type, payload in scenario.messages:
            found.append((scenario.name, SCENARIO_KINDS[kind], payload))
    return found


VECTORS = vector_payloads()
SEEDS = [payload for _name, _kind, payload in VECTORS]


def decode_or_refuse(data: bytes) -> Message | PayloadError:
    """Decode; a refusal must be a PayloadError with a decoder reason and a readable message."""
    try:
        message = SERIALIZER.deserialize(data)
    except PayloadError as error:
        assert error.reason in DECODER_REASONS, error
        assert str(error)
        return error
    # What was accepted can be written back and read again (the daemon stores re-encoded
    # bytes for messages whose timestamps were integers).
    again = SERIALIZER.deserialize(SERIALIZER.serialize(message))
    assert type(again) is type(message)
    return message


def delivery(subject: str, data: bytes, seq: int = 1) -> Delivery:
    reply = f"$JS.ACK.TRADECACHE.c.1.{seq}.{seq}.1764112094914872368.0"
    return Delivery(subject, data, {"Producer": "fuzz"}, seq, seq, 1764112094914872368, 0, reply)


# -- the tests -----------------------------------------------------------------------------------

MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MANY
@given(st.binary(max_size=600))
def test_arbitrary_bytes_decode_to_a_message_or_a_payload_error(data: bytes) -> None:
    decode_or_refuse(data)


@MANY
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_mutated_vector_payloads_decode_to_a_message_or_a_payload_error(seed: bytes, rng: random.Random) -> None:
    decode_or_refuse(Mutator(rng).mutate(seed, SEEDS).data)


def test_the_mutator_leaves_its_constants_and_seeds_as_they_were() -> None:
    """Every example must start from the same inputs: a mutation made in place inside a shared
    constant (a list or map of WRONG_VALUES put into a tree) would change all later examples."""
    constants = (WRONG_VALUES, BAD_TIMESTAMPS, NUMBER_STRINGS, HUGE_INTS, SEEDS)
    before = repr(constants)
    mutator = Mutator(random.Random(20261206))
    for index in range(5000):
        mutator.mutate(SEEDS[index % len(SEEDS)], SEEDS)
    assert repr(constants) == before


MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=8)
    | st.sampled_from(WRONG_VALUES),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
SCHEMA_KEYS = sorted(
    {field.key for schema in (*ORDER_SCHEMAS.values(), *POSITION_SCHEMAS.values()) for field in schema.fields}
    | {field.key for field in (*ACCOUNT_STATE_FIELDS, *SUBMIT_ORDER_FIELDS, *SUBMIT_ORDER_LIST_FIELDS)}
    | {field.key for field in CURRENCY_FIELDS}
    | {"balances", "margins", "order", "orders", "state", "currency_type", "id", "raw_symbol", "price_precision",
       "price_increment", "size_precision", "multiplier", "is_inverse", "quote_currency", "base_currency"}
)  # fmt: skip
VECTOR_MAPS = [msgpack.unpackb(seed, raw=False) for seed in SEEDS]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN_TYPES), st.dictionaries(st.sampled_from(SCHEMA_KEYS), MSGPACK_VALUES, max_size=10))
def test_maps_of_a_known_type_with_any_values_decode_or_are_refused(type_name: str, fields: dict[str, Any]) -> None:
    decode_or_refuse(pack({"type": type_name, **fields}))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(VECTOR_MAPS))),
    st.dictionaries(st.sampled_from(SCHEMA_KEYS), MSGPACK_VALUES, max_size=3),
    st.sets(st.sampled_from(SCHEMA_KEYS), max_size=2),
)
def test_vector_payloads_with_keys_given_any_value_or_removed_decode_or_are_refused(
    index: int, changes: dict[str, Any], removed: set[str]
) -> None:
    data = {key: value for key, value in VECTOR_MAPS[index].items() if key not in removed}
    decode_or_refuse(pack({**data, **changes}))


@MANY
@given(st.sampled_from(VECTORS), st.randoms(use_true_random=False), st.sampled_from([*Kind, "gossip"]))
def test_intake_accepts_or_refuses_every_delivery_with_a_spec_reason(
    vector: tuple[str, Kind, bytes], rng: random.Random, subject_kind: Kind | str
) -> None:
    _name, kind, seed = vector
    subjects = Subjects("tradecache", "FUZZ-001")
    intake = Intake(subjects, SERIALIZER, max_payload_bytes=64 * 1024)
    mutant = Mutator(rng).mutate(seed, SEEDS)
    subject = f"tradecache.in.FUZZ-001.{subject_kind}" if rng.random() < 0.2 else subjects.inbound_for(kind)
    item = intake.check(delivery(subject, mutant.data))
    if isinstance(item, Refused):
        assert item.error.reason in SPEC_REASONS
        assert isinstance(item.type_name, str) and item.type_name
    else:
        assert isinstance(item, Accepted)
        assert subject == subjects.inbound_for(item.kind)


SCENARIOS = [Scenario.load(path) for path in scenario_paths()]


def apply_or_refuse(ledger: Ledger, message: Message) -> tuple[Any, ...]:
    """Apply through the ledger and plan the writes; refusals must carry a SPEC reason.

    Returns a summary to compare runs by: the reason, or the outcome and what it writes where.
    """
    try:
        outcome = ledger.apply(message)
    except EventRejected as error:
        assert error.reason in SPEC_REASONS
        return ("refused", error.reason)
    plan_writes(outcome.writes, Keys(ledger.trader_id), SERIALIZER.serialize, ScriptCall())
    writes = tuple((write.op, write.collection, write.key, _identity(write.value)) for write in outcome.writes)
    return ("applied", outcome.duplicate, writes, outcome.divergence)


def _identity(value: Any) -> Any:
    return getattr(value, "event_id", None) or getattr(value, "command_id", None) or repr(value)[:80]


# The currencies registered before any scenario ran. A scenario's Currency messages register
# process-wide (as in NautilusTrader), and money decoded after one holds that currency: each
# replay and each example starts from this registry, so that no outcome depends on which
# scenario ran before it (hypothesis replays examples and needs them to behave the same).
_REGISTRY = dict(values._CURRENCIES)


def _fresh_currencies() -> None:
    if values._CURRENCIES != _REGISTRY:
        values._CURRENCIES.clear()
        values._CURRENCIES.update(_REGISTRY)
        for listener in values._CURRENCY_LISTENERS:  # every cache of amounts (codecs, msgpack)
            listener()


def _replay(scenario: Scenario) -> list[tuple[Any, ...]]:
    _fresh_currencies()
    ledger = Ledger(TraderId(scenario.trader_id))
    return [apply_or_refuse(ledger, SERIALIZER.deserialize(payload)) for _k, _t, payload in scenario.messages]


BASELINES = {scenario.name: _replay(scenario) for scenario in SCENARIOS}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SCENARIOS), st.randoms(use_true_random=False), st.data())
def test_the_ledger_applies_or_refuses_mutants_and_a_refusal_changes_nothing(
    scenario: Scenario, rng: random.Random, data: st.DataObject
) -> None:
    """A scenario's messages with mutants in between. Every mutant is applied or refused with a
    SPEC reason; and until a mutant is actually written, the scenario's own messages have exactly
    the outcomes they have without mutants (a refusal, or a duplicate, left the ledger as it was)."""
    _fresh_currencies()
    ledger = Ledger(TraderId(scenario.trader_id))
    mutator = Mutator(rng)
    payloads = [payload for _kind, _type, payload in scenario.messages]
    count = data.draw(st.integers(1, 4), label="mutants")
    at = sorted(data.draw(st.integers(0, len(payloads)), label="at") for _ in range(count))
    stream: list[tuple[bytes, int | None]] = [(payload, index) for index, payload in enumerate(payloads)]
    for offset, position in enumerate(at):
        stream.insert(position + offset, (mutator.mutate(rng.choice(payloads), SEEDS).data, None))
    written = False
    for payload, index in stream:
        decoded = decode_or_refuse(payload)
        if isinstance(decoded, PayloadError):
            assert index is None, "a vector payload was refused"
            continue
        if index is None and isinstance(decoded, Currency):
            continue  # a Currency registers process-wide: never applied from a mutant
        summary = apply_or_refuse(ledger, decoded)
        if index is None:
            written = written or (summary[0] == "applied" and not summary[1])
        elif not written:
            assert summary == BASELINES[scenario.name][index], f"message {index} of {scenario.name}"


def test_a_float_field_may_be_nan_or_infinite_and_still_round_trips() -> None:
    """Position events carry doubles; NaN and infinities are msgpack floats like any other."""
    seed = next(p for _n, _k, p in VECTORS if msgpack.unpackb(p)["type"] == "PositionOpened")
    for value in (float("nan"), float("inf"), -float("inf")):
        event = SERIALIZER.deserialize(pack({**msgpack.unpackb(seed), "signed_qty": value}))
        again = SERIALIZER.deserialize(SERIALIZER.serialize(event))
        signed = getattr(again, "signed_qty")  # noqa: B009 - any PositionEvent
        assert math.isnan(signed) if math.isnan(value) else signed == value


# -- the inputs that crashed the decoder or the core before they were fixed ----------------------------


def _with_deep(data: dict[str, Any], key: str, depth: int) -> bytes:
    mark = "\x01DEEP\x01"
    return pack({**data, key: mark}).replace(pack(mark), b"\x91" * depth + pack(1))


def _fill_map() -> dict[str, Any]:
    return next(dict(m) for m in VECTOR_MAPS if m["type"] == "OrderFilled")


def _instrument_map() -> dict[str, Any]:
    return next(dict(m) for m in VECTOR_MAPS if m["type"] == "CurrencyPair")


FOUND = {
    # TypeError in Intake (`key.startswith("ts_")` on bytes), then in the serializer.
    "bin_key": (pack({**_fill_map(), b"ts_extra": 1}), RejectReason.MALFORMED, ""),
    # RecursionError: the error message took the repr of a value nested 1,000 deep.
    "deep_enum": (_with_deep(_fill_map(), "order_side", 1000), RejectReason.INVALID_FIELD, "order_side"),
    # decimal.Overflow escaping the price codec.
    "huge_exponent": (pack({**_fill_map(), "last_px": "1e9999999"}), RejectReason.INVALID_FIELD, "last_px"),
    # ValueError from int(): more than 4,300 digits.
    "long_timestamp": (pack({**_fill_map(), "ts_event": "1" + "0" * 5000}), RejectReason.INVALID_FIELD, "ts_event"),
    "zeros_timestamp": (pack({**_fill_map(), "ts_init": "0" * 5000}), RejectReason.INVALID_FIELD, "ts_init"),
    # Accepted, then OverflowError in the fill's binary64 arithmetic.
    "quantity_1e300": (pack({**_fill_map(), "last_qty": "1e300"}), RejectReason.INVALID_FIELD, "last_qty"),
    # 26 s of CPU expanding 10^999900 into an int.
    "slow_exponent": (pack({**_fill_map(), "commission": "1e999900 USD"}), RejectReason.INVALID_FIELD, "commission"),
    # Accepted as 12 (Decimal reads any script's digits) and stored as "١٢", unreadable for a node.
    "arabic_digits": (pack({**_fill_map(), "last_qty": "\u0661\u0662"}), RejectReason.INVALID_FIELD, "last_qty"),
    # Accepted, then ValueError when the first fill of a position asked for the quote currency.
    "quote_not_str": (pack({**_instrument_map(), "quote_currency": 7}), RejectReason.INVALID_FIELD, "quote_currency"),
    "quote_empty": (pack({**_instrument_map(), "quote_currency": ""}), RejectReason.INVALID_FIELD, "quote_currency"),
    "inverse_no_base": (
        pack({**_instrument_map(), "is_inverse": True, "base_currency": None}),
        RejectReason.INVALID_FIELD,
        "base_currency",
    ),
}


@pytest.mark.parametrize("name", list(FOUND))
def test_an_input_the_fuzzers_found_is_refused_quickly_naming_its_field(name: str) -> None:
    payload, reason, field = FOUND[name]
    started = time.perf_counter()
    refused = decode_or_refuse(payload)
    assert time.perf_counter() - started < 0.5
    assert isinstance(refused, PayloadError)
    assert (refused.reason, refused.field) == (reason, field)
    assert len(str(refused)) < 300


def test_an_empty_type_is_malformed_even_on_a_map_that_looks_like_an_instrument() -> None:
    """It was taken for an instrument of type "" (and counted and logged under an empty type)."""
    refused = decode_or_refuse(pack({**_instrument_map(), "type": ""}))
    assert isinstance(refused, PayloadError)
    assert (refused.reason, refused.field) == (RejectReason.MALFORMED, "type")


# -- the plain fast path of unpacking (msgspec) against msgpack ------------------------------------

_KEYS = st.one_of(st.text(max_size=4), st.binary(max_size=3), st.integers(-3, 3), st.booleans(), st.none())
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=3)),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 == 1.0 == True would hide a difference)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=5), st.booleans())
def test_the_plain_decoder_gives_what_msgpack_gives_or_leaves_it_to_msgpack(value: Any, single_float: bool) -> None:
    from tradecache.serialization.limits import unpack_plain

    data = msgpack.packb(value, use_bin_type=True, use_single_float=single_float, strict_types=False)
    plain = unpack_plain(data)
    try:
        expected = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except ValueError:
        assert plain is None  # msgpack refuses it (a key that is not a string): so does the fast path
        return
    if plain is not None:
        assert _same(plain, expected)


def test_the_vector_payloads_are_plain() -> None:
    """The fast path is the common path: the vectors' order, position and account payloads are
    plain, but for those holding a bin (in `info`), which msgpack decodes."""
    from tradecache.serialization.limits import unpack_plain

    def holds_bin(value: Any) -> bool:
        if isinstance(value, dict):
            return any(holds_bin(item) for item in value.values())
        return any(holds_bin(item) for item in value) if isinstance(value, list) else isinstance(value, bytes)

    payloads = [payload for path in scenario_paths() for kind, _, payload in Scenario.load(path).messages
                if kind in ("order_event", "position_event", "account_state")]  # fmt: skip
    plain = 0
    for payload in payloads:
        decoded, expected = unpack_plain(payload), msgpack.unpackb(payload, raw=False)
        assert _same(decoded, expected) if decoded is not None else holds_bin(expected)
        plain += decoded is not None
    assert plain >= 0.9 * len(payloads) > 0
