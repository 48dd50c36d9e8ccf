"""Order events decoded straight from their bytes (`serialization/structs.py`) give exactly what the
map decoders give: the same message, value types included, or the same PayloadError.

`MsgPackSerializer.deserialize` takes the Struct path for order events; `from_map(unpack(data))`
is the map path every other caller (ingest) takes. Both run here on the vectors' payloads and on
mutants of them (the fuzzer's `Mutator`, any values under the schema keys).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgpack
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
from tradecache.model.values import FixedPoint, Money
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.msgpack import unpack
from tradecache.serialization.schemas import ORDER_SCHEMAS
from tradecache.serialization.structs import ORDER_STRUCTS, decode_struct

SERIALIZER = MsgPackSerializer()
ORDER_SEEDS = [seed for seed, data in zip(SEEDS, VECTOR_MAPS, strict=True) if data.get("type") in ORDER_SCHEMAS]


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (an identifier is a str subclass, 1 == True)."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, FixedPoint):
        same_currency = not isinstance(a, Money) or a.currency == b.currency
        return a.raw == b.raw and a.precision == b.precision and same_currency
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except PayloadError as error:
        return ("refused", error.reason, error.field, str(error))


def assert_both_paths_agree(data: bytes) -> None:
    by_struct = _outcome(SERIALIZER.deserialize, data)
    by_map = _outcome(lambda payload: SERIALIZER.from_map(unpack(payload)), data)
    assert _same(by_struct, by_map), (by_struct, by_map)


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
