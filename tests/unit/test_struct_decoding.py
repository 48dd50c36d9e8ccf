"""Order events decoded straight from their bytes (`serialization/structs.py`) give exactly what the
map decoders give: the same message, value types included, or the same PayloadError.

`MsgPackSerializer.deserialize` takes the Struct path for order events; `from_map(unpack(data))`
is the map path every other caller (ingest) takes. Both run here on the vectors' payloads and on
mutants of them (the fuzzer's `Mutator`, any values under the schema keys).
"""

from __future__ import annotations

import dataclasses
import random
import reprlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_decoder_fuzz import (
    KNOWN_TYPES,
    MSGPACK_VALUES,
    SCHEMA_KEYS,
    SEEDS,
    VECTOR_MAPS,
    Mutator,
    pack,
)
from tradecache.errors import PayloadError
from tradecache.model.enums import CurrencyType
from tradecache.model.values import Currency, FixedPoint, Money, currency_registry, register_currency
from tradecache.serialization import MsgPackSerializer, codecs
from tradecache.serialization.codecs import MISS, Codec
from tradecache.serialization.limits import PLAIN_MAP
from tradecache.serialization.msgpack import unpack
from tradecache.serialization.schemas import (
    ACCOUNT_STATE_FIELDS,
    ORDER_SCHEMAS,
    POSITION_SCHEMAS,
    SUBMIT_ORDER_FIELDS,
    SUBMIT_ORDER_LIST_FIELDS,
)
from tradecache.serialization.structs import ORDER_STRUCTS, decode_struct

SERIALIZER = MsgPackSerializer()
ORDER_SEEDS = [seed for seed, data in zip(SEEDS, VECTOR_MAPS, strict=True) if data.get("type") in ORDER_SCHEMAS]


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (an identifier is a str subclass, 1 == True).

    Walked with a stack, not recursion: both paths accept values nested ~1,000 deep inside
    free-form fields (within the decode limits), deeper than Python's recursion limit."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if dataclasses.is_dataclass(x):
            pending.extend((getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x))
        elif isinstance(x, FixedPoint):
            same_currency = not isinstance(x, Money) or x.currency == y.currency
            if not (x.raw == y.raw and x.precision == y.precision and same_currency):
                return False
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending.extend((x[key], y[key]) for key in x)
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, float) and x != x:
            if y == y:
                return False
        elif x != y:
            return False
    return True


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except PayloadError as error:
        return ("refused", error.reason, error.field, str(error))


def assert_both_paths_agree(data: bytes) -> None:
    by_struct = _outcome(SERIALIZER.deserialize, data)
    by_map = _outcome(lambda payload: SERIALIZER.from_map(unpack(payload)), data)
    assert _same(by_struct, by_map), (reprlib.repr(by_struct), reprlib.repr(by_map))


def test_every_order_schema_has_a_struct() -> None:
    assert set(ORDER_STRUCTS) == set(ORDER_SCHEMAS)
    assert all(struct is not None for struct in ORDER_STRUCTS.values())


def test_the_vectors_order_events_take_the_struct_path_and_decode_as_from_their_maps() -> None:
    taken = 0
    for seed in SEEDS:
        assert_both_paths_agree(seed)
    for seed in ORDER_SEEDS:
        taken += decode_struct(seed) is not None
    # Only payloads holding a bin (in `info`) or keys the schema does not name go the map way.
    assert taken >= 0.9 * len(ORDER_SEEDS) > 0


def test_a_key_the_schema_does_not_name_and_a_bin_are_left_to_the_map_path() -> None:
    data = msgpack.unpackb(ORDER_SEEDS[0], raw=False)
    for changed in ({**data, "extra": 1}, {**data, "info": {"raw": b"\x00"}}):
        payload = pack(changed)
        assert decode_struct(payload) is None
        assert_both_paths_agree(payload)


def test_duplicate_keys_read_as_their_last_value_on_both_paths() -> None:
    data = msgpack.unpackb(ORDER_SEEDS[0], raw=False)
    entries = [pack(key) + pack(value) for key, value in data.items()]
    again = pack("ts_event") + pack("1")
    payload = bytes([0xDE]) + (len(entries) + 1).to_bytes(2, "big") + b"".join(entries) + again
    assert_both_paths_agree(payload)


MUTANTS = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MUTANTS
@given(st.sampled_from(ORDER_SEEDS), st.randoms(use_true_random=False))
def test_mutated_order_events_decode_alike_on_both_paths(seed: bytes, rng: random.Random) -> None:
    assert_both_paths_agree(Mutator(rng).mutate(seed, SEEDS).data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN_TYPES), st.dictionaries(st.sampled_from(SCHEMA_KEYS), MSGPACK_VALUES, max_size=10))
def test_maps_of_any_values_decode_alike_on_both_paths(type_name: str, fields: dict[str, Any]) -> None:
    assert_both_paths_agree(pack({"type": type_name, **fields}))


ORDER_MAPS = [data for data in VECTOR_MAPS if data.get("type") in ORDER_SCHEMAS]


@MUTANTS
@given(
    st.sampled_from(range(len(ORDER_MAPS))),
    st.dictionaries(st.sampled_from(SCHEMA_KEYS), MSGPACK_VALUES, max_size=3),
    st.sets(st.sampled_from(SCHEMA_KEYS), max_size=2),
)
def test_order_events_with_keys_changed_or_removed_decode_alike_on_both_paths(
    index: int, changes: dict[str, Any], removed: set[str]
) -> None:
    data = {key: value for key, value in ORDER_MAPS[index].items() if key not in removed}
    assert_both_paths_agree(pack({**data, **changes}))


# -- the codecs' `fast` and `fast_wire` expressions (inlined by `compile_decoder`) ----------------

FAST_CODECS = {
    id(codec): codec
    for fields in (*(schema.fields for schema in (*ORDER_SCHEMAS.values(), *POSITION_SCHEMAS.values())),
                   ACCOUNT_STATE_FIELDS, SUBMIT_ORDER_FIELDS, SUBMIT_ORDER_LIST_FIELDS)
    for codec in (field.codec.inner or field.codec for field in fields)
    if codec.fast is not None or codec.fast_wire is not None
}  # fmt: skip
# Values seen in the vectors (valid ones, so the expressions' hits are tried too) and oddities.
SCALARS = sorted(
    {value for data in VECTOR_MAPS for value in data.values() if isinstance(value, (str, int))}
    | {"", " ", "USD ", "US D", "usd", "USDT", "0", "-1", "1e3", "2**64", "\u0661"},
    key=repr,
)


def _fast(expression: str, codec: Codec, value: Any) -> Any:
    return eval(expression.format(v="value", e="env"), {"MISS": MISS, "env": codec.env, "value": value})


def assert_fast_gives_what_decode_gives(codec: Codec, value: Any) -> None:
    """Each expression gives MISS, or what `decode` gives (which then refuses nothing); `fast_wire`
    is tried on values of the codec's one wire class only, as msgspec hands it no other."""
    try:
        decoded: Any = codec.decode(value, "key")  # first: it fills the codec's cache, if any
    except PayloadError:
        decoded = MISS
    wire_class = dict if codec.wire is PLAIN_MAP else codec.wire
    expressions = [codec.fast] + ([codec.fast_wire] if value.__class__ is wire_class else [])
    for expression in filter(None, expressions):
        fast = _fast(expression, codec, value)
        assert fast is MISS or (decoded is not MISS and _same(fast, decoded)), (expression, value, fast, decoded)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FAST_CODECS)), st.one_of(MSGPACK_VALUES, st.sampled_from(SCALARS)))
def test_every_codecs_fast_expressions_give_what_decode_gives(codec_id: int, value: Any) -> None:
    assert_fast_gives_what_decode_gives(FAST_CODECS[codec_id], value)


def test_every_fast_expression_meets_each_sample_value() -> None:
    assert {codecs.CURRENCY.fast_wire, codecs.PRICE.fast_wire, codecs.TEXT.fast_wire} <= {
        codec.fast_wire for codec in FAST_CODECS.values()
    }
    for codec in FAST_CODECS.values():
        for value in SCALARS:
            assert_fast_gives_what_decode_gives(codec, value)


def test_a_registered_code_with_a_space_is_refused_by_the_fast_currency_expressions_too() -> None:
    """`_decode_currency` refuses a code with a space whatever is registered: the registry lookup
    must not take it (the autouse fixture in tests/conftest.py restores the registry after)."""
    register_currency(Currency("ZZ Q", 2, 0, "spaced", CurrencyType.CRYPTO))
    assert currency_registry()["ZZ Q"].name == "spaced"
    assert_fast_gives_what_decode_gives(codecs.CURRENCY, "ZZ Q")
    assert _fast(codecs.CURRENCY.fast_wire or "", codecs.CURRENCY, "ZZ Q") is MISS
    assert _fast(codecs.CURRENCY.fast_wire or "", codecs.CURRENCY, "USD") is Currency.from_str("USD")


@pytest.mark.parametrize("seed_index", [2073, 2099])
def test_values_nested_near_the_depth_limit_decode_alike_on_both_paths(seed_index: int) -> None:
    """Mutants a fresh-clone run drew (an `options` value and an `info` value ~1,000 arrays deep):
    both paths accept them, and comparing them must not exhaust Python's recursion limit."""
    mutant = Mutator(random.Random(seed_index)).apply("deep_nesting", seed=ORDER_SEEDS[seed_index % len(ORDER_SEEDS)])
    assert mutant.how.startswith("deep_nesting_")
    assert not isinstance(_outcome(SERIALIZER.deserialize, mutant.data), tuple)  # accepted, not refused
    assert_both_paths_agree(mutant.data)
