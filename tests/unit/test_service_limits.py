"""The load service's pure limits: the size floor of a reply item really is a floor, and the
encoders of `serialization/deep.py` agree with the C libraries and never fail on depth."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.factories import SERIALIZER, OrderEvents, account_state, currency_pair, fill
from tradecache.model import Collection
from tradecache.model.enums import AccountType, OrderSide
from tradecache.serialization.deep import json_bytes, json_value, msgpack_bytes
from tradecache.service.endpoints import Built, next_chunk
from tradecache.service.items import account_item, currency_item, order_item, position_item
from tradecache.service.limits import MIN_READ_CHUNK, READ_CHUNK, SNAPSHOT_KEYS, min_entry_bytes
from tradecache.service.protocol import encode_entry, encode_reply, pack_with_raw_list

CURRENCY_HASH = {"precision": b"0", "iso4217": b"0", "name": b"X", "currency_type": b"FIAT"}


def smallest_items() -> dict[Collection, tuple[str, dict[str, Any], list[bytes]]]:
    """Each collection's item with as little in it as a valid entity can have: (id, item, stored)."""
    order = [SERIALIZER.serialize(OrderEvents("O", instrument_id="A/B.C").initialized())]
    position = [SERIALIZER.serialize(fill("O", OrderSide.BUY, "1", "1.0", "0 USD", position_id="P"))]
    account = [SERIALIZER.serialize(account_state(AccountType.CASH, [("USD", "0", "0")]))]
    instrument = SERIALIZER.serialize(currency_pair())
    return {
        Collection.ORDERS: ("O", order_item(SERIALIZER, order) or {}, order),
        Collection.POSITIONS: ("P", position_item(SERIALIZER, position, instrument) or {}, position),
        Collection.ACCOUNTS: ("A", account_item(SERIALIZER, account) or {}, account),
        Collection.CURRENCIES: ("X", currency_item("X", CURRENCY_HASH) or {}, []),
    }


@pytest.mark.parametrize("as_msgpack", [False, True], ids=["json", "msgpack"])
def test_no_reply_entry_is_smaller_than_its_collections_floor(as_msgpack: bool) -> None:
    for collection, (entity_id, item, stored) in smallest_items().items():
        assert item, collection
        if collection in SNAPSHOT_KEYS:
            assert set(SNAPSHOT_KEYS[collection]) <= set(item), collection
        if as_msgpack and stored:  # rebuilt entities carry their stored events as they are
            encoded = pack_with_raw_list({k: v for k, v in item.items() if k != "events"}, "events", stored)
        else:
            encoded = encode_reply(item, as_msgpack)
        entry = encode_entry(entity_id, encoded, as_msgpack)
        assert len(entry) >= min_entry_bytes(collection), (collection, len(entry))
    for collection in (Collection.INSTRUMENTS, Collection.STRATEGIES, Collection.SUBMIT_ORDER):
        assert len(encode_entry("I", encode_reply({}, as_msgpack), as_msgpack)) >= min_entry_bytes(collection)


def test_an_order_entry_floor_makes_10000_orders_too_many_for_one_megabyte() -> None:
    assert 10_000 * min_entry_bytes(Collection.ORDERS) > 1024 * 1024


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_json_at_any_depth_reads_and_writes_like_the_standard_library(value: Any) -> None:
    from tradecache.serialization.deep import _dump_json, _parse_json

    for indent in (None, 2):
        separators = (",", ": ") if indent else (",", ":")
        expected = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators)
        assert _dump_json(value, indent) == expected
        assert _parse_json(expected) == json.loads(expected)


@pytest.mark.parametrize("depth", [10, 300, 1000, 2000])
def test_nesting_of_any_depth_round_trips_in_json_and_msgpack(depth: int) -> None:
    value: Any = {"leaf": b"\x00"}
    for n in range(depth):
        value = {"k": [value, n]} if n % 2 else {"k": value}
    text = json_bytes(value)
    assert json_bytes(json_value(text)) == text
    assert json_bytes(json_value(json_bytes(value, indent=2))) == text
    packed = msgpack_bytes(value)
    if depth <= 500:  # within msgpack's own limit the fast and the slow path agree
        assert packed == msgpack.packb(value, use_bin_type=True)
    assert packed.startswith(b"\x81\xa1k")


@pytest.mark.parametrize("text", ["{", "[1,]", '{"a" 1}', "01", "tru", "[1] x", "", '{"a":1,}'])
def test_text_that_is_not_json_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        json_value(text)
    from tradecache.serialization.deep import _parse_json

    with pytest.raises(ValueError):
        _parse_json(text)


# -- how much a page reads next ----------------------------------------------------------------


def _page_of(entries: int, size: int) -> Built:
    built = Built()
    for n in range(entries):
        assert built.add(f"O-{n}", b"x" * size, True, budget=10**9)
    return built


def test_a_page_reads_full_chunks_until_its_entries_tell_their_size() -> None:
    assert next_chunk(Built(), 200, budget=1_000_000) == READ_CHUNK


def test_a_page_reads_about_what_its_room_holds_once_entries_tell_their_size() -> None:
    built = _page_of(200, 1_000)
    average = (built.size - Built().size) / 200
    assert next_chunk(built, 200, budget=10_000_000) == READ_CHUNK  # room for thousands: a whole chunk
    for budget in (420_000, 480_000, 560_000):
        fits = (budget - built.size - 200 * average) / average  # after the 200 in hand
        assert MIN_READ_CHUNK < fits < READ_CHUNK
        assert fits <= next_chunk(built, 200, budget=budget) <= 1.25 * fits + 2, budget


def test_a_nearly_full_page_reads_the_fewest_not_a_whole_chunk() -> None:
    built = _page_of(590, 1_700)
    assert next_chunk(built, 0, budget=1_000_000) == MIN_READ_CHUNK  # ~0 room left
    assert next_chunk(built, 200, budget=1_000_000) == MIN_READ_CHUNK  # the chunk in hand fills it
