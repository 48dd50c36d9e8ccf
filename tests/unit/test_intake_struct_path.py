"""`Intake.check` takes the common messages (order events, SubmitOrder, AccountState) straight from
their bytes (`msgpack.decode_common`) and everything else the map path; the two give exactly the
same outcome: the same message (value types included) with the same `canonical` flag, or the same
refusal (reason, field, text, subject kind, type name).

Each payload is checked twice: by an intake as built (Struct path first) and by one whose Struct
path is off (`struct_size = -1`: the map path only, as before). Payloads: the vectors', the
fuzzer's mutants of them, maps of any values under the schema keys, and payloads at and over the
decode limits and field caps, with the default limits and with small ones.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_decoder_fuzz import (
    MSGPACK_VALUES,
    SCHEMA_KEYS,
    SEEDS,
    VECTORS,
    Mutator,
    delivery,
    pack,
)
from tests.unit.test_struct_decoding import _same
from tradecache.ingest.intake import Accepted, Intake
from tradecache.model.messages import Kind
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.limits import DEFAULT_LIMITS, FREE_FORM_DEPTH, DecodeLimits
from tradecache.serialization.msgpack import decode_common
from tradecache.serialization.structs import COMMON_STRUCTS
from tradecache.wire import Subjects

SUBJECTS = Subjects("tradecache", "FUZZ-001")
SERIALIZER = MsgPackSerializer()
SMALL_LIMITS = DecodeLimits.derive(max_field_bytes=256, max_state_fields=64, max_state_value_bytes=512)
COMMON_TYPES = sorted(COMMON_STRUCTS)
COMMON_VECTORS = [
    (kind, payload)
    for _name, kind, payload in VECTORS
    if msgpack.unpackb(payload, raw=False).get("type") in COMMON_TYPES
]


def intakes(limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[Intake, Intake]:
    """(as built, map path only)."""
    reference = Intake(SUBJECTS, SERIALIZER, max_payload_bytes=1 << 20, limits=limits)
    reference.struct_size = -1
    return Intake(SUBJECTS, SERIALIZER, max_payload_bytes=1 << 20, limits=limits), reference


DEFAULT = intakes()
SMALL = intakes(SMALL_LIMITS)


def outcome(intake: Intake, subject: str, data: bytes) -> Any:
    item = intake.check(delivery(subject, data))
    if isinstance(item, Accepted):
        return ("accepted", item.kind, item.message, item.canonical)
    error = item.error
    return ("refused", item.kind, item.type_name, error.reason, getattr(error, "field", None), str(error))


def assert_same_outcome(data: bytes, kind: Kind | str = Kind.ORDER, pair: tuple[Intake, Intake] = DEFAULT) -> Any:
    subject = SUBJECTS.inbound_for(kind) if isinstance(kind, Kind) else f"tradecache.in.FUZZ-001.{kind}"
    by_struct, by_map = (outcome(intake, subject, data) for intake in pair)
    assert _same(by_struct, by_map), (by_struct, by_map)
    return by_struct


def test_the_vectors_common_messages_take_the_struct_path_and_check_as_on_the_map_path() -> None:
    taken = 0
    for kind, payload in COMMON_VECTORS:
        found = assert_same_outcome(payload, kind)
        assert found[0] == "accepted"
        taken += decode_common(payload) is not None
    for _name, kind, payload in VECTORS:  # every other type too, and on the small limits
        assert_same_outcome(payload, kind)
        assert_same_outcome(payload, kind, SMALL)
    # Only payloads holding a bin (in `info`) or keys the schema does not name go the map way.
    assert taken >= 0.9 * len(COMMON_VECTORS) > 0
    kinds = {kind for kind, _payload in COMMON_VECTORS}
    assert {Kind.ORDER, Kind.ACCOUNT} <= kinds


def test_both_canonical_flags_come_out_as_on_the_map_path() -> None:
    flags = set()
    for kind, payload in COMMON_VECTORS:
        data = msgpack.unpackb(payload, raw=False)
        as_ints = {key: int(value) if key.startswith("ts_") and isinstance(value, str) else value
                   for key, value in data.items()}  # fmt: skip
        for changed in (data, as_ints):
            found = assert_same_outcome(pack(changed), kind)
            flags.add(found[3])
    assert flags == {True, False}


def test_a_common_message_on_another_kinds_subject_is_refused_as_on_the_map_path() -> None:
    for kind, payload in COMMON_VECTORS:
        for other in [*(k for k in Kind if k != kind), "gossip"]:
            found = assert_same_outcome(payload, other)
            assert found[0] == "refused"


def test_a_submit_order_whose_order_has_no_type_or_another_is_refused_as_on_the_map_path() -> None:
    commands = [(kind, payload) for kind, payload in COMMON_VECTORS if b"SubmitOrder" in payload]
    assert commands
    for kind, payload in commands:
        data = msgpack.unpackb(payload, raw=False)
        if data.get("type") != "SubmitOrder":
            continue
        untyped = {key: value for key, value in data["order"].items() if key != "type"}
        for order in (untyped, {**untyped, "type": "OrderDenied"}, {**untyped, "type": 1}):
            found = assert_same_outcome(pack({**data, "order": order}), kind)
            assert found[0] == "refused"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def test_payloads_at_and_over_the_limits_are_refused_as_on_the_map_path() -> None:
    kind, payload = next((kind, p) for kind, p in COMMON_VECTORS if b"OrderFilled" in p)
    data = msgpack.unpackb(payload, raw=False)
    for limits, pair in ((DEFAULT_LIMITS, DEFAULT), (SMALL_LIMITS, SMALL)):
        cases = [
            {**data, "info": {"text": "x" * (limits.max_field_bytes + 1)}},  # a string over max_str_len
            {**data, "info": dict.fromkeys("ab", "x" * (limits.max_field_bytes // 2 + 8))},  # field_too_large
            {**data, "info": {"text": "x" * (limits.max_field_bytes - 64)}},  # within the cap
            {**data, "info": {f"k{n}": n for n in range(limits.max_field_bytes // 4)}},
            {**data, "info": nested(FREE_FORM_DEPTH + 4)},  # limit_exceeded
            {**data, "info": nested(FREE_FORM_DEPTH + 2)},  # as deep as allowed
            {**data, "info": {"list": list(range(limits.max_elements + 1))}},  # limit_exceeded
            {**data, "venue_order_id": "V" * (limits.max_str_len + 1)},  # a string over the cap
            {**data, "reconciliation": [[[[[[[[[[[[[[1]]]]]]]]]]]]]]},
        ]
        reasons = set()
        for case in cases:
            found = assert_same_outcome(pack(case), kind, pair)
            reasons.add(found[3] if found[0] == "refused" else "accepted")
        assert {"accepted", "limit_exceeded", "field_too_large"} <= {str(reason) for reason in reasons}
    deep = b"\x91" * 10_000 + b"\x01"
    assert assert_same_outcome(deep)[3] == "limit_exceeded"


MUTANTS = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MUTANTS
@given(st.sampled_from(COMMON_VECTORS), st.randoms(use_true_random=False), st.booleans())
def test_mutated_common_messages_check_alike_on_both_paths(
    vector: tuple[Kind, bytes], rng: random.Random, small: bool
) -> None:
    kind, seed = vector
    assert_same_outcome(Mutator(rng).mutate(seed, SEEDS).data, kind, SMALL if small else DEFAULT)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(COMMON_TYPES), st.dictionaries(st.sampled_from(SCHEMA_KEYS), MSGPACK_VALUES, max_size=10))
def test_maps_of_any_values_check_alike_on_both_paths(type_name: str, fields: dict[str, Any]) -> None:
    kind = Kind.ACCOUNT if type_name == "AccountState" else Kind.ORDER
    assert_same_outcome(pack({"type": type_name, **fields}), kind)


COMMON_MAPS = [(kind, msgpack.unpackb(payload, raw=False)) for kind, payload in COMMON_VECTORS]
ACCOUNT_MAPS = [data for kind, data in COMMON_MAPS if data.get("type") == "AccountState"]


@MUTANTS
@given(
    st.sampled_from(range(len(COMMON_MAPS))),
    st.dictionaries(st.sampled_from([*SCHEMA_KEYS, "balances", "margins", "order"]), MSGPACK_VALUES, max_size=3),
    st.sets(st.sampled_from([*SCHEMA_KEYS, "balances", "margins", "order"]), max_size=2),
)
def test_common_messages_with_keys_changed_or_removed_check_alike_on_both_paths(
    index: int, changes: dict[str, Any], removed: set[str]
) -> None:
    kind, data = COMMON_MAPS[index]
    data = {key: value for key, value in data.items() if key not in removed}
    assert_same_outcome(pack({**data, **changes}), kind)


def test_account_states_without_balances_or_margins_check_as_on_the_map_path() -> None:
    outcomes = []
    for data in ACCOUNT_MAPS:
        without = {key: value for key, value in data.items() if key not in ("balances", "margins")}
        for changed in ({**data, "balances": []}, without, {**without, "balances": data["balances"]}):
            outcomes.append(assert_same_outcome(pack(changed), Kind.ACCOUNT)[0])
    assert {"accepted", "refused"} <= set(outcomes)


BALANCE_KEYS = ["type", "total", "locked", "free", "currency", "initial", "maintenance", "instrument_id", "extra"]


@MUTANTS
@given(
    st.sampled_from(range(len(ACCOUNT_MAPS))),
    st.sampled_from(["balances", "margins"]),
    st.dictionaries(st.sampled_from(BALANCE_KEYS), MSGPACK_VALUES | st.sampled_from(["1.00", "0", "USD", ""]),
                    max_size=3),
    st.sets(st.sampled_from(BALANCE_KEYS), max_size=2),
)  # fmt: skip
def test_account_states_with_balances_changed_check_alike_on_both_paths(
    index: int, which: str, changes: dict[str, Any], removed: set[str]
) -> None:
    data = ACCOUNT_MAPS[index]
    items = data.get(which) or [{"type": "MarginBalance", "initial": "1.00", "maintenance": "0.50",
                                 "currency": "USD", "instrument_id": None}]  # fmt: skip
    first = {key: value for key, value in items[0].items() if key not in removed}
    assert_same_outcome(pack({**data, which: [{**first, **changes}, *items[1:]]}), Kind.ACCOUNT)
