"""The Struct decoders run in C (`serialization/_struct_decode.c`) against the Python source
`compile_decoder` writes for the same schema: the same result (types included) or the same error,
on the vectors, on mutants of them, and on the values each step kind must tell apart.

(`test_struct_decoding.py` holds the Struct path, now compiled, to the map path as well.)
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_decoder_fuzz import SEEDS, Mutator
from tests.unit.test_struct_decoding import ORDER_SEEDS, _same
from tradecache.errors import PayloadError
from tradecache.serialization import _struct_decode
from tradecache.serialization.msgpack import _FROM_STRUCT, compile_decoder, compiled_struct_decoder
from tradecache.serialization.schemas import ACCOUNT_STATE_FIELDS, ORDER_SCHEMAS, SUBMIT_ORDER_FIELDS, Schema
from tradecache.serialization.structs import ORDER_STRUCTS, STRUCT_DECODE

SCHEMAS = {**ORDER_SCHEMAS, "AccountState": Schema(dict, ACCOUNT_STATE_FIELDS),
           "SubmitOrder": Schema(dict, SUBMIT_ORDER_FIELDS)}  # fmt: skip
COMPILED = {name: compiled_struct_decoder(schema) for name, schema in SCHEMAS.items()}
PYTHON = {name: compile_decoder(schema, from_struct=True, native=False) for name, schema in SCHEMAS.items()}


def outcome(decode: Any, wire: Any) -> Any:
    try:
        return decode(wire)
    except PayloadError as error:
        return ("refused", type(error), error.reason, error.field, str(error))
    except Exception as error:  # whatever the source raises, the C must raise alike
        return ("raised", type(error), str(error))


def assert_alike(name: str, wire: Any) -> None:
    by_c, by_python = outcome(COMPILED[name], wire), outcome(PYTHON[name], wire)
    assert _same(by_c, by_python), (name, by_c, by_python)


def test_every_schema_a_struct_decodes_is_compiled() -> None:
    assert all(isinstance(decoder, _struct_decode.StructDecoder) for decoder in COMPILED.values()), [
        name for name, decoder in COMPILED.items() if decoder is None
    ]
    # And the deserializer's own decoders are the compiled ones.
    assert all(isinstance(decoder, _struct_decode.StructDecoder) for decoder in _FROM_STRUCT.values())


def test_the_vectors_decode_alike() -> None:
    taken = 0
    for seed in ORDER_SEEDS:
        try:
            wire = STRUCT_DECODE(seed)
        except msgspec.DecodeError:
            continue
        assert_alike(wire.__class__.__name__.removeprefix("Wire"), wire)
        taken += 1
    assert taken > 0


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ORDER_SEEDS), st.randoms(use_true_random=False))
def test_mutated_order_events_decode_alike(seed: bytes, rng: random.Random) -> None:
    try:
        wire = STRUCT_DECODE(Mutator(rng).mutate(seed, SEEDS).data)
    except (msgspec.DecodeError, RecursionError):
        return
    assert_alike(wire.__class__.__name__.removeprefix("Wire"), wire)


def _submitted(**changes: Any) -> Any:
    """An OrderSubmitted Struct from the vectors, with `changes` set as they are (a Struct made
    by hand is not type-checked: values msgspec never gives reach the decoder too)."""
    seed = next(seed for seed in ORDER_SEEDS if b"OrderSubmitted" in seed)
    wire = STRUCT_DECODE(seed)
    fields = {name: getattr(wire, name) for name in wire.__struct_fields__}
    return ORDER_STRUCTS["OrderSubmitted"](**{**fields, **changes})


TIMESTAMPS = [0, 1, -1, 2**64 - 1, 2**64, True, 1.0, "0", "0001", "1" * 19, "9" * 19, "1" * 20, "9" * 20,
              str(2**64), "", " 1", "1 ", "+1", "1_0", "\u0661\u0662", "\u00b2", "12a", None, b"1"]  # fmt: skip
IDENTIFIERS = ["SIM-001", "", " x", "x y", "A" * 300, "\x00", 1, None, True]
UUIDS = ["8329fed5-2d16-4937-b564-c387c8e2efec", "8329FED5-2D16-4937-B564-C387C8E2EFEC", "not-a-uuid", "", 5, None]


@pytest.mark.parametrize("value", TIMESTAMPS, ids=repr)
def test_timestamps_decode_alike(value: Any) -> None:
    assert_alike("OrderSubmitted", _submitted(ts_event=value))
    assert_alike("OrderSubmitted", _submitted(ts_init=value))


@pytest.mark.parametrize("value", IDENTIFIERS, ids=repr)
def test_identifiers_decode_alike(value: Any) -> None:
    assert_alike("OrderSubmitted", _submitted(account_id=value))
    assert_alike("OrderSubmitted", _submitted(client_order_id=value))


@pytest.mark.parametrize("value", UUIDS, ids=repr)
def test_event_ids_decode_alike(value: Any) -> None:
    assert_alike("OrderSubmitted", _submitted(event_id=value))


NEW_IDS = ["O-new-1", "", "a:b", ":", "\u0438\u0434-1", "a\x00b", "a\u2028b", "x y", " ", "~", "A" * 300, "\x7f"]
# An id of each rule: a key part (ClientOrderId, PositionId), any text (VenueOrderId, TradeId),
# and one the C leaves to the codec's decode on every first sight (AccountId).
ID_FIELDS = ["client_order_id", "position_id", "venue_order_id", "trade_id", "account_id"]


def _filled(**changes: Any) -> Any:
    seed = next(seed for seed in ORDER_SEEDS if b"OrderFilled" in seed)
    wire = STRUCT_DECODE(seed)
    fields = {name: getattr(wire, name) for name in wire.__struct_fields__}
    return ORDER_STRUCTS["OrderFilled"](**{**fields, **changes})


def _cache_of(field: str) -> dict[str, Any]:
    codec = next(f.codec for f in ORDER_SCHEMAS["OrderFilled"].fields if f.key == field)
    cache: dict[str, Any] = (codec.inner or codec).env
    return cache


def _first_sight(decoder: Any, field: str, value: Any, held: dict[str, Any]) -> tuple[Any, list[tuple[Any, ...]]]:
    """`decoder`'s outcome for a fill whose `field` is `value`, the field's cache holding `held`
    before; and the cache after, with each value's type."""
    cache = _cache_of(field)
    cache.clear()
    cache.update(held)
    result = outcome(decoder, _filled(**{field: value}))
    after = [(key, type(value), value) for key, value in cache.items()]
    return result, after


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("value", NEW_IDS, ids=repr)
def test_an_identifier_seen_for_the_first_time_is_built_and_remembered_alike(field: str, value: str) -> None:
    saved = dict(_cache_of(field))
    try:
        by_c = _first_sight(COMPILED["OrderFilled"], field, value, {})
        by_python = _first_sight(PYTHON["OrderFilled"], field, value, {})
    finally:
        _cache_of(field).clear()
        _cache_of(field).update(saved)
    assert _same(by_c, by_python), (by_c, by_python)


@pytest.mark.parametrize("field", ID_FIELDS)
def test_a_full_identifier_cache_is_emptied_before_a_new_id_alike(field: str) -> None:
    codec = next(f.codec for f in ORDER_SCHEMAS["OrderFilled"].fields if f.key == field)
    assert (codec.inner or codec).identifier is not None
    size = (codec.inner or codec).identifier[2]
    full = {f"held-{n}": f"held-{n}" for n in range(size)}
    saved = dict(_cache_of(field))
    try:
        by_c = _first_sight(COMPILED["OrderFilled"], field, "O-9", full)
        by_python = _first_sight(PYTHON["OrderFilled"], field, "O-9", full)
    finally:
        _cache_of(field).clear()
        _cache_of(field).update(saved)
    assert _same(by_c, by_python)
    assert len(by_c[1]) == 1  # emptied, then the new id


def test_nullable_fields_enums_and_currencies_decode_alike() -> None:
    seed = next(seed for seed in ORDER_SEEDS if b"OrderFilled" in seed)
    wire = STRUCT_DECODE(seed)
    fields = {name: getattr(wire, name) for name in wire.__struct_fields__}
    filled = ORDER_STRUCTS["OrderFilled"]
    for changes in ({"venue_order_id": None}, {"position_id": None}, {"info": {"a": 1}}, {"order_side": "SIDEWAYS"},
                    {"order_side": "BUY"}, {"liquidity_side": 3}, {"currency": "USD"}, {"currency": "US D"},
                    {"currency": "NOPE"}, {"last_px": "1.0"}, {"last_px": "x"}, {"commission": "1 USD"}):  # fmt: skip
        assert_alike("OrderFilled", filled(**{**fields, **changes}))


def test_the_built_event_sets_every_slot_as_the_source_does() -> None:
    wire = _submitted()
    by_c, by_python = COMPILED["OrderSubmitted"](wire), PYTHON["OrderSubmitted"](wire)
    assert type(by_c) is type(by_python)
    for field in dataclasses.fields(by_c):
        assert getattr(by_c, field.name) == getattr(by_python, field.name), field.name


def test_a_struct_decoder_is_built_once_from_what_it_is_given() -> None:
    decoder = COMPILED["OrderSubmitted"]
    with pytest.raises(TypeError):
        decoder()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        decoder.__init__((), 0, dict, object.__new__, (), None)  # type: ignore[misc]
    with pytest.raises(ValueError):
        _struct_decode.StructDecoder((("a", 99, False, None, str, "a"),), 0, dict, object.__new__, (), None)
    with pytest.raises(TypeError):
        _struct_decode.StructDecoder((("a", _struct_decode.STEP_DICT, False, None, str, "a"),), 0, dict,
                                     object.__new__, (), None)  # fmt: skip
