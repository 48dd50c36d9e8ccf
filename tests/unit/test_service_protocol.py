"""The load service's pure parts: request parsing, cursors, reply encoding, the reply cache."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradecache.service.endpoints import Built
from tradecache.service.protocol import (
    BadRequest,
    PageRequest,
    decode_cursor,
    encode_cursor,
    encode_reply,
    error_body,
    id_request,
    page_request,
    reply_parts,
    wants_msgpack,
)
from tradecache.service.reply_cache import ReplyCache, digest


@given(st.text(min_size=1).filter(lambda text: "\x00" not in text))
def test_a_cursor_round_trips_any_id(entity_id: str) -> None:
    cursor = encode_cursor(entity_id)
    assert cursor.isascii() and "\n" not in cursor
    assert decode_cursor(cursor) == entity_id
    assert page_request(json.dumps({"cursor": cursor, "limit": 5}).encode()) == PageRequest(entity_id, 5)


@pytest.mark.parametrize("cursor", ["", "!!", "a", "T0tMS"])
def test_a_cursor_we_did_not_give_out_is_refused(cursor: str) -> None:
    with pytest.raises(BadRequest, match="is not a cursor this service gave out"):
        decode_cursor(cursor)


def test_empty_and_empty_object_bodies_mean_everything() -> None:
    assert page_request(b"") == PageRequest(None, None)
    assert page_request(b"  {} ") == PageRequest(None, None)


def test_id_requests_name_the_missing_key_and_the_wrong_type() -> None:
    assert id_request(b'{"position_id": "P-1"}', "position_id") == "P-1"
    with pytest.raises(BadRequest, match="missing 'position_id'"):
        id_request(b"", "position_id")
    with pytest.raises(BadRequest, match="'position_id' must be a string, got list"):
        id_request(b'{"position_id": []}', "position_id")
    with pytest.raises(BadRequest, match="not JSON"):
        id_request(b"\xff\xfe", "position_id")


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300, 70_000])
@pytest.mark.parametrize("as_msgpack", [False, True])
def test_built_entries_join_into_the_encoded_map_and_their_size_is_bounded_before_joining(
    count: int, as_msgpack: bool
) -> None:
    items = {f"O-{n}": {"n": n, "raw": b"\x00\x01"} for n in range(count)}
    built = Built()
    for key, value in items.items():
        assert built.add(key, encode_reply(value, as_msgpack), as_msgpack, budget=1 << 30)
    body = b"".join(reply_parts(built.entries, as_msgpack))
    assert len(body) <= built.size
    if as_msgpack:
        assert msgpack.unpackb(body, raw=False) == items
    else:
        assert json.loads(body) == {key: {"n": v["n"], "raw": "AAE="} for key, v in items.items()}


def test_a_built_reply_stops_at_its_budget_and_names_the_item_that_did_not_fit() -> None:
    built = Built()
    item = encode_reply({"x": "y" * 100}, False)
    added = [built.add(f"O-{n}", item, False, budget=1000) for n in range(20)]
    assert added == [True] * added.count(True) + [False] * added.count(False) and added.count(True) >= 8
    kept = added.count(True)
    assert built.last == f"O-{kept - 1}" and built.overflow == f"O-{kept}" and built.full
    assert len(b"".join(reply_parts(built.entries, False))) <= 1000


def test_json_replies_carry_bytes_as_base64_and_msgpack_replies_as_bytes() -> None:
    assert json.loads(encode_reply({"state": b"\xff"}, False)) == {"state": "/w=="}
    assert msgpack.unpackb(encode_reply({"state": b"\xff"}, True)) == {"state": b"\xff"}
    assert json.loads(encode_reply({"big": 2**70}, False)) == {"big": 2**70}  # beyond orjson: stdlib json
    assert json.loads(error_body("400", "bad", False)) == {"error": {"code": 400, "message": "bad"}}


@pytest.mark.parametrize(
    ("headers", "msgpack_wanted"),
    [
        ({"Accept": "application/msgpack"}, True),
        ({"Accept": "APPLICATION/MSGPACK"}, True),
        ({"accept": "application/msgpack"}, True),
        ({"ACCEPT": " Application/MsgPack ; charset=binary"}, True),
        ({"Accept": "application/json, application/msgpack;q=0.9"}, True),
        ({"Accept": "application/x-msgpack"}, True),
        ({"Accept": "application/msgpack;q=0"}, False),
        ({"Accept": "application/msgpack; q=0.0, application/json"}, False),
        ({"Accept": "application/json"}, False),
        ({"Accept": "application/msgpackx"}, False),
        ({"Content-Type": "application/msgpack"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_accept_header_selects_msgpack_in_any_case_and_with_parameters(
    headers: dict[str, str] | None, msgpack_wanted: bool
) -> None:
    assert wants_msgpack(headers) is msgpack_wanted


def test_the_reply_cache_serves_only_what_was_built_from_the_same_bytes() -> None:
    cache = ReplyCache(max_entries=2, max_bytes=1 << 20)
    stored = [b"init", b"filled"]
    cache.put(("orders", "O-1", False), digest(stored), b"reply-1")
    assert cache.get(("orders", "O-1", False), digest(stored)) == b"reply-1"
    assert cache.get(("orders", "O-1", False), digest([*stored, b"canceled"])) is None  # an appended event
    assert cache.get(("orders", "O-1", True), digest(stored)) is None  # another format
    assert digest([b"ab", b"c"]) != digest([b"a", b"bc"])  # element boundaries count
    cache.put(("orders", "O-2", False), b"d2", b"reply-2")
    cache.put(("orders", "O-3", False), b"d3", b"reply-3")  # evicts the least recently used, O-1
    assert len(cache) == 2 and cache.get(("orders", "O-1", False), digest(stored)) is None
    assert cache.size == len(b"reply-2") + len(b"reply-3")


@pytest.mark.parametrize("size", [0, 1, 14, 15, 16, 17, 70_000])
def test_a_snapshot_with_its_stored_events_spliced_packs_as_the_whole_map_would(size: int) -> None:
    """Across the map header sizes (fixmap up to 15 entries, map16, map32), and with a value too
    deep for msgpack's C packer."""
    from tradecache.service.protocol import pack_with_raw_list

    item: dict[str, object] = {f"k{n}": n if n % 3 else [str(n), None, b"x"] for n in range(size)}
    events = [{"type": "OrderSubmitted", "ts_event": "1"}, {"type": "OrderAccepted", "info": {}}]
    raw = [msgpack.packb(event) for event in events]
    assert pack_with_raw_list(item, "events", raw) == msgpack.packb({**item, "events": events})
    deep: list[object] = [1]
    for _ in range(600):
        deep = [deep]
    unpacker = msgpack.Unpacker()
    unpacker.feed(pack_with_raw_list({"deep": deep, **item}, "events", raw))
    unpacked = next(unpacker)
    assert list(unpacked) == ["deep", *item, "events"] and unpacked["events"] == events


_PACKABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["x" * 31, "x" * 32, "é" * 128, "x" * 255, "x" * 256, "x" * 65_535, "x" * 65_536])
    | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20),
    max_leaves=40,
)


@given(st.dictionaries(st.text(max_size=8), _PACKABLE, max_size=20), st.text(max_size=300))
def test_snapshots_and_ids_pack_to_the_bytes_msgpack_gives(item: dict[str, object], key: str) -> None:
    """The msgspec packer used for reply entries gives msgpack's own bytes (floats stay 64-bit)."""
    from tradecache.service.protocol import encode_entry, pack_with_raw_list

    assert encode_entry(key, b"!", True) == msgpack.packb(key, use_bin_type=True) + b"!"
    item.pop("events", None)  # the key the events are spliced in under
    raw = [msgpack.packb({"type": "OrderSubmitted"})]
    expected = msgpack.packb({**item, "events": [{"type": "OrderSubmitted"}]}, use_bin_type=True)
    assert pack_with_raw_list(item, "events", raw) == expected
